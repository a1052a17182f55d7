//! Two `corral sync` of one connection at once (a cron job overlapping the
//! previous one): the second never runs alongside the first. Without
//! `--wait` it is skipped (exit 5, said why); with `--wait` it runs after the
//! first one. Either way nothing the vendor still returns is marked stale.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_sim::{Credentials, SimConfig, Vendor};

const USERS: usize = 6_000;

fn corral(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("OKTA_TOKEN", Credentials::default().token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn spawn_sync(dir: &Path, extra: &[&str]) -> Child {
    corral(dir).args(["sync", "--json"]).args(extra).spawn().expect("start corral sync")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// Wait until the simulator has served `n` requests in all.
fn wait_for_requests(sim: &corral_sim::SimHandle, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while sim.counters.snapshot().requests < n {
        assert!(Instant::now() < deadline, "the first sync never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_second_sync_of_a_running_connection_is_skipped_or_waits_and_nothing_goes_stale() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    // 60 pages of 100 users, 40 ms each: the first sync runs for a few seconds.
    let sim = rt
        .block_on(corral_sim::start(Vendor::Okta, SimConfig::new(9, USERS).latency_ms(40)))
        .expect("start the Okta simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("corral.toml"),
        format!(
            "[[connection]]\nname = \"okta\"\nadapter = \"okta\"\nstale = {{ mode = \"mark\", delete_after = \"1d\" }}\n\
             [connection.config]\nbase_url = \"{}\"\ntoken = \"${{OKTA_TOKEN}}\"\npage_size = 100\n",
            sim.base_url
        ),
    )
    .expect("config");

    // A first complete sync, so that a wrong stale mark later would show.
    let out = corral(dir.path()).args(["sync", "--json"]).output().expect("first sync");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // The cron job's next run, and a second one started while it goes on.
    let requests = sim.counters.snapshot().requests;
    let running = spawn_sync(dir.path(), &[]);
    wait_for_requests(&sim, requests + 5);
    let skipped = corral(dir.path()).args(["sync", "--json"]).output().expect("overlapping sync");
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert_eq!(skipped.status.code(), Some(5), "the overlapping sync must be skipped with exit 5: {stderr}");
    let summary = json(&skipped);
    assert_eq!(summary[0]["status"], "skipped", "{summary}");
    let why = summary[0]["errors"].to_string();
    assert!(why.contains("another run of connection `okta` is in progress"), "{why}");
    assert_eq!(summary[0]["records_fetched"], 0, "a skipped run fetches nothing: {summary}");
    assert!(stderr.contains("skipped"), "the log says so too: {stderr}");

    // With --wait, a third one waits for the running one, then runs.
    let waiting = spawn_sync(dir.path(), &["--wait"]);
    let first = running.wait_with_output().expect("first overlapping sync");
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let waited = waiting.wait_with_output().expect("waiting sync");
    let waited_log = String::from_utf8_lossy(&waited.stderr);
    assert_eq!(waited.status.code(), Some(0), "{waited_log}");
    assert!(waited_log.contains("waiting for it to finish"), "the wait is visible: {waited_log}");
    let (first, waited) = (json(&first), json(&waited));
    let first_ended: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(first[0]["ended_at"].clone()).expect("ended_at");
    let waited_started: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(waited[0]["started_at"].clone()).expect("started_at");
    assert!(waited_started >= first_ended - chrono::Duration::seconds(1), "{first_ended} vs {waited_started}");
    assert_eq!(waited[0]["records_fetched"], USERS, "{waited}");
    assert_eq!(waited[0]["stale_marked"], 0, "{waited}");

    // Nothing the vendor returns is stale; the store has exactly the dataset.
    let out = corral(dir.path()).args(["assets", "--include-stale", "--json"]).output().expect("assets");
    let counts = json(&out);
    assert_eq!(counts[0]["count"], USERS, "{counts}");
    assert_eq!(counts[0]["stale"], 0, "{counts}");
    // Every run is recorded, the skipped one included.
    let runs = json(&corral(dir.path()).args(["runs", "--json"]).output().expect("runs"));
    let statuses: Vec<&str> = runs.as_array().expect("runs").iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "skipped").count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "success").count(), 3, "{statuses:?}");
    rt.block_on(sim.shutdown());
}
