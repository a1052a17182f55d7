//! `corral record` against the simulators: the cassette holds no secret,
//! token or tenant origin; replayed by corral-testkit it gives the same
//! stored assets (Okta: Link headers with absolute URLs; CrowdStrike: an
//! OAuth2 token and POSTed id batches, with a field redacted). Bad input is
//! a clear error.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use corral_sim::{Credentials, SimConfig, Vendor};

fn corral(dir: &Path, args: &[&str]) -> Output {
    let creds = Credentials::default();
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("OKTA_TOKEN", &creds.token)
        .env("CS_SECRET", &creds.client_secret)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run corral")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every file of the cassette, concatenated.
fn cassette_text(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).expect("cassette dir") {
        let p = e.expect("entry").path();
        all.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
    }
    all
}

#[test]
fn a_recorded_sync_replays_to_the_same_assets_and_keeps_no_secret() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let okta = rt.block_on(corral_sim::start(Vendor::Okta, SimConfig::new(5, 130))).expect("okta sim");
    let cs = rt.block_on(corral_sim::start(Vendor::CrowdStrike, SimConfig::new(6, 170))).expect("crowdstrike sim");
    let creds = Credentials::default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("corral.toml"),
        format!(
            "[[connection]]\nname = \"okta\"\nadapter = \"okta\"\n[connection.config]\nbase_url = \"{}\"\n\
             token = \"${{OKTA_TOKEN}}\"\npage_size = 20\n\n\
             [[connection]]\nname = \"falcon\"\nadapter = \"crowdstrike\"\n[connection.config]\nbase_url = \"{}\"\n\
             client_id = \"{}\"\nclient_secret = \"${{CS_SECRET}}\"\nids_page_size = 50\ndetails_batch = 40\n",
            okta.base_url, cs.base_url, creds.client_id
        ),
    )
    .expect("config");

    let out = corral(dir, &["record", "-n", "okta", "--out", "okta-cassette"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = corral(dir, &["record", "-n", "falcon", "--out", "cs-cassette", "--redact-field", "hostname"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    for (cassette, origin) in [("okta-cassette", &okta.base_url), ("cs-cassette", &cs.base_url)] {
        let all = cassette_text(&dir.join(cassette));
        for leaked in [creds.token.as_str(), creds.client_secret.as_str(), origin.as_str()] {
            assert!(!all.contains(leaked), "{cassette} holds `{leaked}`");
        }
        assert!(!dir.join(cassette).join(".record-store.db").exists(), "the throwaway store is removed");
    }
    let okta_cassette = std::fs::read_to_string(dir.join("okta-cassette/exchanges.ndjson")).expect("exchanges");
    assert!(okta_cassette.contains("{{origin:0}}/api/v1/users?after="), "Link headers keep their (placeholder) origin");
    let cs_cassette = cassette_text(&dir.join("cs-cassette"));
    assert!(cs_cassette.contains("replayed-token"), "the access token is replaced");
    // Bodies are JSON text inside the JSON lines: their quotes are escaped.
    assert!(cs_cassette.contains(r#"\"hostname\":\"redacted-"#), "hostnames have stand-ins");

    // Replayed, each gives the assets its recording stored.
    let replayed = rt
        .block_on(corral_testkit::replay::replay(&dir.join("okta-cassette"), &corral_adapter_okta::OktaFactory))
        .expect("replay okta");
    assert_eq!(replayed.summary.status, corral_core::RunStatus::Success, "{:?}", replayed.summary.errors);
    assert_eq!(replayed.stored.len(), 130);
    replayed.assert_same_assets();
    let replayed = rt
        .block_on(corral_testkit::replay::replay(
            &dir.join("cs-cassette"),
            &corral_adapter_crowdstrike::CrowdStrikeFactory,
        ))
        .expect("replay crowdstrike");
    assert_eq!(replayed.summary.status, corral_core::RunStatus::Success, "{:?}", replayed.summary.errors);
    assert_eq!(replayed.stored.len(), 170);
    replayed.assert_same_assets();

    // Bad input.
    let out = corral(dir, &["record", "-n", "nope", "--out", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no connection named `nope`"), "{}", text(&out));
    let out = corral(dir, &["record", "-n", "okta", "--out", "okta-cassette"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not an empty directory"), "{}", text(&out));
    let out = corral(dir, &["record", "-n", "okta", "--out", "y", "--redact-field", " "]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--redact-field"), "{}", text(&out));
    let out = corral(dir, &["record", "--out", "z"]);
    assert_eq!(out.status.code(), Some(2), "no --connection: a usage error");
}
