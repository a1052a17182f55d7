//! Load stage alone: records/s into each store across batch sizes, for a first
//! load (inserts) and a re-load of the same assets (unchanged).
//!
//! `bash scripts/bench-load.sh` (installs and starts nx-27017 unless
//! `MONGODB_URI` names a MongoDB, runs `cargo bench -p corral-workspace --bench
//! load`, stops the server). `CORRAL_BENCH_ASSETS` sets the count (default
//! 100,000). For MongoDB the store's per-command batch (`max_batch_docs`)
//! follows the engine batch size, so a 5,000-record batch is one `update`
//! command of 5,000 statements (byte budget permitting), not five of 1,000.
//! Without `MONGODB_URI` it measures SQLite only and says so loudly.
//! Under `cargo test` it runs once with a few hundred assets and checks the
//! counts, and needs MongoDB like every MongoDB test (see `corral_store::nx`).
//!
//! `CORRAL_BENCH_GROWTH=N` instead measures how SQLite's first load grows
//! with the table: N devices with random 32-hex ids (like CrowdStrike's
//! agent ids, so the key index takes inserts at random places), made batch
//! by batch (memory stays flat), batches of `CORRAL_BENCH_BATCH` (1,000),
//! 2 in flight, into a file in the current directory's `target/` (on disk,
//! not tmpfs). It prints, for each tenth of N: assets/s, CPU seconds and
//! bytes written per asset in that tenth.

use std::sync::Arc;
use std::time::Instant;

use corral_core::store::LoadBatch;
use corral_core::{Asset, Device, LoadOutcome, Store};
use corral_store::mongo::{MongoOptions, MongoStore, ServerKind};
use corral_store::nx;
use corral_store::sqlite::SqliteStore;
use corral_workspace::{cpu_seconds, written_bytes};

/// The binary's allocator (which, with mimalloc's `override`, SQLite's
/// `malloc` uses too), so that the load is measured as `corral` runs it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn assets(n: usize) -> Vec<Asset> {
    (0..n)
        .map(|i| {
            let d = Device {
                source_id: format!("dev-{i:08}"),
                hostname: Some(format!("host-{i}")),
                domain: Some("corp.example.com".into()),
                ip_addresses: vec![std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])],
                serial_number: Some(format!("SN{i:010}")),
                manufacturer: Some("Dell Inc.".into()),
                model: Some("Latitude 7440".into()),
                owner: Some(format!("user{}@example.com", i % 5000)),
                tags: vec!["prod".into(), "pci".into()],
                ..Default::default()
            };
            Asset::device("hosts", d)
        })
        .collect()
}

/// Load `all` in batches of `batch`, `in_flight` at once: (records/s, summed outcome).
async fn load(store: &Arc<dyn Store>, all: &[Asset], batch: usize, sync: &str, in_flight: usize) -> (f64, LoadOutcome) {
    let started = Instant::now();
    let mut set: tokio::task::JoinSet<Result<LoadOutcome, corral_core::StoreError>> = tokio::task::JoinSet::new();
    let mut total = LoadOutcome::default();
    let seen_at = chrono::Utc::now();
    for chunk in all.chunks(batch) {
        while set.len() >= in_flight {
            total.add(set.join_next().await.expect("task").expect("join").expect("upsert"));
        }
        let store = store.clone();
        let b =
            LoadBatch { sync_id: sync.into(), connection: "bench".into(), seen_at, assets: chunk.into(), seen: vec![] };
        set.spawn(async move { store.upsert(b).await });
    }
    while let Some(r) = set.join_next().await {
        total.add(r.expect("join").expect("upsert"));
    }
    (all.len() as f64 / started.elapsed().as_secs_f64(), total)
}

/// First load and reload of `all`; the counts must be exact.
async fn measure(store: &Arc<dyn Store>, all: &[Asset], batch: usize) -> (f64, f64) {
    let n = all.len() as u64;
    let (ins, first) = load(store, all, batch, "s1", 2).await;
    assert_eq!((first.inserted, first.updated, first.unchanged), (n, 0, 0), "first load: every asset inserted");
    let (same, second) = load(store, all, batch, "s2", 2).await;
    assert_eq!((second.inserted, second.updated, second.unchanged), (0, 0, n), "reload: every asset unchanged");
    (ins, same)
}

/// A device with a random-looking 32-hex id (a hash of `i`: the same every run).
fn random_id_device(i: u64) -> Asset {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    h.write_u64(i);
    let a = h.finish();
    h.write_u64(a);
    let id = format!("{a:016x}{:016x}", h.finish());
    let d = Device {
        hostname: Some(format!("host-{i}")),
        domain: Some("corp.example.com".into()),
        ip_addresses: vec![std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])],
        mac_addresses: corral_core::fields::macs([format!(
            "aa:bb:{:02x}:{:02x}:{:02x}:{:02x}",
            (a >> 24) as u8,
            (a >> 16) as u8,
            (a >> 8) as u8,
            a as u8
        )
        .as_str()]),
        serial_number: Some(format!("SN{i:010}")),
        manufacturer: Some("Dell Inc.".into()),
        model: Some("Latitude 7440".into()),
        tags: vec!["prod".into(), "pci".into()],
        source_id: id,
        ..Default::default()
    };
    Asset::device("hosts", d)
}

/// `CORRAL_BENCH_GROWTH`: SQLite's first load of `n` random-id devices, by tenths.
async fn growth(n: u64) {
    let batch: u64 = std::env::var("CORRAL_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(1000).max(1);
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR").to_string() + "/target").expect("tempdir in target/");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("growth.db")).expect("sqlite"));
    println!("load growth: SQLite first load of {n} random-id devices, batches of {batch}, 2 in flight");
    println!("{:>10} {:>12} {:>10} {:>14}", "assets", "assets/s", "CPU s", "written/asset");
    let seen_at = chrono::Utc::now();
    let tenth = (n / 10).max(1);
    let mut set: tokio::task::JoinSet<Result<LoadOutcome, corral_core::StoreError>> = tokio::task::JoinSet::new();
    let mut inserted = 0;
    let (mut t0, mut cpu0, mut w0, mut mark) = (Instant::now(), cpu_seconds(), written_bytes(), 0);
    let mut next = 0;
    while next < n || !set.is_empty() {
        if next < n && set.len() < 2 {
            let end = (next + batch).min(n);
            let b = LoadBatch {
                sync_id: "g1".into(),
                connection: "bench".into(),
                seen_at,
                assets: (next..end).map(random_id_device).collect::<Vec<_>>().into(),
                seen: vec![],
            };
            next = end;
            let store = store.clone();
            set.spawn(async move { store.upsert(b).await });
            continue;
        }
        let out = set.join_next().await.expect("task").expect("join").expect("upsert");
        inserted += out.inserted;
        if inserted - mark >= tenth || (inserted == n && inserted > mark) {
            let (secs, cpu, written) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0, written_bytes() - w0);
            let count = (inserted - mark) as f64;
            println!("{inserted:>10} {:>12.0} {cpu:>10.2} {:>10.1} KiB", count / secs, written as f64 / count / 1024.0);
            (t0, cpu0, w0, mark) = (Instant::now(), cpu_seconds(), written_bytes(), inserted);
        }
    }
    assert_eq!(inserted, n, "every device inserted once");
}

fn main() {
    if let Some(n) = std::env::var("CORRAL_BENCH_GROWTH").ok().and_then(|v| v.parse::<u64>().ok()) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        rt.block_on(growth(n));
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = match std::env::var("CORRAL_BENCH_ASSETS") {
        Ok(v) => v.parse().expect("CORRAL_BENCH_ASSETS must be a number"),
        Err(_) if benching => 100_000,
        Err(_) => 300,
    };
    let batches: &[usize] = if benching { &[100, 1000, 5000, 10_000] } else { &[100] };
    let uri = match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.trim().is_empty() => Some(uri),
        // Under `cargo test`, MongoDB is required like in every MongoDB test (or skipped by CORRAL_SKIP_MONGO=1).
        _ if !benching => nx::mongodb_uri("benches/load"),
        _ => None,
    };
    let all = assets(n);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        println!("load bench: {n} assets, 2 batches in flight, {} cores", std::thread::available_parallelism().map_or(0, |p| p.get()));
        println!("{:<22} {:>7} {:>9} {:>14} {:>16}", "store", "batch", "commands", "insert rec/s", "unchanged rec/s");
        for &batch in batches {
            let dir = tempfile::tempdir().expect("tempdir");
            let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db")).expect("sqlite"));
            let (ins, same) = measure(&sqlite, &all, batch).await;
            println!("{:<22} {:>7} {:>9} {:>14.0} {:>16.0}", "sqlite (file, WAL)", batch, "-", ins, same);
        }
        let Some(uri) = uri else {
            println!();
            println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            println!("!!! MongoDB NOT MEASURED: MONGODB_URI is not set. These figures are SQLite only.");
            println!("!!! Run `bash scripts/bench-load.sh` (starts nx-27017) or set MONGODB_URI.");
            println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            return;
        };
        for &batch in batches {
            let db = format!("bench_load_{}_{}", std::process::id(), batch);
            // One `update` command per engine batch (the byte budget permitting).
            let opts = MongoOptions { max_batch_docs: batch, ..MongoOptions::default() };
            let mongo = MongoStore::connect_with(&uri, &db, opts).await.expect("mongodb");
            let label = match mongo.server_kind().await.expect("reach MongoDB") {
                ServerKind::MongoDb => "mongodb",
                ServerKind::Nx27017StandIn => "mongodb (nx-27017)",
            };
            let store: Arc<dyn Store> = Arc::new(mongo.clone());
            let (ins, same) = measure(&store, &all, batch).await;
            let commands = mongo.stats().update_commands;
            println!("{label:<22} {batch:>7} {commands:>9} {ins:>14.0} {same:>16.0}");
            let _ = mongo.drop_database().await;
        }
        println!("(commands: `update` commands sent for both passes; nx-27017 is a SQLite-backed stand-in, not MongoDB's speed)");
    });
}
