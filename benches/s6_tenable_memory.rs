//! Scenario S6 (issue 12): a Tenable sync's memory stays flat as the tenant
//! grows. One `tenable` connection (assets, software and vulnerabilities by
//! export jobs) against the Tenable simulator, loaded into a fresh SQLite
//! store, at each size in CORRAL_BENCH_FINDINGS (findings; the simulator
//! serves a quarter as many assets, 0 to 8 findings each). Prints, per size,
//! the findings, assets and software stored, the time and the peak RSS of
//! the process that ran the sync, then the ratio of the largest size's peak
//! to the smallest's (done when it is within 1.15). After each sync (and
//! after its peak RSS is taken) it checks in the database that every finding
//! and every software record points at a device stored by the same run.
//!
//! `cargo bench -p corral-workspace --bench s6_tenable_memory`
//! (CORRAL_BENCH_FINDINGS, default `500000,5000000`: slow, the larger one is
//! about 9 million records). The simulator and each sync run in their own
//! process (this binary again), so each peak RSS is that sync's alone. Under
//! `cargo test` it runs once on a tiny tenant.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;

use corral_core::{AdapterFactory, Connection, Engine, EngineConfig, RunStatus, StalePolicy};
use corral_sim::{Behavior, Credentials, SimConfig, Vendor};
use corral_store::sqlite::SqliteStore;
use corral_workspace::{cpu_seconds, peak_rss_kb};
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE: &str = "CORRAL_BENCH_ROLE";
const BASE_URL: &str = "CORRAL_BENCH_BASE_URL";
const ASSETS: &str = "CORRAL_BENCH_ASSETS";

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rt = || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let assets_env = || std::env::var(ASSETS).ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(1_000);
    match std::env::var(ROLE).as_deref() {
        Ok("sim") => return rt().block_on(serve_simulator(assets_env())),
        Ok("corral") => return println!("{}", rt().block_on(corral())),
        _ => {}
    }
    let sizes: Vec<u64> = std::env::var("CORRAL_BENCH_FINDINGS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| if benching { vec![500_000, 5_000_000] } else { vec![4_000] });
    println!("S6 tenable: flat memory; one process per sync, a fresh simulator and SQLite store per size");
    let mut peaks = Vec::new();
    for findings in &sizes {
        let assets = (*findings / 4).max(1) as usize;
        let mut sim = Command::new(std::env::current_exe().expect("current exe"))
            .env(ROLE, "sim")
            .env(ASSETS, assets.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("simulator");
        let mut base_url = String::new();
        std::io::BufReader::new(sim.stdout.take().expect("simulator stdout"))
            .read_line(&mut base_url)
            .expect("simulator base URL");
        let out = Command::new(std::env::current_exe().expect("current exe"))
            .env(ROLE, "corral")
            .env(BASE_URL, base_url.trim())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the sync");
        drop(sim.stdin.take()); // the simulator exits when its stdin closes
        let _ = sim.wait();
        assert!(out.status.success(), "the sync of {findings} findings failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let m: Value = serde_json::from_str(text.lines().last().unwrap_or_default()).expect("measurements");
        println!(
            "  {findings:>9} findings asked ({assets} assets): stored {} findings, {} devices, {} software in {:.1} s \
             ({:.1} CPU s); peak RSS {:.1} MB; {}",
            m["vulnerabilities"],
            m["assets"],
            m["software"],
            f(&m, "secs"),
            f(&m, "cpu_s"),
            f(&m, "rss_mb"),
            m["in_flight"].as_str().unwrap_or_default()
        );
        peaks.push((*findings, f(&m, "rss_mb")));
    }
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last())
        && peaks.len() > 1
    {
        let ratio = last.1 / first.1;
        println!(
            "  peak RSS at {} findings / at {} findings = {ratio:.3} ({})",
            last.0,
            first.0,
            if ratio <= 1.15 { "flat: within 1.15" } else { "NOT within 1.15" }
        );
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// The simulator's process: serve the Tenable API until stdin closes.
async fn serve_simulator(assets: usize) {
    let behavior = Behavior { export_polls: 3, ..Behavior::default() };
    let cfg = SimConfig::new(6, assets).behavior(behavior).threads(2);
    let sim = corral_sim::start(Vendor::Tenable, cfg).await.expect("start the simulator");
    println!("{}", sim.base_url);
    let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
    sim.shutdown().await;
}

/// One full sync of every stream into a fresh SQLite store.
async fn corral() -> Value {
    let creds = Credentials::default();
    let config = json!({
        "base_url": std::env::var(BASE_URL).expect("base URL"),
        "access_key": creds.client_id, "secret_key": creds.client_secret,
        "assets_chunk_size": 1000, "vulns_num_assets": 500, "poll_interval_ms": 100,
        "max_poll_interval_ms": 1000, "full_resync_every": 1,
    });
    let adapter = corral_adapter_tenable::TenableFactory.build("s6", config).expect("adapter");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let engine = Engine::new(EngineConfig::default(), store).expect("engine");
    let cpu0 = cpu_seconds();
    let s =
        engine.sync(Connection { name: "s6".into(), adapter, streams: vec![], stale: StalePolicy::default() }).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    let (cpu_s, rss_mb) = (cpu_seconds() - cpu0, peak_rss_kb() as f64 / 1024.0);
    drop(engine);
    let db = rusqlite::Connection::open(dir.path().join("corral.db")).expect("open the database");
    for (kind, reference) in [("vulnerability", "$.asset"), ("software", "$.device")] {
        let (records, dangling): (i64, i64) = db
            .query_row(&unresolved_sql(kind, reference), [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("check references");
        assert!(records > 0, "no {kind} records stored");
        assert_eq!(dangling, 0, "{dangling} of {records} {kind} records point at no device of the same run");
    }
    let stored = |stream: &str| s.streams.get(stream).map_or(0, |st| st.assets_normalized);
    json!({
        "secs": s.duration_ms() as f64 / 1000.0, "cpu_s": cpu_s, "rss_mb": rss_mb,
        "assets": stored("assets"), "software": stored("software"), "vulnerabilities": stored("vulnerabilities"),
        "in_flight": format!("peak {} records in flight / bound {}, peak {:.1} MB of raw pages",
            s.in_flight.peak_records, s.in_flight.record_bound, s.in_flight.peak_raw_bytes as f64 / 1e6),
    })
}

/// (records of `kind`, those whose device reference at `reference` names no
/// device of the connection stored by the same run).
fn unresolved_sql(kind: &str, reference: &str) -> String {
    format!(
        "SELECT count(*), coalesce(sum(NOT EXISTS (SELECT 1 FROM assets d \
           WHERE d.connection = 's6' AND d.kind = 'device' AND d.last_sync_id = r.last_sync_id \
             AND d.source_id = json_extract(r.fields, '{reference}.source_id')) \
           OR json_extract(r.fields, '{reference}.kind') IS NOT 'device'), 0) \
         FROM assets r WHERE r.connection = 's6' AND r.kind = '{kind}'"
    )
}
