//! Undecodable pages, rejects and checkpoints: what a bad page costs, and
//! that no checkpoint ever passes data that was not stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use corral_core::testing::MemoryStore;
use corral_core::{Engine, EngineConfig, RunStatus, Store};

use super::synthetic::{Synthetic, conn, conn_streams, small_config};

/// Record ids of `stream` in the store.
fn stored_ids(store: &MemoryStore, stream: &str) -> BTreeSet<String> {
    store.all_assets().into_iter().filter(|a| a.stream == stream).map(|a| a.source_id).collect()
}

/// Every record of the pages before `next_page` (pages of `per_page`) is stored.
fn assert_pages_stored(store: &MemoryStore, stream: &str, next_page: u64, per_page: u64) {
    let stored = stored_ids(store, stream);
    for id in 0..next_page * per_page {
        let id = format!("{stream}-{id}");
        assert!(stored.contains(&id), "checkpoint at page {next_page} of {per_page}, but {id} is not stored");
    }
}

/// A malformed page in one stream: that stream gets no stale handling and
/// keeps its checkpoint before the page; the other stream is unaffected.
/// The page is counted as a page, with the records lost in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_costs_its_stream_only_and_its_records_are_counted_lost() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let first = engine.sync(conn("a", Synthetic::new(6, 10))).await;
    assert_eq!(first.inserted, 120);
    // Both streams shrink by a page; phones' page 2 cannot be decoded.
    let mut bad = Synthetic::new(5, 10);
    bad.malformed_pages = vec![2];
    bad.malformed_stream = Some("phones".into());
    let s = engine.sync(conn("a", bad)).await;
    assert_eq!(s.status, RunStatus::Partial);
    let (hosts, phones) = (&s.streams["hosts"], &s.streams["phones"]);
    assert!(hosts.fetch_completed && hosts.stale_handled, "{hosts:?}");
    assert_eq!(hosts.stale.marked, 10, "hosts' vanished page is marked stale: {hosts:?}");
    assert!(phones.fetch_completed && !phones.stale_handled, "{phones:?}");
    assert_eq!(phones.stale.marked, 0);
    assert_eq!(store.stale_count(), 10, "only hosts' vanished records are stale");

    // One page rejected, its ten records lost; per-record rejects counted apart.
    assert_eq!((s.pages_rejected, s.records_lost, s.pages_rejected_unsized), (1, 10, 0));
    assert_eq!((phones.pages_rejected, phones.records_lost), (1, 10));
    assert_eq!(hosts.pages_rejected, 0);
    assert_eq!(s.rejects["malformed_page"].count, 1);
    assert_eq!(s.records_rejected, 0, "records_rejected counts records, not pages");
    assert_eq!(s.records_fetched, s.assets_normalized + s.records_lost);
    assert!(s.errors.iter().any(|e| e.contains("page 2") && e.contains("10 record(s) lost")), "{:?}", s.errors);
    let table = corral_core::summary::render_table(std::slice::from_ref(&s));
    assert!(table.contains("rejected 1 page(s) that could not be decoded"), "{table}");
    assert!(table.contains("10 record(s) lost"), "{table}");
    let kept = store.rejects(&s.sync_id, 1000).await.expect("rejects");
    assert_eq!(kept.len(), 1, "the page is kept for inspection");
    let page = kept.iter().find(|r| r.reject.reason == "malformed_page").expect("the page is kept");
    assert_eq!((page.stream.as_str(), page.reject.raw.as_deref()), ("phones", Some("{not json")));
    assert!(page.reject.detail.contains("10 record(s) lost"), "{:?}", page.reject);

    // phones' checkpoint stays before the bad page (pages after it were
    // fetched, but resuming past it would skip its records for good); a null
    // one (the last complete run's) means the next run starts over ...
    let phones_cp = store.checkpoint("a", "phones").expect("phones has a checkpoint row").0;
    let next_page = if phones_cp.is_null() { 0 } else { phones_cp["next_page"].as_u64().expect("next_page") };
    assert!(next_page <= 2, "phones' checkpoint passed the malformed page 2: {next_page}");
    assert_eq!(store.checkpoint("a", "hosts").map(|c| c.0), Some(serde_json::Value::Null), "hosts completed");
    // ... so the next run, with the page readable again, loads its records.
    let s = engine.sync(conn("a", Synthetic::new(5, 10))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert!((20..=29).all(|i| stored_ids(&store, "phones").contains(&format!("phones-{i}"))));
}

/// Without a record count from fetch, the records lost are unknown, and said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_of_unknown_size_is_counted_as_such() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(small_config(), store.clone()).expect("engine");
    let bad = Synthetic { malformed_pages: vec![1], hint_records: false, ..Synthetic::new(3, 10) };
    let s = engine.sync(conn_streams("a", bad, &["hosts"])).await;
    assert_eq!(s.status, RunStatus::Partial);
    assert_eq!((s.pages_rejected, s.records_lost, s.pages_rejected_unsized), (1, 0, 1));
    assert_eq!(s.lost_display(), "0+");
    assert!(s.errors.iter().any(|e| e.contains("an unknown number of records lost")), "{:?}", s.errors);
}

/// Pages of 7 records and batches of 50: pages straddle batches, so a
/// checkpoint recorded before its page's last records were batched would be
/// saved while those records were still unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_never_passes_unacknowledged_data() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig { load_attempts: 1, ..small_config() }, store.clone()).expect("engine");
    // Three batches of 50 (150 records: page 21 of 7 is split 3 + 4), then the store fails.
    store.fail_after(3);
    let s = engine.sync(conn_streams("a", Synthetic::new(60, 7), &["hosts"])).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(store.asset_count(), 150);
    let cp = store.checkpoint("a", "hosts").expect("a checkpoint was saved before the failure");
    let next_page = cp.0["next_page"].as_u64().expect("next_page");
    assert_eq!(next_page, 21, "pages 0..=20 are stored whole; page 21 is not");
    assert_pages_stored(&store, "hosts", next_page, 7);

    // A resumed run starts at the checkpoint, completes, and skips stale handling (it did not see everything).
    store.fail_after(u64::MAX);
    let calls = store.stale_calls();
    let s2 = engine.sync(conn_streams("a", Synthetic::new(60, 7), &["hosts"])).await;
    assert_eq!(s2.status, RunStatus::Success, "{:?}", s2.errors);
    assert_eq!(s2.records_fetched, (60 - 21) * 7, "resumed at page 21");
    assert_eq!(store.asset_count(), 420);
    assert_eq!(store.stale_calls(), calls, "a resumed run must not handle stale assets");
    assert_eq!(
        store.checkpoint("a", "hosts").map(|c| c.0),
        Some(serde_json::Value::Null),
        "a completed stream clears its checkpoint"
    );
}

/// The summary keeps `reject_samples` samples per reason, the store at most
/// `max_rejects_kept` rejects; every reject is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_are_all_counted_some_kept_a_few_sampled() {
    let store = Arc::new(MemoryStore::new());
    let config = EngineConfig { reject_samples: 3, max_rejects_kept: 25, ..small_config() };
    let engine = Engine::new(config, store.clone()).expect("engine");
    let noisy = Synthetic { reject_every: 2, ..Synthetic::new(10, 10) };
    let s = engine.sync(conn_streams("a", noisy, &["hosts"])).await;
    assert_eq!(s.status, RunStatus::Partial);
    assert_eq!(s.records_rejected, 50);
    assert_eq!(s.rejects["bad_record"].count, 50);
    assert_eq!(s.rejects["bad_record"].samples.len(), 3, "reject_samples");
    assert!(s.rejects["bad_record"].samples.iter().all(|r| r.raw.is_none()), "samples carry no raw input");
    let kept = store.rejects(&s.sync_id, 1000).await.expect("rejects");
    assert_eq!(kept.len(), 25, "max_rejects_kept");
    assert!(kept.iter().all(|r| r.reject.raw.is_some()), "kept rejects carry their input");
    assert_eq!(s.loaded(), 50);
}

/// Raw bytes in flight stay within what the channels hold, whatever the
/// inventory size, and are all released at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_in_flight_are_bounded_by_the_channels() {
    let store = Arc::new(MemoryStore::new());
    store.set_delay(Duration::from_millis(2), false);
    let config = small_config();
    let engine = Engine::new(config.clone(), store.clone()).expect("engine");
    let s = engine.sync(conn_streams("a", Synthetic::new(200, 100), &["hosts"])).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    // The largest page: 100 lines of `{"id":"hosts-19999","gen":0}\n`.
    let page_bytes = 100 * r#"{"id":"hosts-19999","gen":0}"#.len() + 100;
    let slots = config.raw_channel_capacity + 1 + config.normalize_in_flight;
    let f = &s.in_flight;
    assert!(f.peak_raw_pages >= 1 && f.peak_raw_pages <= slots, "{f:?}");
    assert!(f.peak_raw_bytes > 0 && f.peak_raw_bytes <= slots * page_bytes, "{f:?}");
    assert!(f.peak_raw_bytes < 200 * page_bytes / 10, "raw bytes grew with the inventory: {f:?}");
    assert_eq!((f.raw_pages, f.raw_bytes, f.records), (0, 0, 0), "everything in flight is released: {f:?}");
}
