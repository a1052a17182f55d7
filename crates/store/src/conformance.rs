//! Store conformance suite: the behaviour every [`Store`] implementation must have.
//!
//! Each case is a public async function that takes a **fresh, empty** store
//! and panics with a message naming the case when the store misbehaves. Run
//! them all with [`run_all`], giving it a factory that makes a new empty store
//! per case (the case name is passed in, e.g. to name a MongoDB database):
//!
//! ```ignore
//! corral_store::conformance::run_all(|case| async move {
//!     Arc::new(SqliteStore::open_in_memory().expect("open")) as Arc<dyn Store>
//! })
//! .await;
//! ```
//!
//! or run one case with its function (`conformance::idempotent_upsert(&store).await`),
//! or iterate [`CASES`].
//!
//! Contract details the suite pins down (beyond the `Store` docs):
//! - Timestamps round-trip exactly at millisecond precision (the suite uses
//!   whole milliseconds; finer digits may be dropped), in stored assets, stale
//!   marks, delete cut-offs and runs.
//! - `count_assets` and `list_assets` apply the filter first: without
//!   `include_stale`, stale assets are not listed and `count` counts live
//!   ones only; with it, `count` includes them; `stale` always says how many
//!   (a connection and kind with only stale assets still has a row).
//! - All five kinds round-trip with their attributes and references;
//!   `conditions` (`--where`) and `points_at` select exactly what
//!   [`AssetFilter::matches`] selects, and follow updates of the keys and
//!   references.
//!   Counts come one per (connection, kind) that has matching assets, ordered
//!   by connection then kind name (`cloud_resource` < `device` < `software` <
//!   `user` < `vulnerability`, as `AssetKind`'s `Ord`); assets are listed by
//!   connection, then kind, then in the store's own order: source id (byte
//!   order) in MongoDB and in memory, first stored in SQLite, whose batches
//!   store their new assets in source id order. The suite lists assets that
//!   were stored in source id order, and pages with [`AssetCursor::of`].
//! - `limit` 0 returns nothing (note that MongoDB's `limit(0)` means "no limit").
//! - `rejects(sync_id, ..)` returns them in the order they were saved; equal
//!   rejects saved twice (in one call or two) are all kept.
//! - A batch too large for one write of the store (MongoDB: 16 MiB per
//!   command) is split by the store, by bytes as well as by count.
//! - A record a store refuses on its own (document too large) is reported in
//!   `LoadOutcome::rejected` with its source id in `Reject::record` (e.g.
//!   `device huge-1`); every other record of the batch is stored.
//! - Duplicate source ids within one batch: the later one wins; the first is
//!   counted as inserted, the second as updated or unchanged.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_core::adapter::{Checkpoint, Reject};
use corral_core::asset::{
    Asset, AssetKind, AssetRef, AttrType, CloudResource, CloudTag, Device, FindingState, Os, Severity, Software, User,
    Vulnerability,
};
use corral_core::metrics::RequestStats;
use corral_core::schema::{DeclaredAttribute, parse_where};
use corral_core::store::{
    AssetCount, AssetCursor, AssetFilter, AssetKey, LeaseGrant, LoadBatch, LoadOutcome, RunCursor, RunQuery,
    StaleOutcome, StalePolicy, StaleScope, Store, StoreError, StoredAsset, StoredReject,
};
use corral_core::summary::{RejectGroup, RunStatus, RunSummary, StageTimes, StreamSummary, TimelinePoint};
use futures::FutureExt;
use futures::future::BoxFuture;

/// One conformance case: its name and how to run it on a fresh store.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub run: for<'a> fn(&'a dyn Store) -> BoxFuture<'a, ()>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, in the order [`run_all`] runs them.
        pub const CASES: &[Case] = &[
            $(Case { name: stringify!($name), run: |s| Box::pin($name(s)) },)*
        ];
    };
}

cases![
    idempotent_upsert,
    changed_asset_updates,
    duplicate_source_id_in_batch,
    key_is_connection_kind_source_id,
    stale_marking_is_scoped,
    stale_delete_after_age,
    stale_keep_does_nothing,
    checkpoints_round_trip,
    runs_most_recent_first,
    rejects_by_sync_id,
    count_and_list_filters,
    limit_zero_returns_nothing,
    large_batch_stored,
    mixed_batch_counts_each_record,
    large_documents_split_by_bytes,
    oversized_asset_isolated,
    timestamps_keep_milliseconds,
    identical_rejects_are_all_kept,
    interleaved_syncs_keep_what_either_saw,
    leases_are_exclusive,
    expired_lease_is_taken_over,
    all_kinds_round_trip,
    where_finds_fields_and_attributes,
    keys_and_references_follow_updates,
    stale_counted_apart,
    rejected_records_stay_fresh,
    assets_paged_by_key,
    runs_paged_by_connection,
];

/// Run every case in [`CASES`], each on a fresh store from `make(case_name)`.
/// All cases run even when one fails; then it panics listing every failure.
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut failures = Vec::new();
    for case in CASES {
        let store = make(case.name).await;
        if let Err(msg) = run_case(case, store.as_ref()).await {
            failures.push(msg);
        }
    }
    assert!(failures.is_empty(), "{} store conformance case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// Run one case, turning its panic into an error message naming the case and store.
pub async fn run_case(case: &Case, store: &dyn Store) -> Result<(), String> {
    let started = std::time::Instant::now();
    let result = AssertUnwindSafe((case.run)(store)).catch_unwind().await;
    match result {
        Ok(()) => {
            eprintln!("conformance: {} ok on {} ({:?})", case.name, store.describe(), started.elapsed());
            Ok(())
        }
        Err(panic) => Err(format!("  {} on {}: {}", case.name, store.describe(), corral_core::panic_message(&panic))),
    }
}

// ---------------------------------------------------------------------------
// Helpers (public so other store tests can build the same fixtures).
// ---------------------------------------------------------------------------

/// A fixed base time (2024-05-01T12:00:00Z) plus `secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_714_564_800 + secs, 0).expect("conformance: timestamp in range")
}

/// [`at`]`(secs)` plus `millis` milliseconds.
pub fn at_ms(secs: i64, millis: i64) -> DateTime<Utc> {
    at(secs) + chrono::Duration::milliseconds(millis)
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// A device on stream `stream` with a few fields filled in.
pub fn device(stream: &str, source_id: &str, hostname: &str) -> Asset {
    Asset::device(
        stream,
        Device {
            source_id: source_id.to_string(),
            hostname: Some(hostname.to_string()),
            ip_addresses: vec!["10.0.0.7".parse().expect("ip"), "fe80::1".parse().expect("ip")],
            serial_number: Some(format!("SN-{source_id}")),
            os: Os { family: Some("linux".into()), name: Some("Ubuntu".into()), version: Some("24.04".into()) },
            last_seen: Some(at(-DAY)),
            owner: Some("alice@example.com".into()),
            tags: vec!["prod".into(), "web".into()],
            ..Default::default()
        },
    )
}

/// A user on stream `stream`.
pub fn user(stream: &str, source_id: &str, email: &str) -> Asset {
    Asset::user(
        stream,
        User {
            source_id: source_id.to_string(),
            username: Some(source_id.to_string()),
            email: Some(email.to_string()),
            display_name: Some(format!("User {source_id}")),
            active: Some(true),
            created: Some(at(-30 * DAY)),
            ..Default::default()
        },
    )
}

pub fn batch(connection: &str, sync_id: &str, seen_at: DateTime<Utc>, assets: Vec<Asset>) -> LoadBatch {
    LoadBatch {
        sync_id: sync_id.to_string(),
        connection: connection.to_string(),
        seen_at,
        assets: assets.into(),
        seen: vec![],
    }
}

/// The stale scope of a run that started at `now` and handles stale assets at once.
pub fn scope(connection: &str, stream: &str, sync_id: &str, now: DateTime<Utc>) -> StaleScope {
    scope_started(connection, stream, sync_id, now, now)
}

/// The stale scope of a run that started at `started_at` (its batches' `seen_at`)
/// and handles stale assets at `now`.
pub fn scope_started(
    connection: &str,
    stream: &str,
    sync_id: &str,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StaleScope {
    StaleScope {
        connection: connection.to_string(),
        stream: stream.to_string(),
        sync_id: sync_id.to_string(),
        started_at,
        now,
    }
}

/// A fully populated run summary (every map and list non-empty), ended 90 s after `started_at`.
pub fn run_summary(sync_id: &str, connection: &str, started_at: DateTime<Utc>) -> RunSummary {
    let mut rejects = BTreeMap::new();
    rejects.insert(
        "malformed_json".to_string(),
        RejectGroup {
            count: 2,
            samples: vec![Reject::new("line 3", "malformed_json", "expected value at column 1").with_raw(b"{oops")],
        },
    );
    let mut streams = BTreeMap::new();
    streams.insert(
        "hosts".to_string(),
        StreamSummary {
            pages: 4,
            records_fetched: 100,
            assets_normalized: 98,
            rejected: 2,
            pages_rejected: 1,
            records_lost: 25,
            pages_rejected_unsized: 0,
            fetch_completed: true,
            fetch_error: None,
            incomplete: None,
            page_errors: vec!["page 3: truncated body".into()],
            stale_handled: true,
            stale: StaleOutcome { marked: 3, deleted: 1 },
        },
    );
    let mut by_status = BTreeMap::new();
    by_status.insert(200u16, 4u64);
    by_status.insert(429u16, 1u64);
    RunSummary {
        sync_id: sync_id.to_string(),
        connection: connection.to_string(),
        adapter: "file".to_string(),
        started_at,
        ended_at: started_at + chrono::Duration::seconds(90),
        status: RunStatus::Partial,
        stages: StageTimes { fetch_ms: 1200, normalize_cpu_ms: 300, load_ms: 450, fetch_blocked_ms: 20 },
        pages: 4,
        records_fetched: 100,
        assets_normalized: 98,
        records_rejected: 2,
        pages_rejected: 1,
        records_lost: 25,
        pages_rejected_unsized: 1,
        rejects,
        inserted: 90,
        updated: 5,
        unchanged: 3,
        batches: 2,
        failed_batches: 0,
        stale_marked: 3,
        stale_deleted: 1,
        streams,
        requests: RequestStats { total: 5, by_status, retries: 1, rate_limited: 1, ..Default::default() },
        lag: Default::default(),
        in_flight: Default::default(),
        errors: vec!["page 3: truncated body".to_string()],
        timeline: vec![
            TimelinePoint { t_ms: 250, records_fetched: 40, assets_loaded: 0, records_in_flight: 40, lag_p99_us: 900 },
            TimelinePoint {
                t_ms: 500,
                records_fetched: 100,
                assets_loaded: 98,
                records_in_flight: 2,
                lag_p99_us: 1500,
            },
        ],
    }
}

fn ok<T>(r: Result<T, StoreError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

fn all_filter() -> AssetFilter {
    AssetFilter { include_stale: true, ..Default::default() }
}

/// Every stored asset (stale included), in store order.
async fn all_assets(store: &dyn Store) -> Vec<StoredAsset> {
    ok(store.list_assets(&all_filter(), 1_000_000).await, "list_assets(all)")
}

/// One stored asset by key, stale included.
async fn find(store: &dyn Store, connection: &str, kind: AssetKind, source_id: &str) -> Option<StoredAsset> {
    let filter = AssetFilter {
        connection: Some(connection.to_string()),
        kind: Some(kind),
        include_stale: true,
        ..Default::default()
    };
    let all = ok(store.list_assets(&filter, 1_000_000).await, "list_assets(connection, kind)");
    all.into_iter().find(|a| a.source_id == source_id)
}

async fn get(store: &dyn Store, connection: &str, kind: AssetKind, source_id: &str) -> StoredAsset {
    match find(store, connection, kind, source_id).await {
        Some(a) => a,
        None => panic!("asset ({connection}, {kind}, {source_id}) should be stored but list_assets does not return it"),
    }
}

async fn total(store: &dyn Store) -> u64 {
    ok(store.count_assets(&all_filter()).await, "count_assets(all)").iter().map(|c| c.count).sum()
}

fn outcome(inserted: u64, updated: u64, unchanged: u64) -> LoadOutcome {
    LoadOutcome { inserted, updated, unchanged, rejected: Vec::new() }
}

fn count(connection: &str, kind: AssetKind, count: u64, stale: u64) -> AssetCount {
    AssetCount { connection: connection.to_string(), kind, count, stale }
}

fn keys(assets: &[StoredAsset]) -> Vec<(String, AssetKind, String)> {
    assets.iter().map(|a| (a.connection.clone(), a.kind, a.source_id.clone())).collect()
}

fn key(connection: &str, kind: AssetKind, source_id: &str) -> (String, AssetKind, String) {
    (connection.to_string(), kind, source_id.to_string())
}

const D: AssetKind = AssetKind::Device;
const U: AssetKind = AssetKind::User;

// ---------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------

/// The same batch twice: second time all unchanged, nothing duplicated,
/// `first_seen` kept, `last_seen`/`last_sync_id` from the second sync.
pub async fn idempotent_upsert(store: &dyn Store) {
    let empty = ok(store.upsert(batch("conn-a", "sync-0", at(0), Vec::new())).await, "upsert(empty batch)");
    assert_eq!(empty, LoadOutcome::default(), "an empty batch must change nothing");

    let raw = serde_json::json!({"id": "d2", "score": 42, "nested": {"ok": true, "list": [1, 2.5, "x"]}});
    let assets = vec![
        device("hosts", "d1", "web-1.example.com"),
        device("hosts", "d2", "web-2.example.com").with_raw(Some(raw.clone())),
        user("users", "u1", "alice@example.com"),
    ];
    let first = ok(store.upsert(batch("conn-a", "sync-1", at(0), assets.clone())).await, "first upsert");
    assert_eq!(first, outcome(3, 0, 0), "first upsert of 3 new assets must insert 3");
    assert_eq!(total(store).await, 3, "3 assets after the first upsert");

    let second = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), assets.clone())).await, "second upsert");
    assert_eq!(second, outcome(0, 0, 3), "the same assets again must be counted unchanged");
    assert_eq!(total(store).await, 3, "an identical upsert must not add assets");

    // A retry of the very same batch (same sync, same time) is also a no-op.
    let retry = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), assets.clone())).await, "retried upsert");
    assert_eq!(retry, outcome(0, 0, 3), "a retried batch must be counted unchanged");
    assert_eq!(total(store).await, 3, "a retried upsert must not add assets");

    for asset in &assets {
        let stored = get(store, "conn-a", asset.kind(), asset.source_id()).await;
        assert_eq!(
            stored.first_seen,
            at(0),
            "first_seen of {} must stay at the first sync's seen_at",
            asset.source_id()
        );
        assert_eq!(stored.last_seen, at(HOUR), "last_seen of {} must be the latest seen_at", asset.source_id());
        assert_eq!(stored.last_sync_id, "sync-2", "last_sync_id of {} must be the latest sync", asset.source_id());
        assert_eq!(stored.stream, asset.stream, "stream of {}", asset.source_id());
        assert_eq!(stored.stale_since, None, "{} must not be stale", asset.source_id());
        assert_eq!(stored.fields, asset.fields_json(), "fields of {} must round-trip", asset.source_id());
        assert_eq!(stored.raw, asset.raw, "raw of {} must round-trip", asset.source_id());
    }
}

/// A changed asset is counted updated, its fields replaced, `first_seen` kept;
/// a change of raw alone is a change; a stream change alone is not, but is recorded.
pub async fn changed_asset_updates(store: &dyn Store) {
    let v1 = vec![device("hosts", "d1", "old.example.com"), device("hosts", "d2", "same.example.com")];
    ok(store.upsert(batch("conn-a", "sync-1", at(0), v1)).await, "upsert v1");

    let changed = device("hosts", "d1", "new.example.com");
    let v2 =
        vec![changed.clone(), device("hosts", "d2", "same.example.com"), device("hosts", "d3", "fresh.example.com")];
    let out = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), v2)).await, "upsert v2");
    assert_eq!(out, outcome(1, 1, 1), "v2: d3 new, d1 changed, d2 unchanged");

    let d1 = get(store, "conn-a", D, "d1").await;
    assert_eq!(d1.fields, changed.fields_json(), "an updated asset's fields must be replaced");
    assert_eq!(d1.fields["hostname"], "new.example.com", "hostname must be the new one");
    assert_eq!(d1.first_seen, at(0), "an update must keep first_seen");
    assert_eq!(d1.last_seen, at(HOUR), "an update must set last_seen");
    assert_eq!(d1.last_sync_id, "sync-2", "an update must set last_sync_id");
    let d3 = get(store, "conn-a", D, "d3").await;
    assert_eq!((d3.first_seen, d3.last_seen), (at(HOUR), at(HOUR)), "a new asset has first_seen = last_seen = seen_at");

    // Raw alone changing is a change (the content hash covers raw).
    let with_raw = changed.clone().with_raw(Some(serde_json::json!({"vendor": "v1"})));
    let out = ok(store.upsert(batch("conn-a", "sync-3", at(2 * HOUR), vec![with_raw.clone()])).await, "upsert raw");
    assert_eq!(out, outcome(0, 1, 0), "adding raw to an asset must count as updated");
    assert_eq!(get(store, "conn-a", D, "d1").await.raw, with_raw.raw, "raw must be replaced");

    // The same content under another stream is unchanged, but the stream is recorded.
    let moved = Asset { stream: "hosts-v2".into(), ..with_raw.clone() };
    let out = ok(store.upsert(batch("conn-a", "sync-4", at(3 * HOUR), vec![moved])).await, "upsert moved");
    assert_eq!(out, outcome(0, 0, 1), "a stream change alone must count as unchanged");
    let d1 = get(store, "conn-a", D, "d1").await;
    assert_eq!(d1.stream, "hosts-v2", "the stream must follow the latest batch");
    assert_eq!(
        (d1.last_seen, d1.last_sync_id.as_str()),
        (at(3 * HOUR), "sync-4"),
        "unchanged still refreshes last_seen"
    );
    assert_eq!(total(store).await, 3, "updates must not add assets");
}

/// The same source id twice in one batch: the later one wins.
pub async fn duplicate_source_id_in_batch(store: &dyn Store) {
    let assets = vec![device("hosts", "d1", "first.example.com"), device("hosts", "d1", "second.example.com")];
    let out = ok(store.upsert(batch("conn-a", "sync-1", at(0), assets)).await, "upsert duplicates");
    assert_eq!(out.inserted, 1, "the first occurrence is inserted: {out:?}");
    assert_eq!(out.updated + out.unchanged, 1, "the second occurrence is counted updated or unchanged: {out:?}");
    assert!(out.rejected.is_empty(), "duplicates must not be rejected: {out:?}");
    assert_eq!(total(store).await, 1, "one asset for one key");
    assert_eq!(get(store, "conn-a", D, "d1").await.fields["hostname"], "second.example.com", "the later one wins");
}

/// (connection, kind, source_id) is the key: the same source id under another
/// connection or another kind is another asset.
pub async fn key_is_connection_kind_source_id(store: &dyn Store) {
    let out = ok(
        store.upsert(batch("conn-a", "sync-a", at(0), vec![device("s", "x", "a-dev"), user("u", "x", "a@x.io")])).await,
        "upsert conn-a",
    );
    assert_eq!(out, outcome(2, 0, 0), "device x and user x under one connection are two assets");
    let out =
        ok(store.upsert(batch("conn-b", "sync-b", at(0), vec![device("s", "x", "b-dev")])).await, "upsert conn-b");
    assert_eq!(out, outcome(1, 0, 0), "device x under another connection is another asset");
    assert_eq!(total(store).await, 3, "three distinct keys");

    let out = ok(store.upsert(batch("conn-a", "sync-a2", at(HOUR), vec![device("s", "x", "a-dev-2")])).await, "update");
    assert_eq!(out, outcome(0, 1, 0), "changing conn-a's device x is an update");
    assert_eq!(get(store, "conn-b", D, "x").await.fields["hostname"], "b-dev", "conn-b's device must be untouched");
    assert_eq!(get(store, "conn-b", D, "x").await.last_sync_id, "sync-b", "conn-b's device must be untouched");
    let ux = get(store, "conn-a", U, "x").await;
    assert_eq!((ux.fields["email"].as_str(), ux.last_sync_id.as_str()), (Some("a@x.io"), "sync-a"), "user x untouched");
    assert_eq!(get(store, "conn-a", D, "x").await.fields["hostname"], "a-dev-2", "conn-a's device updated");
}

/// Marking touches only (connection, stream) assets the sync did not see;
/// re-seen assets are cleared; marking again does not move `stale_since`.
pub async fn stale_marking_is_scoped(store: &dyn Store) {
    let mark = StalePolicy::Mark { delete_after: None };
    ok(
        store
            .upsert(batch(
                "conn-a",
                "a-1",
                at(0),
                vec![
                    device("s1", "a1", "a1"),
                    device("s1", "a2", "a2"),
                    device("s1", "a3", "a3"),
                    device("s2", "b1", "b1"),
                ],
            ))
            .await,
        "upsert conn-a sync 1",
    );
    // conn-b has the same stream name and an overlapping source id.
    ok(
        store.upsert(batch("conn-b", "b-1", at(0), vec![device("s1", "a2", "b-a2"), device("s1", "c1", "c1")])).await,
        "upsert conn-b sync 1",
    );

    ok(store.upsert(batch("conn-a", "a-2", at(HOUR), vec![device("s1", "a1", "a1")])).await, "upsert conn-a sync 2");
    let out = ok(store.handle_stale(&scope("conn-a", "s1", "a-2", at(HOUR)), mark).await, "handle_stale a-2");
    assert_eq!(out, StaleOutcome { marked: 2, deleted: 0 }, "a2 and a3 (conn-a, s1) not seen by a-2 must be marked");

    let stale_of = |a: StoredAsset| a.stale_since;
    assert_eq!(stale_of(get(store, "conn-a", D, "a1").await), None, "a1 was seen by a-2: not stale");
    assert_eq!(stale_of(get(store, "conn-a", D, "a2").await), Some(at(HOUR)), "a2 stale since scope.now");
    assert_eq!(stale_of(get(store, "conn-a", D, "a3").await), Some(at(HOUR)), "a3 stale since scope.now");
    assert_eq!(stale_of(get(store, "conn-a", D, "b1").await), None, "stream s2 must not be touched");
    assert_eq!(stale_of(get(store, "conn-b", D, "a2").await), None, "another connection must not be touched");
    assert_eq!(stale_of(get(store, "conn-b", D, "c1").await), None, "another connection must not be touched");

    // Again, later: nothing newly marked, stale_since unchanged, nothing deleted without delete_after.
    let out = ok(
        store.handle_stale(&scope_started("conn-a", "s1", "a-2", at(HOUR), at(5 * DAY)), mark).await,
        "handle_stale again",
    );
    assert_eq!(out, StaleOutcome { marked: 0, deleted: 0 }, "already-stale assets are not marked again");
    assert_eq!(stale_of(get(store, "conn-a", D, "a3").await), Some(at(HOUR)), "stale_since must not move");

    // a2 is seen again: no longer stale (and its content is unchanged).
    let out = ok(
        store
            .upsert(batch("conn-a", "a-3", at(2 * HOUR), vec![device("s1", "a1", "a1"), device("s1", "a2", "a2")]))
            .await,
        "upsert conn-a sync 3",
    );
    assert_eq!(out, outcome(0, 0, 2), "re-seen unchanged assets are unchanged");
    let a2 = get(store, "conn-a", D, "a2").await;
    assert_eq!(
        (a2.stale_since, a2.last_sync_id.as_str()),
        (None, "a-3"),
        "a re-seen asset must have stale_since cleared"
    );
    let out = ok(store.handle_stale(&scope("conn-a", "s1", "a-3", at(2 * HOUR)), mark).await, "handle_stale a-3");
    assert_eq!(out, StaleOutcome { marked: 0, deleted: 0 }, "only a3 is stale, and it already was");
    assert_eq!(total(store).await, 6, "marking never deletes");
}

/// `delete_after` deletes only assets of the scope stale for at least that long.
pub async fn stale_delete_after_age(store: &dyn Store) {
    let five_days = StalePolicy::Mark { delete_after: Some(Duration::from_secs(5 * DAY as u64)) };
    let all =
        vec![device("s1", "a1", "a1"), device("s1", "a2", "a2"), device("s1", "a3", "a3"), device("s2", "b1", "b1")];
    ok(store.upsert(batch("conn-a", "a-1", at(0), all)).await, "upsert a-1");
    ok(store.upsert(batch("conn-b", "b-1", at(0), vec![device("s1", "a3", "other")])).await, "upsert b-1");
    // conn-b's asset is stale too, since long ago: another connection's policy run must not delete it.
    ok(store.handle_stale(&scope("conn-b", "s1", "b-2", at(HOUR)), StalePolicy::default()).await, "mark conn-b");

    // a3 goes stale at T+1h, a2 at T+10d.
    ok(
        store.upsert(batch("conn-a", "a-2", at(HOUR), vec![device("s1", "a1", "a1"), device("s1", "a2", "a2")])).await,
        "a-2",
    );
    let out = ok(store.handle_stale(&scope("conn-a", "s1", "a-2", at(HOUR)), five_days).await, "stale a-2");
    assert_eq!(out, StaleOutcome { marked: 1, deleted: 0 }, "a3 marked, too recently to be deleted");

    ok(store.upsert(batch("conn-a", "a-3", at(10 * DAY), vec![device("s1", "a1", "a1")])).await, "a-3");
    let out = ok(store.handle_stale(&scope("conn-a", "s1", "a-3", at(10 * DAY)), five_days).await, "stale a-3");
    assert_eq!(out, StaleOutcome { marked: 1, deleted: 1 }, "a2 marked; a3 (stale ~10 days > 5) deleted");
    assert!(find(store, "conn-a", D, "a3").await.is_none(), "a3 must be deleted");
    assert_eq!(get(store, "conn-a", D, "a2").await.stale_since, Some(at(10 * DAY)), "a2 stale but kept");
    assert!(find(store, "conn-a", D, "b1").await.is_some(), "stream s2 must not be touched");
    assert!(find(store, "conn-b", D, "a3").await.is_some(), "another connection's stale asset must not be deleted");

    // Simulate the passing of time with scope.now in the future.
    let out = ok(
        store.handle_stale(&scope_started("conn-a", "s1", "a-3", at(10 * DAY), at(16 * DAY)), five_days).await,
        "stale later",
    );
    assert_eq!(out, StaleOutcome { marked: 0, deleted: 1 }, "a2 stale for 6 days > 5 must now be deleted");
    assert!(find(store, "conn-a", D, "a2").await.is_none(), "a2 must be deleted");
    assert!(find(store, "conn-a", D, "a1").await.is_some(), "a1 (seen by a-3) must be kept");
    let left = keys(&all_assets(store).await);
    assert_eq!(
        left,
        vec![key("conn-a", D, "a1"), key("conn-a", D, "b1"), key("conn-b", D, "a3")],
        "only the deleted assets may be gone"
    );
}

/// `Keep` marks and deletes nothing.
pub async fn stale_keep_does_nothing(store: &dyn Store) {
    ok(
        store.upsert(batch("conn-a", "a-1", at(0), vec![device("s1", "a1", "a1"), device("s1", "a2", "a2")])).await,
        "a-1",
    );
    ok(store.upsert(batch("conn-a", "a-2", at(HOUR), vec![device("s1", "a1", "a1")])).await, "a-2");
    let out = ok(store.handle_stale(&scope("conn-a", "s1", "a-2", at(100 * DAY)), StalePolicy::Keep).await, "keep");
    assert_eq!(out, StaleOutcome::default(), "Keep must report nothing marked or deleted");
    assert_eq!(get(store, "conn-a", D, "a2").await.stale_since, None, "Keep must not mark");

    // Already-stale assets are not deleted by Keep either.
    ok(store.handle_stale(&scope("conn-a", "s1", "a-2", at(HOUR)), StalePolicy::default()).await, "mark");
    let out = ok(store.handle_stale(&scope("conn-a", "s1", "a-2", at(100 * DAY)), StalePolicy::Keep).await, "keep 2");
    assert_eq!(out, StaleOutcome::default(), "Keep must not delete");
    assert_eq!(total(store).await, 2, "Keep must not delete");
}

/// Checkpoints round-trip, are overwritten, are independent per (connection, stream).
pub async fn checkpoints_round_trip(store: &dyn Store) {
    assert_eq!(ok(store.load_checkpoint("conn-a", "hosts").await, "load absent"), None, "absent checkpoint is None");

    let c1 = Checkpoint(serde_json::json!({"cursor": "abc", "page": 3, "nested": {"at": "2024-05-01T12:00:00Z"}}));
    ok(store.save_checkpoint("conn-a", "hosts", &c1).await, "save c1");
    assert_eq!(ok(store.load_checkpoint("conn-a", "hosts").await, "load c1"), Some(c1.clone()), "round-trip");

    let c2 = Checkpoint(serde_json::json!({"cursor": "def"}));
    ok(store.save_checkpoint("conn-a", "hosts", &c2).await, "save c2");
    assert_eq!(ok(store.load_checkpoint("conn-a", "hosts").await, "load c2"), Some(c2.clone()), "overwrite");

    let scalar = Checkpoint(serde_json::json!(12345));
    ok(store.save_checkpoint("conn-a", "users", &scalar).await, "save scalar");
    let text = Checkpoint(serde_json::json!("line 1000"));
    ok(store.save_checkpoint("conn-b", "hosts", &text).await, "save text");
    assert_eq!(ok(store.load_checkpoint("conn-a", "users").await, "load"), Some(scalar), "a scalar checkpoint");
    assert_eq!(ok(store.load_checkpoint("conn-b", "hosts").await, "load"), Some(text), "a string checkpoint");
    assert_eq!(ok(store.load_checkpoint("conn-a", "hosts").await, "load"), Some(c2), "other keys must not interfere");
    assert_eq!(ok(store.load_checkpoint("conn-b", "users").await, "load"), None, "still absent");
}

/// Runs are listed most recent first (by `started_at`, not by save order);
/// saving a sync id again replaces the run.
pub async fn runs_most_recent_first(store: &dyn Store) {
    assert!(ok(store.runs(10).await, "runs on empty store").is_empty(), "no runs yet");
    let older = run_summary("sync-old", "conn-a", at(0));
    let newer = run_summary("sync-new", "conn-b", at(HOUR));
    ok(store.save_run(&newer).await, "save newer");
    ok(store.save_run(&older).await, "save older");
    assert_eq!(ok(store.runs(10).await, "runs(10)"), vec![newer.clone(), older.clone()], "most recent first, intact");
    assert_eq!(ok(store.runs(1).await, "runs(1)"), vec![newer.clone()], "limit 1 gives the most recent");

    let mut replaced = older.clone();
    replaced.status = RunStatus::Failed;
    replaced.errors.push("store unavailable".into());
    replaced.ended_at = at(600);
    ok(store.save_run(&replaced).await, "save again");
    assert_eq!(
        ok(store.runs(10).await, "runs after replace"),
        vec![newer.clone(), replaced.clone()],
        "same sync id replaces the run"
    );
    // One run by its sync id.
    assert_eq!(ok(store.run("sync-old").await, "run(sync-old)"), Some(replaced), "found by sync id");
    assert_eq!(ok(store.run("sync-new").await, "run(sync-new)"), Some(newer), "found by sync id");
    assert_eq!(ok(store.run("sync-none").await, "run(unknown)"), None, "an unknown sync id is no run");
}

/// Rejects are listed by sync id, in save order, with a limit.
pub async fn rejects_by_sync_id(store: &dyn Store) {
    ok(store.save_rejects(Vec::new()).await, "save no rejects");
    let rej = |sync: &str, stream: &str, n: u32| StoredReject {
        sync_id: sync.to_string(),
        connection: "conn-a".to_string(),
        stream: stream.to_string(),
        reject: Reject::new(format!("line {n}"), "missing_key", format!("record {n} has no id")),
    };
    let mut with_raw = rej("sync-1", "users", 9);
    with_raw.reject = with_raw.reject.with_raw(b"{\"name\": \"no id\"}");
    let first = vec![rej("sync-1", "hosts", 1), rej("sync-2", "hosts", 1), rej("sync-1", "hosts", 5)];
    ok(store.save_rejects(first.clone()).await, "save rejects");
    ok(store.save_rejects(vec![with_raw.clone()]).await, "save reject with raw");

    let got = ok(store.rejects("sync-1", 100).await, "rejects(sync-1)");
    assert_eq!(got, vec![first[0].clone(), first[2].clone(), with_raw.clone()], "sync-1's rejects in save order");
    assert_eq!(ok(store.rejects("sync-2", 100).await, "rejects(sync-2)"), vec![first[1].clone()], "sync-2's rejects");
    assert_eq!(ok(store.rejects("sync-1", 2).await, "rejects(limit 2)").len(), 2, "limit must be honoured");
    assert!(ok(store.rejects("sync-x", 100).await, "rejects(unknown)").is_empty(), "unknown sync id: none");
}

/// `count_assets` and `list_assets` honour connection, kind and include_stale.
pub async fn count_and_list_filters(store: &dyn Store) {
    let alpha =
        vec![device("devices", "d1", "a-d1"), device("devices", "d2", "a-d2"), user("users", "u1", "a-u1@x.io")];
    let beta =
        vec![device("devices", "d1", "b-d1"), user("users", "u2", "b-u2@x.io"), user("users", "u1", "b-u1@x.io")];
    ok(store.upsert(batch("beta", "beta-1", at(0), beta)).await, "upsert beta");
    ok(store.upsert(batch("alpha", "alpha-1", at(0), alpha)).await, "upsert alpha");
    // alpha's d2 goes stale.
    ok(store.upsert(batch("alpha", "alpha-2", at(HOUR), vec![device("devices", "d1", "a-d1")])).await, "alpha-2");
    let out =
        ok(store.handle_stale(&scope("alpha", "devices", "alpha-2", at(HOUR)), StalePolicy::default()).await, "mark");
    assert_eq!(out.marked, 1, "alpha d2 marked stale");

    let filter = |connection: Option<&str>, kind: Option<AssetKind>, include_stale: bool| AssetFilter {
        connection: connection.map(str::to_string),
        kind,
        include_stale,
        ..Default::default()
    };
    let counts = |f: AssetFilter| async move { ok(store.count_assets(&f).await, "count_assets") };
    let list =
        |f: AssetFilter, limit: usize| async move { keys(&ok(store.list_assets(&f, limit).await, "list_assets")) };

    assert_eq!(
        counts(filter(None, None, false)).await,
        vec![count("alpha", D, 1, 1), count("alpha", U, 1, 0), count("beta", D, 1, 0), count("beta", U, 2, 0)],
        "without include_stale, `count` counts live assets and `stale` the stale ones"
    );
    assert_eq!(
        counts(filter(None, None, true)).await,
        vec![count("alpha", D, 2, 1), count("alpha", U, 1, 0), count("beta", D, 1, 0), count("beta", U, 2, 0)],
        "with include_stale, stale assets are counted and reported in `stale`"
    );
    assert_eq!(
        counts(filter(Some("beta"), None, false)).await,
        vec![count("beta", D, 1, 0), count("beta", U, 2, 0)],
        "connection filter"
    );
    assert_eq!(
        counts(filter(None, Some(U), false)).await,
        vec![count("alpha", U, 1, 0), count("beta", U, 2, 0)],
        "kind filter"
    );
    assert_eq!(
        counts(filter(Some("alpha"), Some(D), true)).await,
        vec![count("alpha", D, 2, 1)],
        "connection + kind + include_stale"
    );
    assert_eq!(
        counts(filter(Some("alpha"), Some(D), false)).await,
        vec![count("alpha", D, 1, 1)],
        "connection + kind, stale counted apart"
    );
    assert!(counts(filter(Some("gamma"), None, true)).await.is_empty(), "unknown connection: no counts");

    assert_eq!(
        list(filter(None, None, false), 100).await,
        vec![
            key("alpha", D, "d1"),
            key("alpha", U, "u1"),
            key("beta", D, "d1"),
            key("beta", U, "u1"),
            key("beta", U, "u2"),
        ],
        "all fresh assets ordered by connection, kind, source_id"
    );
    assert_eq!(
        list(filter(None, None, true), 100).await,
        vec![
            key("alpha", D, "d1"),
            key("alpha", D, "d2"),
            key("alpha", U, "u1"),
            key("beta", D, "d1"),
            key("beta", U, "u1"),
            key("beta", U, "u2"),
        ],
        "include_stale lists the stale asset too"
    );
    assert_eq!(
        list(filter(Some("beta"), Some(U), false), 100).await,
        vec![key("beta", U, "u1"), key("beta", U, "u2")],
        "connection + kind filter"
    );
    assert_eq!(
        list(filter(None, Some(D), true), 100).await,
        vec![key("alpha", D, "d1"), key("alpha", D, "d2"), key("beta", D, "d1")],
        "kind filter"
    );
    assert_eq!(
        list(filter(None, None, true), 2).await,
        vec![key("alpha", D, "d1"), key("alpha", D, "d2")],
        "limit keeps the first in order"
    );
    let stale = ok(store.list_assets(&filter(Some("alpha"), Some(D), true), 10).await, "list stale");
    assert_eq!(
        stale.iter().map(|a| a.stale_since).collect::<Vec<_>>(),
        vec![None, Some(at(HOUR))],
        "stale_since listed"
    );
}

/// `limit` 0 means nothing, not "no limit", for every listing.
pub async fn limit_zero_returns_nothing(store: &dyn Store) {
    ok(store.upsert(batch("conn-a", "sync-1", at(0), vec![device("s", "d1", "h")])).await, "upsert");
    ok(store.save_run(&run_summary("sync-1", "conn-a", at(0))).await, "save run");
    let reject = StoredReject {
        sync_id: "sync-1".into(),
        connection: "conn-a".into(),
        stream: "s".into(),
        reject: Reject::new("line 1", "bad", "bad"),
    };
    ok(store.save_rejects(vec![reject]).await, "save reject");
    assert!(ok(store.list_assets(&all_filter(), 0).await, "list_assets(0)").is_empty(), "list_assets limit 0");
    assert!(ok(store.runs(0).await, "runs(0)").is_empty(), "runs limit 0");
    assert!(ok(store.rejects("sync-1", 0).await, "rejects(0)").is_empty(), "rejects limit 0");
    assert_eq!(ok(store.list_assets(&all_filter(), 1).await, "list_assets(1)").len(), 1, "limit 1");
}

/// 5,000 assets in one batch are all stored (a store must split internally if it needs to).
pub async fn large_batch_stored(store: &dyn Store) {
    const N: usize = 5_000;
    let assets: Vec<Asset> =
        (0..N).map(|i| device("hosts", &format!("dev-{i:05}"), &format!("host-{i}.example.com"))).collect();
    let out = ok(store.upsert(batch("conn-a", "sync-1", at(0), assets.clone())).await, "upsert 5000");
    assert_eq!(out, outcome(N as u64, 0, 0), "all 5000 inserted");
    assert_eq!(total(store).await, N as u64, "5000 stored");
    let listed = all_assets(store).await;
    assert_eq!(listed.len(), N, "list_assets returns all 5000");
    assert_eq!(listed[0].source_id, "dev-00000", "ordered by source_id");
    assert_eq!(listed[N - 1].source_id, "dev-04999", "ordered by source_id");
    assert_eq!(listed[1234].fields, assets[1234].fields_json(), "fields stored");

    let out = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), assets)).await, "upsert 5000 again");
    assert_eq!(out, outcome(0, 0, N as u64), "all 5000 unchanged the second time");
    let out =
        ok(store.handle_stale(&scope("conn-a", "hosts", "sync-2", at(HOUR)), StalePolicy::default()).await, "stale");
    assert_eq!(out.marked, 0, "every asset was seen by sync-2");
}

/// A re-sync batch of a thousand records mixing new, changed, unchanged and
/// moved assets, with two keys twice: every record is counted once, by what
/// it did, and the later record of a key wins, its stream too. (Stores may
/// write a batch in pieces: d0254's two records come 256th and 257th, on
/// either side of where a piece of 256 would end; d0120's are both in the
/// first.)
pub async fn mixed_batch_counts_each_record(store: &dyn Store) {
    let id = |i: usize| format!("d{i:04}");
    let first: Vec<Asset> = (0..600).map(|i| device("hosts", &id(i), &format!("v1-{i}"))).collect();
    let out = ok(store.upsert(batch("conn-a", "sync-1", at(0), first)).await, "upsert the first 600");
    assert_eq!(out, outcome(600, 0, 0), "600 new assets");

    let mut second = Vec::new();
    for i in 0..1000 {
        second.push(match i {
            // 100 changed.
            100..200 => device("hosts", &id(i), &format!("v2-{i}")),
            // 100 the same, under another stream.
            200..300 => device("moved", &id(i), &format!("v1-{i}")),
            // 400 new.
            600.. => device("hosts", &id(i), &format!("v1-{i}")),
            // 300 the same.
            _ => device("hosts", &id(i), &format!("v1-{i}")),
        });
        if i == 120 || i == 254 {
            second.push(device("late", &id(i), &format!("v3-{i}")));
        }
    }
    let out = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), second)).await, "upsert the mixed 1002");
    assert_eq!(out.inserted, 400, "d0600-d0999 are new: {out:?}");
    assert_eq!(out.updated, 102, "d0100-d0199 changed, and the second records of d0120 and d0254: {out:?}");
    assert_eq!(out.unchanged, 500, "400 the same, 100 only moved (d0254's first record too): {out:?}");
    assert!(out.rejected.is_empty(), "nothing rejected: {out:?}");
    assert_eq!(total(store).await, 1000, "one asset per key");

    let expect = [
        ("d0050", "v1-50", "hosts"),
        ("d0150", "v2-150", "hosts"),
        ("d0120", "v3-120", "late"),
        ("d0250", "v1-250", "moved"),
        ("d0254", "v3-254", "late"),
        ("d0255", "v1-255", "moved"),
        ("d0999", "v1-999", "hosts"),
    ];
    // One listing, not one per asset: a thousand documents is slow to list on a test server.
    let stored: BTreeMap<String, StoredAsset> =
        all_assets(store).await.into_iter().map(|a| (a.source_id.clone(), a)).collect();
    for (source_id, hostname, stream) in expect {
        let Some(d) = stored.get(source_id) else { panic!("{source_id} should be stored") };
        assert_eq!((d.fields["hostname"].as_str(), d.stream.as_str()), (Some(hostname), stream), "{source_id}");
        assert_eq!(d.last_sync_id, "sync-2", "{source_id} seen by the second sync");
    }
    assert_eq!(stored.get("d0050").map(|d| d.first_seen), Some(at(0)), "first seen kept");
    assert_eq!(stored.get("d0999").map(|d| d.first_seen), Some(at(HOUR)), "first seen when new");
}

/// Source id of the oversized device in [`oversized_asset_isolated`].
pub const OVERSIZED_SOURCE_ID: &str = "huge-1";

/// A device whose tags total more than 17 MB (over MongoDB's 16 MiB document limit).
pub fn oversized_device(stream: &str) -> Asset {
    let tag = "t".repeat(1023);
    let tags: Vec<String> = (0..18 * 1024).map(|i| format!("{i:05}{tag}")).collect();
    Asset::device(
        stream,
        Device {
            source_id: OVERSIZED_SOURCE_ID.to_string(),
            hostname: Some("huge".into()),
            tags,
            ..Default::default()
        },
    )
}

/// One oversized asset in a batch: the store stores it, or rejects it alone
/// (in `LoadOutcome::rejected`, its source id in `Reject::record`); the other
/// records of the batch are stored either way.
pub async fn oversized_asset_isolated(store: &dyn Store) {
    let huge = oversized_device("hosts");
    let assets = vec![device("hosts", "small-1", "s1"), huge.clone(), device("hosts", "small-2", "s2")];
    let out = ok(store.upsert(batch("conn-a", "sync-1", at(0), assets)).await, "upsert with an oversized asset");
    assert!(out.rejected.len() <= 1, "only the oversized asset may be rejected: {:?}", out.rejected);
    assert_eq!(out.stored() + out.rejected.len() as u64, 3, "every record is stored or rejected: {out:?}");
    assert!(find(store, "conn-a", D, "small-1").await.is_some(), "small-1 must be stored despite the oversized asset");
    assert!(find(store, "conn-a", D, "small-2").await.is_some(), "small-2 must be stored despite the oversized asset");
    match out.rejected.first() {
        Some(reject) => {
            assert!(
                reject.record.contains(OVERSIZED_SOURCE_ID),
                "the reject must name the oversized asset ({OVERSIZED_SOURCE_ID}) in `record`: {reject:?}"
            );
            assert_eq!(out.inserted, 2, "the two small assets inserted: {out:?}");
            assert!(
                find(store, "conn-a", D, OVERSIZED_SOURCE_ID).await.is_none(),
                "a rejected asset must not be stored"
            );
        }
        None => {
            assert_eq!(out.inserted, 3, "all three inserted: {out:?}");
            let stored = get(store, "conn-a", D, OVERSIZED_SOURCE_ID).await;
            assert_eq!(stored.fields, huge.fields_json(), "the oversized asset stored intact");
        }
    }
    // A retry of the same batch behaves the same way and never fails the batch.
    let again = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), vec![huge])).await, "upsert oversized alone");
    assert_eq!(again.stored() + again.rejected.len() as u64, 1, "the oversized asset alone: stored or rejected");
}

/// Records per batch in [`large_documents_split_by_bytes`], each of about [`LARGE_DOCUMENT_BYTES`].
pub const LARGE_DOCUMENTS: usize = 18;
/// Size of each large document's raw data: together more than MongoDB's 16 MiB.
pub const LARGE_DOCUMENT_BYTES: usize = 1 << 20;

/// A device whose raw record holds about `bytes` bytes; `version` changes its content.
pub fn large_device(stream: &str, source_id: &str, bytes: usize, version: u32) -> Asset {
    let pad: String = (0..bytes).map(|i| char::from(b'a' + ((i / 1000) % 26) as u8)).collect();
    device(stream, source_id, &format!("{source_id}.example.com"))
        .with_raw(Some(serde_json::json!({ "id": source_id, "version": version, "pad": pad })))
}

/// One batch of large documents, more bytes than one MongoDB command may hold:
/// every record stored intact and counted exactly, first inserted, then half changed.
pub async fn large_documents_split_by_bytes(store: &dyn Store) {
    let n = LARGE_DOCUMENTS;
    let first: Vec<Asset> =
        (0..n).map(|i| large_device("hosts", &format!("big-{i:02}"), LARGE_DOCUMENT_BYTES, 1)).collect();
    let bytes: usize = first.iter().map(|a| a.raw.as_ref().map_or(0, |r| r.to_string().len())).sum();
    assert!(bytes > 16 << 20, "the batch must exceed 16 MiB: {bytes}");
    let mut assets = first.clone();
    assets.push(device("hosts", "small", "small.example.com"));
    let out = ok(store.upsert(batch("conn-a", "sync-1", at(0), assets)).await, "upsert large documents");
    assert_eq!(out, outcome(n as u64 + 1, 0, 0), "every large document inserted, none rejected");
    assert_eq!(total(store).await, n as u64 + 1, "every large document stored");
    for i in [0, n / 2, n - 1] {
        let stored = get(store, "conn-a", D, &format!("big-{i:02}")).await;
        assert_eq!(stored.raw, first[i].raw, "big-{i:02}'s raw round-trips intact");
        assert_eq!(stored.fields, first[i].fields_json(), "big-{i:02}'s fields round-trip");
    }

    // Half changed (odd ones), half the same.
    let second: Vec<Asset> = (0..n)
        .map(|i| {
            let version = if i % 2 == 1 { 2 } else { 1 };
            large_device("hosts", &format!("big-{i:02}"), LARGE_DOCUMENT_BYTES, version)
        })
        .collect();
    let out = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), second.clone())).await, "upsert again");
    assert_eq!(out, outcome(0, n as u64 / 2, n as u64 / 2), "odd ones changed, even ones unchanged");
    let changed = get(store, "conn-a", D, "big-01").await;
    assert_eq!(changed.raw, second[1].raw, "the changed raw replaced the old one");
    assert_eq!((changed.first_seen, changed.last_sync_id.as_str()), (at(0), "sync-2"), "first_seen kept");
    assert_eq!(total(store).await, n as u64 + 1, "no duplicates");
}

/// Millisecond precision everywhere a time is stored or compared.
pub async fn timestamps_keep_milliseconds(store: &dyn Store) {
    let t0 = at_ms(0, 123);
    ok(
        store.upsert(batch("conn-a", "ms-1", t0, vec![device("s1", "a1", "a1"), device("s1", "a2", "a2")])).await,
        "upsert ms-1",
    );
    let a1 = get(store, "conn-a", D, "a1").await;
    assert_eq!((a1.first_seen, a1.last_seen), (t0, t0), "first_seen and last_seen keep milliseconds");

    let t1 = at_ms(0, 124);
    let out = ok(store.upsert(batch("conn-a", "ms-2", t1, vec![device("s1", "a1", "a1")])).await, "upsert ms-2");
    assert_eq!(out, outcome(0, 0, 1), "same content a millisecond later: unchanged");
    let a1 = get(store, "conn-a", D, "a1").await;
    assert_eq!((a1.first_seen, a1.last_seen), (t0, t1), "last_seen moves by one millisecond, first_seen stays");

    let marked_at = at_ms(10, 457);
    let mark = StalePolicy::Mark { delete_after: None };
    let out = ok(store.handle_stale(&scope_started("conn-a", "s1", "ms-2", t1, marked_at), mark).await, "mark");
    assert_eq!(out, StaleOutcome { marked: 1, deleted: 0 }, "a2 marked");
    assert_eq!(get(store, "conn-a", D, "a2").await.stale_since, Some(marked_at), "stale_since keeps milliseconds");

    // Deleted once stale for at least one second: not at 999 ms, at 1000 ms.
    let one_second = StalePolicy::Mark { delete_after: Some(Duration::from_secs(1)) };
    let out = ok(
        store
            .handle_stale(
                &scope_started("conn-a", "s1", "ms-2", t1, marked_at + chrono::Duration::milliseconds(999)),
                one_second,
            )
            .await,
        "stale for 999 ms",
    );
    assert_eq!(out, StaleOutcome { marked: 0, deleted: 0 }, "stale for 999 ms: not old enough");
    let out = ok(
        store
            .handle_stale(
                &scope_started("conn-a", "s1", "ms-2", t1, marked_at + chrono::Duration::milliseconds(1000)),
                one_second,
            )
            .await,
        "stale for 1000 ms",
    );
    assert_eq!(out, StaleOutcome { marked: 0, deleted: 1 }, "stale for exactly 1 s: deleted");

    // Runs one millisecond apart: ordered, times intact.
    let earlier = run_summary("run-earlier", "conn-a", at_ms(100, 1));
    let later = run_summary("run-later", "conn-a", at_ms(100, 2));
    ok(store.save_run(&later).await, "save later");
    ok(store.save_run(&earlier).await, "save earlier");
    assert_eq!(ok(store.runs(10).await, "runs"), vec![later, earlier], "most recent first by a millisecond");
}

/// Equal rejects saved twice (two records with the same problem, or the same
/// record in two pages) are all kept, in save order.
pub async fn identical_rejects_are_all_kept(store: &dyn Store) {
    let reject = StoredReject {
        sync_id: "sync-1".into(),
        connection: "conn-a".into(),
        stream: "hosts".into(),
        reject: Reject::new("line 7", "missing_key", "no id").with_raw(b"{}"),
    };
    let other = StoredReject { reject: Reject::new("line 8", "missing_key", "no id"), ..reject.clone() };
    ok(store.save_rejects(vec![reject.clone(), reject.clone()]).await, "save twice in one call");
    ok(store.save_rejects(vec![other.clone()]).await, "save another");
    ok(store.save_rejects(vec![reject.clone()]).await, "save the same again");
    assert_eq!(
        ok(store.rejects("sync-1", 100).await, "rejects"),
        vec![reject.clone(), reject.clone(), other, reject],
        "every saved reject kept, in save order"
    );
}

/// Two syncs of one connection whose writes interleave (a lease that expired
/// under a paused run, clocks that disagree): stale handling marks only what
/// neither saw. `last_seen` only moves forward, and a sync marks only assets
/// last seen before it started, so a late write of the older sync cannot make
/// an asset the newer one saw look unseen, and the older sync's stale
/// handling cannot mark what the newer one wrote.
pub async fn interleaved_syncs_keep_what_either_saw(store: &dyn Store) {
    let mark = StalePolicy::default();
    let first = vec![device("s1", "a1", "a1"), device("s1", "a2", "a2"), device("s1", "a3", "a3")];
    ok(store.upsert(batch("conn-a", "sync-0", at(0), first)).await, "sync-0");
    // Two runs: `old` started at 1 h, `new` at 1 h + 2 s; both see a1 and a2, not a3.
    let (old_start, new_start) = (at(HOUR), at(HOUR + 2));
    let seen = || vec![device("s1", "a1", "a1"), device("s1", "a2", "a2")];
    ok(store.upsert(batch("conn-a", "new", new_start, seen())).await, "new writes first");
    ok(store.upsert(batch("conn-a", "old", old_start, seen())).await, "old writes a1 and a2 later");
    assert_eq!(
        get(store, "conn-a", D, "a1").await.last_seen,
        new_start,
        "a late write of an older sync must not move last_seen back"
    );
    let out =
        ok(store.handle_stale(&scope_started("conn-a", "s1", "new", new_start, at(HOUR + 60)), mark).await, "new");
    assert_eq!(out.marked, 1, "the newer sync marks a3 alone: it saw a1 and a2");
    let out =
        ok(store.handle_stale(&scope_started("conn-a", "s1", "old", old_start, at(HOUR + 61)), mark).await, "old");
    assert_eq!(out.marked, 0, "the older sync marks nothing the newer one wrote");
    for id in ["a1", "a2"] {
        assert_eq!(get(store, "conn-a", D, id).await.stale_since, None, "{id} was seen: never stale");
    }
    assert_eq!(get(store, "conn-a", D, "a3").await.stale_since, Some(at(HOUR + 60)), "a3 seen by neither: stale");
}

/// A lease is granted to one holder at a time, renewed and released only by its holder.
pub async fn leases_are_exclusive(store: &dyn Store) {
    let ttl = Duration::from_secs(600);
    assert_eq!(ok(store.lease("conn-a").await, "lease of a new connection"), None, "no lease yet");
    let a = match ok(store.acquire_lease("conn-a", "run-a", "host-1 pid 1", ttl).await, "acquire a") {
        LeaseGrant::Acquired(l) => l,
        other => panic!("a free lease must be granted, got {other:?}"),
    };
    assert_eq!((a.connection.as_str(), a.holder.as_str(), a.owner.as_str()), ("conn-a", "run-a", "host-1 pid 1"));
    assert!(a.expires_at > a.acquired_at, "expires after it was acquired: {a:?}");
    match ok(store.acquire_lease("conn-a", "run-b", "host-2 pid 2", ttl).await, "acquire b") {
        LeaseGrant::Held(l) => assert_eq!((l.holder.as_str(), l.owner.as_str()), ("run-a", "host-1 pid 1"), "{l:?}"),
        other => panic!("a lease held by run-a must not be granted to run-b: {other:?}"),
    }
    // Another connection is independent.
    assert!(
        matches!(ok(store.acquire_lease("conn-b", "run-b", "h", ttl).await, "acquire conn-b"), LeaseGrant::Acquired(_)),
        "leases are per connection"
    );
    // The holder asking again keeps it (a retried acquire).
    assert!(
        matches!(
            ok(store.acquire_lease("conn-a", "run-a", "host-1 pid 1", ttl).await, "again"),
            LeaseGrant::Acquired(_)
        ),
        "the holder may take its own lease again"
    );
    let renewed = ok(store.renew_lease("conn-a", "run-a", ttl).await, "renew a").expect("run-a holds it");
    assert!(renewed.expires_at >= a.expires_at, "renewal moves the expiry forward");
    assert_eq!(ok(store.renew_lease("conn-a", "run-b", ttl).await, "renew b"), None, "only the holder renews");
    ok(store.release_lease("conn-a", "run-b").await, "release by another");
    assert_eq!(
        ok(store.lease("conn-a").await, "lease after a stranger's release").map(|l| l.holder),
        Some("run-a".to_string()),
        "only the holder releases"
    );
    ok(store.release_lease("conn-a", "run-a").await, "release a");
    assert_eq!(ok(store.lease("conn-a").await, "lease after release"), None, "released");
    assert!(
        matches!(
            ok(store.acquire_lease("conn-a", "run-b", "h2", ttl).await, "acquire b after"),
            LeaseGrant::Acquired(_)
        ),
        "a released lease is free"
    );
    assert_eq!(ok(store.renew_lease("conn-a", "run-a", ttl).await, "renew a after"), None, "run-a lost it");
}

/// An expired lease is taken over; its former holder can no longer renew it.
pub async fn expired_lease_is_taken_over(store: &dyn Store) {
    let short = Duration::from_millis(300);
    assert!(
        matches!(ok(store.acquire_lease("conn-a", "run-a", "h1", short).await, "acquire a"), LeaseGrant::Acquired(_)),
        "free lease"
    );
    // Wait past the expiry (a lower bound: the lease is surely expired afterwards).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    match ok(store.acquire_lease("conn-a", "run-b", "h2", Duration::from_secs(600)).await, "take over") {
        LeaseGrant::Acquired(l) => assert_eq!(l.holder, "run-b"),
        other => panic!("an expired lease must be taken over, got {other:?}"),
    }
    assert_eq!(ok(store.renew_lease("conn-a", "run-a", short).await, "renew a"), None, "the old holder lost it");
    match ok(store.acquire_lease("conn-a", "run-a", "h1", short).await, "a again") {
        LeaseGrant::Held(l) => assert_eq!(l.holder, "run-b"),
        other => panic!("run-b's live lease must not go back to run-a: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The open asset model: five kinds, attributes, references, keys, --where.
// ---------------------------------------------------------------------------

/// One asset of every kind, with attributes and references: a device owned
/// by a user, a vulnerability and a software record on the device (one by a
/// local reference, one naming the connection), a cloud resource.
pub fn model_assets() -> Vec<Asset> {
    let t = |s: &str| corral_core::fields::timestamp(s);
    vec![
        Asset::device(
            "hosts",
            Device {
                source_id: "dev-1".into(),
                hostname: Some("web-01".into()),
                domain: Some("corp.example.com".into()),
                ip_addresses: corral_core::fields::ips(["10.0.0.7"]),
                mac_addresses: corral_core::fields::macs(["aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02"]),
                serial_number: Some("5CG1234XYZ".into()),
                os: corral_core::fields::os(Some("Windows 11 Enterprise"), Some("10.0.22631")),
                owner: Some("ann@example.com".into()),
                owner_ref: Some(AssetRef::local(AssetKind::User, "usr-1")),
                cloud_instance_id: Some("i-0abc".into()),
                entra_device_id: Some("8f2c0000-aaaa-bbbb-cccc-000000000001".into()),
                last_seen: Some(at(-DAY)),
                tags: vec!["prod".into(), "web".into()],
                ..Default::default()
            },
        )
        .with_attr("agent_version", "7.14.18408.0")
        .with_attr("cpu_count", 8_i64)
        .with_attr("risk", 42.5)
        .with_attr("reduced_functionality", false)
        .with_attr("last_reboot", at(-2 * DAY))
        .with_attr("groups", vec!["servers".to_string(), "dmz".to_string()]),
        Asset::user(
            "users",
            User {
                source_id: "usr-1".into(),
                username: Some("Ann.Lee@Example.com".into()),
                email: Some("ann@example.com".into()),
                active: Some(true),
                created: Some(at(-30 * DAY)),
                ..Default::default()
            },
        )
        .with_attr("mfa_enrolled", true),
        Asset::vulnerability(
            "findings",
            Vulnerability {
                source_id: "vuln-1".into(),
                asset: Some(AssetRef::local(AssetKind::Device, "dev-1")),
                cves: vec!["CVE-2024-6387".into(), "CVE-2024-3094".into()],
                plugin_id: Some("201194".into()),
                title: Some("OpenSSH < 9.8p1 (regreSSHion)".into()),
                severity: Some(Severity::Critical),
                cvss3_score: Some(8.1),
                vendor_score: Some(9.2),
                state: Some(FindingState::Open),
                first_found: t("2024-07-02T08:00:00Z"),
                last_found: t("2024-07-09T08:00:00.250Z"),
                port: Some(22),
                protocol: Some("tcp".into()),
                solution: Some("Upgrade to OpenSSH 9.8p1 or later.".into()),
            },
        )
        .with_attr("exploit_available", true),
        Asset::software(
            "software",
            Software {
                source_id: "sw-1".into(),
                device: Some(AssetRef::to("conn-a", AssetKind::Device, "dev-1")),
                name: Some("OpenSSH".into()),
                vendor: Some("OpenBSD".into()),
                version: Some("9.6p1".into()),
                cpe: Some("cpe:2.3:a:openbsd:openssh:9.6p1:*:*:*:*:*:*:*".into()),
                ..Default::default()
            },
        ),
        Asset::cloud_resource(
            "instances",
            CloudResource {
                source_id: "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc".into(),
                provider: Some("aws".into()),
                account: Some("123456789012".into()),
                region: Some("eu-west-1".into()),
                resource_type: Some("ec2:instance".into()),
                resource_id: Some("i-0abc".into()),
                arn: Some("arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc".into()),
                name: Some("web-01".into()),
                state: Some("running".into()),
                tags: vec![
                    CloudTag { key: "env".into(), value: "prod".into() },
                    CloudTag { key: "team.owner".into(), value: "web".into() },
                ],
                public_ips: corral_core::fields::ips(["203.0.113.7"]),
                private_ips: corral_core::fields::ips(["10.0.0.7"]),
                created: Some(at(-90 * DAY)),
            },
        )
        .with_attr("instance_type", "m6i.large"),
    ]
}

/// The attributes [`model_assets`] carry, as streams would declare them.
pub fn model_attributes() -> Vec<DeclaredAttribute> {
    let d = |kind, name: &str, ty| DeclaredAttribute { kind, name: name.into(), ty };
    vec![
        d(D, "agent_version", AttrType::String),
        d(D, "cpu_count", AttrType::Integer),
        d(D, "risk", AttrType::Float),
        d(D, "reduced_functionality", AttrType::Boolean),
        d(D, "last_reboot", AttrType::Timestamp),
        d(D, "groups", AttrType::StringList),
        d(U, "mfa_enrolled", AttrType::Boolean),
        d(AssetKind::Vulnerability, "exploit_available", AttrType::Boolean),
        d(AssetKind::CloudResource, "instance_type", AttrType::String),
    ]
}

/// The keys of the assets `--where TEXT` (on `kind`, if given) finds in `store`, live ones only.
pub async fn find_where(
    store: &dyn Store,
    texts: &[&str],
    kind: Option<AssetKind>,
) -> Vec<(String, AssetKind, String)> {
    let mut conditions = Vec::new();
    for text in texts {
        match parse_where(text, kind, &model_attributes()) {
            Ok(c) => conditions.push(c),
            Err(e) => panic!("--where {text}: {e}"),
        }
    }
    let filter = AssetFilter { kind, conditions, ..Default::default() };
    let listed = keys(&ok(store.list_assets(&filter, 1000).await, &format!("list_assets(--where {texts:?})")));
    let counted: u64 = ok(store.count_assets(&filter).await, "count_assets(--where)").iter().map(|c| c.count).sum();
    assert_eq!(counted, listed.len() as u64, "--where {texts:?}: count_assets agrees with list_assets");
    listed
}

async fn points_at(
    store: &dyn Store,
    connection: &str,
    kind: AssetKind,
    source_id: &str,
) -> Vec<(String, AssetKind, String)> {
    let target = AssetKey { connection: connection.into(), kind, source_id: source_id.into() };
    let filter = AssetFilter { points_at: Some(target), ..Default::default() };
    keys(&ok(store.list_assets(&filter, 1000).await, "list_assets(points_at)"))
}

/// Every kind round-trips exactly, attributes and references included, and
/// is counted under its kind; a second upsert is all unchanged.
pub async fn all_kinds_round_trip(store: &dyn Store) {
    let assets = model_assets();
    let out = ok(store.upsert(batch("conn-a", "sync-1", at(0), assets.clone())).await, "upsert five kinds");
    assert_eq!(out, outcome(5, 0, 0), "one asset of each kind inserted");
    for a in &assets {
        let stored = get(store, "conn-a", a.kind(), a.source_id()).await;
        assert_eq!(
            stored.fields,
            a.fields_json(),
            "{} {}: fields, attributes and references round-trip",
            a.kind(),
            a.source_id()
        );
        assert_eq!(stored.stream, a.stream, "{} stream", a.kind());
        let back = match stored.asset() {
            Ok(b) => b,
            Err(e) => panic!("{} {}: the stored fields do not decode into the asset: {e}", a.kind(), a.source_id()),
        };
        assert_eq!(back.content_hash(), a.content_hash(), "{} decodes to the same content", a.kind());
    }
    let counts = ok(store.count_assets(&AssetFilter::default()).await, "count");
    let kinds: Vec<(AssetKind, u64)> = counts.iter().map(|c| (c.kind, c.count)).collect();
    let mut ordered = AssetKind::ALL.to_vec();
    ordered.sort_by_key(|k| k.as_str());
    assert_eq!(kinds, ordered.iter().map(|k| (*k, 1)).collect::<Vec<_>>(), "one per kind, in kind-name order");
    let again = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), assets.clone())).await, "upsert again");
    assert_eq!(again, outcome(0, 0, 5), "the same five again: unchanged");
    // An attribute changing is a content change.
    let mut changed = assets[1].clone();
    changed = changed.with_attr("mfa_enrolled", false);
    let out =
        ok(store.upsert(batch("conn-a", "sync-3", at(2 * HOUR), vec![changed.clone()])).await, "attribute change");
    assert_eq!(out, outcome(0, 1, 0), "a changed attribute updates the asset");
    assert_eq!(get(store, "conn-a", U, "usr-1").await.fields["attributes"]["mfa_enrolled"], false);
}

/// `--where` finds assets by canonical fields (keyed and not, lists by
/// element, nested, typed), by attribute of every type, by cloud tag, and
/// `points_at` finds what references an asset.
pub async fn where_finds_fields_and_attributes(store: &dyn Store) {
    let mut assets = model_assets();
    // Decoys: the same shapes with other values, in another connection too.
    assets.push(
        Asset::device(
            "hosts",
            Device { source_id: "dev-2".into(), hostname: Some("db-01".into()), ..Default::default() },
        )
        .with_attr("cpu_count", 4_i64)
        .with_attr("agent_version", "8"),
    );
    ok(store.upsert(batch("conn-a", "sync-1", at(0), assets)).await, "upsert");
    let other = vec![device("hosts", "dev-1", "web-01")];
    ok(store.upsert(batch("conn-b", "sync-1", at(0), other)).await, "upsert conn-b");
    let dev1 = key("conn-a", D, "dev-1");
    let one = |k: (String, AssetKind, String)| vec![k];
    type Key = (String, AssetKind, String);
    let cases: Vec<(&[&str], Option<AssetKind>, Vec<Key>)> = vec![
        (&["hostname=WEB-01"], None, vec![dev1.clone(), key("conn-b", D, "dev-1")]),
        (&["serial_number=5cg1234xyz"], None, one(dev1.clone())),
        (&["mac_addresses=AA-BB-CC-DD-EE-02"], None, one(dev1.clone())),
        (&["fqdn=web-01.corp.example.com"], None, one(dev1.clone())),
        (&["entra_device_id=8F2C0000-AAAA-BBBB-CCCC-000000000001"], None, one(dev1.clone())),
        (&["cloud_instance_id=i-0abc"], None, one(dev1.clone())),
        (&["os.family=Windows"], None, one(dev1.clone())),
        (&["ip_addresses=10.0.0.7"], None, vec![dev1.clone(), key("conn-b", D, "dev-1")]),
        (&["tags=web"], Some(D), vec![dev1.clone(), key("conn-b", D, "dev-1")]),
        (&["source_id=dev-1"], Some(D), vec![dev1.clone(), key("conn-b", D, "dev-1")]),
        (&["email=ANN@example.com"], None, one(key("conn-a", U, "usr-1"))),
        (&["username=ann.lee@example.com"], None, one(key("conn-a", U, "usr-1"))),
        (&["active=true"], None, one(key("conn-a", U, "usr-1"))),
        (&["cves=cve-2024-3094"], None, one(key("conn-a", AssetKind::Vulnerability, "vuln-1"))),
        (&["severity=critical"], None, one(key("conn-a", AssetKind::Vulnerability, "vuln-1"))),
        (&["severity=high"], None, vec![]),
        (&["state=open", "port=22"], None, one(key("conn-a", AssetKind::Vulnerability, "vuln-1"))),
        (&["cvss3_score=8.1"], None, one(key("conn-a", AssetKind::Vulnerability, "vuln-1"))),
        (&["last_found=2024-07-09T08:00:00.250Z"], None, one(key("conn-a", AssetKind::Vulnerability, "vuln-1"))),
        (&["cpe=CPE:2.3:a:openbsd:openssh:9.6p1:*:*:*:*:*:*:*"], None, one(key("conn-a", AssetKind::Software, "sw-1"))),
        (&["name=OpenSSH"], Some(AssetKind::Software), one(key("conn-a", AssetKind::Software, "sw-1"))),
        (
            &["tags.env=prod"],
            None,
            one(key("conn-a", AssetKind::CloudResource, "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc")),
        ),
        (
            &["tags.team.owner=web"],
            None,
            one(key("conn-a", AssetKind::CloudResource, "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc")),
        ),
        (&["tags.env=dev"], None, vec![]),
        (
            &["resource_id=i-0abc"],
            None,
            one(key("conn-a", AssetKind::CloudResource, "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc")),
        ),
        (
            &["public_ips=203.0.113.7"],
            None,
            one(key("conn-a", AssetKind::CloudResource, "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc")),
        ),
        (&["attributes.agent_version=7.14.18408.0"], None, one(dev1.clone())),
        (&["attributes.cpu_count=8"], None, one(dev1.clone())),
        (&["attributes.cpu_count=4"], None, one(key("conn-a", D, "dev-2"))),
        (&["attributes.risk=42.5"], None, one(dev1.clone())),
        (&["attributes.reduced_functionality=false"], None, one(dev1.clone())),
        (&["attributes.last_reboot=2024-04-29T12:00:00Z"], None, one(dev1.clone())),
        (&["attributes.groups=dmz"], None, one(dev1.clone())),
        (&["attributes.groups=nope"], None, vec![]),
        (&["attributes.mfa_enrolled=true"], None, one(key("conn-a", U, "usr-1"))),
        (&["attributes.exploit_available=yes"], None, one(key("conn-a", AssetKind::Vulnerability, "vuln-1"))),
        (
            &["attributes.instance_type=m6i.large"],
            None,
            one(key("conn-a", AssetKind::CloudResource, "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc")),
        ),
        (&["hostname=web-01", "attributes.cpu_count=8"], None, one(dev1.clone())),
        (&["hostname=db-01", "attributes.cpu_count=8"], None, vec![]),
    ];
    for (texts, kind, want) in cases {
        assert_eq!(find_where(store, texts, kind).await, want, "--where {texts:?}");
    }
    // With --connection.
    let filter = AssetFilter {
        connection: Some("conn-b".into()),
        conditions: vec![parse_where("hostname=web-01", None, &[]).expect("parse")],
        ..Default::default()
    };
    assert_eq!(
        keys(&ok(store.list_assets(&filter, 10).await, "list")),
        vec![key("conn-b", D, "dev-1")],
        "--connection with --where"
    );
    // References: a local one resolves to the record's own connection.
    assert_eq!(
        points_at(store, "conn-a", D, "dev-1").await,
        vec![key("conn-a", AssetKind::Software, "sw-1"), key("conn-a", AssetKind::Vulnerability, "vuln-1")],
        "what points at conn-a's dev-1"
    );
    assert_eq!(points_at(store, "conn-a", U, "usr-1").await, vec![dev1.clone()], "the device its owner points at");
    assert!(points_at(store, "conn-b", D, "dev-1").await.is_empty(), "nothing points at conn-b's dev-1");
}

/// Keys and references follow an update: the old values find nothing, the
/// new ones find the asset; an unchanged re-sync keeps them; a deleted asset
/// is found by nothing.
pub async fn keys_and_references_follow_updates(store: &dyn Store) {
    let assets = model_assets();
    ok(store.upsert(batch("conn-a", "sync-1", at(0), assets.clone())).await, "upsert");
    let mut device = assets[0].clone();
    if let corral_core::AssetBody::Device(d) = &mut device.body {
        d.serial_number = Some("NEW-SERIAL".into());
        d.mac_addresses = corral_core::fields::macs(["aa:bb:cc:dd:ee:03"]);
        d.owner_ref = Some(AssetRef::to("okta", AssetKind::User, "00u9"));
    }
    let mut vuln = assets[2].clone();
    if let corral_core::AssetBody::Vulnerability(v) = &mut vuln.body {
        v.cves = vec!["CVE-2023-38408".into()];
        v.asset = Some(AssetRef::local(AssetKind::Device, "dev-9"));
    }
    let out = ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), vec![device, vuln])).await, "update");
    assert_eq!(out, outcome(0, 2, 0), "both changed");
    let dev1 = vec![key("conn-a", D, "dev-1")];
    let vuln1 = vec![key("conn-a", AssetKind::Vulnerability, "vuln-1")];
    assert!(find_where(store, &["serial_number=5CG1234XYZ"], None).await.is_empty(), "the old serial is gone");
    assert!(find_where(store, &["mac_addresses=aa:bb:cc:dd:ee:01"], None).await.is_empty(), "the old MAC is gone");
    assert_eq!(find_where(store, &["serial_number=new-serial"], None).await, dev1, "the new serial finds it");
    assert_eq!(find_where(store, &["mac_addresses=aa:bb:cc:dd:ee:03"], None).await, dev1, "the new MAC finds it");
    assert_eq!(find_where(store, &["hostname=web-01"], None).await, dev1, "unchanged keys stay");
    assert!(find_where(store, &["cves=CVE-2024-6387"], None).await.is_empty(), "the old CVE is gone");
    assert_eq!(find_where(store, &["cves=CVE-2023-38408"], None).await, vuln1, "the new CVE finds it");
    assert!(points_at(store, "conn-a", U, "usr-1").await.is_empty(), "the old owner reference is gone");
    assert_eq!(points_at(store, "okta", U, "00u9").await, dev1, "the new owner reference");
    assert_eq!(
        points_at(store, "conn-a", D, "dev-1").await,
        vec![key("conn-a", AssetKind::Software, "sw-1")],
        "the vulnerability no longer points at dev-1"
    );
    assert_eq!(points_at(store, "conn-a", D, "dev-9").await, vuln1, "it points at dev-9");

    // Stale: marked assets are not found without include_stale; deleted ones never.
    let mark = StalePolicy::Mark { delete_after: Some(Duration::from_secs(3600)) };
    ok(store.upsert(batch("conn-a", "sync-3", at(2 * HOUR), assets[1..].to_vec())).await, "sync without the device");
    let out = ok(store.handle_stale(&scope("conn-a", "hosts", "sync-3", at(2 * HOUR)), mark).await, "mark");
    assert_eq!(out, StaleOutcome { marked: 1, deleted: 0 }, "the device marked");
    assert!(find_where(store, &["serial_number=NEW-SERIAL"], None).await.is_empty(), "a stale device is not listed");
    let stale_too = AssetFilter {
        include_stale: true,
        conditions: vec![parse_where("serial_number=NEW-SERIAL", None, &[]).expect("parse")],
        ..Default::default()
    };
    assert_eq!(keys(&ok(store.list_assets(&stale_too, 10).await, "list")), dev1, "with include_stale it is");
    let out = ok(
        store.handle_stale(&scope_started("conn-a", "hosts", "sync-4", at(3 * HOUR), at(4 * HOUR)), mark).await,
        "delete",
    );
    assert_eq!(out, StaleOutcome { marked: 0, deleted: 1 }, "the device deleted");
    assert!(ok(store.list_assets(&stale_too, 10).await, "list").is_empty(), "a deleted device is found by nothing");
    assert!(points_at(store, "okta", U, "00u9").await.is_empty(), "nor by its references");
    // The same source id inserted again starts with its own keys only.
    let fresh = Asset::device(
        "hosts",
        Device { source_id: "dev-1".into(), hostname: Some("fresh".into()), ..Default::default() },
    );
    let out = ok(store.upsert(batch("conn-a", "sync-5", at(5 * HOUR), vec![fresh])).await, "insert again");
    assert_eq!(out, outcome(1, 0, 0), "inserted anew");
    assert!(
        find_where(store, &["serial_number=NEW-SERIAL"], None).await.is_empty(),
        "no key of the deleted asset survives"
    );
    assert_eq!(find_where(store, &["hostname=fresh"], None).await, dev1, "its own keys");
}

/// Counts show stale assets apart without `include_stale`, even for a
/// connection and kind with only stale assets.
pub async fn stale_counted_apart(store: &dyn Store) {
    ok(
        store
            .upsert(batch("conn-a", "sync-1", at(0), vec![device("hosts", "d1", "a"), user("users", "u1", "u@x.io")]))
            .await,
        "upsert",
    );
    ok(store.upsert(batch("conn-a", "sync-2", at(HOUR), vec![device("hosts", "d1", "a")])).await, "only the device");
    ok(store.handle_stale(&scope("conn-a", "users", "sync-2", at(HOUR)), StalePolicy::default()).await, "mark");
    let counts = ok(store.count_assets(&AssetFilter::default()).await, "count");
    assert_eq!(counts, vec![count("conn-a", D, 1, 0), count("conn-a", U, 0, 1)], "live and stale apart");
    let counts = ok(store.count_assets(&AssetFilter { include_stale: true, ..Default::default() }).await, "count all");
    assert_eq!(
        counts,
        vec![count("conn-a", D, 1, 0), count("conn-a", U, 1, 1)],
        "with include_stale, count includes them"
    );
}

/// A batch's `seen` keys (records the run fetched but rejected) keep their
/// stored assets fresh: `last_seen` moves forward, never back, the stale
/// mark goes, the contents stay; a key with no stored asset is nothing.
pub async fn rejected_records_stay_fresh(store: &dyn Store) {
    let first = vec![device("hosts", "d1", "one"), device("hosts", "d2", "two"), device("hosts", "d3", "three")];
    ok(store.upsert(batch("conn-a", "sync-1", at(0), first)).await, "first sync");
    // sync-2: d2 is seen but rejected, d3 is gone, d9 was never stored.
    let mut b = batch("conn-a", "sync-2", at(HOUR), vec![device("hosts", "d1", "one")]);
    b.seen = vec![(D, "d2".into()), (D, "d9".into())];
    let out = ok(store.upsert(b).await, "second sync");
    assert_eq!(out, outcome(0, 0, 1), "seen keys are neither inserted nor updated");
    let stale =
        ok(store.handle_stale(&scope("conn-a", "hosts", "sync-2", at(HOUR)), StalePolicy::default()).await, "stale");
    assert_eq!(stale.marked, 1, "only d3 is marked stale");
    let d2 = get(store, "conn-a", D, "d2").await;
    assert_eq!(d2.stale_since, None, "a rejected record's asset is not stale");
    assert_eq!(d2.last_seen, at(HOUR), "its last_seen moved forward");
    assert_eq!(d2.last_sync_id, "sync-2");
    assert_eq!(d2.fields["hostname"], "two", "its contents are kept");
    assert!(find(store, "conn-a", D, "d9").await.is_none(), "a seen key without an asset creates nothing");
    // A stale asset seen again (rejected) loses its mark; an older sync never moves last_seen back.
    let mut b = batch("conn-a", "sync-3", at(2 * HOUR), vec![]);
    b.seen = vec![(D, "d3".into())];
    ok(store.upsert(b).await, "third sync");
    assert_eq!(get(store, "conn-a", D, "d3").await.stale_since, None, "seen again: not stale");
    let mut b = batch("conn-a", "sync-0", at(-HOUR), vec![]);
    b.seen = vec![(D, "d2".into())];
    ok(store.upsert(b).await, "a late batch of an older sync");
    assert_eq!(get(store, "conn-a", D, "d2").await.last_seen, at(HOUR), "last_seen never moves back");
}

/// `list_assets_after` pages through a listing, each page starting after
/// [`AssetCursor::of`] the last asset of the one before: every asset once,
/// whatever the page size, with the filter applied. A page can start after
/// an asset deleted since it was listed, and after a bare key (no
/// position) of a stored asset.
pub async fn assets_paged_by_key(store: &dyn Store) {
    let mut alpha: Vec<Asset> = (0..7).map(|i| device("devices", &format!("d{i}"), &format!("a-{i}"))).collect();
    alpha.extend((0..3).map(|i| user("users", &format!("u{i}"), &format!("u{i}@a.io"))));
    // Byte order: "d10" sorts before "d2".
    alpha.push(device("devices", "d10", "a-10"));
    let beta: Vec<Asset> = (0..4).map(|i| device("devices", &format!("d{i}"), &format!("b-{i}"))).collect();
    ok(store.upsert(batch("beta", "beta-1", at(0), beta)).await, "upsert beta");
    ok(store.upsert(batch("alpha", "alpha-1", at(0), alpha)).await, "upsert alpha");
    // alpha d3 goes stale.
    let seen: Vec<Asset> = (0..7)
        .filter(|i| *i != 3)
        .map(|i| device("devices", &format!("d{i}"), &format!("a-{i}")))
        .chain([device("devices", "d10", "a-10")])
        .collect();
    ok(store.upsert(batch("alpha", "alpha-2", at(HOUR), seen)).await, "alpha-2");
    let out =
        ok(store.handle_stale(&scope("alpha", "devices", "alpha-2", at(HOUR)), StalePolicy::default()).await, "mark");
    assert_eq!(out.marked, 1, "alpha d3 marked stale");

    let pages = |filter: AssetFilter, size: usize| async move {
        let mut all = Vec::new();
        let mut after: Option<AssetCursor> = None;
        for _ in 0..100 {
            let page = ok(store.list_assets_after(&filter, after.as_ref(), size).await, "list_assets_after");
            assert!(page.len() <= size, "a page holds at most `limit` assets");
            let Some(last) = page.last() else { break };
            after = Some(AssetCursor::of(last));
            all.extend(keys(&page));
        }
        all
    };
    let whole = keys(&ok(store.list_assets(&all_filter(), 1000).await, "list all"));
    assert_eq!(whole.len(), 15, "{whole:?}");
    for size in [1, 2, 3, 5, 15, 16] {
        assert_eq!(pages(all_filter(), size).await, whole, "pages of {size} give every asset once, in order");
    }
    let fresh_alpha_devices =
        AssetFilter { connection: Some("alpha".into()), kind: Some(D), include_stale: false, ..Default::default() };
    let expected: Vec<_> = ["d0", "d1", "d10", "d2", "d4", "d5", "d6"].iter().map(|s| key("alpha", D, s)).collect();
    for size in [1, 2, 4] {
        assert_eq!(pages(fresh_alpha_devices.clone(), size).await, expected, "filtered pages of {size}");
    }
    let listed = ok(store.list_assets(&all_filter(), 1000).await, "list all");
    let cursor = |k: (&str, AssetKind, &str)| {
        let found = listed.iter().find(|a| key(&a.connection, a.kind, &a.source_id) == key(k.0, k.1, k.2));
        AssetCursor::of(found.expect("listed"))
    };
    // A bare key of a stored asset (a cursor made by hand, or by a store
    // that keeps no position) starts after that asset.
    let bare =
        AssetCursor { key: AssetKey { connection: "alpha".into(), kind: D, source_id: "d2".into() }, position: None };
    let page = ok(store.list_assets_after(&all_filter(), Some(&bare), 2).await, "after a bare key");
    assert_eq!(keys(&page), vec![key("alpha", D, "d3"), key("alpha", D, "d4")], "after d2 come d3, d4");
    let page = ok(store.list_assets_after(&all_filter(), Some(&cursor(("alpha", U, "u2"))), 2).await, "across");
    assert_eq!(keys(&page), vec![key("beta", D, "d0"), key("beta", D, "d1")], "the next connection follows");
    let past = cursor(("beta", D, "d3"));
    assert!(ok(store.list_assets_after(&all_filter(), Some(&past), 5).await, "past the end").is_empty());
    assert!(ok(store.list_assets_after(&all_filter(), None, 0).await, "limit 0").is_empty(), "limit 0");
    // The asset a page ended at is deleted (alpha d3, stale): the next page
    // starts where it was.
    let after_d3 = cursor(("alpha", D, "d3"));
    let gone = StalePolicy::Mark { delete_after: Some(Duration::from_secs(1)) };
    let out =
        ok(store.handle_stale(&scope_started("alpha", "devices", "alpha-2", at(HOUR), at(DAY)), gone).await, "delete");
    assert_eq!(out.deleted, 1, "alpha d3 deleted");
    let page = ok(store.list_assets_after(&all_filter(), Some(&after_d3), 2).await, "after a deleted asset");
    assert_eq!(keys(&page), vec![key("alpha", D, "d4"), key("alpha", D, "d5")], "after the deleted d3 come d4, d5");
}

/// `list_runs` lists one connection's runs or all, most recent first, in
/// pages that follow each other without a gap or a repeat (runs that
/// started in the same millisecond are ordered by sync id).
pub async fn runs_paged_by_connection(store: &dyn Store) {
    let mut runs = Vec::new();
    for i in 0..9i64 {
        let connection = if i % 3 == 0 { "conn-b" } else { "conn-a" };
        // Runs 4, 5 and 6 start in the same millisecond.
        let started = if (4..=6).contains(&i) { at_ms(400, 250) } else { at(i * 100) };
        let run = run_summary(&format!("sync-{i}"), connection, started);
        ok(store.save_run(&run).await, "save run");
        runs.push(run);
    }
    let order = |connection: Option<&str>| {
        let mut v: Vec<&RunSummary> = runs.iter().filter(|r| connection.is_none_or(|c| r.connection == c)).collect();
        v.sort_by(|a, b| (b.started_at, &b.sync_id).cmp(&(a.started_at, &a.sync_id)));
        v.into_iter().map(|r| r.sync_id.clone()).collect::<Vec<_>>()
    };
    let pages = |connection: Option<&str>, size: usize| {
        let connection = connection.map(str::to_string);
        async move {
            let mut ids = Vec::new();
            let mut before: Option<RunCursor> = None;
            for _ in 0..100 {
                let query = RunQuery { connection: connection.clone(), before: before.clone() };
                let page = ok(store.list_runs(&query, size).await, "list_runs");
                assert!(page.len() <= size, "a page holds at most `limit` runs");
                let Some(last) = page.last() else { break };
                before = Some(RunCursor::of(last));
                ids.extend(page.iter().map(|r| r.sync_id.clone()));
            }
            ids
        }
    };
    let all = order(None);
    assert_eq!(
        all,
        ["sync-8", "sync-7", "sync-6", "sync-5", "sync-4", "sync-3", "sync-2", "sync-1", "sync-0"],
        "most recent first, then by sync id"
    );
    for size in [1, 2, 4, 9, 10] {
        assert_eq!(pages(None, size).await, all, "pages of {size}");
        assert_eq!(pages(Some("conn-a"), size).await, order(Some("conn-a")), "conn-a's runs in pages of {size}");
        assert_eq!(pages(Some("conn-b"), size).await, order(Some("conn-b")), "conn-b's runs in pages of {size}");
    }
    let latest = ok(store.list_runs(&RunQuery { connection: Some("conn-b".into()), before: None }, 1).await, "latest");
    assert_eq!(latest, vec![runs[6].clone()], "a connection's latest run, intact");
    let none = RunQuery { connection: Some("conn-z".into()), before: None };
    assert!(ok(store.list_runs(&none, 5).await, "unknown connection").is_empty(), "no runs of an unknown connection");
}
