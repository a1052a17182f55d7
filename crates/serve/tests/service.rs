//! The service in this process, over real HTTP: authentication, parameter
//! errors, unknown runs, `/metrics` parsed with a Prometheus text parser,
//! asset pages, the scheduler (missed ticks run once, a tick due while the
//! run goes on is skipped and counted, runs never overlap), reloads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use corral_core::store::{AssetFilter, RunQuery};
use corral_core::testing::MemoryStore;
use corral_core::{Connection, EngineConfig, Redactor, RunStatus, RunSummary, Store};
use corral_serve::{Plan, PlanSource, Planned, Schedule, ScheduleSpec, ServeConfig, Service};
use corral_store::sqlite::SqliteStore;
use reqwest::StatusCode;
use secrecy::SecretString;

const TOKEN: &str = "test-token-0123456789abcdef";

fn write_csv(dir: &Path, name: &str, rows: usize, bad_rows: usize) -> PathBuf {
    let mut text = String::from("id,host\n");
    for i in 0..rows {
        text.push_str(&format!("dev-{i:04},host-{i}\n"));
    }
    for _ in 0..bad_rows {
        text.push_str(",no-id\n");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write csv");
    path
}

fn file_connection(name: &str, path: &Path, page_records: usize) -> Connection {
    let config = serde_json::json!({
        "path": path, "kind": "device", "page_records": page_records,
        "columns": { "source_id": "id", "hostname": "host" },
    });
    let adapter = corral_core::AdapterFactory::build(&corral_adapter_file::FileAdapterFactory, name, config)
        .expect("file adapter config");
    Connection { name: name.into(), adapter, streams: vec![], stale: Default::default() }
}

/// Plans from a closure (a reload calls it again).
struct Source(Mutex<Box<dyn FnMut() -> Result<Plan, String> + Send>>);

impl PlanSource for Source {
    fn load(&self) -> Result<Plan, String> {
        (self.0.lock().expect("lock"))()
    }
}

fn settings(token: Option<&str>) -> corral_serve::Settings {
    let c = ServeConfig { listen: "127.0.0.1:0".into(), grace_period: "30s".into(), ..Default::default() };
    c.settings(token.map(|t| SecretString::from(t.to_string()))).expect("settings")
}

fn every(p: &str, name: &str) -> Option<Schedule> {
    let spec = ScheduleSpec { every: Some(p.into()), ..Default::default() };
    Schedule::parse(&spec, &Default::default(), name).expect("schedule")
}

struct Running {
    service: Service,
    base: String,
    task: tokio::task::JoinHandle<Result<(), corral_serve::ServeError>>,
}

async fn start(store: Arc<dyn Store>, source: Source) -> Running {
    let plan = source.load().expect("first plan");
    let service = Service::new(store, Redactor::default(), Arc::new(source), plan).await.expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(service.clone().run(listener));
    Running { service, base, task }
}

impl Running {
    async fn stop(self) {
        self.service.shutdown();
        self.task.await.expect("join").expect("serve ended cleanly");
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runs_of(store: &dyn Store, connection: &str) -> Vec<RunSummary> {
    let q = RunQuery { connection: Some(connection.into()), before: None };
    store.list_runs(&q, 1000).await.expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_it_must_and_metrics_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let devices = write_csv(dir.path(), "devices.csv", 250, 3);
    let paths = (devices.clone(), dir.path().join("missing.csv"));
    let source = Source(Mutex::new(Box::new(move || {
        Ok(Plan {
            settings: settings(Some(TOKEN)),
            engine: EngineConfig::default(),
            connections: vec![
                Planned { connection: file_connection("devices", &paths.0, 40), schedule: None },
                Planned { connection: file_connection("broken", &paths.1, 40), schedule: None },
            ],
            store_fingerprint: 1,
        })
    })));
    let s = start(store.clone(), source).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", s.base);
    let get = |p: &str| http.get(url(p)).bearer_auth(TOKEN).send();

    // Health needs no token; everything else does.
    let r = http.get(url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), StatusCode::OK);
    for path in ["/api/connections", "/api/runs", "/metrics", "/readyz", "/api/no-such-route"] {
        for auth in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let mut req = http.get(url(path));
            if let Some(t) = auth {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.expect("request");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} with {auth:?}");
            assert_eq!(r.headers()[reqwest::header::WWW_AUTHENTICATE], "Bearer realm=\"corral\"");
            let body = r.text().await.expect("body");
            assert_eq!(body, r#"{"error":"a valid API token is required"}"#, "nothing more is said");
        }
    }
    // The page asks a browser for Basic credentials; the token is their password.
    let r = http.get(url("/")).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()[reqwest::header::WWW_AUTHENTICATE].to_str().expect("ascii").starts_with("Basic "));
    let r = http.get(url("/")).basic_auth("anyone", Some(TOKEN)).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("html").contains("<title>corral</title>"));
    let r = http.get(url("/api/status")).basic_auth("anyone", Some("nope-nope-nope-nope")).send().await.expect("x");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Bad parameters are named.
    for (path, param) in [
        ("/api/runs?limit=abc", "limit"),
        ("/api/runs?limit=0", "limit"),
        ("/api/runs?limit=5000", "limit"),
        ("/api/runs?before=not-a-cursor", "before"),
        ("/api/assets?kind=robot", "kind"),
        ("/api/assets?include_stale=maybe", "include_stale"),
        ("/api/assets?after=%21%21", "after"),
        ("/api/assets?colour=red", "colour"),
        ("/api/assets?limit=5&limit=6", "limit"),
        ("/api/assets?where=colour%3Dred", "where"),
        ("/api/assets?where=hostname", "where"),
        ("/api/assets?kind=user&where=hostname%3Dx", "where"),
        ("/api/assets?points_at=devices", "points_at"),
        ("/api/assets?points_at=devices%2Frobot%2Fx", "points_at"),
        ("/api/assets/counts?where=attributes.nope%3D1", "where"),
        ("/api/runs/x/rejects?limit=-1", "limit"),
        ("/api/connections?verbose=1", "verbose"),
    ] {
        let r = get(path).await.expect("request");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: serde_json::Value = r.json().await.expect("json");
        let error = body["error"].as_str().expect("error text");
        assert!(error.starts_with(&format!("query parameter `{param}`")), "{path}: {error}");
    }
    // Unknown runs and connections.
    for path in ["/api/runs/no-such-run", "/api/runs/no-such-run/rejects", "/api/connections/nope"] {
        assert_eq!(get(path).await.expect("request").status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = http.post(url("/api/connections/nope/sync")).bearer_auth(TOKEN).send().await.expect("sync");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Another process holds broken's lease: 409, naming where it runs.
    let held =
        store.acquire_lease("broken", "sync-elsewhere", "host-b pid 7", Duration::from_secs(60)).await.expect("lease");
    assert!(matches!(held, corral_core::LeaseGrant::Acquired(_)));
    let r = http.post(url("/api/connections/broken/sync")).bearer_auth(TOKEN).send().await.expect("sync");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("host-b pid 7")), "{body}");
    let c: serde_json::Value = get("/api/connections/broken").await.expect("c").json().await.expect("json");
    assert_eq!(c["lease"]["owner"], "host-b pid 7", "the lease holder is shown: {c}");
    store.release_lease("broken", "sync-elsewhere").await.expect("release");

    // Sync both; the second request for a connection already running is a conflict.
    let r = http.post(url("/api/connections/devices/sync")).bearer_auth(TOKEN).send().await.expect("sync");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let again = http.post(url("/api/connections/devices/sync")).bearer_auth(TOKEN).send().await.expect("sync");
    let r = http.post(url("/api/connections/broken/sync")).bearer_auth(TOKEN).send().await.expect("sync");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The first run may already have ended; if not, the second request was refused.
    if again.status() != StatusCode::ACCEPTED {
        assert_eq!(again.status(), StatusCode::CONFLICT);
        let body: serde_json::Value = again.json().await.expect("json");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("already syncing")), "{body}");
    }
    let st = store.clone();
    wait_for("both runs", || {
        let st = st.clone();
        async move { !runs_of(&*st, "devices").await.is_empty() && !runs_of(&*st, "broken").await.is_empty() }
    })
    .await;
    wait_for("no run in progress", || async {
        let v: serde_json::Value = get("/api/connections").await.expect("c").json().await.expect("json");
        v["connections"].as_array().expect("list").iter().all(|c| c.get("running").is_none())
    })
    .await;
    let run = runs_of(&*store, "devices").await.remove(0);
    assert_eq!(run.status, RunStatus::Partial, "3 rows without an id: {:?}", run.errors);
    assert_eq!((run.loaded(), run.records_rejected), (250, 3));
    let failed = runs_of(&*store, "broken").await.remove(0);
    assert_eq!(failed.status, RunStatus::Failed);

    // A run, its rejects, the runs list with the failed run as failed.
    let r: serde_json::Value =
        get(&format!("/api/runs/{}", run.sync_id)).await.expect("run").json().await.expect("json");
    assert_eq!(r["sync_id"], run.sync_id.as_str());
    assert!(r["timeline"].as_array().is_some_and(|t| !t.is_empty()), "{r}");
    let rj: serde_json::Value =
        get(&format!("/api/runs/{}/rejects", run.sync_id)).await.expect("rejects").json().await.expect("json");
    assert_eq!(rj["rejects"].as_array().map(Vec::len), Some(3), "{rj}");
    let list: serde_json::Value = get("/api/runs?connection=broken").await.expect("runs").json().await.expect("json");
    assert_eq!(list["runs"][0]["status"], "failed", "{list}");
    let c: serde_json::Value = get("/api/connections/broken").await.expect("c").json().await.expect("json");
    assert_eq!((c["health"].as_str(), c["last_run"]["status"].as_str()), (Some("failing"), Some("failed")), "{c}");

    // Assets in pages of 7, following `next`: every stored asset once, in order.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(c) => format!("/api/assets?limit=7&after={c}"),
            None => "/api/assets?limit=7".to_string(),
        };
        let page: serde_json::Value = get(&path).await.expect("assets").json().await.expect("json");
        let assets = page["assets"].as_array().expect("assets");
        assert!(assets.len() <= 7);
        seen.extend(assets.iter().map(|a| a["source_id"].as_str().expect("id").to_string()));
        match page["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
    }
    let stored: Vec<String> = store
        .list_assets(&AssetFilter::default(), 10_000)
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.source_id)
        .collect();
    assert_eq!(seen, stored);
    assert_eq!(seen.len(), 250);
    let counts: serde_json::Value =
        get("/api/assets/counts?include_stale=true").await.expect("counts").json().await.expect("json");
    assert_eq!(counts["counts"][0]["count"], 250, "{counts}");
    // `where` as `corral assets --where` (repeatable: all must hold), and its counts.
    let ids = |v: serde_json::Value| -> Vec<String> {
        v["assets"]
            .as_array()
            .expect("assets")
            .iter()
            .map(|a| a["source_id"].as_str().expect("id").to_string())
            .collect()
    };
    let found = get("/api/assets?where=hostname%3DHOST-7").await.expect("where").json().await.expect("json");
    assert_eq!(ids(found), ["dev-0007"], "hostnames compare as stored (lowercase)");
    let both = get("/api/assets?where=hostname%3Dhost-7&where=source_id%3Ddev-0008").await.expect("w").json().await;
    assert!(ids(both.expect("json")).is_empty(), "every condition must hold");
    let counts: serde_json::Value = get("/api/assets/counts?kind=device&where=hostname%3Dhost-12")
        .await
        .expect("counts")
        .json()
        .await
        .expect("json");
    assert_eq!(counts["counts"][0]["count"], 1, "{counts}");
    let none = get("/api/assets?points_at=devices%2Fuser%2Fu-1").await.expect("points_at").json().await.expect("json");
    assert!(ids(none).is_empty(), "nothing references a user here");

    // /metrics parses with a Prometheus text parser.
    let r = get("/metrics").await.expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[reqwest::header::CONTENT_TYPE].to_str().expect("ct").starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.expect("text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
            |s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            },
        )
    };
    assert_eq!(value("corral_runs_total", &[("connection", "devices"), ("status", "partial")]), Some(1.0), "{text}");
    assert_eq!(value("corral_runs_total", &[("connection", "broken"), ("status", "failed")]), Some(1.0));
    assert_eq!(value("corral_records_rejected_total", &[("connection", "devices")]), Some(3.0));
    assert_eq!(value("corral_assets_loaded_total", &[("connection", "devices")]), Some(250.0));
    assert!(value("corral_last_run_timestamp_seconds", &[("connection", "devices")]).is_some_and(|t| t > 1.6e9));
    assert!(scrape.samples.iter().any(|s| s.metric == "corral_runtime_lag_seconds"), "a lag histogram");
    assert!(scrape.samples.iter().any(|s| s.metric == "corral_run_duration_seconds"), "a duration histogram");
    assert!(scrape.samples.iter().all(|s| s.metric.starts_with("corral_")), "{text}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts[3] == "counter" {
            assert!(parts[2].ends_with("_total"), "counter without _total: {line}");
        }
    }
    // The asset gauge comes from the store's counts (refreshed after runs).
    wait_for("asset gauge", || async {
        let text = get("/metrics").await.expect("m").text().await.expect("t");
        text.contains("corral_assets{connection=\"devices\",kind=\"device\",status=\"current\"} 250")
    })
    .await;
    // The token is in no answer.
    for path in ["/api/status", "/api/connections", "/metrics", "/api/runs"] {
        let body = get(path).await.expect("r").text().await.expect("t");
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }
    let r = get("/readyz").await.expect("readyz");
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

/// The store's runs of a connection never overlap in time.
fn assert_no_overlap(runs: &[RunSummary]) {
    let mut spans: Vec<_> =
        runs.iter().filter(|r| r.status != RunStatus::Skipped).map(|r| (r.started_at, r.ended_at)).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs overlap: {:?} and {:?}", w[0], w[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_run_once_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let csv = write_csv(dir.path(), "d.csv", 10, 0);
    // The last run was an hour ago: six ten-minute ticks were missed.
    let mut old = RunSummary::new("c", "file");
    old.started_at = Utc::now() - chrono::Duration::hours(1);
    old.ended_at = old.started_at + chrono::Duration::seconds(1);
    store.save_run(&old).await.expect("save");
    let source = Source(Mutex::new(Box::new(move || {
        Ok(Plan {
            settings: settings(None),
            engine: EngineConfig::default(),
            connections: vec![Planned { connection: file_connection("c", &csv, 100), schedule: every("10m", "c") }],
            store_fingerprint: 1,
        })
    })));
    let started = Utc::now();
    let s = start(store.clone(), source).await;
    let st = store.clone();
    wait_for("the missed run", || {
        let st = st.clone();
        async move { runs_of(&*st, "c").await.len() == 2 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = runs_of(&*store, "c").await;
    assert_eq!(runs.len(), 2, "the missed ticks ran once, not once each");
    assert_eq!(runs[0].status, RunStatus::Success);
    let c: serde_json::Value =
        reqwest::get(format!("{}/api/connections/c", s.base)).await.expect("c").json().await.expect("json");
    assert_eq!(c["ticks_due"], 1, "{c}");
    let next = chrono::DateTime::parse_from_rfc3339(c["next_run_at"].as_str().expect("next")).expect("time");
    assert!(next > started && next <= Utc::now() + chrono::Duration::minutes(10), "{c}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_due_while_the_run_goes_on_is_skipped_and_counted_and_runs_never_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each batch of 5 takes 250 ms to store: a run of 50 records takes about 2.5 s.
    let memory = Arc::new(MemoryStore::new());
    memory.set_delay(Duration::from_millis(250), false);
    let store: Arc<dyn Store> = memory.clone();
    let csv = write_csv(dir.path(), "d.csv", 50, 0);
    let engine = EngineConfig { batch_max_records: 5, batches_in_flight: 1, ..EngineConfig::default() };
    let source = Source(Mutex::new(Box::new(move || {
        Ok(Plan {
            settings: settings(None),
            engine: engine.clone(),
            connections: vec![Planned { connection: file_connection("slow", &csv, 5), schedule: every("1s", "slow") }],
            store_fingerprint: 1,
        })
    })));
    let s = start(store.clone(), source).await;
    let base = s.base.clone();
    let view = || async {
        let v: serde_json::Value =
            reqwest::get(format!("{base}/api/connections/slow")).await.expect("c").json().await.expect("j");
        v
    };
    wait_for("two finished runs and a skipped tick", || async {
        let v = view().await;
        runs_of(&*store, "slow").await.len() >= 2 && v["ticks_skipped"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    s.service.shutdown();
    let totals = s.service.totals();
    s.task.await.expect("join").expect("serve");
    assert!(totals.ticks_skipped >= 1, "{totals:?}");
    assert_eq!(
        totals.ticks_due,
        totals.scheduled_runs_started + totals.ticks_skipped,
        "every due tick ran or was skipped: {totals:?}"
    );
    let totals_runs = runs_of(&*store, "slow").await;
    assert!(
        totals_runs.iter().all(|r| r.status == RunStatus::Success),
        "{:?}",
        totals_runs.iter().map(|r| &r.errors).collect::<Vec<_>>()
    );
    assert_no_overlap(&totals_runs);
    let ids: BTreeSet<&str> = totals_runs.iter().map(|r| r.sync_id.as_str()).collect();
    assert_eq!(ids.len(), totals_runs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_with_its_error_shown_and_a_good_one_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let csv = write_csv(dir.path(), "d.csv", 3, 0);
    // 0: one connection; 1: a broken file; 2: two connections; 3: another store.
    let mode = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let m = mode.clone();
    let source = Source(Mutex::new(Box::new(move || {
        let mode = m.load(std::sync::atomic::Ordering::SeqCst);
        if mode == 1 {
            return Err("corral.toml: config field `connection[1].adapter`: missing".into());
        }
        let mut connections = vec![Planned { connection: file_connection("a", &csv, 100), schedule: None }];
        if mode >= 2 {
            connections.push(Planned { connection: file_connection("b", &csv, 100), schedule: every("1h", "b") });
        }
        Ok(Plan {
            settings: settings(None),
            engine: EngineConfig::default(),
            connections,
            store_fingerprint: if mode == 3 { 2 } else { 1 },
        })
    })));
    let s = start(store, source).await;
    let http = reqwest::Client::new();
    let names = || async {
        let v: serde_json::Value =
            http.get(format!("{}/api/connections", s.base)).send().await.expect("c").json().await.expect("j");
        v["connections"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names().await, ["a"]);
    mode.store(1, std::sync::atomic::Ordering::SeqCst);
    let r = http.post(format!("{}/api/reload", s.base)).send().await.expect("reload");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("connection[1].adapter")), "{body}");
    let status: serde_json::Value =
        http.get(format!("{}/api/status", s.base)).send().await.expect("s").json().await.expect("j");
    assert!(status["config"]["error"].as_str().is_some_and(|e| e.contains("connection[1].adapter")), "{status}");
    assert_eq!(names().await, ["a"], "the configuration in force is kept");
    mode.store(3, std::sync::atomic::Ordering::SeqCst);
    let r = http.post(format!("{}/api/reload", s.base)).send().await.expect("reload");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "another store needs a restart");
    mode.store(2, std::sync::atomic::Ordering::SeqCst);
    let r = http.post(format!("{}/api/reload", s.base)).send().await.expect("reload");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(names().await, ["a", "b"]);
    let status: serde_json::Value =
        http.get(format!("{}/api/status", s.base)).send().await.expect("s").json().await.expect("j");
    assert!(status["config"]["error"].is_null(), "{status}");
    let b: serde_json::Value =
        http.get(format!("{}/api/connections/b", s.base)).send().await.expect("b").json().await.expect("j");
    assert_eq!(b["schedule"], "every 1h");
    assert!(b["next_run_at"].is_string(), "{b}");
    s.stop().await;
}
