//! The Tenable adapter against its simulator: export quirks (chunks out of
//! order and while PROCESSING, an expired chunk, 409s, cancelled and errored
//! jobs), references between the streams, and the incremental `since`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use corral_adapter_tenable::{ASSETS, SOFTWARE, Tenable, VULNERABILITIES, assets_stream};
use corral_core::testing::MemoryStore;
use corral_core::{
    Adapter, AssetKind, Connection, Engine, EngineConfig, FetchContext, PageSink, RunStatus, RunSummary, Store,
};
use corral_sim::data::tenable::{VulnFilter, generation_time};
use corral_sim::{Behavior, Faults, SimConfig, SimHandle};
use serde_json::{Value, json};

const SEED: u64 = 62;

fn adapter(sim: &SimHandle, extra: Value) -> Arc<Tenable> {
    Arc::new(Tenable::from_config("tenable", common::config(sim, extra)).expect("valid config"))
}

async fn sync(store: &Arc<MemoryStore>, adapter: Arc<Tenable>, streams: &[&str]) -> RunSummary {
    let engine = Engine::new(EngineConfig::default(), store.clone() as Arc<dyn Store>).expect("engine");
    let conn = Connection {
        name: "tenable".into(),
        adapter,
        streams: streams.iter().map(|s| s.to_string()).collect(),
        stale: Default::default(),
    };
    tokio::time::timeout(Duration::from_secs(60), engine.sync(conn)).await.expect("the sync ends within a minute")
}

/// Live (not stale) source ids per stream.
fn live(store: &MemoryStore) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in store.all_assets().into_iter().filter(|a| a.stale_since.is_none()) {
        out.entry(a.stream.clone()).or_default().insert(a.source_id.clone());
    }
    out
}

fn exports_created(sim: &SimHandle, endpoint: &str) -> usize {
    sim.counters.events().iter().filter(|e| e.endpoint == endpoint && e.status == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_fetched_out_of_order_while_the_job_is_still_processing() {
    let behavior = Behavior { export_polls: 6, ..Behavior::default() };
    let sim = common::start(SimConfig::new(SEED, 1_000).behavior(behavior)).await;
    let a = adapter(&sim, json!({"chunk_concurrency": 1}));
    let (sink, mut rx) = PageSink::channel(2);
    let ctx = FetchContext::for_test("tenable", assets_stream(), sink);
    let fetch = tokio::spawn({
        let a = a.clone();
        async move { a.fetch(ctx).await }
    });
    let mut order = Vec::new();
    while let Some(page) = rx.recv().await {
        order.push(page.locator.clone());
        let out = a.normalize(&page);
        assert!(out.page_error.is_none() && out.rejects.is_empty());
        assert_eq!(out.assets.len(), 100, "{} holds one chunk", page.locator);
    }
    fetch.await.expect("task").expect("the export completes");
    let chunks: Vec<u64> =
        order.iter().map(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("chunk id")).collect();
    let mut sorted = chunks.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=10).collect::<Vec<u64>>(), "every chunk once");
    assert_ne!(chunks, sorted, "chunks come in the order Tenable lists them, not by id");
    let events = sim.counters.events();
    let first_chunk = events.iter().find(|e| e.endpoint == "tenable.assets_chunk").map(|e| e.arrived);
    let last_status = events.iter().filter(|e| e.endpoint == "tenable.assets_status").map(|e| e.arrived).max();
    assert!(first_chunk < last_status, "a chunk was downloaded before the job was FINISHED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_stores_all_three_streams_and_every_reference_resolves() {
    let sim = common::start(SimConfig::new(SEED, 300)).await;
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, json!({})), &[]).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(live(&store), common::dataset(&sim.config, 0));
    let devices: BTreeSet<String> =
        store.all_assets().iter().filter(|a| a.kind == AssetKind::Device).map(|a| a.source_id.clone()).collect();
    let (mut vulns, mut software) = (0, 0);
    for stored in store.all_assets() {
        let asset = stored.asset().expect("a stored asset reads back");
        for (_, r) in asset.references() {
            assert_eq!(r.kind, AssetKind::Device);
            assert_eq!(r.connection_or("tenable"), "tenable");
            assert!(devices.contains(&r.source_id), "{} points at a device the run did not store", stored.source_id);
        }
        match stored.kind {
            AssetKind::Vulnerability => vulns += 1,
            AssetKind::Software => software += 1,
            _ => {}
        }
    }
    assert!(vulns > 300 && software > 300, "{vulns} findings, {software} software records");
    for st in s.streams.values() {
        assert!(st.fetch_completed && st.stale_handled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_chunk_restarts_the_export_once_and_a_second_expiry_fails_the_stream() {
    // Export 1 (the first run) loses chunk 2: the second export completes it.
    let faults = Faults { expired_chunks: vec![(1, 2), (3, 1), (4, 3)], ..Faults::default() };
    let sim = common::start(SimConfig::new(SEED, 200).faults(faults)).await;
    let store = Arc::new(MemoryStore::new());
    let a = adapter(&sim, json!({}));
    let s = sync(&store, a.clone(), &[VULNERABILITIES]).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(sim.counters.snapshot().fault("chunk_expired"), 1);
    assert_eq!(exports_created(&sim, "tenable.vulns_export"), 2, "the export ran again, once");
    let want = common::dataset(&sim.config, 0);
    assert_eq!(live(&store).get(VULNERABILITIES), want.get(VULNERABILITIES));

    // Exports 3 and 4 both lose a chunk: the stream fails, nothing is marked stale.
    let s = sync(&store, a, &[VULNERABILITIES]).await;
    assert_eq!(s.status, RunStatus::Failed, "{:?}", s.errors);
    let st = &s.streams[VULNERABILITIES];
    let err = st.fetch_error.as_deref().expect("the stream failed");
    assert!(err.contains("expired") && err.contains("second export"), "{err}");
    assert!(!st.stale_handled);
    assert_eq!(store.stale_count(), 0);
    assert_eq!(exports_created(&sim, "tenable.vulns_export"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_is_waited_out_and_then_the_export_runs() {
    let sim = common::start(SimConfig::new(SEED, 200)).await;
    // Another tool holds both vulnerability export slots for a while.
    let other = corral_http::HttpClient::new(
        corral_http::HttpConfig::new(sim.base_url.clone()).with_auth(corral_http::Auth::tenable(
            &sim.config.credentials.client_id.clone().into(),
            &sim.config.credentials.client_secret.clone().into(),
        )),
        Arc::default(),
    )
    .expect("client");
    let mut held = Vec::new();
    for n in [60, 70] {
        let r = other.post_json("/vulns/export", &json!({"num_assets": n})).send_bytes().await.expect("export");
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        held.push(v["export_uuid"].as_str().expect("uuid").to_string());
    }
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        for job in held {
            other.post(&format!("/vulns/export/{job}/cancel")).send_bytes().await.expect("cancel");
        }
    });
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, json!({})), &[VULNERABILITIES]).await;
    release.await.expect("released");
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    let c = sim.counters.snapshot();
    assert!(c.fault("export_too_many") >= 1, "the export was refused first");
    assert_eq!(live(&store).get(VULNERABILITIES), common::dataset(&sim.config, 0).get(VULNERABILITIES));

    // Refused for longer than conflict_wait_secs: the stream fails, saying why.
    let _blocker = other_export(&sim, 80).await;
    let _blocker2 = other_export(&sim, 90).await;
    let s = sync(&store, adapter(&sim, json!({"conflict_wait_secs": 1})), &[VULNERABILITIES]).await;
    assert_eq!(s.status, RunStatus::Failed);
    let err = s.streams[VULNERABILITIES].fetch_error.clone().unwrap_or_default();
    assert!(err.contains("409") && err.contains("conflict_wait_secs"), "{err}");
    assert_eq!(store.stale_count(), 0);
}

async fn other_export(sim: &SimHandle, num_assets: u64) -> String {
    let c = &sim.config.credentials;
    let client = corral_http::HttpClient::new(
        corral_http::HttpConfig::new(sim.base_url.clone())
            .with_auth(corral_http::Auth::tenable(&c.client_id.clone().into(), &c.client_secret.clone().into())),
        Arc::default(),
    )
    .expect("client");
    let r = client.post_json("/vulns/export", &json!({"num_assets": num_assets})).send_bytes().await.expect("export");
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    v["export_uuid"].as_str().expect("uuid").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_errored_job_fails_its_stream_and_marks_nothing_stale() {
    // Exports 1-3: a clean run of every stream. Export 4 is cancelled halfway, export 5 errors.
    let faults = Faults { cancel_exports: vec![4], error_exports: vec![5], ..Faults::default() };
    let behavior = Behavior { export_polls: 5, ..Behavior::default() };
    let sim = common::start(SimConfig::new(SEED, 400).faults(faults).behavior(behavior)).await;
    let store = Arc::new(MemoryStore::new());
    let a = adapter(&sim, json!({}));
    for stream in [ASSETS, SOFTWARE, VULNERABILITIES] {
        let s = sync(&store, a.clone(), &[stream]).await;
        assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    }
    let before = live(&store);
    for end in ["CANCELLED", "ERROR"] {
        let s = sync(&store, a.clone(), &[VULNERABILITIES]).await;
        assert_eq!(s.status, RunStatus::Failed, "{end}: {:?}", s.errors);
        let st = &s.streams[VULNERABILITIES];
        let err = st.fetch_error.as_deref().expect("the stream failed");
        assert!(err.contains(end) && err.contains("/vulns/export") && err.contains("export "), "{err}");
        assert!(!st.stale_handled);
        assert_eq!(store.stale_count(), 0, "{end}: a partial export marks nothing stale");
        assert_eq!(live(&store), before);
        assert!(store.checkpoint("tenable", VULNERABILITIES).is_some_and(|c| c.0["since"].is_i64()));
    }
    let c = sim.counters.snapshot();
    assert_eq!((c.fault("export_cancelled"), c.fault("export_error")), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_fetch_only_changed_findings_and_a_full_resync_comes_back() {
    let sim = common::start(SimConfig::new(SEED, 400)).await;
    let store = Arc::new(MemoryStore::new());
    let a = adapter(&sim, json!({"full_resync_every": 2}));
    let everything = common::data(&sim.config, 0).finding_count(&VulnFilter::all());

    // Run 1: full, stale-handled; the watermark is the export's creation time.
    let s = sync(&store, a.clone(), &[]).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(s.streams[VULNERABILITIES].records_fetched, everything);
    assert!(s.streams[VULNERABILITIES].stale_handled);
    let cp = store.checkpoint("tenable", VULNERABILITIES).expect("a watermark after a complete export");
    assert_eq!(cp.0, json!({"since": generation_time(0), "incremental_runs": 0}));
    assert!(store.checkpoint("tenable", ASSETS).is_none_or(|c| c.0.is_null()), "assets keep no checkpoint");

    // Run 2, a day later: only the findings that changed, no stale handling.
    sim.set_generation(1);
    let s = sync(&store, a.clone(), &[VULNERABILITIES]).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    let changed = common::data(&sim.config, 1)
        .finding_count(&VulnFilter { since: Some(generation_time(0)), ..VulnFilter::all() });
    assert!(changed > 0 && changed < everything / 4, "{changed} of {everything}");
    let st = &s.streams[VULNERABILITIES];
    assert_eq!(st.records_fetched, changed);
    assert!(!st.stale_handled, "an incremental run did not see every finding");
    assert_eq!(s.inserted + s.updated, changed, "every changed finding was stored (new ids: replaced assets)");
    assert_eq!(s.unchanged, 0);
    let states: BTreeMap<String, String> = store
        .all_assets()
        .into_iter()
        .filter(|a| a.kind == AssetKind::Vulnerability)
        .map(|a| (a.source_id.clone(), a.fields["state"].as_str().unwrap_or_default().to_string()))
        .collect();
    let d1 = common::data(&sim.config, 1);
    for (asset, slot) in (0..400u64).flat_map(|a| (0..d1.findings_on(a)).map(move |s| (a, s))) {
        let want = d1.facts(asset, slot).state.as_str().to_ascii_lowercase();
        let id = d1.finding_id(asset, slot);
        if let Some(got) = states.get(&id) {
            assert_eq!(got, &want, "finding {id} is stored in its current state");
        }
    }
    let cp = store.checkpoint("tenable", VULNERABILITIES).expect("watermark");
    assert_eq!(cp.0, json!({"since": generation_time(1), "incremental_runs": 1}));

    // Run 3: the full resync: every finding, stale handling for the replaced ones.
    sim.set_generation(2);
    let s = sync(&store, a, &[VULNERABILITIES]).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    let all2 = common::data(&sim.config, 2).finding_count(&VulnFilter::all());
    assert_eq!(s.streams[VULNERABILITIES].records_fetched, all2);
    assert!(s.streams[VULNERABILITIES].stale_handled);
    assert_eq!(live(&store).get(VULNERABILITIES), common::dataset(&sim.config, 2).get(VULNERABILITIES));
    let cp = store.checkpoint("tenable", VULNERABILITIES).expect("watermark");
    assert_eq!(cp.0, json!({"since": generation_time(2), "incremental_runs": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_cancels_its_export_so_the_next_run_is_not_refused() {
    let sim = common::start(SimConfig::new(SEED, 1_000)).await;
    let a = adapter(&sim, json!({}));
    // Nobody drains the pipeline: the fetch blocks on its first chunk, then is dropped.
    let (sink, rx) = PageSink::channel(1);
    let ctx = FetchContext::for_test("tenable", assets_stream(), sink);
    let fetch = tokio::spawn({
        let a = a.clone();
        async move { a.fetch(ctx).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while exports_created(&sim, "tenable.assets_chunk") < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fetch.abort();
    let _ = fetch.await;
    drop(rx);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while exports_created(&sim, "tenable.cancel") == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(exports_created(&sim, "tenable.cancel"), 1, "the abandoned export was cancelled");
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, json!({"conflict_wait_secs": 0})), &[ASSETS]).await;
    assert_eq!(s.status, RunStatus::Success, "no 409 duplicate: {:?}", s.errors);
}
