//! The MongoDB store against a server: the store conformance suite plus
//! MongoDB-specific cases (oversized documents, byte-split batches, a server
//! that dies mid-load, concurrent upserts).
//!
//! Needs `MONGODB_URI`: `bash scripts/mongo-test-server.sh start` starts
//! nx-27017 (a MongoDB wire-protocol server backed by SQLite) and prints it;
//! point it at a real MongoDB 6+ to run the same tests there. Each case uses a
//! fresh database named `ct_<case>_<unique>` and drops it at the end.
//!
//! Without `MONGODB_URI` the tests fail (in CI, and locally unless
//! `CORRAL_SKIP_MONGO=1` is set, which skips them loudly).
//!
//! `server_stopped_mid_operation` starts its own private nx-27017 from the
//! project's virtualenv (`CORRAL_VENV`, default `<repo>/.venv`, made by
//! `scripts/mongo-test-server.sh install`) so that it can kill and restart it.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_core::asset::{Asset, AssetKind, Device};
use corral_core::store::{AssetFilter, LoadBatch, Store, StoreError};
use corral_store::conformance;
use corral_store::mongo::{MongoOptions, MongoStore, RetryPolicy};
use corral_store::nx::{self, NxServer};
use futures::FutureExt;

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The URI of the test server, or `None` when skipping is allowed and asked for.
fn mongo_uri() -> Option<String> {
    if let Ok(uri) = std::env::var("MONGODB_URI")
        && !uri.trim().is_empty()
    {
        return Some(uri);
    }
    if env_flag("CI") {
        panic!("MONGODB_URI not set: run scripts/test.sh (it starts nx-27017 with scripts/mongo-test-server.sh)");
    }
    if std::env::var("CORRAL_SKIP_MONGO").as_deref() == Ok("1") {
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SKIPPING MongoDB store tests: MONGODB_URI not set, CORRAL_SKIP_MONGO=1");
        eprintln!("!!! run: export \"$(bash scripts/mongo-test-server.sh start)\"");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        return None;
    }
    panic!(
        "MONGODB_URI not set: run scripts/test.sh, or `export \"$(bash scripts/mongo-test-server.sh start)\"`, \
         or set CORRAL_SKIP_MONGO=1 to skip the MongoDB tests"
    );
}

/// Options for tests: short timeouts so failures show in seconds.
fn test_options() -> MongoOptions {
    MongoOptions {
        server_selection_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(90),
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            budget: Duration::from_secs(10),
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
    LoadBatch { sync_id: sync_id.into(), connection: connection.into(), seen_at: conformance::at(secs), assets }
}

fn all() -> AssetFilter {
    AssetFilter { connection: None, kind: None, include_stale: true }
}

async fn total(store: &MongoStore) -> u64 {
    store.count_assets(&all()).await.expect("count_assets").iter().map(|c| c.count).sum()
}

// ---------------------------------------------------------------------------
// The store-agnostic conformance suite.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let Some(uri) = mongo_uri() else { return };
    let created: Arc<Mutex<Vec<MongoStore>>> = Arc::default();
    let made = Arc::clone(&created);
    let result = AssertUnwindSafe(conformance::run_all(move |case| {
        let uri = uri.clone();
        let made = Arc::clone(&made);
        async move {
            let store = open(&uri, case, test_options()).await;
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
    let Some(uri) = mongo_uri() else { return };
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
    let Some(uri) = mongo_uri() else { return };
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
    let Some(uri) = mongo_uri() else { return };
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
    let Some(uri) = mongo_uri() else { return };
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

/// Two stores on one database both create the indexes (idempotently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_created_idempotently() {
    let Some(uri) = mongo_uri() else { return };
    let first = open(&uri, "indexes", test_options()).await;
    let db = first.database().name().to_string();
    let second = MongoStore::connect_with(&uri, &db, test_options()).await.expect("connect");
    with_cleanup(vec![first.clone()], async {
        first.upsert(batch("c", "s1", 0, vec![device("a", "h", 0)])).await.expect("first store");
        second.upsert(batch("c", "s2", 60, vec![device("a", "h", 0)])).await.expect("second store");
        let names = first.database().collection::<mongodb::bson::Document>("assets").list_index_names().await;
        let names = names.expect("list indexes");
        // _id plus our six (nx-27017 names them itself; real MongoDB keeps ours).
        assert!(names.len() >= 7, "{names:?}");
        if names.iter().any(|n| n == "asset_key") {
            for name in ["asset_stale_scan", "asset_stale_since", "asset_hostname", "asset_serial_number"] {
                assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
            }
        }
        assert_eq!(total(&first).await, 1);
    })
    .await;
}

// ---------------------------------------------------------------------------
// A private nx-27017 that the test can kill and restart.
// ---------------------------------------------------------------------------

/// The server dies mid-load: `upsert` fails within a bounded time with a
/// transient error, fails fast while the server is down, and once it is back
/// the same batch loads with no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_operation() {
    // This case runs its own server, but is gated like the others.
    if mongo_uri().is_none() {
        return;
    }
    let ci = env_flag("CI");
    let Some(bin) = nx::binary() else {
        let msg = format!(
            "{} has no nx-27017: run `bash scripts/mongo-test-server.sh install` (or set CORRAL_VENV)",
            nx::venv_dir().display()
        );
        if ci {
            panic!("{msg}");
        }
        eprintln!("!!! SKIPPING server_stopped_mid_operation: {msg}");
        return;
    };
    let data = tempfile::tempdir().expect("temp dir");
    let port = nx::free_port().expect("free port");
    let mut server = NxServer::start(&bin, port, data.path(), 1).expect("start nx-27017");
    let uri = format!("mongodb://127.0.0.1:{}", server.port);
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
    match result {
        Err(StoreError::Transient(msg)) => assert!(msg.contains("gave up"), "{msg}"),
        other => panic!("expected a transient error after the server died, got {other:?}"),
    }
    assert!(took < bound, "the failed upsert took {took:?}, over {bound:?}");

    // While the server is down, a new upsert fails just as fast.
    let started = Instant::now();
    let down = store.upsert(batch("conn-a", "sync-x", 0, vec![device("x", "x", 0)])).await;
    assert!(matches!(down, Err(StoreError::Transient(_))), "{down:?}");
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
