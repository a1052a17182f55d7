//! Scenario S5 (README.md, "Benchmarks"): a CPU-heavy normalize. Tenable-shaped
//! records (every identifier an array: IPv4s, IPv6s, FQDNs, MACs, network
//! interfaces, operating systems) saturate both cores in normalize while the
//! runtime must stay responsive.
//!
//! `cargo bench -p corral-workspace --bench s5_cpu_heavy`
//! (CORRAL_BENCH_ASSETS, default 200,000; CORRAL_BENCH_RUNS, default 3;
//! CORRAL_BENCH_IDLE_MS, how long the idle lag is measured, default 5,000;
//! CORRAL_BENCH_NORMALIZE_THREADS, the engine's normalize pool, default the
//! engine's: one thread a core).
//!
//! The pages are built in memory up front and fetch only hands them over, so
//! the run is normalize-bound by design; assets load into the embedded
//! SQLite store in a temporary directory. Reported: assets/s against the reference measured in
//! the same run (the same pages parsed and normalized on a rayon pool of the
//! same size, no engine), normalize CPU seconds, and the runtime lag the
//! engine measured (p50/p99/max, and what was running at late ticks), beside
//! the same monitor's lag on the idle runtime before the rounds: its floor on
//! this machine (tokio's timers fire on whole milliseconds, and the machine
//! adds its own wake-up latency, so an idle runtime never shows 0). Under
//! `cargo test` it runs once, small, so the bench cannot rot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use corral_core::{
    Adapter, AdapterInfo, Asset, AssetKind, CheckOutcome, Connection, Device, Engine, EngineConfig, FetchContext,
    FetchError, NormalizedPage, RawPage, Reject, RunStatus, StalePolicy, StreamInfo, fields,
};
use corral_store::sqlite::SqliteStore;
use rayon::prelude::*;
use serde_json::{Value, json};

/// The allocator of the `corral` binary, so that the lag and the CPU seconds
/// are those of what ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_PAGE: usize = 1000;

/// One Tenable-shaped asset: arrays for nearly every identifier.
fn record(i: usize) -> Value {
    let mac = |k: usize| {
        let b = (i * 7 + k) as u32;
        match k % 3 {
            0 => format!("00:50:56:{:02x}:{:02x}:{:02x}", b >> 16 & 0xff, b >> 8 & 0xff, b & 0xff),
            1 => format!("00-50-56-{:02X}-{:02X}-{:02X}", b >> 16 & 0xff, b >> 8 & 0xff, b & 0xff),
            _ => format!("0050.56{:02x}.{:02x}{:02x}", b >> 16 & 0xff, b >> 8 & 0xff, b & 0xff),
        }
    };
    let ipv4s: Vec<String> = (0..6).map(|k| format!("10.{}.{}.{}", k, (i >> 8) & 0xff, i & 0xff)).collect();
    let ipv6s: Vec<String> = (0..3).map(|k| format!("fe80::{:x}:{k}", i)).collect();
    let interfaces: Vec<Value> = (0..4)
        .map(|k| {
            json!({
                "name": format!("eth{k}"),
                "mac_addresses": [mac(k)],
                "ipv4s": [ipv4s[k]],
                "ipv6s": [ipv6s[k % 3]],
                "fqdns": [format!("h{i}-if{k}.corp.example.com")],
            })
        })
        .collect();
    json!({
        "id": format!("{:08x}-0000-4000-8000-{:012x}", i, i),
        "agent_uuid": format!("{:032x}", i * 31),
        "hostnames": [format!("H{i}"), format!("h{i}.corp.example.com")],
        "fqdns": [format!("h{i}.corp.example.com"), format!("h{i}.dmz.example.com")],
        "netbios_names": [format!("CORP\\H{i}")],
        "ipv4s": ipv4s,
        "ipv6s": ipv6s,
        "mac_addresses": (0..4).map(mac).collect::<Vec<_>>(),
        "network_interfaces": interfaces,
        "operating_systems": ["Microsoft Windows Server 2019 Datacenter Build 17763"],
        "first_seen": "2025-03-01T10:00:00.000Z",
        "last_seen": "2026-11-30T08:15:42.123Z",
        "sources": [{"name": "NESSUS_AGENT", "first_seen": "2025-03-01T10:00:00Z"}],
        "tags": [{"key": "env", "value": "prod"}, {"key": "owner", "value": "it-ops"}],
        "aws_ec2_instance_id": null,
        "azure_vm_id": null,
    })
}

fn pages(assets: usize) -> Vec<Bytes> {
    (0..assets.div_ceil(PER_PAGE))
        .map(|p| {
            let records: Vec<Value> = (p * PER_PAGE..((p + 1) * PER_PAGE).min(assets)).map(record).collect();
            Bytes::from(serde_json::to_vec(&records).expect("encode page"))
        })
        .collect()
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// Tenable-style normalize: decode the page, merge every array into one device.
fn normalize(page: &RawPage) -> NormalizedPage {
    let records: Vec<Value> = match serde_json::from_slice(&page.body) {
        Ok(r) => r,
        Err(e) => return NormalizedPage::page_failed(e.to_string()),
    };
    let mut out = NormalizedPage::default();
    for (n, r) in records.iter().enumerate() {
        let Some(id) = r["id"].as_str() else {
            out.rejects.push(Reject::new(format!("record {n}"), "missing_key", "no id"));
            continue;
        };
        let nics = r["network_interfaces"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut ips = fields::ips(strings(&r["ipv4s"]).chain(strings(&r["ipv6s"])));
        ips.extend(fields::ips(nics.iter().flat_map(|i| strings(&i["ipv4s"]).chain(strings(&i["ipv6s"])))));
        ips.sort_unstable();
        ips.dedup();
        let mut macs = fields::macs(strings(&r["mac_addresses"]));
        macs.extend(fields::macs(nics.iter().flat_map(|i| strings(&i["mac_addresses"]))));
        macs.sort_unstable();
        macs.dedup();
        let host = strings(&r["fqdns"]).chain(strings(&r["hostnames"])).next().map(fields::hostname);
        let os = fields::os(strings(&r["operating_systems"]).next(), None);
        let tags = r["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some(format!("{}:{}", t["key"].as_str()?, t["value"].as_str()?)))
            .collect::<Vec<_>>();
        out.assets.push(Asset::device(
            page.stream.clone(),
            Device {
                source_id: id.to_string(),
                hostname: host.as_ref().and_then(|h| h.hostname.clone()),
                domain: host.and_then(|h| h.domain),
                ip_addresses: ips,
                mac_addresses: macs,
                os,
                first_seen: fields::timestamp_json(&r["first_seen"]),
                last_seen: fields::timestamp_json(&r["last_seen"]),
                tags: fields::tags(tags.iter().map(String::as_str)),
                ..Default::default()
            },
        ));
    }
    out
}

struct TenableShaped {
    info: AdapterInfo,
    pages: Arc<Vec<Bytes>>,
}

#[async_trait]
impl Adapter for TenableShaped {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }
    async fn check(&self) -> CheckOutcome {
        CheckOutcome::Ok { detail: "in memory".into() }
    }
    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        for (i, body) in self.pages.iter().enumerate() {
            ctx.sink.send(RawPage::new("assets", body.clone(), format!("chunk {i}"))).await?;
        }
        Ok(())
    }
    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        normalize(page)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, bench: usize, test: usize| match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name} must be a number")),
        Err(_) if benching => bench,
        Err(_) => test,
    };
    let assets = env("CORRAL_BENCH_ASSETS", 200_000, 3_000);
    let runs = env("CORRAL_BENCH_RUNS", 3, 1).max(1);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    // The engine's normalize pool (0: the engine's default); the reference keeps one thread a core.
    let engine_threads = env("CORRAL_BENCH_NORMALIZE_THREADS", 0, 0);
    let pages = Arc::new(pages(assets));
    let mb = pages.iter().map(Bytes::len).sum::<usize>() as f64 / 1e6;
    let engine_pool = if engine_threads > 0 { engine_threads } else { threads };
    println!(
        "S5 cpu-heavy normalize: {assets} Tenable-shaped assets, {mb:.1} MB of JSON, {engine_pool} normalize \
         threads (reference: {threads})"
    );

    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // Microseconds to milliseconds (lag), milliseconds to seconds (CPU).
    let thousandths = |n: u64| n as f64 / 1000.0;
    let idle = runtime.block_on(async {
        let interval = Duration::from_millis(EngineConfig::default().lag_interval_ms);
        let monitor = corral_core::engine::LagMonitor::start(interval, Duration::from_secs(1));
        let recorder = monitor.recorder();
        tokio::time::sleep(Duration::from_millis(env("CORRAL_BENCH_IDLE_MS", 5_000, 300) as u64)).await;
        recorder.stats()
    });
    assert!(idle.samples > 0, "the lag monitor never ticked on an idle runtime");
    println!(
        "  idle runtime: lag p50/p99/max {:.1}/{:.1}/{:.1} ms over {} ticks",
        thousandths(idle.p50_us),
        thousandths(idle.p99_us),
        thousandths(idle.max_us),
        idle.samples
    );
    let (mut bound, mut corral, mut p99, mut max) = (vec![], vec![], vec![], vec![]);
    for round in 1..=runs {
        // Reference: the same pages decoded and normalized on a pool, nothing else.
        let t0 = Instant::now();
        let n: usize = pool.install(|| {
            pages.par_iter().map(|b| normalize(&RawPage::new("assets", b.clone(), "x")).assets.len()).sum()
        });
        assert_eq!(n, assets);
        let reference = assets as f64 / t0.elapsed().as_secs_f64();

        let summary = runtime.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Arc::new(SqliteStore::open(dir.path().join("s5.db")).expect("store"));
            let config = EngineConfig { normalize_threads: engine_threads, ..EngineConfig::default() };
            let engine = Engine::new(config, store).expect("engine");
            let adapter = TenableShaped {
                info: AdapterInfo {
                    name: "tenable-shaped".into(),
                    version: "0".into(),
                    description: String::new(),
                    streams: vec![StreamInfo::new("assets", AssetKind::Device, "id", "")],
                    config: vec![],
                    notes: Default::default(),
                },
                pages: pages.clone(),
            };
            let conn =
                Connection { name: "s5".into(), adapter: Arc::new(adapter), streams: vec![], stale: StalePolicy::Keep };
            engine.sync(conn).await
        });
        assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
        assert_eq!(summary.inserted, assets as u64);
        let rate = assets as f64 / (summary.duration_ms().max(1) as f64 / 1000.0);
        println!(
            "  round {round}: reference {reference:.0} assets/s, corral {rate:.0} assets/s = {:.2}; normalize {:.1} CPU s; \
             lag p50/p99/max {:.1}/{:.1}/{:.1} ms; late ticks by cause {:?}",
            rate / reference,
            thousandths(summary.stages.normalize_cpu_ms),
            thousandths(summary.lag.p50_us),
            thousandths(summary.lag.p99_us),
            thousandths(summary.lag.max_us),
            summary.lag.late_causes,
        );
        bound.push(reference);
        corral.push(rate);
        p99.push(thousandths(summary.lag.p99_us));
        max.push(thousandths(summary.lag.max_us));
    }
    println!("median of {runs}:");
    println!("  normalize-only reference : {:>9.0} assets/s", median(bound.clone()));
    println!(
        "  corral                   : {:>9.0} assets/s = {:.2} of the reference",
        median(corral.clone()),
        median(corral) / median(bound)
    );
    println!("  runtime lag p99 / max    : {:.1} / {:.1} ms", median(p99), median(max));
    println!("  idle lag p99 / max       : {:.1} / {:.1} ms", thousandths(idle.p99_us), thousandths(idle.max_us));
}
