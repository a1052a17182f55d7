//! The MongoDB store against a server: the store conformance suite plus
//! MongoDB-specific cases (oversized documents, byte-split batches, a server
//! that dies mid-load, lost replies, concurrent upserts, indexes).
//!
//! Needs `MONGODB_URI`: `bash scripts/mongo-test-server.sh start` starts
//! nx-27017 (a MongoDB wire-protocol server backed by SQLite) and prints it;
//! point it at a real MongoDB 6+ to run the same tests there. Each case uses a
//! fresh database named `ct_<case>_<unique>` and drops it at the end.
//!
//! Without `MONGODB_URI` the tests fail, unless `CORRAL_SKIP_MONGO=1` is set
//! outside CI, which skips them loudly and leaves a marker for scripts/test.sh
//! to report (see `corral_store::nx`).
//!
//! `server_stopped_mid_operation` and the `lost_reply_*` cases start their own
//! private nx-27017 from the project's virtualenv (`CORRAL_VENV`, default
//! `<repo>/.venv`, made by `scripts/mongo-test-server.sh install`): the first
//! kills and restarts it, the others reach it through a proxy that loses
//! chosen replies (tests/support).

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_core::adapter::Reject;
use corral_core::asset::{Asset, AssetKind, Device};
use corral_core::store::{
    AssetFilter, LoadBatch, LoadOutcome, StaleOutcome, StalePolicy, Store, StoreError, StoredReject,
};
use corral_store::conformance;
use corral_store::mongo::{MongoOptions, MongoStore, RetryPolicy, ServerKind};
use corral_store::nx::{self, NxServer};
use futures::FutureExt;
use mongodb::bson::doc;
use support::FaultProxy;

fn mongo_uri(test: &str) -> Option<String> {
    nx::mongodb_uri(&format!("mongo_conformance::{test}"))
}

/// Options for the tests that share one server: a dead server shows in a
/// minute, but another test's work does not fail this one. The stand-in
/// (nx-27017) answers one command at a time, and on a busy two-core machine
/// another test's large bulk write or aggregation has held it for over 30 s:
/// long enough for a 3 s server selection timeout and a 10 s retry budget to
/// give up on a healthy server.
fn test_options() -> MongoOptions {
    MongoOptions {
        server_selection_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(90),
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            budget: Duration::from_secs(60),
        },
        ..MongoOptions::default()
    }
}

/// A database name unique to this run and case (MongoDB allows 63 bytes).
fn unique_db(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let unique = format!("{:x}{:x}{}", std::process::id(), nanos % 0xffff_ffff, N.fetch_add(1, Ordering::Relaxed));
    let mut tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    tag.truncate(63 - 4 - unique.len());
    format!("ct_{tag}_{unique}")
}

async fn open(uri: &str, tag: &str, opts: MongoOptions) -> MongoStore {
    let store = MongoStore::connect_with(uri, &unique_db(tag), opts).await.expect("connect to MONGODB_URI");
    // Fail early and clearly when the server is not there.
    store.ping().await.expect("ping MONGODB_URI: is the test server running? (scripts/mongo-test-server.sh start)");
    store
}

/// Run `body`, then drop the stores' databases whether it passed or not.
async fn with_cleanup<F: Future<Output = ()>>(stores: Vec<MongoStore>, body: F) {
    let result = AssertUnwindSafe(body).catch_unwind().await;
    for s in &stores {
        if let Err(e) = s.drop_database().await {
            eprintln!("warning: could not drop test database {}: {e}", s.describe());
        }
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn device(id: &str, host: &str, raw_bytes: usize) -> Asset {
    let asset = Asset::device(
        "hosts",
        Device {
            source_id: id.to_string(),
            hostname: Some(host.to_string()),
            serial_number: Some(format!("SN-{id}")),
            tags: vec!["test".into()],
            ..Default::default()
        },
    );
    if raw_bytes == 0 {
        asset
    } else {
        asset.with_raw(Some(serde_json::json!({ "id": id, "pad": "p".repeat(raw_bytes) })))
    }
}

fn batch(connection: &str, sync_id: &str, secs: i64, assets: Vec<Asset>) -> LoadBatch {
    LoadBatch {
        sync_id: sync_id.into(),
        connection: connection.into(),
        seen_at: conformance::at(secs),
        assets: assets.into(),
        seen: vec![],
    }
}

fn all() -> AssetFilter {
    AssetFilter { include_stale: true, ..Default::default() }
}

async fn total(store: &MongoStore) -> u64 {
    store.count_assets(&all()).await.expect("count_assets").iter().map(|c| c.count).sum()
}

// ---------------------------------------------------------------------------
// The store-agnostic conformance suite.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let Some(uri) = mongo_uri("conformance_suite") else { return };
    let created: Arc<Mutex<Vec<MongoStore>>> = Arc::default();
    let made = Arc::clone(&created);
    let result = AssertUnwindSafe(conformance::run_all(move |case| {
        let uri = uri.clone();
        let made = Arc::clone(&made);
        async move {
            // A small byte budget, so that large batches are split into several commands.
            let opts = MongoOptions { max_batch_bytes: 2 << 20, ..test_options() };
            let store = open(&uri, case, opts).await;
            made.lock().unwrap_or_else(|e| e.into_inner()).push(store.clone());
            Arc::new(store) as Arc<dyn Store>
        }
    }))
    .catch_unwind()
    .await;
    let stores = std::mem::take(&mut *created.lock().unwrap_or_else(|e| e.into_inner()));
    with_cleanup(stores, async {}).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------
// MongoDB-specific cases.
// ---------------------------------------------------------------------------

/// A document over 16 MiB is rejected alone, without being sent; one just
/// over the per-command byte budget is sent in a command of its own and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_document_rejected_alone() {
    let Some(uri) = mongo_uri("oversized_document_rejected_alone") else { return };
    let store = open(&uri, "oversized", test_options()).await;
    with_cleanup(vec![store.clone()], async {
        let huge = conformance::oversized_device("hosts");
        // ~10 MB: above max_batch_bytes (8 MiB), below the 16 MiB document limit.
        let big = device("big-1", "big", 10 << 20);
        let assets = vec![device("small-1", "s1", 0), huge, big.clone(), device("small-2", "s2", 0)];
        let out = store.upsert(batch("conn-a", "sync-1", 0, assets)).await.expect("upsert");
        assert_eq!(out.rejected.len(), 1, "only the oversized document is rejected: {:?}", out.rejected);
        let reject = &out.rejected[0];
        assert_eq!(reject.record, format!("device {}", conformance::OVERSIZED_SOURCE_ID));
        assert_eq!(reject.reason, "document_too_large");
        assert!(reject.detail.contains("16777216"), "the detail names the limit: {}", reject.detail);
        assert_eq!((out.inserted, out.updated, out.unchanged), (3, 0, 0), "{out:?}");

        let listed = store.list_assets(&all(), 100).await.expect("list");
        let ids: Vec<&str> = listed.iter().map(|a| a.source_id.as_str()).collect();
        assert_eq!(ids, ["big-1", "small-1", "small-2"]);
        assert_eq!(listed[0].raw, big.raw, "the 10 MB document round-trips");

        let stats = store.stats();
        assert!(stats.max_command_bytes < (16 << 20) + (16 << 10), "no command over 16 MiB + 16 KiB: {stats:?}");
        // Chunks are consecutive: small-1 | big-1 (alone: over the 8 MiB budget) | small-2.
        assert_eq!(stats.update_commands, 3, "the 10 MB statement goes alone: {stats:?}");

        // The same batch again: still rejected alone, the rest unchanged.
        let again = store
            .upsert(batch("conn-a", "sync-2", 60, vec![conformance::oversized_device("hosts"), big]))
            .await
            .expect("upsert again");
        assert_eq!((again.rejected.len(), again.unchanged), (1, 1), "{again:?}");
    })
    .await;
}

/// 20,000 assets (~1 KB each) in one batch are split by bytes, not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_20000_split_by_bytes() {
    let Some(uri) = mongo_uri("batch_of_20000_split_by_bytes") else { return };
    const N: usize = 20_000;
    const MAX_BYTES: usize = 2 << 20;
    let opts = MongoOptions { max_batch_docs: 100_000, max_batch_bytes: MAX_BYTES, ..test_options() };
    let store = open(&uri, "split20k", opts).await;
    with_cleanup(vec![store.clone()], async {
        let assets: Vec<Asset> = (0..N).map(|i| device(&format!("dev-{i:05}"), &format!("h{i}"), 700)).collect();
        let started = Instant::now();
        let out = store.upsert(batch("conn-a", "sync-1", 0, assets.clone())).await.expect("upsert 20000");
        eprintln!("20,000 inserted in {:?}: {:?}", started.elapsed(), store.stats());
        assert_eq!((out.inserted, out.updated, out.unchanged), (N as u64, 0, 0));
        assert!(out.rejected.is_empty());
        let stats = store.stats();
        assert!(stats.command_bytes > 10 * MAX_BYTES as u64, "the batch is large enough to need splitting: {stats:?}");
        let min_commands = stats.command_bytes / MAX_BYTES as u64;
        assert!(stats.update_commands >= min_commands, "split by bytes into >= {min_commands} commands: {stats:?}");
        assert!(stats.update_commands < N as u64 / 100, "not one command per few documents: {stats:?}");
        assert!(stats.max_command_bytes <= MAX_BYTES as u64 + 4096, "no command over the byte budget: {stats:?}");
        assert_eq!(total(&store).await, N as u64);

        // Again: all unchanged, sent as light statements (no fields): far fewer bytes.
        let before = store.stats();
        let started = Instant::now();
        let out = store.upsert(batch("conn-a", "sync-2", 3600, assets)).await.expect("upsert 20000 again");
        let after = store.stats();
        eprintln!("20,000 unchanged in {:?}: {after:?}", started.elapsed());
        assert_eq!((out.inserted, out.updated, out.unchanged), (0, 0, N as u64));
        assert_eq!(after.light_statements - before.light_statements, N as u64, "unchanged assets use light statements");
        assert!(
            (after.command_bytes - before.command_bytes) * 3 < before.command_bytes,
            "light statements send far fewer bytes: {before:?} -> {after:?}"
        );
        let out = store
            .handle_stale(&conformance::scope("conn-a", "hosts", "sync-2", conformance::at(3600)), Default::default())
            .await
            .expect("stale");
        assert_eq!(out.marked, 0);
    })
    .await;
}

/// Concurrent upserts of the same new keys: each document is inserted exactly
/// once overall, none is duplicated, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upserts_of_same_keys() {
    let Some(uri) = mongo_uri("concurrent_upserts_of_same_keys") else { return };
    let store = open(&uri, "concurrent", test_options()).await;
    with_cleanup(vec![store.clone()], async {
        let assets: Vec<Asset> = (0..300).map(|i| device(&format!("d{i:03}"), "h", 0)).collect();
        let tasks: Vec<_> = (0..4)
            .map(|n| {
                let store = store.clone();
                let b = batch("conn-a", &format!("sync-{n}"), 0, assets.clone());
                tokio::spawn(async move { store.upsert(b).await })
            })
            .collect();
        let mut inserted = 0;
        for t in tasks {
            let out = t.await.expect("join").expect("concurrent upsert");
            assert!(out.rejected.is_empty(), "{out:?}");
            assert_eq!(out.stored(), 300, "{out:?}");
            inserted += out.inserted;
        }
        assert_eq!(inserted, 300, "each key inserted exactly once across the concurrent upserts");
        assert_eq!(total(&store).await, 300);
    })
    .await;
}

/// Vendor records with awkward keys: dotted keys (Microsoft Graph's
/// `@odata.type`) are stored and round-trip; a `$`-prefixed key is stored or,
/// if the server refuses it, rejected alone: it never fails the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_raw_keys() {
    let Some(uri) = mongo_uri("awkward_raw_keys") else { return };
    let store = open(&uri, "rawkeys", test_options()).await;
    with_cleanup(vec![store.clone()], async {
        let dotted = device("dotted", "h", 0)
            .with_raw(Some(serde_json::json!({"@odata.type": "#microsoft.graph.device", "a": {"b.c": [1, 2.5]}})));
        let dollar = device("dollar", "h", 0).with_raw(Some(serde_json::json!({"meta": {"$ref": "x", "n": 1}})));
        let plain = device("plain", "h", 0);
        let out = store
            .upsert(batch("conn-a", "s1", 0, vec![dotted.clone(), dollar.clone(), plain]))
            .await
            .expect("upsert awkward keys");
        assert!(out.rejected.iter().all(|r| r.record == "device dollar"), "{out:?}");
        assert_eq!(out.stored() + out.rejected.len() as u64, 3, "{out:?}");
        let listed = store.list_assets(&all(), 10).await.expect("list");
        let get = |id: &str| listed.iter().find(|a| a.source_id == id);
        assert_eq!(get("dotted").map(|a| &a.raw), Some(&dotted.raw), "dotted keys round-trip");
        assert!(get("plain").is_some());
        if out.rejected.is_empty() {
            assert_eq!(get("dollar").map(|a| &a.raw), Some(&dollar.raw), "$-prefixed keys round-trip");
        }
    })
    .await;
}

/// Two stores on one database both create the indexes (idempotently), and the
/// assets collection has each one the store relies on, with its exact keys
/// (nx-27017 names indexes itself, so they are found by keys, not names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_created_idempotently() {
    let Some(uri) = mongo_uri("indexes_created_idempotently") else { return };
    let first = open(&uri, "indexes", test_options()).await;
    let db = first.database().name().to_string();
    let second = MongoStore::connect_with(&uri, &db, test_options()).await.expect("connect");
    with_cleanup(vec![first.clone()], async {
        first.upsert(batch("c", "s1", 0, vec![device("a", "h", 0)])).await.expect("first store");
        second.upsert(batch("c", "s2", 60, vec![device("a", "h", 0)])).await.expect("second store");
        let indexes = first.asset_indexes().await.expect("list indexes");
        let find = |keys: mongodb::bson::Document| {
            let names: Vec<&str> = keys.keys().map(String::as_str).collect();
            indexes
                .iter()
                .find(|(_, k, _)| k.keys().map(String::as_str).eq(names.iter().copied()))
                .unwrap_or_else(|| panic!("no index on {keys}: {indexes:?}"))
        };
        let (_, key, unique) = find(doc! { "connection": 1, "kind": 1, "source_id": 1 });
        assert!(*unique, "the asset key index must be unique: {indexes:?}");
        assert!(key.values().all(|v| v.as_i32() == Some(1) || v.as_f64() == Some(1.0)), "ascending: {key}");
        for keys in [
            doc! { "connection": 1, "stream": 1, "last_seen": 1 },
            doc! { "connection": 1, "stream": 1, "stale_since": 1 },
            doc! { "kind": 1, "fields.hostname": 1 },
            doc! { "kind": 1, "fields.serial_number": 1 },
            doc! { "kind": 1, "fields.mac_addresses": 1 },
            doc! { "keys": 1 },
            doc! { "refs": 1 },
        ] {
            let (name, _, unique) = find(keys.clone());
            assert!(!*unique, "{name} on {keys} must not be unique (assets may share them)");
        }
        let on_key = indexes.iter().filter(|(_, k, _)| k.contains_key("source_id")).count();
        assert_eq!(on_key, 1, "created once, not once per store: {indexes:?}");
        assert_eq!(indexes.len(), 9, "_id plus the store's eight: {indexes:?}");
        assert_eq!(total(&first).await, 1);
    })
    .await;
}

/// A NON-unique index on the asset key made by hand (under another name) would
/// let concurrent upserts duplicate assets: the store refuses to write, naming
/// it, instead of accepting it as equivalent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_unique_key_index_is_refused() {
    let Some(uri) = mongo_uri("non_unique_key_index_is_refused") else { return };
    let store = open(&uri, "nonunique", test_options()).await;
    with_cleanup(vec![store.clone()], async {
        let assets = store.database().collection::<mongodb::bson::Document>("assets");
        let by_hand = mongodb::IndexModel::builder()
            .keys(doc! { "connection": 1, "kind": 1, "source_id": 1 })
            .options(mongodb::options::IndexOptions::builder().name("by_hand".to_string()).build())
            .build();
        assets.create_index(by_hand).await.expect("create the index by hand");
        let err = store.upsert(batch("c", "s1", 0, vec![device("a", "h", 0)])).await.expect_err("must refuse");
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("unique") && msg.contains("source_id"), "{msg}");
        assert_eq!(assets.count_documents(doc! {}).await.expect("count"), 0, "nothing written");
    })
    .await;
}

// ---------------------------------------------------------------------------
// A private nx-27017 that the test can kill and restart, or reach through a
// proxy that loses replies.
// ---------------------------------------------------------------------------

/// A private nx-27017 (with its data directory), or `None` when the test is to skip.
fn private_server(test: &str) -> Option<(NxServer, tempfile::TempDir)> {
    // These cases run their own server, but are gated like the others.
    mongo_uri(test)?;
    let bin = nx::require_binary(&format!("mongo_conformance::{test}"))?;
    let data = tempfile::tempdir().expect("temp dir");
    let port = nx::free_port().expect("free port");
    let server = NxServer::start(&bin, port, data.path(), 1).expect("start nx-27017");
    Some((server, data))
}

/// Options for the lost-reply cases: quick retries, one command at a time (so
/// "the second update command" is well defined), 100 statements per command.
fn proxy_options(retry: RetryPolicy) -> MongoOptions {
    MongoOptions {
        server_selection_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(30),
        retry,
        max_batch_docs: 100,
        max_in_flight: 1,
        ..MongoOptions::default()
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        budget: Duration::from_secs(20),
    }
}

async fn through_proxy(server: &NxServer, retry: RetryPolicy) -> (FaultProxy, MongoStore) {
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", server.port)).await;
    let store = MongoStore::connect_with(&proxy.uri(), "lost", proxy_options(retry)).await.expect("connect");
    store.ping().await.expect("ping through the proxy");
    (proxy, store)
}

fn outcome(inserted: u64, updated: u64, unchanged: u64) -> LoadOutcome {
    LoadOutcome { inserted, updated, unchanged, rejected: Vec::new() }
}

/// The reply to the second of three `update` commands is lost after the server
/// applied it: the store retries that chunk, finds its 100 documents already
/// there with the same content, and still counts them inserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_reply_of_an_upsert_still_counts_inserted() {
    let Some((server, _data)) = private_server("lost_reply_of_an_upsert_still_counts_inserted") else { return };
    let (proxy, store) = through_proxy(&server, quick_retries()).await;
    assert_eq!(store.server_kind().await.expect("server kind"), ServerKind::Nx27017StandIn);
    let assets: Vec<Asset> = (0..300).map(|i| device(&format!("n{i:03}"), "h", 0)).collect();
    proxy.lose_reply("update", 1);
    let out = store.upsert(batch("conn-a", "sync-1", 0, assets)).await.expect("upsert, retried by the store");
    assert_eq!(proxy.lost(), 1, "the second command's reply was lost");
    assert!(store.stats().retries >= 1, "{:?}", store.stats());
    assert_eq!(out, outcome(300, 0, 0), "every document this batch created is counted inserted");
    assert_eq!(total(&store).await, 300);
}

/// An upsert that fails after some of its commands were applied (the store
/// does not retry here: a single-attempt policy), then retried by its caller
/// with the same batch, as the engine does: the retry's counts are exactly
/// what the batch did to the store (inserted / updated / unchanged), not
/// "unchanged" for what the failed call had written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upsert_retried_by_the_caller_counts_exactly() {
    let Some((server, _data)) = private_server("failed_upsert_retried_by_the_caller_counts_exactly") else { return };
    let (proxy, store) = through_proxy(&server, RetryPolicy::none()).await;
    // 100 known assets: 50 will change, 50 will not.
    let known: Vec<Asset> = (0..100).map(|i| device(&format!("k{i:03}"), "old", 0)).collect();
    store.upsert(batch("conn-a", "sync-0", 0, known)).await.expect("seed");
    // Chunks of 100: [50 changed, 50 unchanged] [100 new] [100 new].
    let mut assets: Vec<Asset> =
        (0..100).map(|i| device(&format!("k{i:03}"), if i < 50 { "new" } else { "old" }, 0)).collect();
    assets.extend((0..200).map(|i| device(&format!("n{i:03}"), "h", 0)));
    // The first command succeeds, the second is applied but its reply lost.
    proxy.lose_reply("update", 1);
    let b = batch("conn-a", "sync-1", 60, assets);
    let err = store.upsert(b.clone()).await.expect_err("the lost reply fails the upsert");
    assert!(err.is_transient(), "a single-attempt policy passes the transient error on: {err:?}");
    assert!(err.to_string().contains("the others stored"), "{err}");
    assert_eq!(proxy.lost(), 1);
    let written = total(&store).await;
    assert!(written >= 200, "the first two commands were applied: {written}");

    let out = store.upsert(b).await.expect("the caller's retry");
    assert_eq!(out, outcome(200, 50, 50), "counted as if the batch had been written once");
    assert_eq!(total(&store).await, 300);
    let listed = store.list_assets(&all(), 1000).await.expect("list");
    assert!(listed.iter().all(|a| a.last_sync_id == "sync-1"), "every asset refreshed");
    assert_eq!(listed.iter().filter(|a| a.fields["hostname"] == "new").count(), 50);
}

/// Stale handling whose mark, then whose delete, loses its reply after the
/// server applied it: each step is retried on its own and reports what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_during_stale_handling_keep_counts_exact() {
    let Some((server, _data)) = private_server("lost_replies_during_stale_handling_keep_counts_exact") else { return };
    let (proxy, store) = through_proxy(&server, quick_retries()).await;
    let five: Vec<Asset> = (0..5).map(|i| device(&format!("d{i}"), "h", 0)).collect();
    store.upsert(batch("conn-a", "sync-1", 0, five.clone())).await.expect("sync-1");
    store.upsert(batch("conn-a", "sync-2", 3600, five[..2].to_vec())).await.expect("sync-2");

    let mark = StalePolicy::Mark { delete_after: None };
    proxy.lose_reply("update", 0);
    let out = store.handle_stale(&conformance::scope("conn-a", "hosts", "sync-2", conformance::at(3600)), mark).await;
    assert_eq!(proxy.lost(), 1, "the mark's reply was lost");
    assert_eq!(out.expect("mark, retried"), StaleOutcome { marked: 3, deleted: 0 }, "the 3 unseen assets marked");

    let day = StalePolicy::Mark { delete_after: Some(Duration::from_secs(86_400)) };
    proxy.lose_reply("delete", 0);
    let later = conformance::at(3 * 86_400);
    let scope = conformance::scope_started("conn-a", "hosts", "sync-2", conformance::at(3600), later);
    let out = store.handle_stale(&scope, day).await;
    assert_eq!(proxy.lost(), 2, "the delete's reply was lost");
    assert_eq!(out.expect("delete, retried"), StaleOutcome { marked: 0, deleted: 3 }, "the 3 stale assets deleted");
    assert_eq!(total(&store).await, 2);
}

/// `save_rejects` whose insert loses its reply after the server applied it:
/// the retry stores nothing twice, and equal rejects are all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_reply_of_save_rejects_stores_each_once() {
    let Some((server, _data)) = private_server("lost_reply_of_save_rejects_stores_each_once") else { return };
    let (proxy, store) = through_proxy(&server, quick_retries()).await;
    let rej = |line: u32| StoredReject {
        sync_id: "sync-1".into(),
        connection: "conn-a".into(),
        stream: "hosts".into(),
        reject: Reject::new(format!("line {line}"), "missing_key", "no id"),
    };
    let rejects = vec![rej(1), rej(2), rej(1)];
    proxy.lose_reply("insert", 0);
    store.save_rejects(rejects.clone()).await.expect("save, retried");
    assert_eq!(proxy.lost(), 1, "the insert's reply was lost");
    assert_eq!(store.rejects("sync-1", 100).await.expect("rejects"), rejects, "each saved once, equal ones kept");
}

/// The server dies mid-load: `upsert` fails within a bounded time with a
/// permanent error (the store retried already), fails fast while the server is
/// down, and once it is back the same batch loads with no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_operation() {
    let Some((mut server, data)) = private_server("server_stopped_mid_operation") else { return };
    let bin = nx::require_binary("mongo_conformance::server_stopped_mid_operation").expect("checked above");
    let port = server.port;
    let uri = server.uri();
    let retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        budget: Duration::from_secs(4),
    };
    let opts = MongoOptions {
        server_selection_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        attempt_timeout: Duration::from_secs(30),
        retry: retry.clone(),
        max_batch_docs: 200,
        max_in_flight: 2,
        ..MongoOptions::default()
    };
    // The bound on a failed upsert: every attempt fails within the server
    // selection timeout once the server is gone; the budget stops new attempts.
    let bound = retry.budget + opts.server_selection_timeout * 2 + Duration::from_secs(5);
    let store = MongoStore::connect_with(&uri, "killtest", opts).await.expect("connect");
    store.ping().await.expect("ping the private server");

    const N: usize = 3000;
    let assets: Vec<Asset> = (0..N).map(|i| device(&format!("k{i:05}"), &format!("h{i}"), 200)).collect();
    let task = {
        let store = store.clone();
        let b = batch("conn-a", "sync-1", 0, assets.clone());
        tokio::spawn(async move { store.upsert(b).await })
    };
    // Kill it once the load is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.stats().update_commands < 2 && !task.is_finished() {
        assert!(Instant::now() < deadline, "the upsert never started writing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!task.is_finished(), "the upsert finished before the server could be killed; make the batch larger");
    server.kill();
    let killed = Instant::now();
    let result =
        tokio::time::timeout(bound * 2, task).await.expect("upsert must return in bounded time").expect("join");
    let took = killed.elapsed();
    eprintln!("upsert after kill: {result:?} in {took:?} ({:?})", store.stats());
    // Permanent once the store's retries are spent; `Partial` around it when
    // some of the batch's commands were acknowledged before the kill.
    match result {
        Err(StoreError::Permanent(msg)) => assert!(msg.contains("gave up after"), "{msg}"),
        Err(StoreError::Partial { stored, source }) => {
            assert!(matches!(*source, StoreError::Permanent(ref msg) if msg.contains("gave up after")), "{source:?}");
            assert!(stored.stored() < N as u64, "{stored:?}");
        }
        other => panic!("expected a permanent error after the store's retries, got {other:?}"),
    }
    assert!(took < bound, "the failed upsert took {took:?}, over {bound:?}");

    // While the server is down, a new upsert fails just as fast.
    let started = Instant::now();
    let down = store.upsert(batch("conn-a", "sync-x", 0, vec![device("x", "x", 0)])).await;
    assert!(matches!(down, Err(StoreError::Permanent(_))), "{down:?}");
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());

    // Back up (same port, same data): the batch loads, nothing duplicated.
    let _server = NxServer::start(&bin, port, data.path(), 2).expect("restart nx-27017");
    let out = store.upsert(batch("conn-a", "sync-2", 60, assets)).await.expect("upsert after restart");
    assert_eq!(out.stored(), N as u64, "{out:?}");
    assert!(out.rejected.is_empty(), "{out:?}");
    assert_eq!(total(&store).await, N as u64, "no duplicates and nothing lost");
    let listed = store.list_assets(&all(), N + 10).await.expect("list");
    let keys: BTreeSet<(AssetKind, String)> = listed.iter().map(|a| (a.kind, a.source_id.clone())).collect();
    assert_eq!((listed.len(), keys.len()), (N, N), "one document per key");
    assert!(listed.iter().all(|a| a.last_sync_id == "sync-2"), "every asset refreshed by the retried batch");
}

/// Documents written before keys and references existed (no `keys`, `refs`,
/// `derived`: as the previous release wrote them) get them on their next
/// sync, counted unchanged, and are then found by key and reference; the
/// sync after that is all light statements again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_an_earlier_version_get_their_keys_on_the_next_sync() {
    use corral_core::schema::parse_where;
    let Some(uri) = mongo_uri("documents_of_an_earlier_version_get_their_keys_on_the_next_sync") else { return };
    let store = open(&uri, "derived", test_options()).await;
    with_cleanup(vec![store.clone()], async {
        let assets = conformance::model_assets();
        let out = store.upsert(batch("conn-a", "s1", 0, assets.clone())).await.expect("upsert");
        assert_eq!(out.inserted, 5);
        // What an earlier version left: the same documents without the derived fields.
        store
            .database()
            .collection::<mongodb::bson::Document>("assets")
            .update_many(doc! {}, doc! { "$unset": { "keys": "", "refs": "", "derived": "" } })
            .await
            .expect("strip derived fields");
        let by_serial = AssetFilter {
            conditions: vec![parse_where("serial_number=5CG1234XYZ", None, &[]).expect("parse")],
            ..Default::default()
        };
        assert!(store.list_assets(&by_serial, 10).await.expect("list").is_empty(), "no keys yet");
        let before = store.stats();
        let out = store.upsert(batch("conn-a", "s2", 3600, assets.clone())).await.expect("resync");
        assert_eq!((out.inserted, out.updated, out.unchanged), (0, 0, 5), "still unchanged");
        let after = store.stats();
        assert_eq!(after.light_statements - before.light_statements, 0, "each rewritten in full once");
        let found = store.list_assets(&by_serial, 10).await.expect("list");
        assert_eq!(found.len(), 1, "found by key after the sync");
        let points = AssetFilter {
            points_at: Some(corral_core::store::AssetKey {
                connection: "conn-a".into(),
                kind: AssetKind::Device,
                source_id: "dev-1".into(),
            }),
            ..Default::default()
        };
        assert_eq!(store.list_assets(&points, 10).await.expect("points").len(), 2, "found by reference");
        let before = store.stats();
        let out = store.upsert(batch("conn-a", "s3", 7200, assets)).await.expect("steady state");
        assert_eq!(out.unchanged, 5);
        assert_eq!(store.stats().light_statements - before.light_statements, 5, "steady state: light statements only");
    })
    .await;
}

/// Commands a client sent, by name, counted by the driver's command monitoring
/// (what crossed the wire, whatever the store's own statistics say).
#[derive(Clone, Default)]
struct CommandLog(Arc<Mutex<Vec<String>>>);

impl CommandLog {
    /// Names of the commands sent since the last call, handshakes and monitoring left out.
    fn take(&self) -> Vec<String> {
        let mut names = std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        names.retain(|n| {
            !matches!(n.as_str(), "hello" | "isMaster" | "ismaster" | "ping" | "buildInfo" | "endSessions")
        });
        names.sort();
        names
    }
}

async fn counted_store(uri: &str, tag: &str) -> (MongoStore, CommandLog) {
    use mongodb::event::{EventHandler, command::CommandEvent};
    let log = CommandLog::default();
    let mut client_opts = mongodb::options::ClientOptions::parse(uri).await.expect("parse MONGODB_URI");
    let sink = log.clone();
    client_opts.command_event_handler = Some(EventHandler::callback(move |event: CommandEvent| {
        if let CommandEvent::Started(started) = event {
            sink.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(started.command_name);
        }
    }));
    let client = mongodb::Client::with_options(client_opts).expect("client");
    let store = MongoStore::from_client_with(client, &unique_db(tag), test_options()).expect("store");
    store.ping().await.expect("ping MONGODB_URI");
    (store, log)
}

fn names(list: &[(&str, usize)]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().flat_map(|(n, k)| std::iter::repeat_n(n.to_string(), *k)).collect();
    v.sort();
    v
}

/// Round trips per batch, counted at the driver: per command of at most
/// `max_batch_docs` statements, one `find` per asset kind in it (the pre-read,
/// answered in one reply: no `getMore`) and one `update`; the first batch of a
/// store also lists and creates its indexes and asks which server it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_per_batch_counted_at_the_driver() {
    let Some(uri) = mongo_uri("round_trips_per_batch_counted_at_the_driver") else { return };
    let (store, log) = counted_store(&uri, "round_trips").await;
    with_cleanup(vec![store.clone()], async {
        let hosts = |n: usize, tag: &str| -> Vec<Asset> {
            (0..n).map(|i| device(&format!("h{i:05}"), &format!("{tag}-{i}"), 0)).collect()
        };
        // The first batch sets the store up; its commands are not the steady state.
        store.upsert(batch("c", "s0", 0, hosts(10, "a"))).await.expect("setup batch");
        let setup = log.take();
        assert!(setup.iter().any(|n| n == "createIndexes"), "the first batch creates the indexes: {setup:?}");

        let out = store.upsert(batch("c", "s1", 10, hosts(1000, "a"))).await.expect("1000 devices");
        assert_eq!((out.inserted, out.updated, out.unchanged), (990, 0, 10));
        assert_eq!(log.take(), names(&[("find", 1), ("update", 1)]), "1,000 devices of one kind: 2 round trips");

        let out = store.upsert(batch("c", "s2", 20, hosts(1000, "a"))).await.expect("resync");
        assert_eq!(out.unchanged, 1000);
        assert_eq!(log.take(), names(&[("find", 1), ("update", 1)]), "an unchanged resync: still 2 round trips");

        let out = store.upsert(batch("c", "s3", 30, hosts(2500, "b"))).await.expect("2500 devices");
        assert_eq!((out.inserted, out.updated), (1500, 1000));
        assert_eq!(log.take(), names(&[("find", 3), ("update", 3)]), "2,500 devices: three commands of <= 1,000");

        let out = store.upsert(batch("c2", "s1", 30, conformance::model_assets())).await.expect("five kinds");
        assert_eq!(out.inserted, 5);
        assert_eq!(log.take(), names(&[("find", 5), ("update", 1)]), "five kinds in one command: a find per kind");
    })
    .await;
}
