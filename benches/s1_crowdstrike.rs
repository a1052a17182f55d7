//! Scenario S1 of shared/bench.md: one CrowdStrike connection, two-step fetch
//! (scroll ids, then details in batches of 5,000), 50 ms simulated latency, no
//! rate limit, loaded into the embedded store.
//!
//! `cargo bench -p corral-workspace --bench s1_crowdstrike`
//! (CORRAL_BENCH_DEVICES, default 100,000; CORRAL_BENCH_LATENCY_MS, default 50).
//!
//! Prints, from one run: corral end to end (assets/s, CPU seconds, peak RSS,
//! runtime-lag p99/max) and the "fetch+parse only" bound: the same requests
//! against the same simulator with each body parsed into serde_json::Value and
//! dropped. Under `cargo test` it runs once on a tiny inventory.

use std::sync::Arc;
use std::time::Instant;

use corral_core::{
    Adapter, AdapterFactory, Connection, Engine, EngineConfig, FetchContext, PageSink, RunStatus, StalePolicy,
};
use corral_sim::{Credentials, SimConfig, Vendor};
use corral_store::sqlite::SqliteStore;
use corral_workspace::{cpu_seconds, peak_rss_kb};

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let devices = env("CORRAL_BENCH_DEVICES", if benching { 100_000 } else { 1_000 }) as usize;
    let latency = env("CORRAL_BENCH_LATENCY_MS", if benching { 50 } else { 1 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        // The simulator runs on its own thread and runtime (SimConfig default).
        let sim =
            corral_sim::start(Vendor::CrowdStrike, SimConfig::new(1, devices).latency_ms(latency)).await.expect("sim");
        let creds = Credentials::default();
        let config = serde_json::json!({
            "base_url": sim.base_url, "client_id": creds.client_id, "client_secret": creds.client_secret,
            "requests_per_minute": 1_000_000,
        });
        let adapter = corral_adapter_crowdstrike::CrowdStrikeFactory.build("s1", config).expect("adapter");

        // Reference: fetch + parse only.
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let parsed = fetch_and_parse(adapter.clone()).await;
        let ref_secs = t0.elapsed().as_secs_f64();
        let ref_cpu = cpu_seconds() - cpu0;
        assert_eq!(parsed, devices, "the reference did not see every host");

        // corral end to end into SQLite.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
        let engine = Engine::new(EngineConfig::default(), store).expect("engine");
        let cpu1 = cpu_seconds();
        let conn = Connection { name: "s1".into(), adapter, streams: vec![], stale: StalePolicy::default() };
        let s = engine.sync(conn).await;
        let cpu = cpu_seconds() - cpu1;
        assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
        assert_eq!(s.loaded() as usize, devices);
        let secs = s.duration_ms() as f64 / 1000.0;
        let rate = devices as f64 / secs;
        let bound = parsed as f64 / ref_secs;
        println!("S1 crowdstrike: {devices} hosts, {latency} ms latency, {} requests", s.requests.total);
        println!("  fetch+parse only : {bound:>9.0} hosts/s ({ref_secs:.2} s, {ref_cpu:.2} CPU s)");
        println!("  corral           : {rate:>9.0} assets/s ({secs:.2} s) = {:.2} of the bound", rate / bound);
        println!("  cpu seconds      : {cpu:.2} (includes the simulator's thread)");
        println!("  peak RSS         : {:.1} MB (process, simulator included)", peak_rss_kb() as f64 / 1024.0);
        println!(
            "  runtime lag      : p99 {:.1} ms, max {:.1} ms",
            s.lag.p99_us as f64 / 1000.0,
            s.lag.max_us as f64 / 1000.0
        );
        println!("  stages (ms)      : {:?}", s.stages);
        sim.shutdown().await;
    });
}

/// The adapter's own fetch, with each page parsed into a Value (off the runtime) and dropped.
async fn fetch_and_parse(adapter: Arc<dyn Adapter>) -> usize {
    let stream = adapter.info().streams[0].clone();
    let (sink, mut rx) = PageSink::channel(8);
    let fetch = tokio::spawn(async move { adapter.fetch(FetchContext::for_test("ref", stream, sink)).await });
    let mut hosts = 0;
    while let Some(page) = rx.recv().await {
        hosts += tokio::task::spawn_blocking(move || {
            let v: serde_json::Value = serde_json::from_slice(&page.body).expect("valid JSON");
            v["resources"].as_array().map(Vec::len).unwrap_or(0)
        })
        .await
        .expect("parse task");
    }
    fetch.await.expect("join").expect("reference fetch");
    hosts
}
