//! Scenario S1 of shared/bench.md: one CrowdStrike connection, two-step fetch
//! (scroll ids, then details in batches of 5,000), 50 ms simulated latency, no
//! rate limit, loaded into the embedded store. The simulator runs in a child
//! process so that the CPU and memory figures are corral's alone.
//!
//! `cargo bench -p corral-workspace --bench s1_crowdstrike`
//! (CORRAL_BENCH_DEVICES, default 100,000; CORRAL_BENCH_LATENCY_MS, default 50).
//!
//! Each round (CORRAL_BENCH_RUNS, default 3) measures the "fetch+parse only"
//! bound (the same requests against the same simulator, each body parsed into
//! serde_json::Value and dropped) and then corral end to end into a fresh
//! SQLite store; it prints each round and the medians: assets/s and its ratio to
//! the bound, CPU seconds, peak RSS of each phase, runtime-lag p99/max. Under
//! `cargo test` it runs once on a tiny inventory.

use std::sync::Arc;
use std::time::Instant;

use corral_core::{
    Adapter, AdapterFactory, Connection, Engine, EngineConfig, FetchContext, PageSink, RunStatus, StalePolicy,
};
use corral_sim::{Credentials, SimConfig, Vendor};
use corral_store::sqlite::SqliteStore;
use corral_workspace::{cpu_seconds, median, peak_rss_kb, reset_peak_rss};

struct Round {
    bound: f64,
    ref_cpu: f64,
    ref_rss_mb: f64,
    rate: f64,
    secs: f64,
    cpu: f64,
    rss_mb: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let devices = env("CORRAL_BENCH_DEVICES", if benching { 100_000 } else { 1_000 }) as usize;
    let latency = env("CORRAL_BENCH_LATENCY_MS", if benching { 50 } else { 1 });
    let runs = env("CORRAL_BENCH_RUNS", if benching { 3 } else { 1 }).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if std::env::var_os(SIM_CHILD).is_some() {
        return rt.block_on(serve_simulator(devices, latency));
    }
    // The simulator runs in a child process (this binary again), so that CPU
    // seconds and peak RSS are corral's own.
    let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .env(SIM_CHILD, "1")
        .env("CORRAL_BENCH_DEVICES", devices.to_string())
        .env("CORRAL_BENCH_LATENCY_MS", latency.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the simulator process");
    let mut base_url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("simulator stdout")),
        &mut base_url,
    )
    .expect("simulator base URL");
    let base_url = base_url.trim().to_string();
    rt.block_on(async move {
        let creds = Credentials::default();
        let config = serde_json::json!({
            "base_url": base_url, "client_id": creds.client_id, "client_secret": creds.client_secret,
            "requests_per_minute": 1_000_000,
        });
        let adapter = corral_adapter_crowdstrike::CrowdStrikeFactory.build("s1", config).expect("adapter");
        println!("S1 crowdstrike: {devices} hosts, {latency} ms latency, {runs} round(s)");
        let mut rounds = Vec::new();
        for round in 1..=runs {
            // Reference: fetch + parse only.
            reset_peak_rss();
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let parsed = fetch_and_parse(adapter.clone()).await;
            let ref_secs = t0.elapsed().as_secs_f64();
            let ref_cpu = cpu_seconds() - cpu0;
            let ref_rss_mb = peak_rss_kb() as f64 / 1024.0;
            assert_eq!(parsed, devices, "the reference did not see every host");

            // corral end to end into a fresh SQLite store.
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
            let engine = Engine::new(EngineConfig::default(), store).expect("engine");
            reset_peak_rss();
            let cpu1 = cpu_seconds();
            let conn =
                Connection { name: "s1".into(), adapter: adapter.clone(), streams: vec![], stale: StalePolicy::default() };
            let s = engine.sync(conn).await;
            let cpu = cpu_seconds() - cpu1;
            let rss_mb = peak_rss_kb() as f64 / 1024.0;
            assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
            assert_eq!(s.loaded() as usize, devices);
            let secs = s.duration_ms() as f64 / 1000.0;
            let r = Round {
                bound: parsed as f64 / ref_secs,
                ref_cpu,
                ref_rss_mb,
                rate: devices as f64 / secs,
                secs,
                cpu,
                rss_mb,
                lag_p99_ms: s.lag.p99_us as f64 / 1000.0,
                lag_max_ms: s.lag.max_us as f64 / 1000.0,
            };
            println!(
                "  round {round}: bound {:.0} hosts/s, corral {:.0} assets/s ({:.2} s) = {:.2}; {} requests; stages {:?}",
                r.bound,
                r.rate,
                r.secs,
                r.rate / r.bound,
                s.requests.total,
                s.stages
            );
            rounds.push(r);
        }
        let med = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        println!("median of {runs}:");
        println!("  fetch+parse only : {:>9.0} hosts/s, {:.2} CPU s, peak RSS {:.1} MB", med(|r| r.bound), med(|r| r.ref_cpu), med(|r| r.ref_rss_mb));
        println!("  corral           : {:>9.0} assets/s ({:.2} s) = {:.2} of the bound", med(|r| r.rate), med(|r| r.secs), med(|r| r.rate / r.bound));
        println!("  cpu seconds      : {:.2}", med(|r| r.cpu));
        println!("  peak RSS         : {:.1} MB during the sync", med(|r| r.rss_mb));
        println!("  runtime lag      : p99 {:.1} ms, max {:.1} ms", med(|r| r.lag_p99_ms), med(|r| r.lag_max_ms));
    });
    drop(child.stdin.take()); // the simulator exits when its stdin closes
    let _ = child.wait();
}

const SIM_CHILD: &str = "CORRAL_BENCH_SIM_CHILD";

/// The child process: serve the simulated CrowdStrike API until stdin closes.
async fn serve_simulator(devices: usize, latency: u64) {
    let cfg = SimConfig::new(1, devices).latency_ms(latency).threads(2);
    let sim = corral_sim::start(Vendor::CrowdStrike, cfg).await.expect("start the simulator");
    println!("{}", sim.base_url);
    let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
    sim.shutdown().await;
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
