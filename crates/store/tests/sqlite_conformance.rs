//! The store conformance suite against SQLite (in memory and on disk), plus
//! SQLite-specific behaviour: reopening, concurrent writers, throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::asset::{Asset, AssetKind};
use corral_core::store::{AssetFilter, LoadOutcome, StalePolicy, Store};
use corral_store::conformance::{self, at, batch, device, run_summary, scope, user};
use corral_store::sqlite::{PAGE_SIZE, SCHEMA_VERSION, SqliteOptions, SqliteStore};

fn memory_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in_memory().expect("open in-memory SQLite store"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    conformance::run_all(|_case| async { memory_store() }).await;
}

/// The suite against a fresh database file per case, opened with `options`.
async fn conformance_file_backed_with(options: SqliteOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    conformance::run_all(move |case| {
        let path = root.join(format!("{case}.db"));
        async move {
            Arc::new(SqliteStore::open_with(&path, options).expect("open file SQLite store")) as Arc<dyn Store>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_backed() {
    conformance_file_backed_with(SqliteOptions::default()).await;
}

/// The suite again with the lookup log and the recent keys merged into
/// their indexes by every batch: keys are then found in the large level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_backed_merging_every_batch() {
    let options = SqliteOptions { lookup_log_rows: 1, key_recent_rows: 1, ..SqliteOptions::default() };
    conformance_file_backed_with(options).await;
}

/// The suite again with the WAL checkpointed (on the checkpoint thread, while
/// the writer goes on) after every few pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_backed_checkpointing_constantly() {
    conformance_file_backed_with(SqliteOptions { wal_autocheckpoint_pages: 4, ..SqliteOptions::default() }).await;
}

/// The WAL is checkpointed by the store's own thread (the writer's
/// autocheckpoint is replaced): it stays near its bound however much is
/// written, the database file holds what was committed, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_while_a_load_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wal.db");
    let wal = dir.path().join("wal.db-wal");
    let bound_pages = 64_u64;
    let options = SqliteOptions { wal_autocheckpoint_pages: bound_pages as u32, ..SqliteOptions::default() };
    let store = SqliteStore::open_with(&path, options).expect("open");
    let mut largest_wal = 0;
    for b in 0..200 {
        let assets: Vec<Asset> =
            (0..100).map(|i| device("hosts", &format!("d{b:03}-{i:03}"), &format!("host-{b}-{i}"))).collect();
        let out = store.upsert(batch("c", "s1", at(0), assets)).await.expect("upsert");
        assert_eq!(out.inserted, 100);
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    let db_bytes = std::fs::metadata(&path).expect("database file").len();
    // 20,000 devices are about 10 MB: without checkpoints they would all sit in the WAL.
    assert!(db_bytes > 8 << 20, "the database file holds the checkpointed pages: {db_bytes} bytes");
    // The writer appends while the thread checkpoints; at four times the
    // bound it checkpoints everything itself: one batch (~15 pages) over that.
    let page = u64::from(PAGE_SIZE) + 24;
    assert!(largest_wal < (4 * bound_pages + 128) * page, "the WAL grew to {largest_wal} bytes (database {db_bytes})");
    let total: u64 = store.count_assets(&AssetFilter::default()).await.expect("count").iter().map(|c| c.count).sum();
    assert_eq!(total, 20_000);
    drop(store);
    let reopened = SqliteStore::open_read_only(&path).expect("reopen");
    let total: u64 = reopened.count_assets(&AssetFilter::default()).await.expect("count").iter().map(|c| c.count).sum();
    assert_eq!(total, 20_000, "everything is in the database after the store closed");
}

/// A database the store creates has its page size; one created before
/// (with SQLite's 4 KiB) keeps its own, and the store works on it.
#[tokio::test]
async fn new_databases_get_the_store_page_size_and_old_ones_keep_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page_size = |path: &std::path::Path| -> u32 {
        rusqlite::Connection::open(path).and_then(|c| c.query_row("PRAGMA page_size", [], |r| r.get(0))).expect("read")
    };
    let new = dir.path().join("new.db");
    let store = SqliteStore::open(&new).expect("open");
    store.upsert(batch("c", "s1", at(0), vec![device("hosts", "d1", "web-1")])).await.expect("upsert");
    drop(store);
    assert_eq!(page_size(&new), PAGE_SIZE);
    assert_ne!(PAGE_SIZE, 4096, "the check below needs another size");
    let old = dir.path().join("old.db");
    rusqlite::Connection::open(&old)
        .and_then(|c| c.execute_batch("PRAGMA page_size = 4096; CREATE TABLE before (x); DROP TABLE before;"))
        .expect("an older database");
    let store = SqliteStore::open(&old).expect("open");
    let out = store.upsert(batch("c", "s1", at(0), vec![device("hosts", "d1", "web-1")])).await.expect("upsert");
    assert_eq!(out.inserted, 1);
    drop(store);
    assert_eq!(page_size(&old), 4096);
}

/// The suite must be able to fail: a store that forgets `first_seen` is caught.
#[tokio::test]
async fn conformance_catches_a_broken_store() {
    struct Forgetful(SqliteStore);

    #[async_trait::async_trait]
    impl Store for Forgetful {
        fn describe(&self) -> String {
            "forgetful".into()
        }
        async fn upsert(&self, b: corral_core::LoadBatch) -> Result<LoadOutcome, corral_core::StoreError> {
            // Broken: every upsert looks like a first sighting to callers.
            let out = self.0.upsert(b).await?;
            Ok(LoadOutcome { inserted: out.stored(), updated: 0, unchanged: 0, rejected: out.rejected })
        }
        async fn handle_stale(
            &self,
            s: &corral_core::StaleScope,
            p: StalePolicy,
        ) -> Result<corral_core::store::StaleOutcome, corral_core::StoreError> {
            self.0.handle_stale(s, p).await
        }
        async fn save_checkpoint(
            &self,
            c: &str,
            s: &str,
            k: &corral_core::Checkpoint,
        ) -> Result<(), corral_core::StoreError> {
            self.0.save_checkpoint(c, s, k).await
        }
        async fn load_checkpoint(
            &self,
            c: &str,
            s: &str,
        ) -> Result<Option<corral_core::Checkpoint>, corral_core::StoreError> {
            self.0.load_checkpoint(c, s).await
        }
        async fn save_rejects(&self, r: Vec<corral_core::store::StoredReject>) -> Result<(), corral_core::StoreError> {
            self.0.save_rejects(r).await
        }
        async fn rejects(
            &self,
            s: &str,
            l: usize,
        ) -> Result<Vec<corral_core::store::StoredReject>, corral_core::StoreError> {
            self.0.rejects(s, l).await
        }
        async fn save_run(&self, r: &corral_core::RunSummary) -> Result<(), corral_core::StoreError> {
            self.0.save_run(r).await
        }
        async fn acquire_lease(
            &self,
            c: &str,
            h: &str,
            o: &str,
            t: std::time::Duration,
        ) -> Result<corral_core::LeaseGrant, corral_core::StoreError> {
            self.0.acquire_lease(c, h, o, t).await
        }
        async fn renew_lease(
            &self,
            c: &str,
            h: &str,
            t: std::time::Duration,
        ) -> Result<Option<corral_core::Lease>, corral_core::StoreError> {
            self.0.renew_lease(c, h, t).await
        }
        async fn release_lease(&self, c: &str, h: &str) -> Result<(), corral_core::StoreError> {
            self.0.release_lease(c, h).await
        }
        async fn lease(&self, c: &str) -> Result<Option<corral_core::Lease>, corral_core::StoreError> {
            self.0.lease(c).await
        }
        async fn list_runs(
            &self,
            q: &corral_core::RunQuery,
            l: usize,
        ) -> Result<Vec<corral_core::RunSummary>, corral_core::StoreError> {
            self.0.list_runs(q, l).await
        }
        async fn count_assets(
            &self,
            f: &AssetFilter,
        ) -> Result<Vec<corral_core::store::AssetCount>, corral_core::StoreError> {
            self.0.count_assets(f).await
        }
        async fn list_assets_after(
            &self,
            f: &AssetFilter,
            a: Option<&corral_core::AssetCursor>,
            l: usize,
        ) -> Result<Vec<corral_core::store::StoredAsset>, corral_core::StoreError> {
            self.0.list_assets_after(f, a, l).await
        }
    }

    let store = Forgetful(SqliteStore::open_in_memory().expect("open"));
    let case = conformance::CASES.iter().find(|c| c.name == "idempotent_upsert").expect("case exists");
    let err = conformance::run_case(case, &store).await.expect_err("a broken store must fail the case");
    assert!(err.contains("idempotent_upsert") && err.contains("unchanged"), "{err}");
}

#[tokio::test]
async fn describe_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    let store = SqliteStore::open(&path).expect("open");
    assert_eq!(store.describe(), format!("sqlite:{}", path.display()));
    assert_eq!(SqliteStore::open_in_memory().expect("open").describe(), "sqlite::memory:");
}

#[tokio::test]
async fn reopening_a_file_store_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    {
        let store = SqliteStore::open(&path).expect("open");
        let out = store
            .upsert(batch("conn-a", "sync-1", at(0), vec![device("hosts", "d1", "h1"), user("users", "u1", "a@b.c")]))
            .await
            .expect("upsert");
        assert_eq!(out.inserted, 2);
        store
            .save_checkpoint("conn-a", "hosts", &corral_core::Checkpoint(serde_json::json!({"cursor": 7})))
            .await
            .expect("checkpoint");
        store.save_run(&run_summary("sync-1", "conn-a", at(0))).await.expect("run");
    }
    // Reopen (schema creation must be idempotent) and find everything.
    let store = SqliteStore::open(&path).expect("reopen");
    let all = AssetFilter { include_stale: true, ..Default::default() };
    assert_eq!(store.list_assets(&all, 10).await.expect("list").len(), 2);
    assert_eq!(
        store.load_checkpoint("conn-a", "hosts").await.expect("load"),
        Some(corral_core::Checkpoint(serde_json::json!({"cursor": 7})))
    );
    assert_eq!(store.runs(10).await.expect("runs"), vec![run_summary("sync-1", "conn-a", at(0))]);
    let out = store.upsert(batch("conn-a", "sync-2", at(60), vec![device("hosts", "d1", "h1")])).await.expect("upsert");
    assert_eq!(out.unchanged, 1, "the reopened store knows d1");
    // Two stores on one file (two processes) also work.
    let other = SqliteStore::open(&path).expect("open a second handle");
    assert_eq!(other.count_assets(&all).await.expect("count").iter().map(|c| c.count).sum::<u64>(), 2);
}

#[tokio::test]
async fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    drop(SqliteStore::open(&path).expect("open"));
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'", []).expect("bump version");
    }
    let err = SqliteStore::open(&path).expect_err("a newer schema must be refused");
    assert!(matches!(err, corral_core::StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("999"), "{err}");
}

#[tokio::test]
async fn corrupt_json_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    let store = SqliteStore::open(&path).expect("open");
    store.upsert(batch("conn-a", "sync-1", at(0), vec![device("hosts", "d1", "h1")])).await.expect("upsert");
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute("UPDATE assets SET fields = '{not json'", []).expect("corrupt");
    }
    let err = store.list_assets(&AssetFilter::default(), 10).await.expect_err("corrupt fields");
    assert!(matches!(err, corral_core::StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upserts_from_several_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("open"));
    const TASKS: usize = 8;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 500;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut total = LoadOutcome::default();
            for b in 0..BATCHES {
                // Tasks overlap on half of their ids (the same connection), so they race on the same rows.
                let assets: Vec<Asset> = (0..PER_BATCH)
                    .map(|i| {
                        let id = if i % 2 == 0 { format!("shared-{b}-{i}") } else { format!("own-{t}-{b}-{i}") };
                        device("hosts", &id, &format!("h-{id}"))
                    })
                    .collect();
                let out = store.upsert(batch("conn-a", &format!("sync-{t}"), at(0), assets)).await.expect("upsert");
                total.add(out);
            }
            total
        }));
    }
    // Readers keep working while the writers run.
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..20 {
                store.count_assets(&AssetFilter::default()).await.expect("count while loading");
                store.runs(5).await.expect("runs while loading");
            }
        })
    };
    let mut total = LoadOutcome::default();
    for h in handles {
        total.add(h.await.expect("task"));
    }
    reader.await.expect("reader");
    let shared = BATCHES * PER_BATCH / 2;
    let own = TASKS * BATCHES * PER_BATCH / 2;
    assert_eq!(total.stored(), (TASKS * BATCHES * PER_BATCH) as u64);
    assert_eq!(total.inserted, (shared + own) as u64, "each distinct key inserted exactly once: {total:?}");
    let counts = store.count_assets(&AssetFilter::default()).await.expect("count");
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].kind, AssetKind::Device);
    assert_eq!(counts[0].count, (shared + own) as u64);
}

/// Two stores on one file (as two processes would have: two writer
/// connections) race on the same keys: schema version 4 has no unique
/// index, so only the writers' `IMMEDIATE` transactions keep each key to
/// one row. One of them merges its recent keys every batch, so keys are
/// found in both levels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_store_each_key_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    let stores = [
        Arc::new(SqliteStore::open(&path).expect("open first")),
        Arc::new(
            SqliteStore::open_with(&path, SqliteOptions { key_recent_rows: 1, ..SqliteOptions::default() })
                .expect("open second"),
        ),
    ];
    const BATCHES: usize = 12;
    const PER_BATCH: usize = 300;
    let mut handles = Vec::new();
    for (t, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        handles.push(tokio::spawn(async move {
            let mut total = LoadOutcome::default();
            for b in 0..BATCHES {
                // Every key is sent by both stores, in opposite batch orders.
                let b = if t == 0 { b } else { BATCHES - 1 - b };
                let assets: Vec<Asset> =
                    (0..PER_BATCH).map(|i| device("hosts", &format!("d-{b}-{i}"), &format!("h-{b}-{i}"))).collect();
                total.add(store.upsert(batch("conn-a", &format!("sync-{t}"), at(0), assets)).await.expect("upsert"));
            }
            total
        }));
    }
    let mut total = LoadOutcome::default();
    for h in handles {
        total.add(h.await.expect("task"));
    }
    let distinct = (BATCHES * PER_BATCH) as u64;
    assert_eq!(total.inserted, distinct, "each key inserted once: {total:?}");
    assert_eq!(total.unchanged, distinct, "and found by the other store: {total:?}");
    let conn = rusqlite::Connection::open(&path).expect("open");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect("count") };
    assert_eq!(count("SELECT COUNT(*) FROM assets") as u64, distinct, "one row per key");
    assert_eq!(count("SELECT COUNT(DISTINCT source_id) FROM assets") as u64, distinct);
    let keys = count("SELECT COUNT(*) FROM asset_key") + count("SELECT COUNT(*) FROM asset_key_recent");
    assert_eq!(keys as u64, distinct, "one key entry per row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_50k_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = SqliteStore::open(dir.path().join("corral.db")).expect("open");
    measure_50k("file", &file).await;
    let memory = SqliteStore::open_in_memory().expect("open");
    measure_50k("memory", &memory).await;
}

/// Upsert 50,000 devices into an empty store (one batch), again unchanged,
/// then changed in 5,000-asset batches; print the rates (not asserted: timing
/// depends on the machine).
async fn measure_50k(label: &str, store: &SqliteStore) {
    const N: usize = 50_000;
    let assets: Vec<Asset> =
        (0..N).map(|i| device("hosts", &format!("dev-{i:06}"), &format!("host-{i}.example.com"))).collect();

    let (started, cpu0) = (Instant::now(), cpu_time());
    let out = store.upsert(batch("conn-a", "sync-1", at(0), assets.clone())).await.expect("insert 50k");
    let insert = started.elapsed();
    let insert_cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    assert_eq!(out.inserted, N as u64);

    let (started, cpu0) = (Instant::now(), cpu_time());
    let out = store.upsert(batch("conn-a", "sync-2", at(60), assets)).await.expect("re-upsert 50k");
    let unchanged = started.elapsed();
    let unchanged_cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    assert_eq!(out.unchanged, N as u64);

    // A realistic shape: 5,000-asset batches, all changed.
    let changed: Vec<Asset> =
        (0..N).map(|i| device("hosts", &format!("dev-{i:06}"), &format!("renamed-{i}.example.com"))).collect();
    let (started, cpu0) = (Instant::now(), cpu_time());
    let mut total = LoadOutcome::default();
    for chunk in changed.chunks(5_000) {
        total.add(store.upsert(batch("conn-a", "sync-3", at(120), chunk.to_vec())).await.expect("update 50k"));
    }
    let update = started.elapsed();
    let update_cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    assert_eq!(total.updated, N as u64);

    let started = Instant::now();
    let stale = store
        .handle_stale(&scope("conn-a", "hosts", "sync-4", at(180)), StalePolicy::default())
        .await
        .expect("mark 50k stale");
    let mark = started.elapsed();
    assert_eq!(stale.marked, N as u64);

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    let cpu = |d: Option<Duration>| match d {
        Some(d) if !d.is_zero() => format!(", {:.0} rows per CPU-second", rate(d)),
        _ => String::new(),
    };
    println!(
        "sqlite ({label}) 50k rows: insert {insert:.2?} ({:.0} rows/s{}); unchanged {unchanged:.2?} ({:.0} rows/s{}); \
         changed, 5k batches {update:.2?} ({:.0} rows/s{}); mark stale {mark:.2?}",
        rate(insert),
        cpu(insert_cpu),
        rate(unchanged),
        cpu(unchanged_cpu),
        rate(update),
        cpu(update_cpu),
    );
}

/// CPU time of this process (all threads), from /proc on Linux; `None` elsewhere.
/// On a shared machine wall-clock rates say little; rows per CPU-second say more.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

/// A database written by the previous release (schema version 1, made by
/// `SqliteStore` before correlation keys existed: `tests/fixtures/corral-v1.db`,
/// two devices, one of them stale, a user and a run) keeps working: read-only
/// as it is, and migrated in place when opened for writing, with the keys of
/// the assets already stored derived from their fields.
#[tokio::test]
async fn a_version_1_database_is_migrated_in_place() {
    use corral_core::schema::parse_where;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corral-v1.db"), &path).expect("copy fixture");
    let filter = |text: &str, include_stale: bool| AssetFilter {
        include_stale,
        conditions: vec![parse_where(text, None, &[]).expect("parse")],
        ..Default::default()
    };
    let ids = |assets: Vec<corral_core::store::StoredAsset>| -> Vec<String> {
        assets.into_iter().map(|a| format!("{} {}", a.kind, a.source_id)).collect()
    };

    // Read-only: not migrated, everything but the key and reference indexes works.
    let ro = SqliteStore::open_read_only(&path).expect("open read-only");
    assert_eq!(ro.schema_version(), 1);
    let counts = ro.count_assets(&AssetFilter::default()).await.expect("count");
    let counts: Vec<(AssetKind, u64, u64)> = counts.iter().map(|c| (c.kind, c.count, c.stale)).collect();
    assert_eq!(counts, [(AssetKind::Device, 1, 1), (AssetKind::User, 1, 0)], "live and stale apart");
    assert_eq!(ro.runs(10).await.expect("runs").len(), 1);
    let listed = ro.list_assets(&filter("domain=corp.example.com", false), 10).await.expect("non-key --where");
    assert_eq!(ids(listed), ["device dev-1"]);
    let err = ro.list_assets(&filter("serial_number=5CG1234XYZ", false), 10).await.expect_err("keys need version 2");
    assert!(err.to_string().contains("schema version 1") && err.to_string().contains("corral sync"), "{err}");
    drop(ro);

    // Writable: migrated in place.
    let store = SqliteStore::open(&path).expect("open and migrate");
    assert_eq!(store.schema_version(), SCHEMA_VERSION);
    let listed = store.list_assets(&filter("serial_number=5cg1234xyz", false), 10).await.expect("by serial");
    assert_eq!(ids(listed), ["device dev-1"], "keys derived from the stored fields");
    let listed = store.list_assets(&filter("mac_addresses=AA:BB:CC:DD:EE:01", false), 10).await.expect("by mac");
    assert_eq!(ids(listed), ["device dev-1"]);
    let listed = store.list_assets(&filter("username=ann.lee@example.com", false), 10).await.expect("by username");
    assert_eq!(ids(listed), ["user usr-1"]);
    let listed = store.list_assets(&filter("serial_number=SN-2", true), 10).await.expect("stale by serial");
    assert_eq!(ids(listed), ["device dev-2"], "the stale device has its keys too");
    // What the old version stored re-syncs as unchanged: content hashes are compatible.
    let d1 = store.list_assets(&filter("source_id=dev-1", false), 1).await.expect("dev-1").remove(0);
    let asset = d1.asset().expect("decode");
    let out = store.upsert(batch("cmdb", "s3", at(7200), vec![asset])).await.expect("re-sync");
    assert_eq!((out.inserted, out.updated, out.unchanged), (0, 0, 1));
    drop(store);
    // Reopening does not migrate again; read-only sees the new version.
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.schema_version(), SCHEMA_VERSION);
    drop(store);
    let ro = SqliteStore::open_read_only(&path).expect("read-only again");
    assert_eq!(ro.schema_version(), SCHEMA_VERSION);
    let listed = ro.list_assets(&filter("fqdn=web-01.corp.example.com", false), 10).await.expect("by fqdn");
    assert_eq!(ids(listed), ["device dev-1"]);
}

/// The rows an asset has in the lookup index and its log.
fn lookup_rows(path: &std::path::Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).expect("open");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("count")
    };
    (count("asset_lookup"), count("asset_lookup_log"))
}

/// Each asset has one lookup row per correlation key and reference, in the
/// log until a merge and in the index after it; deleting stale assets
/// deletes their rows wherever they are, and an unchanged re-sync leaves
/// them alone. With the default bound nothing is merged in this test; with a
/// bound of one row every batch merges.
#[tokio::test]
async fn lookup_rows_follow_their_asset_in_the_log_and_the_index() {
    for (merge_every_batch, lookup_log_rows) in [(false, SqliteOptions::default().lookup_log_rows), (true, 1)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corral.db");
        let options = SqliteOptions { lookup_log_rows, ..SqliteOptions::default() };
        let store = SqliteStore::open_with(&path, options).expect("open");
        let total = || {
            let (index, log) = lookup_rows(&path);
            if merge_every_batch {
                assert_eq!(log, 0, "merged with the batch");
            } else {
                assert_eq!(index, 0, "nothing merged below the bound");
            }
            index + log
        };
        let assets = conformance::model_assets();
        store.upsert(batch("conn-a", "s1", at(0), assets.clone())).await.expect("upsert");
        let want: usize = assets.iter().map(|a| a.correlation_keys().len() + a.references().len()).sum();
        assert_eq!(total(), want as i64, "merge {merge_every_batch}");
        store.upsert(batch("conn-a", "s2", at(3600), assets.clone())).await.expect("unchanged");
        assert_eq!(total(), want as i64, "an unchanged re-sync adds nothing");
        // Nothing but the software record is seen again: everything else goes stale, then is deleted.
        store.upsert(batch("conn-a", "s3", at(7200), vec![assets[3].clone()])).await.expect("one");
        let delete = StalePolicy::Mark { delete_after: Some(Duration::from_secs(1)) };
        for stream in ["hosts", "users", "findings", "instances"] {
            store.handle_stale(&scope("conn-a", stream, "s3", at(7200)), delete).await.expect("mark");
            store.handle_stale(&scope("conn-a", stream, "s4", at(7300)), delete).await.expect("delete");
        }
        assert_eq!(
            store.count_assets(&AssetFilter { include_stale: true, ..Default::default() }).await.expect("count").len(),
            1
        );
        let software = assets[3].correlation_keys().len() + assets[3].references().len();
        assert_eq!(total(), software as i64, "only the software's key and reference are left");
    }
}

/// A filter on one correlation key of one kind.
fn by_key(kind: AssetKind, key: corral_core::asset::KeyType, value: &str) -> AssetFilter {
    AssetFilter {
        include_stale: true,
        conditions: vec![corral_core::store::Condition {
            text: format!("{}={value}", key.as_str()),
            alternatives: vec![(kind, corral_core::store::Predicate::Key { key, value: value.to_string() })],
        }],
        ..Default::default()
    }
}

/// A changed asset's old keys stop finding it and its new ones find it,
/// whether its old rows were still in the log or already merged.
#[tokio::test]
async fn a_changed_key_is_found_under_its_new_value_only() {
    let by = |text: &str| {
        let key = corral_core::asset::KeyType::SerialNumber;
        by_key(AssetKind::Device, key, text)
    };
    for lookup_log_rows in [1_000_000, 1] {
        let store = SqliteStore::open_in_memory_with(SqliteOptions { lookup_log_rows, ..SqliteOptions::default() })
            .expect("open");
        let serial = |d: Asset, serial: &str| match d.body {
            corral_core::asset::AssetBody::Device(mut dev) => {
                dev.serial_number = Some(serial.to_string());
                Asset::device("hosts", dev)
            }
            _ => unreachable!("a device"),
        };
        let old = serial(device("hosts", "d1", "web.example.com"), "OLD-1");
        let new = serial(device("hosts", "d1", "web.example.com"), "NEW-1");
        store.upsert(batch("c", "s1", at(0), vec![old])).await.expect("one");
        let found = store.list_assets(&by("OLD-1"), 10).await.expect("old");
        assert_eq!(found.len(), 1, "log rows {lookup_log_rows}");
        store.upsert(batch("c", "s2", at(60), vec![new])).await.expect("two");
        assert!(store.list_assets(&by("OLD-1"), 10).await.expect("old").is_empty(), "{lookup_log_rows}");
        assert_eq!(store.list_assets(&by("NEW-1"), 10).await.expect("new").len(), 1, "{lookup_log_rows}");
    }
}

/// A key twice in one batch, its two records in two upsert statements (the
/// batch is sorted by key and a statement takes 256 assets): the asset is
/// found under the later record's correlation keys only, before and after
/// the log is merged, and once it is deleted nothing finds it.
#[tokio::test]
async fn a_key_twice_across_two_statements_keeps_only_its_last_keys() {
    for lookup_log_rows in [1_000_000, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corral.db");
        let store =
            SqliteStore::open_with(&path, SqliteOptions { lookup_log_rows, ..SqliteOptions::default() }).expect("open");
        let mut devices: Vec<Asset> =
            (0..300).map(|i| device("hosts", &format!("d{i:03}"), &format!("h{i:03}"))).collect();
        // Sorted by source id, d255's two records are the 256th and 257th.
        devices.push(device("hosts", "d255", "renamed"));
        let out = store.upsert(batch("c", "s1", at(0), devices)).await.expect("upsert");
        assert_eq!((out.inserted, out.updated), (300, 1), "log rows {lookup_log_rows}");
        let host = |name: &str| by_key(AssetKind::Device, corral_core::asset::KeyType::Hostname, name);
        let found = |name: &'static str| {
            let store = store.clone();
            async move { kinds_and_ids(store.list_assets(&host(name), 10).await.expect("list")) }
        };
        assert_eq!(found("renamed").await, ["device d255"], "log rows {lookup_log_rows}");
        assert!(found("h255").await.is_empty(), "the first record's hostname, log rows {lookup_log_rows}");
        assert_eq!(found("h256").await, ["device d256"]);
        // Every lookup row is one of a stored asset's current hashes.
        let orphans = || -> i64 {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.query_row(
                "SELECT COUNT(*) FROM (SELECT asset, h FROM asset_lookup UNION ALL SELECT asset, h FROM asset_lookup_log) AS l \
                 WHERE NOT EXISTS (SELECT 1 FROM assets, json_each(assets.lookup) AS j WHERE assets.id = l.asset AND j.value = l.h)",
                [],
                |r| r.get(0),
            )
            .expect("count")
        };
        assert_eq!(orphans(), 0, "log rows {lookup_log_rows}");
        // The next sync no longer has d255: stale, then deleted, with its rows.
        let rest: Vec<Asset> =
            (0..300).filter(|i| *i != 255).map(|i| device("hosts", &format!("d{i:03}"), &format!("h{i:03}"))).collect();
        let keys: usize = rest.iter().map(|d| d.correlation_keys().len()).sum();
        store.upsert(batch("c", "s2", at(3600), rest)).await.expect("second sync");
        let delete = StalePolicy::Mark { delete_after: Some(Duration::from_secs(1)) };
        store.handle_stale(&scope("c", "hosts", "s2", at(3600)), delete).await.expect("mark");
        let gone = store.handle_stale(&scope("c", "hosts", "s3", at(3700)), delete).await.expect("delete");
        assert_eq!(gone.deleted, 1, "log rows {lookup_log_rows}");
        assert!(found("renamed").await.is_empty(), "deleted, log rows {lookup_log_rows}");
        assert_eq!(orphans(), 0, "after the delete, log rows {lookup_log_rows}");
        let (index, log) = lookup_rows(&path);
        assert_eq!(index + log, keys as i64, "the other devices' rows only, log rows {lookup_log_rows}");
    }
}

/// A merge larger than one statement of the lookup index (256 rows) moves
/// every row of the log: each device is found by each of its correlation
/// keys afterwards, and the log is empty.
#[tokio::test]
async fn a_large_merge_moves_every_lookup_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    let options = SqliteOptions { lookup_log_rows: 1_000, ..SqliteOptions::default() };
    let store = SqliteStore::open_with(&path, options).expect("open");
    let devices: Vec<Asset> = (0..700).map(|i| device("hosts", &format!("d{i}"), &format!("h{i}"))).collect();
    let rows: usize = devices.iter().map(|d| d.correlation_keys().len()).sum();
    assert!(rows > 1_000 && !rows.is_multiple_of(256), "{rows} rows: more than the bound, not whole statements");
    let probes: Vec<(String, Vec<_>)> = [0, 1, 127, 128, 255, 256, 511, 512, 699]
        .iter()
        .map(|&i: &usize| (format!("device d{i}"), devices[i].correlation_keys()))
        .collect();
    store.upsert(batch("c", "s1", at(0), devices)).await.expect("upsert");
    assert_eq!(lookup_rows(&path), (rows as i64, 0), "all in the index, none left in the log");
    for (want, keys) in probes {
        assert!(keys.len() >= 2, "{want}: {keys:?}");
        for (key, value) in keys {
            let found = store.list_assets(&by_key(AssetKind::Device, key, &value), 10).await.expect("list");
            assert_eq!(kinds_and_ids(found), vec![want.clone()], "{value}");
        }
    }
}

/// A database written by the previous release (schema version 2, with the
/// `asset_keys` and `asset_refs` tables: `tests/fixtures/corral-v2.db`, the
/// five kinds of the model, the device stale, a run) is read as it is
/// read-only, and migrated in place when opened for writing: the same
/// assets, timestamps and staleness, their keys and references found
/// through the new lookup index, and a re-sync of them unchanged.
#[tokio::test]
async fn a_version_2_database_is_migrated_in_place() {
    let (_dir, path) = fixture("corral-v2.db");
    let everything = AssetFilter { include_stale: true, ..Default::default() };
    let (by, ids) = (where_filter, kinds_and_ids);
    let ro = SqliteStore::open_read_only(&path).expect("open read-only");
    assert_eq!(ro.schema_version(), 2);
    let before = ro.list_assets(&everything, 100).await.expect("list");
    assert_eq!(before.len(), 5);
    let err = ro.list_assets(&by("hostname=web-01"), 10).await.expect_err("keys need version 3");
    assert!(err.to_string().contains("schema version 2") && err.to_string().contains("corral sync"), "{err}");
    drop(ro);

    let store = SqliteStore::open(&path).expect("open and migrate");
    assert_eq!(store.schema_version(), SCHEMA_VERSION);
    let after = store.list_assets(&everything, 100).await.expect("list");
    assert_eq!(after, before, "every asset, field and timestamp kept");
    assert_eq!(store.runs(10).await.expect("runs").len(), 1);
    let device = after.iter().find(|a| a.kind == AssetKind::Device).expect("the device");
    assert!(device.stale_since.is_some(), "the stale device is still stale");
    // Keys and references of every kind, derived from the stored fields.
    for asset in &after {
        let decoded = asset.asset().expect("decode");
        for (key, value) in decoded.correlation_keys() {
            let found = ids(store.list_assets(&by_key(asset.kind, key, &value), 10).await.expect("by key"));
            assert!(found.contains(&format!("{} {}", asset.kind, asset.source_id)), "{key:?}={value}: {found:?}");
        }
    }
    let pointing = AssetFilter {
        include_stale: true,
        points_at: Some(corral_core::store::AssetKey {
            connection: device.connection.clone(),
            kind: AssetKind::Device,
            source_id: device.source_id.clone(),
        }),
        ..Default::default()
    };
    let mut pointing = ids(store.list_assets(&pointing, 10).await.expect("points at"));
    pointing.sort();
    assert_eq!(pointing, ["software sw-1", "vulnerability vuln-1"]);
    let (index, log) = lookup_rows(&path);
    assert!(index > 0 && log == 0, "the migration builds the index itself: {index} {log}");
    // A re-sync of what the old version stored is unchanged.
    let assets: Vec<Asset> = after.iter().map(|a| a.asset().expect("decode")).collect();
    let out = store.upsert(batch("conn-a", "s9", at(9000), assets)).await.expect("re-sync");
    assert_eq!((out.inserted, out.updated, out.unchanged), (0, 0, 5));
}

/// A database of schema version 3 (`tests/fixtures/corral-v3.db`: the
/// version 2 fixture as version 3 migrated it, the five kinds, the device
/// stale, a run; its assets have a unique key index and no key hashes) is
/// read as it is read-only, and migrated in place when opened for writing:
/// the same rows under the same ids, found by source id, correlation key
/// and reference; a re-sync unchanged, and a new asset stored once however
/// often it comes.
#[tokio::test]
async fn a_version_3_database_is_migrated_in_place() {
    use corral_core::store::AssetCursor;
    let (_dir, path) = fixture("corral-v3.db");
    let everything = AssetFilter { include_stale: true, ..Default::default() };
    let (by, ids) = (where_filter, kinds_and_ids);
    let ro = SqliteStore::open_read_only(&path).expect("open read-only");
    assert_eq!(ro.schema_version(), 3);
    let before = ro.list_assets(&everything, 100).await.expect("list");
    assert_eq!(before.len(), 5);
    let dev = before.iter().find(|a| a.kind == AssetKind::Device).expect("the device").clone();
    let by_id = format!("source_id={}", dev.source_id);
    assert_eq!(ids(ro.list_assets(&by(&by_id), 10).await.expect("by id, read-only")).len(), 1);
    assert_eq!(ids(ro.list_assets(&by("hostname=web-01"), 10).await.expect("by key, read-only")).len(), 1);
    // Pages of a version 3 database follow the key order.
    let first = ro.list_assets(&everything, 2).await.expect("first page");
    let rest = ro.list_assets_after(&everything, Some(&AssetCursor::of(&first[1])), 10).await.expect("rest");
    assert_eq!(first.into_iter().chain(rest).collect::<Vec<_>>(), before, "paged read-only");
    let ids_before: Vec<i64> = {
        let conn = rusqlite::Connection::open(&path).expect("open");
        let mut stmt = conn.prepare("SELECT id FROM assets ORDER BY connection, kind, source_id").expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("ids").collect::<Result<_, _>>().expect("read ids")
    };
    drop(ro);

    let store = SqliteStore::open(&path).expect("open and migrate");
    assert_eq!(store.schema_version(), SCHEMA_VERSION);
    let after = store.list_assets(&everything, 100).await.expect("list");
    let mut sorted = after.clone();
    sorted.sort_by(|a, b| (&a.connection, a.kind, &a.source_id).cmp(&(&b.connection, b.kind, &b.source_id)));
    assert_eq!(sorted, before, "every asset, field and timestamp kept");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        let mut stmt = conn.prepare("SELECT id FROM assets ORDER BY connection, kind, source_id").expect("prepare");
        let ids_after: Vec<i64> =
            stmt.query_map([], |r| r.get(0)).expect("ids").collect::<Result<_, _>>().expect("read ids");
        assert_eq!(ids_after, ids_before, "every row keeps its id (the lookup index refers to it)");
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect("count") };
        assert_eq!(count("SELECT COUNT(*) FROM asset_key"), 5, "the key index holds every asset");
        assert_eq!(count("SELECT COUNT(*) FROM asset_key_recent"), 0, "built in one pass");
        assert_eq!(count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'assets_before_v4'"), 0, "old table gone");
    }
    assert_eq!(ids(store.list_assets(&by(&by_id), 10).await.expect("by id")), [format!("device {}", dev.source_id)]);
    assert_eq!(ids(store.list_assets(&by("hostname=web-01"), 10).await.expect("by key")), ["device dev-1"]);
    let pointing = AssetFilter {
        include_stale: true,
        points_at: Some(corral_core::store::AssetKey::of(&dev)),
        ..Default::default()
    };
    let mut pointing = ids(store.list_assets(&pointing, 10).await.expect("points at"));
    pointing.sort();
    assert_eq!(pointing, ["software sw-1", "vulnerability vuln-1"]);
    // A re-sync of what version 3 stored is unchanged; a new device, twice
    // in its batch, is stored once.
    let assets: Vec<Asset> = after.iter().map(|a| a.asset().expect("decode")).collect();
    let out = store.upsert(batch(&dev.connection, "s9", at(9000), assets)).await.expect("re-sync");
    assert_eq!((out.inserted, out.updated, out.unchanged), (0, 0, 5));
    let new = vec![device("hosts", "dev-new", "new-1"), device("hosts", "dev-new", "new-2")];
    let out = store.upsert(batch(&after[0].connection, "s10", at(9100), new)).await.expect("new device");
    assert_eq!((out.inserted, out.updated, out.unchanged), (1, 1, 0));
    assert_eq!(store.list_assets(&everything, 100).await.expect("list").len(), 6, "one row for the new device");
}

/// A database of schema version 4 (`tests/fixtures/corral-v4.db`: the
/// version 3 fixture as version 4 migrated it, plus a device whose lookup
/// hashes are still in the log, logged by version 4's insert trigger) is
/// read as it is read-only; opened for writing, the trigger is dropped (the
/// writer logs a new asset's hashes itself), every key is still found
/// whether it was in the log or the index, and a new device's hashes are
/// logged once each.
#[tokio::test]
async fn a_version_4_database_is_migrated_in_place() {
    let (_dir, path) = fixture("corral-v4.db");
    let (by, ids) = (where_filter, kinds_and_ids);
    let ro = SqliteStore::open_read_only(&path).expect("open read-only");
    assert_eq!(ro.schema_version(), 4);
    assert_eq!(ids(ro.list_assets(&by("hostname=logged-1"), 10).await.expect("in the log")), ["device dev-logged"]);
    assert_eq!(ids(ro.list_assets(&by("hostname=web-01"), 10).await.expect("in the index")), ["device dev-1"]);
    drop(ro);
    let trigger = |path: &std::path::Path| -> i64 {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'assets_lookup_insert'",
            [],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert_eq!(trigger(&path), 1, "the fixture is version 4's");

    let store = SqliteStore::open(&path).expect("open and migrate");
    assert_eq!(store.schema_version(), SCHEMA_VERSION);
    assert_eq!(trigger(&path), 0, "dropped");
    assert_eq!(ids(store.list_assets(&by("hostname=logged-1"), 10).await.expect("in the log")), ["device dev-logged"]);
    assert_eq!(ids(store.list_assets(&by("hostname=web-01"), 10).await.expect("in the index")), ["device dev-1"]);
    let connection = store.list_assets(&by("hostname=web-01"), 10).await.expect("list")[0].connection.clone();
    let new = device("hosts", "dev-new", "new-1");
    let hashes = new.correlation_keys().len();
    let out = store.upsert(batch(&connection, "s9", at(9000), vec![new])).await.expect("new device");
    assert_eq!(out.inserted, 1);
    assert_eq!(ids(store.list_assets(&by("hostname=new-1"), 10).await.expect("new")), ["device dev-new"]);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let logged: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM asset_lookup_log WHERE asset = (SELECT id FROM assets WHERE source_id = 'dev-new')",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(logged, i64::try_from(hashes).expect("small"), "each of the new device's hashes logged once");
}

/// A copy of `tests/fixtures/{name}` in a new temporary directory (kept while the `TempDir` lives).
fn fixture(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::copy(&from, &path).expect("copy fixture");
    (dir, path)
}

/// Every asset, stale too, matching one `--where` text.
fn where_filter(text: &str) -> AssetFilter {
    AssetFilter {
        include_stale: true,
        conditions: vec![corral_core::schema::parse_where(text, None, &[]).expect("parse")],
        ..Default::default()
    }
}

/// "KIND SOURCE_ID" of each asset.
fn kinds_and_ids(assets: Vec<corral_core::store::StoredAsset>) -> Vec<String> {
    assets.into_iter().map(|a| format!("{} {}", a.kind, a.source_id)).collect()
}
