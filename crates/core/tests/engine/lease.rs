//! One run per connection at a time: the lease in the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corral_core::testing::MemoryStore;
use corral_core::{Engine, EngineConfig, RunStatus, Store};

use super::synthetic::{Synthetic, conn, conn_shared, small_config};

/// A slow connection whose fetches the test can count: (running now, most at once).
fn slow(fetching: &Arc<(AtomicU64, AtomicU64)>) -> Synthetic {
    Synthetic { page_delay: Duration::from_millis(10), fetching: fetching.clone(), ..Synthetic::new(40, 10) }
}

/// Wait until the store holds a lease on `connection`.
async fn leased(store: &MemoryStore, connection: &str) {
    for _ in 0..2000 {
        if store.lease(connection).await.expect("lease").is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no run took the lease of {connection}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_a_running_connection_is_skipped_and_marks_nothing() {
    let store = Arc::new(MemoryStore::new());
    // Two engines on one store: two processes (or machines) syncing the same connection.
    let first = Engine::new(small_config(), store.clone()).expect("engine");
    let second = Engine::new(small_config(), store.clone()).expect("engine");
    let fetching: Arc<(AtomicU64, AtomicU64)> = Arc::default();
    assert_eq!(first.sync(conn("a", Synthetic::new(40, 10))).await.status, RunStatus::Success);

    let running = tokio::spawn({
        let c = conn("a", slow(&fetching));
        async move { first.sync(c).await }
    });
    leased(&store, "a").await;
    let skipped = second.sync(conn("a", slow(&fetching))).await;
    assert_eq!(skipped.status, RunStatus::Skipped, "{:?}", skipped.errors);
    assert!(
        skipped.errors.iter().any(|e| e.contains("another run of connection `a` is in progress")),
        "{:?}",
        skipped.errors
    );
    assert_eq!((skipped.records_fetched, skipped.loaded()), (0, 0));
    let done = running.await.expect("join");
    assert_eq!(done.status, RunStatus::Success, "{:?}", done.errors);
    assert_eq!(fetching.1.load(Ordering::SeqCst), 2, "only the first run fetched (two streams at once)");
    assert_eq!(store.stale_count(), 0, "{:?}", done.streams);
    assert_eq!(store.lease("a").await.expect("lease"), None, "a finished run releases its lease");
    // The skipped run is recorded like any other.
    let runs = store.runs(10).await.expect("runs");
    assert!(runs.iter().any(|r| r.sync_id == skipped.sync_id && r.status == RunStatus::Skipped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_the_second_run_starts_after_the_first_ends() {
    let store = Arc::new(MemoryStore::new());
    let first = Engine::new(small_config(), store.clone()).expect("engine");
    let patient = EngineConfig { wait_for_lease: true, lease_ttl_secs: 1, ..small_config() };
    let second = Engine::new(patient, store.clone()).expect("engine");
    let fetching: Arc<(AtomicU64, AtomicU64)> = Arc::default();
    let running = tokio::spawn({
        let c = conn("a", slow(&fetching));
        async move { first.sync(c).await }
    });
    leased(&store, "a").await;
    let waited = second.sync(conn("a", slow(&fetching))).await;
    let done = running.await.expect("join");
    assert_eq!((done.status, waited.status), (RunStatus::Success, RunStatus::Success), "{:?}", waited.errors);
    assert_eq!(fetching.1.load(Ordering::SeqCst), 2, "the two runs never fetched at the same time");
    assert!(waited.started_at >= done.ended_at, "{} < {}", waited.started_at, done.ended_at);
    assert_eq!(waited.inserted + waited.unchanged, 800);
    assert_eq!(store.stale_count(), 0);
}

/// One engine, one connection listed twice: the second is skipped, not run alongside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_connection_twice_in_one_run_is_skipped_once() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let fetching: Arc<(AtomicU64, AtomicU64)> = Arc::default();
    let summaries = engine.run(vec![conn("a", slow(&fetching)), conn("a", slow(&fetching))]).await;
    let mut statuses: Vec<RunStatus> = summaries.iter().map(|s| s.status).collect();
    statuses.sort();
    assert_eq!(statuses, [RunStatus::Success, RunStatus::Skipped]);
    assert_eq!(corral_core::summary::overall_status(&summaries), RunStatus::Skipped);
}

/// A run whose lease another run took over (it had expired while this one
/// was stalled) stops: nothing more is checkpointed, nothing is marked stale,
/// and the run fails saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lease_stops_without_stale_handling_or_checkpoints() {
    let store = Arc::new(MemoryStore::new());
    let config = EngineConfig { lease_ttl_secs: 1, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    // A first full sync, then a second one that will lose its lease part way.
    assert_eq!(engine.sync(conn("a", Synthetic::new(20, 10))).await.status, RunStatus::Success);
    let adapter = Arc::new(Synthetic { page_delay: Duration::from_millis(20), ..Synthetic::new(200, 10) });
    let run = tokio::spawn({
        let (engine, c) = (engine.clone(), conn_shared("a", adapter));
        async move { engine.sync(c).await }
    });
    // Once the second run holds the lease and has loaded a few pages, another takes it over.
    leased(&store, "a").await;
    while engine.progress().iter().find(|(n, _)| n == "a").is_none_or(|(_, p)| p.loaded() < 300) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.steal_lease("a", "a-run-elsewhere");
    let s = run.await.expect("join");
    assert_eq!(s.status, RunStatus::Failed);
    assert!(s.errors.iter().any(|e| e.contains("lost the lease on connection `a`")), "{:?}", s.errors);
    assert!(s.streams.values().all(|st| !st.stale_handled), "{:?}", s.streams);
    assert_eq!(store.stale_count(), 0);
    assert!(s.records_fetched < 2 * 200 * 10, "the run stopped early: {}", s.records_fetched);
    // Its checkpoints stop at what it stored before losing the lease, and the
    // other run's lease is left alone.
    let held = store.lease("a").await.expect("lease").expect("the other run's lease");
    assert_eq!(held.holder, "a-run-elsewhere");
    for stream in ["hosts", "phones"] {
        if let Some(cp) = store.checkpoint("a", stream) {
            let next_page = cp.0["next_page"].as_u64().unwrap_or(0);
            assert!(next_page * 10 <= s.loaded(), "{stream}: checkpoint at page {next_page}, {} loaded", s.loaded());
        }
    }
}

/// A store that cannot be reached to renew the lease for a whole time to
/// live: the run stops (another run may take the connection over now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_renew_its_lease_for_a_whole_ttl_stops() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig { lease_ttl_secs: 1, ..small_config() }, store.clone()).expect("engine");
    let adapter = Arc::new(Synthetic { page_delay: Duration::from_millis(20), ..Synthetic::new(300, 10) });
    store.fail_lease_renewals(true);
    let s = engine.sync(conn_shared("a", adapter)).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert!(s.errors.iter().any(|e| e.contains("lost the lease")), "{:?}", s.errors);
    assert!(s.streams.values().all(|st| !st.stale_handled && !st.fetch_completed), "{:?}", s.streams);
}

/// A run that is cancelled while waiting for the lease ends at once, failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_waiting_for_the_lease() {
    let store = Arc::new(MemoryStore::new());
    store.steal_lease("a", "someone-else");
    let engine = Engine::new(EngineConfig { wait_for_lease: true, ..small_config() }, store.clone()).expect("engine");
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.sync(conn("a", Synthetic::new(2, 2))).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!run.is_finished(), "it waits for the lease");
    engine.cancel();
    let s = run.await.expect("join");
    assert_eq!(s.status, RunStatus::Failed);
    assert!(s.errors.iter().any(|e| e.contains("while waiting for the connection's lease")), "{:?}", s.errors);
    assert_eq!(s.records_fetched, 0);
}

/// A lease left by a run on this host whose process is gone (killed, or it
/// could not release the lease because the store was down at its end) is
/// taken over at once instead of after its time to live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_dead_process_on_this_host_is_taken_over() {
    let store = Arc::new(MemoryStore::new());
    let mut child = std::process::Command::new("true").spawn().expect("spawn a short-lived process");
    let dead = child.id();
    child.wait().expect("wait for it");
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let owner = format!("{host} pid {dead}");
    let left = store.acquire_lease("a", "dead-run", &owner, Duration::from_secs(3600)).await.expect("lease");
    assert!(matches!(left, corral_core::LeaseGrant::Acquired(_)));
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let s = engine.sync(conn("a", Synthetic::new(2, 5))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    // A live holder elsewhere is respected.
    store.steal_lease("a", "live-run-elsewhere");
    assert_eq!(engine.sync(conn("a", Synthetic::new(2, 5))).await.status, RunStatus::Skipped);
}
