//! Ctrl-C during `corral sync`: fetching stops, what was fetched is loaded,
//! the run is reported failed (exit 4) and recorded, nothing is marked stale.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_sim::{Credentials, SimConfig, Vendor};

#[test]
fn ctrl_c_stops_the_sync_keeps_what_was_loaded_and_reports_failed() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    // 400 pages of 50 users, 50 ms each: about 20 s if nobody interrupts.
    let sim = rt
        .block_on(corral_sim::start(Vendor::Okta, SimConfig::new(5, 20_000).latency_ms(50)))
        .expect("start the Okta simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("corral.toml"),
        format!(
            "[[connection]]\nname = \"okta\"\nadapter = \"okta\"\n[connection.config]\nbase_url = \"{}\"\n\
             token = \"${{OKTA_TOKEN}}\"\npage_size = 50\n",
            sim.base_url
        ),
    )
    .expect("config");
    let corral = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
        c.current_dir(dir.path()).env_remove("RUST_LOG").env_remove("CORRAL_CONFIG");
        c
    };
    let child = corral()
        .args(["sync", "--json"])
        .env("OKTA_TOKEN", Credentials::default().token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral sync");

    // Interrupt once some pages were served.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.counters.snapshot().requests < 10 {
        assert!(Instant::now() < deadline, "the sync never started fetching");
        std::thread::sleep(Duration::from_millis(20));
    }
    let interrupted_at = Instant::now();
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait for corral");
    let stopped_in = interrupted_at.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stopped_in < Duration::from_secs(10), "took {stopped_in:?} to stop");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let run = &runs[0];
    assert_eq!(run["status"], "failed");
    assert!(run["errors"].to_string().contains("interrupted"), "{run}");
    assert!(!run["streams"]["users"]["stale_handled"].as_bool().unwrap_or(true), "{run}");
    let fetched = run["records_fetched"].as_u64().unwrap_or(0);
    assert!(fetched > 0 && fetched < 20_000, "{run}");
    // Everything fetched before the interrupt was loaded.
    let loaded: u64 = ["inserted", "updated", "unchanged"].iter().filter_map(|k| run[k].as_u64()).sum();
    assert_eq!(loaded, fetched, "{run}");

    // The interrupted run is recorded, and the store holds what it loaded.
    let out = corral().args(["runs", "--json"]).output().expect("corral runs");
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs JSON");
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    let out = corral().args(["assets", "--json"]).output().expect("corral assets");
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("assets JSON");
    assert_eq!(counts[0]["count"], run["inserted"], "{counts}");
    rt.block_on(sim.shutdown());
}
