//! Load stage alone: records/s into each store across batch sizes, for a first
//! load (inserts) and a re-load of the same assets (unchanged).
//!
//! `cargo bench -p corral-workspace --bench load`
//! (CORRAL_BENCH_ASSETS sets the count, default 100,000; MongoDB is measured
//! when MONGODB_URI is set, e.g. `export "$(bash scripts/mongo-test-server.sh start)"`).
//! Under `cargo test` it runs once with a few hundred assets.

use std::sync::Arc;
use std::time::Instant;

use corral_core::store::LoadBatch;
use corral_core::{Asset, Device, Store};
use corral_store::mongo::MongoStore;
use corral_store::sqlite::SqliteStore;

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

async fn load(store: &Arc<dyn Store>, all: &[Asset], batch: usize, sync: &str, in_flight: usize) -> f64 {
    let started = Instant::now();
    let mut set: tokio::task::JoinSet<Result<corral_core::LoadOutcome, corral_core::StoreError>> =
        tokio::task::JoinSet::new();
    for chunk in all.chunks(batch) {
        while set.len() >= in_flight {
            set.join_next().await.expect("task").expect("join").expect("upsert");
        }
        let store = store.clone();
        let b = LoadBatch {
            sync_id: sync.into(),
            connection: "bench".into(),
            seen_at: chrono::Utc::now(),
            assets: chunk.to_vec(),
        };
        set.spawn(async move { store.upsert(b).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join").expect("upsert");
    }
    all.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = match std::env::var("CORRAL_BENCH_ASSETS") {
        Ok(v) => v.parse().expect("CORRAL_BENCH_ASSETS must be a number"),
        Err(_) if benching => 100_000,
        Err(_) => 300,
    };
    let batches: &[usize] = if benching { &[100, 1000, 5000] } else { &[100] };
    let all = assets(n);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        println!("load bench: {n} assets, 2 batches in flight");
        println!("{:<10} {:>7} {:>14} {:>14}", "store", "batch", "insert rec/s", "unchanged rec/s");
        for &batch in batches {
            let dir = tempfile::tempdir().expect("tempdir");
            let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db")).expect("sqlite"));
            let ins = load(&sqlite, &all, batch, "s1", 2).await;
            let same = load(&sqlite, &all, batch, "s2", 2).await;
            println!("{:<10} {:>7} {:>14.0} {:>14.0}", "sqlite", batch, ins, same);
        }
        if let Ok(uri) = std::env::var("MONGODB_URI") {
            for &batch in batches {
                let db = format!("bench_load_{}_{}", std::process::id(), batch);
                let mongo = MongoStore::connect(&uri, &db).await.expect("mongodb");
                let store: Arc<dyn Store> = Arc::new(mongo.clone());
                let ins = load(&store, &all, batch, "s1", 2).await;
                let same = load(&store, &all, batch, "s2", 2).await;
                println!("{:<10} {:>7} {:>14.0} {:>14.0}", "mongodb", batch, ins, same);
                let _ = mongo.drop_database().await;
            }
        } else {
            println!("(MONGODB_URI not set: MongoDB not measured)");
        }
    });
}
