//! The Qualys adapter against its simulator: truncation continued to the
//! exact dataset, 409s waited out as announced, the concurrency limit kept,
//! bad credentials, malformed XML.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use corral_adapter_qualys::{DETECTIONS, HOSTS, Qualys};
use corral_core::testing::MemoryStore;
use corral_core::{Adapter, AssetKind, CheckOutcome, Connection, Engine, EngineConfig, RunStatus, RunSummary, Store};
use corral_sim::{Behavior, SimConfig, SimHandle};
use serde_json::{Value, json};

const SEED: u64 = 72;

fn adapter(sim: &SimHandle, extra: Value) -> Arc<Qualys> {
    Arc::new(Qualys::from_config("qualys", common::config(sim, extra)).expect("valid config"))
}

async fn sync(store: &Arc<MemoryStore>, adapter: Arc<Qualys>) -> RunSummary {
    let engine = Engine::new(EngineConfig::default(), store.clone() as Arc<dyn Store>).expect("engine");
    let conn = Connection { name: "qualys".into(), adapter, streams: Vec::new(), stale: Default::default() };
    tokio::time::timeout(Duration::from_secs(90), engine.sync(conn)).await.expect("the sync ends in time")
}

/// Live (not stale) source ids per stream.
fn live(store: &MemoryStore) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in store.all_assets().into_iter().filter(|a| a.stale_since.is_none()) {
        out.entry(a.stream.clone()).or_default().insert(a.source_id.clone());
    }
    out
}

fn answers(sim: &SimHandle, endpoint: &str) -> usize {
    sim.counters.events().iter().filter(|e| e.endpoint == endpoint && e.status == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_listings_are_continued_to_the_exact_dataset_with_nothing_twice() {
    let sim = common::start(SimConfig::new(SEED, 300)).await;
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, json!({"truncation_limit": 25, "hosts_per_page": 7}))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    let expected = common::dataset(&sim.config, 0);
    assert_eq!(live(&store), expected, "every host and detection key, nothing else");
    // Nothing fetched twice: each stream normalized exactly its dataset.
    for (stream, ids) in &expected {
        let st = &s.streams[stream];
        assert_eq!(st.assets_normalized, ids.len() as u64, "{stream}: a record came twice or not at all");
        assert_eq!(st.records_fetched, ids.len() as u64, "{stream}");
        assert!(st.fetch_completed && st.stale_handled, "{stream}");
    }
    assert_eq!(s.records_rejected + s.pages_rejected, 0);
    // 300 hosts in answers of 25: twelve host-list answers, each continued
    // through its WARNING URL; the detection listing as many or fewer.
    assert_eq!(answers(&sim, "qualys.host"), 12);
    let detection_answers = answers(&sim, "qualys.detection");
    assert!((10..=12).contains(&detection_answers), "{detection_answers} detection answers");
    assert!(expected[DETECTIONS].len() > 600, "a real detection dataset: {}", expected[DETECTIONS].len());
    // Every detection points at a host this run stored.
    let hosts = &expected[HOSTS];
    for stored in store.all_assets().iter().filter(|a| a.kind == AssetKind::Vulnerability) {
        let asset = stored.asset().expect("reads back");
        let refs = asset.references();
        assert_eq!(refs.len(), 1, "{}", stored.source_id);
        let (_, r) = &refs[0];
        assert_eq!((r.kind, r.connection_or("qualys")), (AssetKind::Device, "qualys"));
        assert!(hosts.contains(&r.source_id), "{} points at an unknown host", stored.source_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_over_the_rate_limit_is_waited_out_for_the_announced_seconds() {
    // 30 calls per 2 s, all spent by another client of the subscription: the
    // first calls are refused with 409 (code 1965) and X-RateLimit-ToWait-Sec.
    let sim = common::start(SimConfig::new(SEED, 200).rate_limit(30, Duration::from_secs(2))).await;
    sim.spend(30);
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, json!({}))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(live(&store), common::dataset(&sim.config, 0));
    let refused: Vec<_> = sim.counters.events().into_iter().filter(|e| e.status == 409).collect();
    let faults = sim.counters.snapshot();
    assert!(faults.fault("rate_limit_409") >= 1, "the simulator refused nothing: {faults:?}");
    assert_eq!(faults.fault("rate_limit_409"), refused.len() as u64);
    assert_eq!(faults.fault("concurrency_409"), 0, "the concurrency limit was kept");
    // Each 409 was counted and retried, and the waits the client took add up
    // to at least what the refusals announced.
    assert_eq!(s.requests.rate_limited, refused.len() as u64);
    assert!(s.requests.retries >= refused.len() as u64);
    let announced: Duration = refused.iter().filter_map(|e| e.retry_after).sum();
    assert!(announced >= Duration::from_secs(1), "the 409s announced waits: {refused:?}");
    assert!(
        s.requests.retry_wait_ms >= announced.as_millis() as u64,
        "waited {} ms for 409s announcing {} ms",
        s.requests.retry_wait_ms,
        announced.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_qualys_announces_is_kept_without_a_refusal() {
    for limit in [1usize, 2] {
        let behavior = Behavior { qualys_concurrency: limit, ..Behavior::default() };
        let sim = common::start(SimConfig::new(SEED, 200).behavior(behavior).latency_ms(20)).await;
        let store = Arc::new(MemoryStore::new());
        let a = adapter(&sim, json!({"concurrency": 4}));
        let s = sync(&store, a.clone()).await;
        assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
        assert_eq!(live(&store), common::dataset(&sim.config, 0));
        let c = sim.counters.snapshot();
        assert_eq!(c.fault("concurrency_409"), 0, "limit {limit}: refused for concurrency");
        assert!(c.max_in_flight <= limit as u64, "limit {limit}: {} calls at once", c.max_in_flight);
        assert_eq!(a.concurrency_now(), limit);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_the_run_clearly_after_one_refusal_per_stream() {
    let sim = common::start(SimConfig::new(SEED, 100)).await;
    let a = Arc::new(
        Qualys::from_config("qualys", common::config(&sim, json!({"password": "wrong-hunter2"}))).expect("valid"),
    );
    match a.check().await {
        CheckOutcome::AuthError { endpoint, status, detail } => {
            assert_eq!(status, Some(401));
            assert!(endpoint.contains("/api/2.0/fo/asset/host/"), "{endpoint}");
            assert!(!detail.contains("hunter2"));
        }
        other => panic!("expected an AuthError, got {other:?}"),
    }
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, a).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(store.asset_count(), 0);
    for stream in [HOSTS, DETECTIONS] {
        let err = s.streams[stream].fetch_error.as_deref().unwrap_or_default();
        assert!(err.contains("authentication failed") && err.contains("401"), "{stream}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    // One refused call per stream (and the check's): never retried.
    assert_eq!(sim.counters.snapshot().status(401), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hosts_are_rejects_naming_the_record_and_the_run_goes_on_partial() {
    // Answers 1 and 2 of each listing (hosts 40-79 and 80-119 of the host
    // list) start with a broken host: a bare `&`, then a host cut short.
    let sim = common::start(SimConfig::new(SEED, 200).malformed_pages([1, 2])).await;
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, json!({}))).await;
    assert_eq!(s.status, RunStatus::Partial, "{:?}", s.errors);
    assert_eq!(sim.counters.snapshot().fault("malformed_page"), 4);
    let data = common::data(&sim.config, 0);
    let broken: BTreeSet<String> = [40u64, 80].iter().map(|i| data.host_id(*i).to_string()).collect();

    // Hosts: each broken host is one reject keyed by its ID, every other host stored.
    let expected = common::dataset(&sim.config, 0);
    let hosts = &s.streams[HOSTS];
    assert_eq!(hosts.rejected, 2);
    assert!(hosts.page_errors.is_empty());
    let stored = live(&store);
    let want: BTreeSet<String> = expected[HOSTS].difference(&broken).cloned().collect();
    assert_eq!(stored[HOSTS], want);

    // Detections: the pages with a broken host fail (their detections are
    // unknown), the stream is not stale-handled, the other hosts' detections load.
    let det = &s.streams[DETECTIONS];
    assert_eq!(det.pages_rejected, 2, "{:?}", det.page_errors);
    assert!(det.fetch_completed && !det.stale_handled);
    assert!(stored[DETECTIONS].is_subset(&expected[DETECTIONS]));
    assert!(stored[DETECTIONS].len() + 40 > expected[DETECTIONS].len(), "only the broken hosts' detections lack");

    let rejects = store.rejects(&s.sync_id, 100).await.expect("rejects");
    let host_rejects: Vec<_> = rejects.iter().filter(|r| r.stream == HOSTS).collect();
    assert_eq!(host_rejects.len(), 2);
    for r in &host_rejects {
        assert_eq!((r.connection.as_str(), r.reject.reason.as_str()), ("qualys", "malformed_xml"));
        assert!(broken.iter().any(|id| r.reject.record.starts_with(&format!("host {id} ("))), "{}", r.reject.record);
        assert!(r.reject.record.contains("hosts answer"), "{}", r.reject.record);
    }
    let page_rejects: Vec<_> = rejects.iter().filter(|r| r.stream == DETECTIONS).collect();
    assert_eq!(page_rejects.len(), 2);
    assert!(page_rejects.iter().all(|r| r.connection == "qualys" && r.reject.detail.contains("malformed host")));

    // The next clean run stores everything and marks nothing stale.
    let clean = common::start(SimConfig::new(SEED, 200)).await;
    let s = sync(&store, adapter(&clean, json!({}))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(store.stale_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_cut_into_pages_that_are_slices_of_it_not_copies() {
    let sim = common::start(SimConfig::new(SEED, 500)).await;
    let a = adapter(&sim, json!({"truncation_limit": 1000, "hosts_per_page": 50, "show_results": true}));
    let (sink, mut rx) = corral_core::PageSink::channel(64);
    let ctx = corral_core::FetchContext::for_test("qualys", corral_adapter_qualys::detections_stream(), sink);
    let fetch = tokio::spawn({
        let a = a.clone();
        async move { a.fetch(ctx).await }
    });
    let mut pages = Vec::new();
    while let Some(page) = rx.recv().await {
        pages.push(page);
    }
    fetch.await.expect("task").expect("the listing completes");
    assert_eq!(answers(&sim, "qualys.detection"), 1, "one answer");
    assert!(pages.len() >= 8, "{} pages", pages.len());
    // Consecutive slices of one buffer: each page starts where the one
    // before it ended, give or take the whitespace between two hosts.
    for w in pages.windows(2) {
        let end = w[0].body.as_ptr() as usize + w[0].body.len();
        let next = w[1].body.as_ptr() as usize;
        assert!(next >= end && next - end < 64, "page {} was copied", w[1].locator);
    }
    let mut keys = BTreeSet::new();
    for p in &pages {
        let out = a.normalize(p);
        assert!(out.page_error.is_none() && out.rejects.is_empty(), "{}", p.locator);
        keys.extend(out.assets.iter().map(|x| x.source_id().to_string()));
    }
    assert_eq!(keys, common::dataset(&sim.config, 0)[DETECTIONS]);
}
