//! Scenario S1 (README.md, "Benchmarks"): one CrowdStrike connection, two-step fetch
//! (scroll ids, then details in batches of 5,000), 50 ms simulated latency, no
//! rate limit, loaded into the embedded store.
//!
//! `cargo bench -p corral-workspace --bench s1_crowdstrike`
//! (CORRAL_BENCH_DEVICES, default 100,000; CORRAL_BENCH_LATENCY_MS, default 50;
//! CORRAL_BENCH_RUNS, default 3; CORRAL_BENCH_BATCH_RECORDS overrides the
//! engine's `batch_max_records`, and `batch_max_bytes` follows at 4 KiB a record;
//! CORRAL_BENCH_RAW_CHANNEL and CORRAL_BENCH_NORMALIZED_CHANNEL override the
//! engine's channel capacities, in pages).
//!
//! Each round measures the "fetch+parse only" bound (the same requests against
//! the same simulator, each body parsed into serde_json::Value and dropped) and
//! then corral end to end into a fresh SQLite store, and prints assets/s and
//! its ratio to the bound, CPU seconds, peak RSS and runtime-lag p99/max; then
//! the medians. The simulator and every measured phase run in their own
//! process (this binary again), so CPU seconds and peak RSS belong to that
//! phase alone. Under `cargo test` it runs once on a tiny inventory.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use corral_core::{
    Adapter, AdapterFactory, Connection, Engine, EngineConfig, FetchContext, PageSink, RunStatus, StalePolicy,
};
use corral_sim::{Credentials, SimConfig, Vendor};
use corral_store::sqlite::SqliteStore;
use corral_workspace::{cpu_seconds, median, peak_rss_kb, written_bytes};
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE: &str = "CORRAL_BENCH_ROLE";
const BASE_URL: &str = "CORRAL_BENCH_BASE_URL";

fn env(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let devices = env("CORRAL_BENCH_DEVICES", if benching { 100_000 } else { 1_000 }) as usize;
    let latency = env("CORRAL_BENCH_LATENCY_MS", if benching { 50 } else { 1 });
    let runs = env("CORRAL_BENCH_RUNS", if benching { 3 } else { 1 }).max(1);
    let rt = || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match std::env::var(ROLE).as_deref() {
        Ok("sim") => return rt().block_on(serve_simulator(devices, latency)),
        Ok("reference") => return println!("{}", rt().block_on(reference(devices))),
        Ok("corral") => return println!("{}", rt().block_on(corral(devices))),
        _ => {}
    }

    let mut sim =
        child("sim", None, devices, latency).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("simulator");
    let mut base_url = String::new();
    std::io::BufReader::new(sim.stdout.take().expect("simulator stdout"))
        .read_line(&mut base_url)
        .expect("simulator base URL");
    let base_url = base_url.trim().to_string();

    println!("S1 crowdstrike: {devices} hosts, {latency} ms latency, {runs} round(s), one process per phase");
    let mut rounds = Vec::new();
    for round in 1..=runs {
        let reference = measure("reference", &base_url, devices);
        let corral = measure("corral", &base_url, devices);
        let (bound, rate) = (f(&reference, "per_s"), f(&corral, "per_s"));
        println!(
            "  round {round}: bound {bound:.0} hosts/s, corral {rate:.0} assets/s ({:.2} s) = {:.2}; stages {}",
            f(&corral, "secs"),
            rate / bound,
            corral["stages"]
        );
        rounds.push((reference, corral));
    }
    let med = |pick: &dyn Fn(&(Value, Value)) -> f64| median(rounds.iter().map(pick).collect());
    println!("median of {runs}:");
    println!(
        "  fetch+parse only : {:>9.0} hosts/s, {:.2} CPU s, peak RSS {:.1} MB",
        med(&|r| f(&r.0, "per_s")),
        med(&|r| f(&r.0, "cpu_s")),
        med(&|r| f(&r.0, "rss_mb"))
    );
    println!(
        "  corral           : {:>9.0} assets/s ({:.2} s) = {:.2} of the bound",
        med(&|r| f(&r.1, "per_s")),
        med(&|r| f(&r.1, "secs")),
        med(&|r| f(&r.1, "per_s") / f(&r.0, "per_s"))
    );
    println!("  cpu seconds      : {:.2}", med(&|r| f(&r.1, "cpu_s")));
    println!("  peak RSS         : {:.1} MB", med(&|r| f(&r.1, "rss_mb")));
    println!(
        "  store writes     : {:.1} KiB per asset (journal and database)",
        med(&|r| f(&r.1, "written_kb_per_asset"))
    );
    if let Some((_, last)) = rounds.last() {
        println!("  in flight        : {}", last["in_flight"].as_str().unwrap_or_default());
    }
    println!(
        "  runtime lag      : p99 {:.1} ms, max {:.1} ms",
        med(&|r| f(&r.1, "lag_p99_ms")),
        med(&|r| f(&r.1, "lag_max_ms"))
    );
    drop(sim.stdin.take()); // the simulator exits when its stdin closes
    let _ = sim.wait();
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// This binary again, in another role, with the parent's scenario.
fn child(role: &str, base_url: Option<&str>, devices: usize, latency: u64) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current exe"));
    c.env(ROLE, role)
        .env("CORRAL_BENCH_DEVICES", devices.to_string())
        .env("CORRAL_BENCH_LATENCY_MS", latency.to_string());
    if let Some(url) = base_url {
        c.env(BASE_URL, url);
    }
    c
}

/// Run one phase in its own process; its last stdout line is its measurements.
fn measure(role: &str, base_url: &str, devices: usize) -> Value {
    let out = child(role, Some(base_url), devices, 0).stderr(Stdio::inherit()).output().expect("run a phase");
    assert!(out.status.success(), "the {role} phase failed");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("phase measurements")
}

/// The simulator's process: serve the simulated CrowdStrike API until stdin closes.
async fn serve_simulator(devices: usize, latency: u64) {
    let cfg = SimConfig::new(1, devices).latency_ms(latency).threads(2);
    let sim = corral_sim::start(Vendor::CrowdStrike, cfg).await.expect("start the simulator");
    println!("{}", sim.base_url);
    let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
    sim.shutdown().await;
}

fn adapter() -> Arc<dyn Adapter> {
    let creds = Credentials::default();
    let config = json!({
        "base_url": std::env::var(BASE_URL).expect("base URL"),
        "client_id": creds.client_id, "client_secret": creds.client_secret,
        "requests_per_minute": 1_000_000,
    });
    corral_adapter_crowdstrike::CrowdStrikeFactory.build("s1", config).expect("adapter")
}

/// The bound: the adapter's own fetch, each page parsed into a Value (off the runtime) and dropped.
async fn reference(devices: usize) -> Value {
    let adapter = adapter();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let stream = adapter.info().streams[0].clone();
    let (sink, mut rx) = PageSink::channel(8);
    let fetch = tokio::spawn(async move { adapter.fetch(FetchContext::for_test("ref", stream, sink)).await });
    let mut hosts = 0;
    while let Some(page) = rx.recv().await {
        hosts += tokio::task::spawn_blocking(move || {
            let v: Value = serde_json::from_slice(&page.body).expect("valid JSON");
            v["resources"].as_array().map(Vec::len).unwrap_or(0)
        })
        .await
        .expect("parse task");
    }
    fetch.await.expect("join").expect("reference fetch");
    assert_eq!(hosts, devices, "the reference did not see every host");
    let secs = t0.elapsed().as_secs_f64();
    json!({
        "per_s": hosts as f64 / secs, "secs": secs, "cpu_s": cpu_seconds() - cpu0,
        "rss_mb": peak_rss_kb() as f64 / 1024.0,
    })
}

/// corral end to end into a fresh SQLite store.
async fn corral(devices: usize) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let defaults = EngineConfig::default();
    let batch = env("CORRAL_BENCH_BATCH_RECORDS", defaults.batch_max_records as u64) as usize;
    let raw = env("CORRAL_BENCH_RAW_CHANNEL", defaults.raw_channel_capacity as u64) as usize;
    let normalized = env("CORRAL_BENCH_NORMALIZED_CHANNEL", defaults.normalized_channel_capacity as u64) as usize;
    let config = EngineConfig {
        batch_max_records: batch,
        batch_max_bytes: defaults.batch_max_bytes.max(batch * 4096),
        raw_channel_capacity: raw,
        normalized_channel_capacity: normalized,
        ..defaults
    };
    let engine = Engine::new(config, store).expect("engine");
    let cpu0 = cpu_seconds();
    let written0 = written_bytes();
    let conn = Connection { name: "s1".into(), adapter: adapter(), streams: vec![], stale: StalePolicy::default() };
    let s = engine.sync(conn).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(s.loaded() as usize, devices);
    let secs = s.duration_ms() as f64 / 1000.0;
    json!({
        "per_s": devices as f64 / secs, "secs": secs, "cpu_s": cpu_seconds() - cpu0,
        "rss_mb": peak_rss_kb() as f64 / 1024.0,
        "written_kb_per_asset": (written_bytes() - written0) as f64 / 1024.0 / devices as f64,
        "lag_p99_ms": s.lag.p99_us as f64 / 1000.0, "lag_max_ms": s.lag.max_us as f64 / 1000.0,
        "requests": s.requests.total,
        "in_flight": format!("peak {} records / bound {}, peak {:.1} MB of raw pages",
            s.in_flight.peak_records, s.in_flight.record_bound, s.in_flight.peak_raw_bytes as f64 / 1e6),
        "stages": format!("fetch {} ms, normalize {} CPU ms, load {} ms, fetch blocked {} ms",
            s.stages.fetch_ms, s.stages.normalize_cpu_ms, s.stages.load_ms, s.stages.fetch_blocked_ms),
    })
}
