//! Scenario S7 (issue 11): the declarative `okta-spec` adapter against the
//! Rust `okta` adapter, on the same Okta simulator and dataset, side by side
//! in one run. Each round syncs the dataset with each adapter, end to end
//! through the engine into a fresh SQLite store, and prints assets/s for
//! both and the ratio spec/rust; then the medians (done when the median
//! ratio is at least 0.9).
//!
//! `cargo bench -p corral-workspace --bench s7_okta_spec`
//! (CORRAL_BENCH_USERS, default 50,000; CORRAL_BENCH_LATENCY_MS, default 0;
//! CORRAL_BENCH_RUNS, default 3; CORRAL_BENCH_PAGE, users per request,
//! default 200, Okta's maximum; CORRAL_BENCH_RATE_PER_MIN, the simulator's
//! rate limit, default 1,000,000 a minute so that the adapters' own costs
//! show: 0 keeps the Okta simulator's 600 a minute, which both adapters
//! then pace to, at 10 pages a second). The simulator runs in its own process
//! (this binary again) so that it does not share the measured runtime; the
//! two adapters alternate in this process. Under `cargo test` it runs once
//! on a tiny org.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;

use corral_core::{AdapterFactory, Connection, Engine, EngineConfig, RunStatus, StalePolicy};
use corral_sim::{Credentials, SimConfig, Vendor};
use corral_store::sqlite::SqliteStore;
use corral_workspace::{cpu_seconds, median};
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE: &str = "CORRAL_BENCH_ROLE";

fn env(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let users = env("CORRAL_BENCH_USERS", if benching { 50_000 } else { 500 }) as usize;
    let latency = env("CORRAL_BENCH_LATENCY_MS", 0);
    let runs = env("CORRAL_BENCH_RUNS", if benching { 3 } else { 1 }).max(1);
    let page = env("CORRAL_BENCH_PAGE", 200);
    let rate = env("CORRAL_BENCH_RATE_PER_MIN", 1_000_000);
    let rt = || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if std::env::var(ROLE).as_deref() == Ok("sim") {
        return rt().block_on(serve_simulator(users, latency, rate));
    }

    let mut sim = Command::new(std::env::current_exe().expect("current exe"))
        .env(ROLE, "sim")
        .env("CORRAL_BENCH_USERS", users.to_string())
        .env("CORRAL_BENCH_LATENCY_MS", latency.to_string())
        .env("CORRAL_BENCH_RATE_PER_MIN", rate.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator");
    let mut base_url = String::new();
    std::io::BufReader::new(sim.stdout.take().expect("simulator stdout"))
        .read_line(&mut base_url)
        .expect("simulator base URL");
    let base_url = base_url.trim().to_string();

    let limit = if rate == 0 { "Okta's 600".to_string() } else { rate.to_string() };
    println!(
        "S7 okta spec vs rust: {users} users, {page} per page, {latency} ms latency, {limit} requests/min, {runs} round(s)"
    );
    let rt = rt();
    let mut rounds = Vec::new();
    for round in 1..=runs {
        let rust = rt.block_on(sync(Which::Rust, &base_url, users, page));
        let spec = rt.block_on(sync(Which::Spec, &base_url, users, page));
        let (r, s) = (f(&rust, "per_s"), f(&spec, "per_s"));
        println!(
            "  round {round}: rust {r:.0} assets/s ({:.2} s, {:.2} CPU s), spec {s:.0} assets/s ({:.2} s, {:.2} CPU s), spec/rust {:.2}",
            f(&rust, "secs"),
            f(&rust, "cpu_s"),
            f(&spec, "secs"),
            f(&spec, "cpu_s"),
            s / r
        );
        println!("           rust stages: {}", rust["stages"].as_str().unwrap_or_default());
        println!("           spec stages: {}", spec["stages"].as_str().unwrap_or_default());
        rounds.push((rust, spec));
    }
    let med = |pick: &dyn Fn(&(Value, Value)) -> f64| median(rounds.iter().map(pick).collect());
    println!("median of {runs}:");
    println!("  rust okta adapter : {:>9.0} assets/s", med(&|r| f(&r.0, "per_s")));
    println!("  okta-spec (rest)  : {:>9.0} assets/s", med(&|r| f(&r.1, "per_s")));
    println!("  spec/rust         : {:>9.2}", med(&|r| f(&r.1, "per_s") / f(&r.0, "per_s")));
    drop(sim.stdin.take()); // the simulator exits when its stdin closes
    let _ = sim.wait();
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

#[derive(Clone, Copy)]
enum Which {
    Rust,
    Spec,
}

/// The simulator's process: serve the simulated Okta API until stdin closes.
async fn serve_simulator(users: usize, latency: u64, rate: u64) {
    let mut cfg = SimConfig::new(11, users).latency_ms(latency).threads(2);
    if rate > 0 {
        cfg = cfg.rate_limit(u32::try_from(rate).unwrap_or(u32::MAX), std::time::Duration::from_secs(60));
    }
    let sim = corral_sim::start(Vendor::Okta, cfg).await.expect("start the simulator");
    println!("{}", sim.base_url);
    let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
    sim.shutdown().await;
}

/// One sync of the whole org with one adapter, into a fresh SQLite store.
async fn sync(which: Which, base_url: &str, users: usize, page: u64) -> Value {
    let config = json!({
        "base_url": base_url, "token": Credentials::default().token,
        "page_size": page, "requests_per_minute": 0,
    });
    let adapter = match which {
        Which::Rust => corral_adapter_okta::OktaFactory.build("s7", config),
        Which::Spec => corral_adapter_rest::shipped()
            .into_iter()
            .find(|f| f.info().name == "okta-spec")
            .expect("the okta-spec spec is shipped")
            .build("s7", config),
    }
    .expect("adapter");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path().join("corral.db")).expect("store"));
    let engine = Engine::new(EngineConfig::default(), store).expect("engine");
    let cpu0 = cpu_seconds();
    let conn = Connection { name: "s7".into(), adapter, streams: vec![], stale: StalePolicy::default() };
    let s = engine.sync(conn).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(s.loaded() as usize, users, "every user stored");
    let secs = s.duration_ms() as f64 / 1000.0;
    json!({
        "per_s": users as f64 / secs, "secs": secs, "cpu_s": cpu_seconds() - cpu0,
        "stages": format!("fetch {} ms, normalize {} CPU ms, load {} ms, fetch blocked {} ms",
            s.stages.fetch_ms, s.stages.normalize_cpu_ms, s.stages.load_ms, s.stages.fetch_blocked_ms),
    })
}
