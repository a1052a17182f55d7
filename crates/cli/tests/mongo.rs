//! The `corral` binary against MongoDB: `sync`, `runs` and `assets` with
//! `[store] kind = "mongodb"`, `demo --store mongodb://...`, and a server
//! killed in the middle of a `corral sync`.
//!
//! `sync_runs_and_assets_against_mongodb` uses `MONGODB_URI` (scripts/test.sh
//! starts nx-27017; point it at a real MongoDB 6+ to run it there) with a
//! database of its own. The demo and kill tests run a private nx-27017 from
//! `.venv` (the demo writes the fixed database `corral`, and the kill test
//! kills its server). Without them the tests fail, unless `CORRAL_SKIP_MONGO=1`
//! outside CI (see `corral_store::nx`). The connection string never appears
//! in any output.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_adapter_file::sample::{SampleOptions, write_devices_csv};
use corral_core::Store;
use corral_core::store::AssetFilter;
use corral_store::mongo::{MongoOptions, MongoStore, RetryPolicy};
use corral_store::nx::{self, NxServer};

/// The environment variable the test configs take the URI from.
const URI_VAR: &str = "CORRAL_TEST_MONGODB_URI";

fn corral(dir: &Path, uri: &str, args: &[&str]) -> Output {
    command(dir, uri).args(args).output().expect("run corral")
}

fn command(dir: &Path, uri: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.current_dir(dir).env_remove("RUST_LOG").env_remove("CORRAL_CONFIG").env(URI_VAR, uri);
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Neither the URI nor its host:port-and-options tail appear in `out`.
fn assert_no_uri(out: &Output, uri: &str) {
    let all = text(out);
    assert!(!all.contains(uri), "the MongoDB URI was printed:\n{all}");
    if let Some((_, tail)) = uri.split_once('?') {
        assert!(!all.contains(tail), "the URI's options were printed:\n{all}");
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON on stdout ({e}):\n{}", text(out)))
}

fn write_config(dir: &Path, database: &str, engine: &str) {
    let body = format!(
        r#"
        [store]
        kind = "mongodb"
        uri = "${{{URI_VAR}}}"
        database = "{database}"

        [engine]
        {engine}

        [[connection]]
        name = "edr"
        adapter = "file"
        [connection.config]
        path = "devices.csv"
        format = "csv"
        kind = "device"
        page_records = 200
        [connection.config.columns]
        source_id = "Device ID"
        hostname = "Host Name"
        serial_number = "Serial"
        mac_addresses = "MAC"
        "#
    );
    std::fs::write(dir.join("corral.toml"), body).expect("write config");
}

fn count_of(counts: &serde_json::Value, connection: &str) -> u64 {
    counts
        .as_array()
        .expect("an array of counts")
        .iter()
        .filter(|c| c["connection"] == connection)
        .map(|c| c["count"].as_u64().unwrap_or(0))
        .sum()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

/// A store on `uri` for the test's own checks, with short timeouts.
async fn test_store(uri: &str, database: &str) -> MongoStore {
    let opts = MongoOptions {
        server_selection_timeout: Duration::from_secs(2),
        retry: RetryPolicy { max_attempts: 2, budget: Duration::from_secs(5), ..RetryPolicy::default() },
        ..MongoOptions::default()
    };
    MongoStore::connect_with(uri, database, opts).await.expect("connect")
}

fn unique_database(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("cli_{tag}_{:x}{:x}", std::process::id(), nanos % 0xffff_ffff)
}

#[test]
fn sync_runs_and_assets_against_mongodb() {
    let Some(uri) = nx::mongodb_uri("cli::mongo::sync_runs_and_assets_against_mongodb") else { return };
    let rt = runtime();
    let database = unique_database("sync");
    let store = rt.block_on(test_store(&uri, &database));
    let dir = tempfile::tempdir().expect("tempdir");
    write_devices_csv(&dir.path().join("devices.csv"), 300, SampleOptions::default()).expect("sample csv");
    write_config(dir.path(), &database, "batch_max_records = 100");

    let result = std::panic::catch_unwind(|| {
        let first = corral(dir.path(), &uri, &["sync", "--json"]);
        assert_eq!(first.status.code(), Some(0), "{}", text(&first));
        assert_no_uri(&first, &uri);
        let run = &json(&first)[0];
        assert_eq!((run["status"].as_str(), run["inserted"].as_u64()), (Some("success"), Some(300)), "{run}");
        let first_id = run["sync_id"].as_str().expect("sync id").to_string();

        let second = corral(dir.path(), &uri, &["sync"]);
        assert_eq!(second.status.code(), Some(0), "{}", text(&second));
        assert_no_uri(&second, &uri);

        let runs = corral(dir.path(), &uri, &["runs", "--json"]);
        assert_eq!(runs.status.code(), Some(0), "{}", text(&runs));
        let listed = json(&runs);
        let listed = listed.as_array().expect("runs");
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[1]["sync_id"], first_id.as_str(), "most recent first");
        assert_eq!((listed[0]["unchanged"].as_u64(), listed[0]["inserted"].as_u64()), (Some(300), Some(0)));

        let table = corral(dir.path(), &uri, &["runs"]);
        assert_eq!(table.status.code(), Some(0), "{}", text(&table));
        assert_no_uri(&table, &uri);
        let stdout = String::from_utf8_lossy(&table.stdout);
        assert!(stdout.contains(&first_id) && stdout.contains("edr") && stdout.contains("success"), "{stdout}");

        let counts = corral(dir.path(), &uri, &["assets", "--json"]);
        assert_eq!(counts.status.code(), Some(0), "{}", text(&counts));
        assert_eq!(count_of(&json(&counts), "edr"), 300);

        let table = corral(dir.path(), &uri, &["assets"]);
        assert_eq!(table.status.code(), Some(0), "{}", text(&table));
        assert_no_uri(&table, &uri);
        let line = String::from_utf8_lossy(&table.stdout)
            .lines()
            .find(|l| l.starts_with("edr"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        assert_eq!(line, "edr device 300 0", "{}", text(&table));

        let rows = corral(dir.path(), &uri, &["assets", "--list", "--limit", "5", "--json"]);
        assert_eq!(rows.status.code(), Some(0), "{}", text(&rows));
        let rows = json(&rows);
        let ids: Vec<&str> = rows.as_array().expect("rows").iter().filter_map(|r| r["source_id"].as_str()).collect();
        assert_eq!(ids, ["dev-1", "dev-10", "dev-100", "dev-101", "dev-102"], "ordered by source id");
        assert!(rows.as_array().expect("rows").iter().all(|r| r["kind"] == "device" && r["connection"] == "edr"));

        let table = corral(dir.path(), &uri, &["assets", "--list", "--limit", "3"]);
        assert_eq!(table.status.code(), Some(0), "{}", text(&table));
        assert_no_uri(&table, &uri);
        let stdout = String::from_utf8_lossy(&table.stdout);
        assert_eq!(stdout.lines().filter(|l| l.starts_with("edr ")).count(), 3, "{stdout}");
    });
    if let Err(e) = rt.block_on(store.drop_database()) {
        eprintln!("warning: could not drop {database}: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn demo_loads_into_mongodb() {
    let Some(bin) = nx::require_binary("cli::mongo::demo_loads_into_mongodb") else { return };
    let data = tempfile::tempdir().expect("tempdir");
    let server = NxServer::start(&bin, nx::free_port().expect("port"), data.path(), 1).expect("start nx-27017");
    let uri = server.uri();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = corral(
        dir.path(),
        &uri,
        &["demo", "--store", &uri, "--devices", "2000", "--users", "300", "--vendor-size", "200"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_uri(&out, &uri);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("demo-devices") && stdout.contains("success"), "{stdout}");
    assert!(!dir.path().join("corral.db").exists(), "nothing went to SQLite");

    // Read it back through a config naming the demo's database.
    std::fs::write(
        dir.path().join("corral.toml"),
        format!("[store]\nkind = \"mongodb\"\nuri = \"${{{URI_VAR}}}\"\ndatabase = \"corral\"\n"),
    )
    .expect("config");
    let out = corral(dir.path(), &uri, &["assets", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let counts = json(&out);
    assert_eq!(count_of(&counts, "demo-devices"), 2000, "{counts}");
    assert_eq!(count_of(&counts, "demo-users"), 300, "{counts}");
    assert_eq!(count_of(&counts, "demo-crowdstrike"), 200, "{counts}");
    assert_eq!(count_of(&counts, "demo-okta"), 200, "{counts}");
    // Intune devices and Entra users, each distinct id once (Graph repeats some records).
    let graph = corral_sim::msgraph_asset_count(42, 200, 0);
    assert_eq!(count_of(&counts, "demo-msgraph"), graph as u64, "{counts}");
    let out = corral(dir.path(), &uri, &["runs", "--json"]);
    assert_eq!(json(&out).as_array().map(Vec::len), Some(8), "{}", text(&out));
}

/// nx-27017 is killed while `corral sync` loads: exit 4, a failed run, nothing
/// marked stale; after a restart a rerun exits 0 and the collection holds
/// exactly the dataset.
#[test]
fn server_killed_mid_sync_fails_the_run_and_a_rerun_completes_exactly() {
    let test = "cli::mongo::server_killed_mid_sync_fails_the_run_and_a_rerun_completes_exactly";
    let Some(bin) = nx::require_binary(test) else { return };
    const N: u64 = 15_000;
    let data = tempfile::tempdir().expect("tempdir");
    let port = nx::free_port().expect("port");
    let mut server = NxServer::start(&bin, port, data.path(), 1).expect("start nx-27017");
    // Short server selection, so a dead server is noticed in about a second per attempt.
    let uri = format!("mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=1000&connectTimeoutMS=1000");
    let dir = tempfile::tempdir().expect("tempdir");
    write_devices_csv(&dir.path().join("devices.csv"), N, SampleOptions::default()).expect("sample csv");
    write_config(dir.path(), "killcli", "batch_max_records = 200\nbatches_in_flight = 1");
    let rt = runtime();
    let store = rt.block_on(test_store(&server.uri(), "killcli"));
    let stored = || -> u64 {
        rt.block_on(store.count_assets(&AssetFilter { include_stale: true, ..Default::default() }))
            .map(|c| c.iter().map(|c| c.count).sum())
            .unwrap_or(0)
    };

    let mut child = command(dir.path(), &uri)
        .args(["sync", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral sync");
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored() < 2_000 {
        assert!(child.try_wait().expect("poll corral").is_none(), "the sync ended before the server could be killed");
        assert!(Instant::now() < deadline, "the sync never loaded 2,000 assets");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.try_wait().expect("poll corral").is_none(), "the sync ended before the server could be killed");
    server.kill();
    let killed = Instant::now();
    let out = child.wait_with_output().expect("wait for corral");
    eprintln!("corral sync exited {:?} {:?} after the kill", out.status.code(), killed.elapsed());
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_no_uri(&out, &uri);
    let run = &json(&out)[0];
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["stale_marked"].as_u64(), Some(0), "{run}");
    assert!(run["streams"].as_object().is_some_and(|s| s.values().all(|s| s["stale_handled"] == false)), "{run}");
    assert!(run["errors"].to_string().contains("gave up after"), "the store's retries were used up: {run}");
    let loaded = run["inserted"].as_u64().unwrap_or(0) + run["updated"].as_u64().unwrap_or(0);
    assert!(loaded < N, "everything was loaded before the kill: {run}");

    // Back with its data: a rerun completes and the collection holds exactly the dataset.
    let _server = NxServer::start(&bin, port, data.path(), 2).expect("restart nx-27017");
    let out = corral(dir.path(), &uri, &["sync", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_uri(&out, &uri);
    let rerun = &json(&out)[0];
    assert_eq!(rerun["status"], "success", "{rerun}");
    let counts = corral(dir.path(), &uri, &["assets", "--json", "--include-stale"]);
    assert_eq!(count_of(&json(&counts), "edr"), N, "{}", text(&counts));
    let rows = rt
        .block_on(store.list_assets(&AssetFilter { include_stale: true, ..Default::default() }, N as usize + 10))
        .expect("list");
    assert_eq!(rows.len() as u64, N, "no duplicates, nothing missing");
    assert!(rows.iter().all(|a| a.stale_since.is_none()), "nothing marked stale");
    let keys: BTreeSet<String> = rows.into_iter().map(|a| a.source_id).collect();
    let expected: BTreeSet<String> = (1..=N).map(|i| format!("dev-{i}")).collect();
    assert!(keys == expected, "the stored keys are not exactly dev-1..dev-{N}");
}
