//! Engine behaviour with a synthetic adapter and the in-memory store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corral_core::testing::MemoryStore;
use corral_core::{Connection, Device, Engine, EngineConfig, RunStatus, Store};

mod attributes;
mod lease;
mod pages;
mod synthetic;

use synthetic::{Synthetic, conn, conn_shared, conn_streams, small_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_store_bounds_in_flight_records() {
    let store = Arc::new(MemoryStore::new());
    store.set_delay(Duration::from_millis(2), false);
    let config = small_config();
    let bound = config.in_flight_record_bound(2);
    let engine = Engine::new(config, store.clone()).expect("engine");
    let s = engine.sync(conn("a", Synthetic::new(100, 100))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(s.inserted, 2 * 100 * 100);
    assert_eq!(store.asset_count(), 20_000);
    assert_eq!(s.in_flight.record_bound, bound);
    assert!(s.in_flight.peak_records <= bound, "peak {} > bound {bound}", s.in_flight.peak_records);
    assert!(s.in_flight.peak_records < 20_000 / 4, "in-flight grew with the inventory: {}", s.in_flight.peak_records);
    assert!(s.stages.fetch_blocked_ms > 0, "a slow store must slow fetching down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sync_counts_unchanged_and_updated() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let adapter = Arc::new(Synthetic::new(5, 20));
    let c = Connection {
        name: "a".into(),
        adapter: adapter.clone(),
        streams: vec!["hosts".into()],
        stale: Default::default(),
    };
    let first = engine.sync(c.clone()).await;
    assert_eq!((first.inserted, first.updated, first.unchanged), (100, 0, 0));
    let second = engine.sync(c.clone()).await;
    assert_eq!((second.inserted, second.updated, second.unchanged), (0, 0, 100));
    assert!(store.all_assets().iter().all(|a| a.last_sync_id == second.sync_id && a.last_seen > a.first_seen));
    adapter.generation.store(1, Ordering::Relaxed);
    let third = engine.sync(c).await;
    assert_eq!((third.inserted, third.updated, third.unchanged), (0, 100, 0));
    assert_eq!(store.asset_count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_checkpoint_survives_a_complete_stream_and_the_next_run_resumes_from_it() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let mut adapter = Synthetic::new(4, 10);
    adapter.keep_checkpoint = true;
    let first = engine.sync(conn_streams("a", adapter, &["hosts"])).await;
    assert_eq!(first.status, RunStatus::Success, "{:?}", first.errors);
    assert!(first.streams["hosts"].stale_handled, "a run from the start is stale-handled");
    let kept = store.checkpoint("a", "hosts").expect("the watermark is kept");
    assert_eq!(kept.0["next_page"], 4);
    // The next run resumes from it: nothing fetched, nothing marked stale.
    let mut adapter = Synthetic::new(4, 10);
    adapter.keep_checkpoint = true;
    let second = engine.sync(conn_streams("a", adapter, &["hosts"])).await;
    assert_eq!(second.status, RunStatus::Success, "{:?}", second.errors);
    assert_eq!(second.records_fetched, 0);
    assert!(!second.streams["hosts"].stale_handled);
    assert_eq!(store.stale_count(), 0);
    assert_eq!(store.checkpoint("a", "hosts").map(|c| c.0), Some(kept.0));
    // Without the flag a complete stream clears its checkpoint.
    let third = engine.sync(conn_streams("a", Synthetic::new(4, 10), &["hosts"])).await;
    assert_eq!(third.status, RunStatus::Success, "{:?}", third.errors);
    assert!(store.checkpoint("a", "hosts").is_none_or(|c| c.0.is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_fails_the_run_and_marks_nothing_stale() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig { load_attempts: 1, ..small_config() }, store.clone()).expect("engine");
    let first = engine.sync(conn("a", Synthetic::new(10, 10))).await;
    assert_eq!(first.status, RunStatus::Success);
    let stale_calls = store.stale_calls();
    store.fail_after(3); // a few more batches, then the store "goes away"
    let mut shrunk = Synthetic::new(4, 10);
    shrunk.pages = 40; // a longer run that will not finish
    let s = engine.sync(conn("a", shrunk)).await;
    assert_eq!(s.status, RunStatus::Failed, "{:?}", s.errors);
    assert!(s.failed_batches >= 1);
    assert!(s.errors.iter().any(|e| e.contains("injected failure")), "{:?}", s.errors);
    assert_eq!(store.stale_calls(), stale_calls, "stale handling ran after a failed load");
    assert_eq!(store.stale_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_stored_failed_batch_is_counted() {
    let store = Arc::new(MemoryStore::new());
    store.fail_partially_after(1);
    let config = EngineConfig { batch_max_records: 10, batches_in_flight: 1, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    let s = engine.sync(conn_streams("a", Synthetic::new(2, 10), &["hosts"])).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.failed_batches, 1);
    assert_eq!(s.inserted, 15, "10 from the first batch, 5 the failed one stored");
    assert_eq!(store.asset_count(), 15);
    assert_eq!(store.stale_calls(), 0);
}

/// A record the store refuses (MongoDB: a document over 16 MB) keeps its
/// stored copy from the last run; stale handling of its stream would mark it
/// stale although the vendor still returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_refuses_is_rejected_and_its_stream_gets_no_stale_handling() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let first = engine.sync(conn("a", Synthetic::new(3, 10))).await;
    assert_eq!(first.inserted, 60);
    store.refuse(&["hosts-4"]);
    let s = engine.sync(conn("a", Synthetic::new(3, 10))).await;
    assert_eq!(s.status, RunStatus::Partial, "{:?}", s.errors);
    assert_eq!(s.rejects["refused_by_store"].count, 1);
    assert_eq!(s.loaded(), 59);
    let (hosts, phones) = (&s.streams["hosts"], &s.streams["phones"]);
    assert_eq!(hosts.rejected, 1, "{hosts:?}");
    assert!(hosts.fetch_completed && !hosts.stale_handled, "{hosts:?}");
    assert!(phones.fetch_completed && phones.stale_handled, "{phones:?}");
    assert_eq!(store.stale_count(), 0, "the refused record was marked stale");
    let kept = store.rejects(&s.sync_id, 10).await.expect("rejects");
    assert!(kept.iter().any(|r| r.stream == "hosts" && r.reject.record == "device hosts-4"), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_stream_does_not_stop_the_other_and_gets_no_stale_handling() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    engine.sync(conn("a", Synthetic::new(3, 10))).await;
    let mut flaky = Synthetic::new(3, 10);
    flaky.failing_streams = vec!["phones".into()];
    flaky.pages = 2; // hosts shrinks: one page no longer returned
    let s = engine.sync(conn("a", flaky)).await;
    assert_eq!(s.status, RunStatus::Partial);
    let hosts = &s.streams["hosts"];
    let phones = &s.streams["phones"];
    assert!(hosts.fetch_completed && hosts.stale_handled && hosts.stale.marked == 10, "{hosts:?}");
    assert!(!phones.fetch_completed && !phones.stale_handled, "{phones:?}");
    assert!(phones.fetch_error.as_deref().unwrap_or_default().contains("vendor.example"));
    assert_eq!(store.stale_count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_connection_never_stops_the_others() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig { max_connections: 3, ..small_config() }, store.clone()).expect("engine");
    let mut conns: Vec<Connection> = (0..6).map(|i| conn(&format!("c{i}"), Synthetic::new(3, 10))).collect();
    let mut broken = Synthetic::new(3, 10);
    broken.failing_streams = vec!["hosts".into(), "phones".into()];
    conns.push(conn("broken", broken));
    let summaries = engine.run(conns).await;
    assert_eq!(summaries.len(), 7);
    for s in &summaries[..6] {
        assert_eq!(s.status, RunStatus::Success, "{}: {:?}", s.connection, s.errors);
        assert_eq!(s.inserted, 60);
    }
    assert_eq!(summaries[6].status, RunStatus::Failed);
    assert_eq!(engine.store().runs(100).await.expect("runs").len(), 7);
}

/// Connections wait for their share of the open-file budget: with 10
/// descriptors and 4 per connection, at most 2 sync at once, although
/// `max_connections` would allow 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_wait_for_their_share_of_open_files() {
    let store = Arc::new(MemoryStore::new());
    let config = EngineConfig { max_connections: 8, max_open_files: 10, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    let fetching: Arc<(AtomicU64, AtomicU64)> = Arc::default();
    let conns = (0..6)
        .map(|i| {
            let a = Synthetic {
                open_files: 4,
                fetching: fetching.clone(),
                page_delay: Duration::from_millis(20),
                ..Synthetic::new(3, 5)
            };
            conn(&format!("c{i}"), a)
        })
        .collect();
    let summaries = engine.run(conns).await;
    assert!(summaries.iter().all(|s| s.status == RunStatus::Success));
    // Two streams each: at most 2 connections x 2 fetches at once.
    let peak = fetching.1.load(Ordering::SeqCst);
    assert!(peak > 2 && peak <= 4, "fetches at once: {peak}");
}

/// A page bigger than `max_page_records` breaks the assumption behind the
/// in-flight bound: it is counted (and warned about), never silently passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_over_max_page_records_are_counted() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let s = engine.sync(conn_streams("a", Synthetic::new(3, 150), &["hosts"])).await;
    assert_eq!(s.status, RunStatus::Success);
    assert_eq!(s.in_flight.oversized_pages, 3, "{:?}", s.in_flight);
    let s = engine.sync(conn_streams("a", Synthetic::new(3, 100), &["hosts"])).await;
    assert_eq!(s.in_flight.oversized_pages, 0, "{:?}", s.in_flight);
}

/// A batch closes at `batch_max_bytes` even far below `batch_max_records`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_close_at_the_byte_limit() {
    let store = Arc::new(MemoryStore::new());
    let one = corral_core::Asset::device(
        "hosts",
        Device { source_id: "hosts-100".into(), hostname: Some("host-hosts-100-g0".into()), ..Default::default() },
    )
    .approx_size();
    let config = EngineConfig { batch_max_records: 1000, batch_max_bytes: 10 * one, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    let s = engine.sync(conn("a", Synthetic::new(10, 100))).await;
    assert_eq!((s.status, s.inserted), (RunStatus::Success, 2000));
    let sizes = store.batch_sizes();
    assert!(sizes.len() >= 150, "{} batches for 2000 records of ~{one} bytes", sizes.len());
    // Ids 0..999 are a byte shorter than "hosts-100": a batch may hold one or two more.
    assert!(sizes.iter().all(|&n| n <= 12), "{sizes:?}");
}

/// A batch also closes when its first record has waited `batch_max_wait_ms`:
/// a slow vendor's records reach the store without waiting for a full batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_close_after_the_wait_limit() {
    let store = Arc::new(MemoryStore::new());
    let config = EngineConfig { batch_max_records: 1000, batch_max_wait_ms: 20, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    let slow = Synthetic { page_delay: Duration::from_millis(150), ..Synthetic::new(4, 5) };
    let s = engine.sync(conn_streams("a", slow, &["hosts"])).await;
    assert_eq!((s.status, s.inserted), (RunStatus::Success, 20));
    // One page every 150 ms, a batch closing 20 ms after its first record: a batch per page.
    assert_eq!(store.batch_sizes(), [5, 5, 5, 5]);
}

/// Up to `batches_in_flight` writes run at once (and never more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_batches_are_written_at_once() {
    let store = Arc::new(MemoryStore::new());
    store.set_delay(Duration::from_millis(30), false);
    let config = EngineConfig { batches_in_flight: 3, batch_max_records: 20, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    let s = engine.sync(conn("a", Synthetic::new(10, 20))).await;
    assert_eq!((s.status, s.inserted), (RunStatus::Success, 400));
    assert_eq!(store.peak_concurrent_upserts(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_heavy_normalize_keeps_the_runtime_responsive() {
    let store = Arc::new(MemoryStore::new());
    // A generous threshold, so that a busy machine preempting a poll does not
    // count as blocking; each page still burns more than it.
    let config = EngineConfig { lag_warn_ms: 100, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    // Each page burns more than the warning threshold: had it run on the
    // runtime, every page would be a long poll and a late tick.
    let heavy = Arc::new(Synthetic { cpu_per_page: Duration::from_millis(120), ..Synthetic::new(8, 50) });
    let s = engine.sync(conn_shared("heavy", heavy.clone())).await;
    assert_eq!(s.status, RunStatus::Success);
    assert!(s.stages.normalize_cpu_ms >= 2 * 8 * 120, "normalize did not do its CPU work: {:?}", s.stages);
    let threads = heavy.normalize_threads.lock().expect("lock").clone();
    assert!(threads.iter().all(|t| t.starts_with("corral-normalize-")), "normalize ran off the pool: {threads:?}");
    assert!(s.lag.samples > 10, "{:?}", s.lag);
    // Counted, not timed: the lag figures themselves are measured in benches/s5_cpu_heavy.rs.
    assert_eq!(s.lag.long_polls, 0, "an engine task blocked the runtime: {:?}", s.lag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_monitor_catches_a_blocked_runtime_and_names_the_stage() {
    let store = Arc::new(MemoryStore::new());
    // A badly written store that sleeps on the runtime thread.
    store.set_delay(Duration::from_millis(120), true);
    let engine = Engine::new(EngineConfig { lag_warn_ms: 50, ..small_config() }, store.clone()).expect("engine");
    let s = engine.sync(conn("blocky", Synthetic::new(2, 50))).await;
    assert_eq!(s.status, RunStatus::Success);
    assert!(s.lag.long_polls >= 1, "{:?}", s.lag);
    assert_eq!(s.lag.blocking_stage.as_deref(), Some("load"));
    assert!(s.lag.max_poll_us >= 120_000, "{:?}", s.lag);
    // The ticker saw the runtime run late, and names the task that was running.
    assert!(s.lag.max_us >= 50_000 && s.lag.over_threshold >= 1, "{:?}", s.lag);
    assert!(s.lag.late_causes.contains_key("load@blocky"), "{:?}", s.lag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_loads_what_was_fetched_and_marks_nothing_stale() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig { max_connections: 1, ..small_config() }, store.clone()).expect("engine");
    // Pages of 7 straddle batches of 50: a checkpoint must wait for its page's last record.
    let slow = || Synthetic { page_delay: Duration::from_millis(5), ..Synthetic::new(10_000, 7) };
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(vec![conn("first", slow()), conn("queued", slow())]).await }
    });
    while store.asset_count() < 200 {
        assert!(!run.is_finished(), "the run ended before it could be cancelled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.cancel();
    let summaries = tokio::time::timeout(Duration::from_secs(10), run).await.expect("stops promptly").expect("join");

    let first = &summaries[0];
    assert_eq!(first.status, RunStatus::Failed);
    assert!(first.errors.iter().any(|e| e.contains("interrupted")), "{:?}", first.errors);
    for (name, s) in &first.streams {
        assert!(!s.fetch_completed && !s.stale_handled, "{name}: {s:?}");
        assert!(s.fetch_error.as_deref().is_some_and(|e| e.contains("interrupted")), "{name}: {s:?}");
    }
    assert_eq!(store.stale_calls(), 0, "an interrupted run must not handle stale assets");
    // Everything fetched before the cancel was loaded, and the checkpoints cover only stored pages.
    assert!(first.records_fetched > 0 && first.records_fetched < 2 * 10_000 * 7);
    assert_eq!(first.loaded(), first.records_fetched);
    assert_eq!(store.asset_count() as u64, first.loaded());
    for stream in ["hosts", "phones"] {
        let cp = store.checkpoint("first", stream).expect("a checkpoint");
        let next_page = cp.0["next_page"].as_u64().expect("next_page");
        let stored: std::collections::BTreeSet<String> =
            store.all_assets().into_iter().filter(|a| a.stream == stream).map(|a| a.source_id).collect();
        for id in 0..next_page * 7 {
            assert!(
                stored.contains(&format!("{stream}-{id}")),
                "{stream}: checkpoint at page {next_page}, {id} missing"
            );
        }
    }

    let queued = &summaries[1];
    assert_eq!(queued.status, RunStatus::Failed);
    assert!(queued.errors.iter().any(|e| e.contains("before this connection started")), "{:?}", queued.errors);
    assert_eq!(queued.records_fetched, 0);
}

/// A run's timeline: points in time order, counts that never go back, the
/// last point holding the run's totals; live progress names the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_follows_the_run_and_ends_at_its_totals() {
    let store = Arc::new(MemoryStore::new());
    // About a second of loading: several points.
    store.set_delay(Duration::from_millis(5), false);
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let watcher = {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                if let Some((_, p)) = engine.progress().into_iter().find(|(n, _)| n == "a")
                    && let Some((sync_id, _)) = p.started()
                {
                    return sync_id.to_string();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let s = engine.sync(conn("a", Synthetic::new(100, 100))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(watcher.await.expect("watcher"), s.sync_id, "live progress names the run");
    let t = &s.timeline;
    assert!(t.len() >= 2, "{t:?}");
    assert!(t.len() <= corral_core::summary::TIMELINE_MAX_POINTS);
    assert!(t.windows(2).all(|w| w[0].t_ms < w[1].t_ms), "{t:?}");
    assert!(t.windows(2).all(|w| w[0].records_fetched <= w[1].records_fetched), "{t:?}");
    assert!(t.windows(2).all(|w| w[0].assets_loaded <= w[1].assets_loaded), "{t:?}");
    let last = t[t.len() - 1];
    assert_eq!((last.records_fetched, last.assets_loaded, last.records_in_flight), (s.records_fetched, s.loaded(), 0));
    assert!(t.iter().any(|p| p.records_in_flight > 0), "records were in flight at some point: {t:?}");
}
