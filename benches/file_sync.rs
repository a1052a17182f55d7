//! End-to-end file sync: sample CSV -> file adapter -> engine -> SQLite.
//!
//! `cargo bench -p corral-workspace --bench file_sync` (CORRAL_BENCH_DEVICES
//! sets the size, default 1,000,000). Prints records/s, CPU seconds, peak RSS
//! and runtime lag, and the same file read and parsed only (no normalize, no
//! store) as the reference measured in the same run. Under `cargo test` it
//! runs once on a small file so the bench cannot rot.

use std::sync::Arc;
use std::time::Instant;

use corral_adapter_file::sample::{SampleOptions, write_devices_csv};
use corral_core::{Engine, EngineConfig, RunStatus};
use corral_store::sqlite::SqliteStore;
use corral_workspace::{cpu_seconds, devices_connection, peak_rss_kb};

/// The binary's allocator, so that the bench measures what `corral` runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let devices: u64 = match std::env::var("CORRAL_BENCH_DEVICES") {
        Ok(v) => v.parse().expect("CORRAL_BENCH_DEVICES must be a number"),
        Err(_) if benching => 1_000_000,
        Err(_) => 2_000,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("devices.csv");
    write_devices_csv(&csv, devices, SampleOptions::default()).expect("sample file");
    let bytes = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);

    // Reference: read and parse every record, nothing else.
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut reader = csv::Reader::from_path(&csv).expect("open csv");
    let mut record = csv::ByteRecord::new();
    let mut parsed = 0u64;
    while reader.read_byte_record(&mut record).expect("parse") {
        parsed += 1;
    }
    let parse_secs = t0.elapsed().as_secs_f64();
    let parse_cpu = cpu_seconds() - cpu0;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let summary = runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
        let engine = Engine::new(EngineConfig::default(), store).expect("engine");
        engine.sync(devices_connection("bench", &csv, 1000)).await
    });
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(summary.inserted, devices);
    let cpu = cpu_seconds() - cpu0 - parse_cpu;
    let secs = summary.duration_ms() as f64 / 1000.0;
    println!("file_sync: {devices} devices, {:.1} MB CSV", bytes as f64 / 1e6);
    println!(
        "  parse-only reference : {:>10.0} records/s ({parse_secs:.2} s, {parsed} records)",
        parsed as f64 / parse_secs
    );
    println!(
        "  corral end to end    : {:>10.0} records/s ({secs:.2} s) = {:.2} of parse-only",
        devices as f64 / secs,
        (devices as f64 / secs) / (parsed as f64 / parse_secs)
    );
    println!("  cpu seconds          : {cpu:.2}");
    println!("  peak RSS             : {:.1} MB", peak_rss_kb() as f64 / 1024.0);
    println!(
        "  runtime lag p99/max  : {:.1} / {:.1} ms",
        summary.lag.p99_us as f64 / 1000.0,
        summary.lag.max_us as f64 / 1000.0
    );
    println!(
        "  in-flight peak/bound : {} / {} records",
        summary.in_flight.peak_records, summary.in_flight.record_bound
    );
    println!("  stages (ms)          : {:?}", summary.stages);
}
