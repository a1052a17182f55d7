//! End to end: sample exports -> file adapter -> engine -> SQLite store.

use std::sync::Arc;

use corral_adapter_file::sample::{SampleOptions, write_devices_csv};
use corral_core::{Engine, EngineConfig, RunStatus, Store};
use corral_store::sqlite::SqliteStore;
use corral_workspace::{FailingStore, devices_connection, stale_assets, total_assets};

fn tiny_channels() -> EngineConfig {
    EngineConfig {
        raw_channel_capacity: 2,
        normalize_in_flight: 2,
        normalized_channel_capacity: 2,
        batch_max_records: 500,
        batches_in_flight: 2,
        max_page_records: 250,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_devices_through_small_channels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("devices.csv");
    write_devices_csv(&csv, 200_000, SampleOptions::default()).expect("sample file");
    let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let config = tiny_channels();
    let bound = config.in_flight_record_bound(1);
    let engine = Engine::new(config, store.clone()).expect("engine");
    let s = engine.sync(devices_connection("big", &csv, 250)).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(s.records_fetched, 200_000);
    assert_eq!(s.inserted, 200_000);
    assert_eq!(s.in_flight.record_bound, bound);
    assert!(s.in_flight.peak_records <= bound, "peak in-flight {} exceeds the bound {bound}", s.in_flight.peak_records);
    assert!(s.in_flight.peak_records > 0, "the gauge never moved: {:?}", s.in_flight);
    assert_eq!(total_assets(&*store).await, 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_sync_twice_is_idempotent_and_advances_last_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("devices.csv");
    write_devices_csv(&csv, 20_000, SampleOptions::default()).expect("sample file");
    let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let engine = Engine::new(tiny_channels(), store.clone()).expect("engine");
    let first = engine.sync(devices_connection("twice", &csv, 1000)).await;
    assert_eq!((first.status, first.inserted), (RunStatus::Success, 20_000));
    let before = store.list_assets(&Default::default(), 5).await.expect("list");
    let second = engine.sync(devices_connection("twice", &csv, 1000)).await;
    assert_eq!(second.status, RunStatus::Success, "{:?}", second.errors);
    assert_eq!((second.inserted, second.updated, second.unchanged), (0, 0, 20_000));
    assert_eq!(total_assets(&*store).await, 20_000, "duplicates after a second sync");
    assert_eq!(stale_assets(&*store).await, 0);
    let after = store.list_assets(&Default::default(), 5).await.expect("list");
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.source_id, b.source_id);
        assert_eq!(a.first_seen, b.first_seen);
        assert!(b.last_seen > a.last_seen, "last_seen did not advance");
        assert_eq!(b.last_sync_id, second.sync_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_rejected_with_line_and_reason_and_the_rest_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("devices.csv");
    write_devices_csv(&csv, 5_000, SampleOptions { malformed_every: Some(1000), ..Default::default() }).expect("file");
    let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let engine = Engine::new(tiny_channels(), store.clone()).expect("engine");
    let s = engine.sync(devices_connection("messy", &csv, 400)).await;
    assert_eq!(s.status, RunStatus::Partial);
    assert_eq!(s.records_rejected, 5);
    assert_eq!(s.loaded(), 4_995);
    assert_eq!(total_assets(&*store).await, 4_995);
    let kept = store.rejects(&s.sync_id, 100).await.expect("rejects");
    assert_eq!(kept.len(), 5);
    // Data line i is file line i + 1 (the header is line 1).
    let mut lines: Vec<String> = kept.iter().map(|r| r.reject.record.clone()).collect();
    lines.sort();
    assert_eq!(lines, ["line 1001", "line 2001", "line 3001", "line 4001", "line 5001"]);
    assert!(kept.iter().all(|r| r.connection == "messy" && r.stream == "devices" && !r.reject.reason.is_empty()));
    assert!(kept.iter().all(|r| r.reject.raw.as_deref().is_some_and(|raw| raw.contains("broken host"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failing_mid_run_fails_the_run_and_marks_nothing_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("devices.csv");
    write_devices_csv(&csv, 10_000, SampleOptions::default()).expect("file");
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let engine = Engine::new(tiny_channels(), sqlite.clone()).expect("engine");
    assert_eq!(engine.sync(devices_connection("flaky", &csv, 500)).await.status, RunStatus::Success);

    // A smaller export: half the devices would be stale after a clean run.
    write_devices_csv(&csv, 5_000, SampleOptions::default()).expect("file");
    let failing = Arc::new(FailingStore::new(sqlite.clone(), 3));
    let engine = Engine::new(EngineConfig { load_attempts: 1, ..tiny_channels() }, failing).expect("engine");
    let s = engine.sync(devices_connection("flaky", &csv, 500)).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert!(s.errors.iter().any(|e| e.contains("became unreachable")), "{:?}", s.errors);
    assert!(s.streams.values().all(|st| !st.stale_handled));
    assert_eq!(stale_assets(&*sqlite).await, 0, "a failed run marked assets stale");
    assert_eq!(total_assets(&*sqlite).await, 10_000);
    let saved = sqlite.runs(1).await.expect("runs");
    assert_eq!(saved[0].status, RunStatus::Failed, "the failed run is recorded");
}
