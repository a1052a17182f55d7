//! The store conformance suite against SQLite (in memory and on disk), plus
//! SQLite-specific behaviour: reopening, concurrent writers, throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::asset::{Asset, AssetKind};
use corral_core::store::{AssetFilter, LoadOutcome, StalePolicy, Store};
use corral_store::conformance::{self, at, batch, device, run_summary, scope, user};
use corral_store::sqlite::SqliteStore;

fn memory_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in_memory().expect("open in-memory SQLite store"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    conformance::run_all(|_case| async { memory_store() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_backed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    conformance::run_all(move |case| {
        let path = root.join(format!("{case}.db"));
        async move { Arc::new(SqliteStore::open(&path).expect("open file SQLite store")) as Arc<dyn Store> }
    })
    .await;
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
            a: Option<&corral_core::AssetKey>,
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
    assert_eq!(store.schema_version(), 2);
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
    // Reopening does not migrate again; read-only sees version 2.
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.schema_version(), 2);
    drop(store);
    let ro = SqliteStore::open_read_only(&path).expect("read-only again");
    assert_eq!(ro.schema_version(), 2);
    let listed = ro.list_assets(&filter("fqdn=web-01.corp.example.com", false), 10).await.expect("by fqdn");
    assert_eq!(ids(listed), ["device dev-1"]);
}

/// Deleting stale assets deletes their rows in `asset_keys` and `asset_refs`;
/// an unchanged re-sync leaves those tables alone.
#[tokio::test]
async fn keys_and_references_are_deleted_with_their_asset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corral.db");
    let store = SqliteStore::open(&path).expect("open");
    let rows = |table: &str| -> i64 {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("count")
    };
    let assets = conformance::model_assets();
    store.upsert(batch("conn-a", "s1", at(0), assets.clone())).await.expect("upsert");
    let (keys, refs) = (rows("asset_keys"), rows("asset_refs"));
    let want_keys: usize = assets.iter().map(|a| a.correlation_keys().len()).sum();
    let want_refs: usize = assets.iter().map(|a| a.references().len()).sum();
    assert_eq!((keys, refs), (want_keys as i64, want_refs as i64));
    store.upsert(batch("conn-a", "s2", at(3600), assets.clone())).await.expect("unchanged");
    assert_eq!((rows("asset_keys"), rows("asset_refs")), (keys, refs), "an unchanged re-sync rewrites nothing");
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
    assert_eq!(rows("asset_keys"), assets[3].correlation_keys().len() as i64, "only the software's key is left");
    assert_eq!(rows("asset_refs"), 1, "only the software's reference is left");
}
