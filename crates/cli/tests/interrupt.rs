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

/// An Okta connection against `base_url`, `page_size` users a page.
fn write_okta_config(dir: &std::path::Path, base_url: &str, page_size: u32) {
    std::fs::write(
        dir.join("corral.toml"),
        format!(
            "[[connection]]\nname = \"okta\"\nadapter = \"okta\"\n[connection.config]\nbase_url = \"{base_url}\"\n\
             token = \"${{OKTA_TOKEN}}\"\npage_size = {page_size}\n"
        ),
    )
    .expect("config");
}

fn corral_in(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("OKTA_TOKEN", Credentials::default().token);
    c
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn send_signal(child: &std::process::Child, signal: &str) {
    let kill = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
    assert!(kill.success(), "kill {signal}");
}

/// Wait until the simulator has answered `n` requests more than `from`.
fn wait_for_requests(sim: &corral_sim::SimHandle, from: u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while sim.counters.snapshot().requests < from + n {
        assert!(Instant::now() < deadline, "the sync never fetched {n} pages");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM (a scheduler stopping the job) in the middle of a sync of users
/// that are all stored already: exit 4, the run says interrupted, what was
/// loaded is kept, nothing is marked stale, and the checkpoint it leaves is
/// only behind stored data: the next sync resumes from it and, between the
/// two, every user is seen again.
#[test]
fn sigterm_stops_the_sync_keeps_what_was_loaded_marks_nothing_stale_and_resumes_behind_stored_data() {
    const USERS: u64 = 4_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let sim = rt
        .block_on(corral_sim::start(Vendor::Okta, SimConfig::new(11, USERS as usize).latency_ms(50)))
        .expect("start the Okta simulator");
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. A complete sync: every user stored, no checkpoint left behind.
    write_okta_config(dir.path(), &sim.base_url, 200);
    let out = corral_in(dir.path()).args(["sync", "--json"]).output().expect("corral sync");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let first = json_of(&out)[0].clone();
    assert_eq!(first["inserted"], USERS, "{first}");

    // 2. The same connection, 50 users a page, stopped by SIGTERM after 10 pages.
    write_okta_config(dir.path(), &sim.base_url, 50);
    let before = sim.counters.snapshot().requests;
    let child = corral_in(dir.path())
        .args(["sync", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral sync");
    wait_for_requests(&sim, before, 10);
    send_signal(&child, "-TERM");
    let out = child.wait_with_output().expect("wait for corral");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let stopped = json_of(&out)[0].clone();
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert!(stopped["errors"].to_string().contains("interrupted"), "{stopped}");
    assert_eq!(stopped["streams"]["users"]["stale_handled"], false, "{stopped}");
    assert_eq!(stopped["stale_marked"], 0, "{stopped}");
    let fetched = stopped["records_fetched"].as_u64().expect("records_fetched");
    assert!(fetched > 0 && fetched < USERS, "stopped part-way: {stopped}");
    let loaded: u64 = ["inserted", "updated", "unchanged"].iter().filter_map(|k| stopped[k].as_u64()).sum();
    assert_eq!(loaded, fetched, "everything fetched before the signal was loaded: {stopped}");
    let stopped_id = stopped["sync_id"].as_str().expect("sync id").to_string();

    // Recorded as failed; every user still stored, none marked stale.
    let runs = json_of(&corral_in(dir.path()).args(["runs", "--json"]).output().expect("corral runs"));
    assert_eq!(runs[0]["sync_id"], stopped_id.as_str(), "{runs}");
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    let out = corral_in(dir.path()).args(["assets", "--json", "--include-stale"]).output().expect("corral assets");
    let counts = json_of(&out);
    assert_eq!(counts[0]["count"], USERS, "{counts}");
    assert_eq!(counts[0]["stale"], 0, "nothing marked stale: {counts}");

    // 3. The next sync resumes from the checkpoint run 2 left: it fetches
    //    less than everything, and every user was seen by run 2 or run 3. A
    //    checkpoint ahead of the stored data would have skipped users that
    //    still carry run 1's sync id.
    write_okta_config(dir.path(), &sim.base_url, 200);
    let out = corral_in(dir.path()).args(["sync", "--json"]).output().expect("corral sync");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed = json_of(&out)[0].clone();
    let resumed_id = resumed["sync_id"].as_str().expect("sync id").to_string();
    let refetched = resumed["records_fetched"].as_u64().expect("records_fetched");
    assert!(refetched < USERS, "the sync resumed from the checkpoint: {resumed}");
    assert!(refetched + loaded >= USERS, "run 2 stored at least what run 3 skipped: {resumed}");
    let out = corral_in(dir.path())
        .args(["assets", "--list", "--json", "--include-stale", "--limit", "100000"])
        .output()
        .expect("corral assets --list");
    let assets = json_of(&out);
    let assets = assets.as_array().expect("assets");
    assert_eq!(assets.len() as u64, USERS);
    let behind: Vec<&serde_json::Value> = assets
        .iter()
        .filter(|a| a["last_sync_id"] != stopped_id.as_str() && a["last_sync_id"] != resumed_id.as_str())
        .collect();
    assert!(behind.is_empty(), "{} user(s) seen by neither run, e.g. {}", behind.len(), behind[0]);
    assert!(assets.iter().all(|a| a.get("stale_since").is_none()), "nothing stale");
    rt.block_on(sim.shutdown());
}

/// A second signal while the first is being handled exits at once with
/// 130. The store's write lock is held from outside meanwhile, so the
/// graceful path (load what was fetched, record the run) cannot finish: the
/// exit code and the unrecorded run show corral did not wait for it.
#[test]
fn a_second_signal_while_the_first_is_handled_exits_130_without_waiting() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let sim = rt
        .block_on(corral_sim::start(Vendor::Okta, SimConfig::new(5, 20_000).latency_ms(50)))
        .expect("start the Okta simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    write_okta_config(dir.path(), &sim.base_url, 50);
    let mut child = corral_in(dir.path())
        .args(["sync", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral sync");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_for_requests(&sim, 0, 5);

    // Hold the write lock: no batch can be stored nor the run recorded.
    let db = rusqlite::Connection::open(dir.path().join("corral.db")).expect("open the store");
    db.busy_timeout(Duration::from_secs(120)).expect("busy timeout");
    db.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");

    send_signal(&child, "-INT");
    let mut seen = Vec::new();
    loop {
        let line = lines.recv_timeout(Duration::from_secs(120)).expect("corral never said it was interrupted");
        let handling = line.contains("interrupted: fetching stops");
        seen.push(line);
        if handling {
            break;
        }
    }
    send_signal(&child, "-TERM");
    let status = child.wait().expect("wait for corral");
    // Still holding the lock: the graceful path could not have completed.
    assert_eq!(status.code(), Some(130), "{}", seen.join("\n"));
    db.execute_batch("ROLLBACK").expect("release the write lock");
    drop(db);
    let _ = reader.join();

    let out = corral_in(dir.path()).args(["runs", "--json"]).output().expect("corral runs");
    assert_eq!(json_of(&out), serde_json::json!([]), "the run was never recorded: corral did not wait");
    rt.block_on(sim.shutdown());
}
