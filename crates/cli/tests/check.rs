//! `corral check` against simulated vendors (issue 9, items 5 and 6): it
//! answers within `--timeout` when a vendor hangs, retries transient errors
//! instead of calling them bad credentials, and names what failed.

use std::path::Path;
use std::process::{Command, Output};

use corral_sim::{Faults, SimConfig, SimHandle, Vendor};

fn corral(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("CORRAL_TEST_CS_SECRET", "corral-sim-secret")
        .output()
        .expect("run corral")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A config with one CrowdStrike connection per `(name, base_url)`.
fn write_config(dir: &Path, connections: &[(&str, String)]) {
    let mut body = String::new();
    for (name, base_url) in connections {
        body.push_str(&format!(
            "[[connection]]\nname = \"{name}\"\nadapter = \"crowdstrike\"\n[connection.config]\n\
             base_url = \"{base_url}\"\nclient_id = \"corral-sim-client\"\nclient_secret = \"${{CORRAL_TEST_CS_SECRET}}\"\n\n"
        ));
    }
    std::fs::write(dir.join("corral.toml"), body).expect("write config");
}

fn start(rt: &tokio::runtime::Runtime, config: SimConfig) -> SimHandle {
    rt.block_on(corral_sim::start(Vendor::CrowdStrike, config.threads(1))).expect("simulator")
}

/// A vendor that never answers: `check --timeout 2s` gives up on it in
/// time, says it got no answer, and exits 4; the healthy connection beside
/// it is checked too.
#[test]
fn check_answers_within_its_timeout_when_a_vendor_hangs() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let hung =
        start(&rt, SimConfig::new(1, 10).faults(Faults { hang_rate: 1.0, include_auth: true, ..Faults::default() }));
    let healthy = start(&rt, SimConfig::new(1, 10));
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &[("hung", hung.base_url.clone()), ("healthy", healthy.base_url.clone())]);
    let out = corral(dir.path(), &["check", "--timeout", "2s", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = |name: &str| rows.as_array().and_then(|r| r.iter().find(|c| c["connection"] == name)).cloned();
    let hung_row = row("hung").expect("hung row");
    assert_eq!(hung_row["outcome"], "unreachable", "{rows}");
    assert!(hung_row["result"].as_str().unwrap_or_default().contains("timed out"), "{rows}");
    assert_eq!(row("healthy").expect("healthy row")["ok"], true, "{rows}");
    assert!(!text(&out).contains("corral-sim-secret"));

    let out = corral(dir.path(), &["check", "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "a bad --timeout is a usage error: {}", text(&out));
}

/// 10 % of the vendor's answers are 5xx (token endpoint included): every
/// check passes. A wrong base URL is "not found", not "authentication failed".
#[test]
fn check_retries_transient_errors_and_names_a_wrong_base_url() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let flaky = start(
        &rt,
        SimConfig::new(3, 10).faults(Faults { error_5xx_rate: 0.1, include_auth: true, ..Faults::default() }),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..5 {
        let names: Vec<(String, String)> = (0..4).map(|i| (format!("flaky-{i}"), flaky.base_url.clone())).collect();
        let conns: Vec<(&str, String)> = names.iter().map(|(n, u)| (n.as_str(), u.clone())).collect();
        write_config(dir.path(), &conns);
        let out = corral(dir.path(), &["check"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert!(flaky.counters.snapshot().fault("5xx") >= 1, "the vendor did fail some requests");

    write_config(dir.path(), &[("wrong-cloud", format!("{}/eu-1", flaky.base_url))]);
    let out = corral(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("not found") && all.contains("/eu-1/oauth2/token"), "{all}");
    assert!(!all.contains("credentials refused") && !all.contains("authentication failed"), "{all}");
}
