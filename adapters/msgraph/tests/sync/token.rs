//! Tokens that stop working mid-run are replaced and the sync still succeeds.

use std::time::Duration;

use corral_core::{AssetKind, RunStatus};
use corral_sim::{Faults, SimConfig};
use serde_json::json;

use crate::common::*;

const SIZE: usize = 300;

async fn run(faults: Faults, latency_ms: u64) -> (corral_core::RunSummary, corral_sim::CountersSnapshot) {
    let sim = start(SimConfig::new(5, SIZE).latency_ms(latency_ms).faults(faults)).await;
    let (summary, store) = sync(adapter(&sim, json!({"page_size": 20})), &[]).await;
    let devices = ids_of(&corral_sim::msgraph_devices(5, SIZE, 0), 0..SIZE);
    assert_eq!(stored_ids(&store, AssetKind::Device), devices);
    assert_eq!(stored_ids(&store, AssetKind::User).len(), SIZE);
    let counters = sim.counters.snapshot();
    sim.shutdown().await;
    (summary, counters)
}

/// The token dies server-side while `expires_in` still announces an hour:
/// the client only learns from a 401, refreshes once and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_revoked_mid_run_is_refreshed_after_a_401() {
    let faults = Faults { token_ttl: Some(Duration::from_millis(150)), token_ttl_hidden: true, ..Faults::default() };
    let (summary, c) = run(faults, 25).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    assert!(c.fault("token_expired") >= 1, "{c:?}");
    assert!(c.tokens_issued >= 2, "{c:?}");
    assert!(summary.requests.by_status.get(&401).copied().unwrap_or(0) >= 1, "{:?}", summary.requests);
    // 15 pages per stream, each with at most one rejected attempt.
    assert!(c.status(401) <= 30, "{c:?}");
}

/// The token's announced lifetime (2 s) is much shorter than the run (two
/// streams of 30 pages at 100 ms each): the client replaces it ahead of
/// expiry, so the vendor never has to refuse one. Without early refresh the
/// requests after the second second would each meet a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_ahead_of_expiry() {
    let faults = Faults { token_ttl: Some(Duration::from_secs(2)), ..Faults::default() };
    let sim = start(SimConfig::new(5, SIZE).latency_ms(100).faults(faults)).await;
    let (summary, store) = sync(adapter(&sim, json!({"page_size": 10})), &[]).await;
    let c = sim.counters.snapshot();
    sim.shutdown().await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    let devices = ids_of(&corral_sim::msgraph_devices(5, SIZE, 0), 0..SIZE);
    assert_eq!(stored_ids(&store, AssetKind::Device), devices);
    assert_eq!(stored_ids(&store, AssetKind::User).len(), SIZE);
    // 60 data requests of at least 100 ms each, two at a time: longer than a token lives.
    assert_eq!(c.endpoint("graph.users") + c.endpoint("graph.devices"), 60, "{c:?}");
    assert!(c.tokens_issued >= 2, "the token was replaced: {c:?}");
    assert_eq!(c.fault("token_expired"), 0, "no request carried an expired token: {c:?}");
    assert_eq!(c.status(401), 0, "{c:?}");
    assert_eq!(summary.requests.by_status.get(&401), None, "{:?}", summary.requests);
}
