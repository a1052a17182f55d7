//! Server errors are retried to success; malformed pages are rejected while the
//! rest of the stream loads; an unreadable page without a next link is fetched
//! again and, if it stays unreadable, fails the stream instead of ending it.

use std::sync::Arc;

use corral_core::testing::MemoryStore;
use corral_core::{AssetKind, RunStatus};
use corral_sim::{Faults, SimConfig, Truncation};
use serde_json::json;

use crate::common::*;

/// 30 % of data requests answer 500/502/503. The streams are synced one after
/// the other so the simulator's seeded fault sequence is the same every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_to_success() {
    // A seed whose (deterministic) fault sequence costs little backoff time.
    const SEED: u64 = 3;
    const SIZE: usize = 200;
    let sim = start(SimConfig::new(SEED, SIZE).error_rate(0.3)).await;
    let adapter = adapter(&sim, json!({"page_size": 25}));
    let store = Arc::new(MemoryStore::new());
    let mut retries = 0;
    for stream in ["users", "managed_devices"] {
        let summary = sync_into(store.clone(), adapter.clone(), &[stream]).await;
        assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
        assert_eq!(summary.streams[stream].pages, 8);
        retries += summary.requests.retries;
    }
    assert_eq!(stored_ids(&store, AssetKind::User), ids_of(&corral_sim::msgraph_users(SEED, SIZE, 0), 0..SIZE));
    assert_eq!(stored_ids(&store, AssetKind::Device), ids_of(&corral_sim::msgraph_devices(SEED, SIZE, 0), 0..SIZE));
    let c = sim.counters.snapshot();
    assert!(c.fault("5xx") >= 3, "{c:?}");
    assert_eq!(retries, c.fault("5xx"), "every 5xx retried once more: {c:?}");
    assert_eq!(c.endpoint("graph.users") + c.endpoint("graph.devices"), 16 + c.fault("5xx"));
    sim.shutdown().await;
}

/// Page 1 of each listing has garbage spliced into its middle (its nextLink,
/// near the start, still reads): that page becomes one `malformed_page`
/// reject, every other page loads, and stale handling is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_page_is_rejected_and_the_other_pages_load() {
    const SEED: u64 = 4;
    const SIZE: usize = 100;
    let sim = start(SimConfig::new(SEED, SIZE).malformed_pages([1])).await;
    let (summary, store) = sync(adapter(&sim, json!({"page_size": 20})), &[]).await;
    assert_eq!(summary.status, RunStatus::Partial, "{}", show(&summary));
    assert_eq!(summary.rejects.get("malformed_page").map(|g| g.count), Some(2), "{}", show(&summary));
    for (name, s) in &summary.streams {
        assert_eq!(s.pages, 5, "{name}");
        assert!(s.fetch_completed, "{name}: the stream was walked to its end");
        assert_eq!(s.page_errors.len(), 1, "{name}");
        assert!(s.page_errors[0].contains(&format!("{name} page 1 (")), "{:?}", s.page_errors);
        assert!(!s.stale_handled, "{name}: a stream with an undecodable page skips stale handling");
    }
    let others = (0..20).chain(40..SIZE);
    assert_eq!(stored_ids(&store, AssetKind::User), ids_of(&corral_sim::msgraph_users(SEED, SIZE, 0), others.clone()));
    assert_eq!(stored_ids(&store, AssetKind::Device), ids_of(&corral_sim::msgraph_devices(SEED, SIZE, 0), others));
    assert_eq!(sim.counters.snapshot().fault("malformed_page"), 2);
    sim.shutdown().await;
}

/// Page 0 is an HTML error page served with 200: no nextLink in it. Served
/// once, the adapter fetches it again and the sync succeeds completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_page_without_next_link_is_fetched_again() {
    let faults = Faults { malformed_pages: vec![0], malformed_pages_once: true, ..Faults::default() };
    let sim = start(SimConfig::new(8, 60).faults(faults)).await;
    let (summary, store) = sync(adapter(&sim, json!({"page_size": 20})), &["users"]).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    assert_eq!(store.asset_count(), 60);
    assert_eq!(summary.requests.retries, 1);
    assert_eq!(sim.counters.snapshot().endpoint("graph.users"), 3 + 1);
    sim.shutdown().await;
}

/// The same page stays HTML: after a few attempts the adapter passes it on
/// (one malformed_page reject) and fails the stream, since it cannot know
/// whether more pages follow; the run is not a success and nothing goes stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistently_unreadable_last_looking_page_fails_the_stream() {
    let sim = start(SimConfig::new(8, 60).malformed_pages([0])).await;
    let (summary, store) = sync(adapter(&sim, json!({"page_size": 20})), &["users"]).await;
    assert_ne!(summary.status, RunStatus::Success, "{}", show(&summary));
    let s = &summary.streams["users"];
    assert!(!s.fetch_completed && !s.stale_handled, "{s:?}");
    let e = s.fetch_error.as_deref().unwrap_or_default();
    assert!(e.contains("@odata.nextLink") && e.contains("incomplete"), "{e}");
    assert_eq!(summary.rejects.get("malformed_page").map(|g| g.count), Some(1));
    assert_eq!(store.asset_count(), 0);
    assert_eq!(
        sim.counters.snapshot().endpoint("graph.users"),
        u64::from(corral_adapter_msgraph::UNREADABLE_PAGE_ATTEMPTS)
    );
    sim.shutdown().await;
}

/// Pages whose connection is cut mid-body are fetched again: every record
/// loads, nothing is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cut_mid_body_are_retried_not_rejected() {
    const SEED: u64 = 9;
    const SIZE: usize = 100;
    let faults = Faults { truncation: Truncation::Connection, truncate_requests: vec![1, 4, 5], ..Faults::default() };
    let sim = start(SimConfig::new(SEED, SIZE).faults(faults)).await;
    let (summary, store) = sync(adapter(&sim, json!({"page_size": 20})), &[]).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    assert_eq!(summary.records_rejected, 0, "{}", show(&summary));
    assert_eq!(stored_ids(&store, AssetKind::User), ids_of(&corral_sim::msgraph_users(SEED, SIZE, 0), 0..SIZE));
    assert_eq!(stored_ids(&store, AssetKind::Device), ids_of(&corral_sim::msgraph_devices(SEED, SIZE, 0), 0..SIZE));
    let c = sim.counters.snapshot();
    assert_eq!(c.fault("truncate"), 3, "{c:?}");
    assert_eq!(summary.requests.transport_errors, 3, "{:?}", summary.requests);
    assert_eq!(c.endpoint("graph.users") + c.endpoint("graph.devices"), 10 + 3);
    sim.shutdown().await;
}
