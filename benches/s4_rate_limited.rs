//! Scenario S4: one CrowdStrike connection against a tenant with a sliding
//! rate-limit window of R requests per W (CrowdStrike reports only
//! `X-Ratelimit-Limit` and `-Remaining`, never when the window frees).
//! Three cases, each against a fresh simulator:
//!
//! - (a) default settings: the limit is learned from the headers;
//! - (b) `requests_per_minute` configured to the tenant's limit;
//! - (c) default settings, another client of the tenant having spent two
//!   thirds of the window just before the run.
//!
//! Each prints the data requests sent, how long they took (from the first
//! request's arrival at the simulator to the last one's), the achieved
//! rate as a fraction of R/W, the 429s received and the limiter wait.
//! Only fetch is measured (pages are drained, not stored): the limiter is
//! what this scenario is about.
//!
//! `cargo bench -p corral-workspace --bench s4_rate_limited`
//! (CORRAL_BENCH_RATE_LIMIT, default 300 requests per CORRAL_BENCH_WINDOW_S,
//! default 60 s; CORRAL_BENCH_REQUESTS, default 501, rounded to 50k + 1).
//! Under `cargo test` it runs each case once with 20 requests per second
//! and 51 requests. Every data request must be answered exactly once with
//! data; a 429 is counted and printed. A full run (`cargo bench`, 60 s
//! window) also refuses any 429. The one-second window of the test-mode run
//! is not: on a machine busy with other test binaries, requests the limiter
//! spaced out can reach the simulator bunched together, and a sliding window
//! of one second has no room for that jitter.

use std::time::{Duration, Instant};

use corral_core::{Adapter, AdapterFactory, FetchContext, PageSink};
use corral_sim::{SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

/// The binary's allocator, so that the bench measures what `corral` runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Ids per scroll page: each page makes this many details batches of 10 ids.
const BATCHES_PER_PAGE: usize = 49;
const DETAILS_BATCH: usize = 10;

struct Case {
    name: &'static str,
    extra: Value,
    /// Requests another client spends just before the run.
    spent_by_others: u32,
}

struct Figures {
    /// Data requests answered with data (not 429).
    requests: usize,
    span: Duration,
    fraction: f64,
    status_429: u64,
    limiter_wait: Duration,
    longest_gap: Duration,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let limit = env("CORRAL_BENCH_RATE_LIMIT", if benching { 300 } else { 20 }).max(2) as u32;
    let window = Duration::from_secs(env("CORRAL_BENCH_WINDOW_S", if benching { 60 } else { 1 }).max(1));
    let requests = env("CORRAL_BENCH_REQUESTS", if benching { 501 } else { 51 }).max(51) as usize;
    // m scroll pages of 490 ids make m + 1 scroll requests and 49 m details requests.
    let pages = (requests - 1) / (BATCHES_PER_PAGE + 1);
    let size = pages * BATCHES_PER_PAGE * DETAILS_BATCH;
    let requests = pages * (BATCHES_PER_PAGE + 1) + 1;
    let per_minute = (f64::from(limit) * 60.0 / window.as_secs_f64()).round() as u64;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!(
        "S4 rate limited: CrowdStrike, sliding window of {limit} requests per {}s, {requests} data requests per case",
        window.as_secs()
    );
    let cases = [
        Case { name: "(a) default settings, limit learned from headers", extra: json!({}), spent_by_others: 0 },
        Case {
            name: "(b) requests_per_minute configured",
            extra: json!({"requests_per_minute": per_minute}),
            spent_by_others: 0,
        },
        Case {
            name: "(c) default settings, 2/3 spent by another client",
            extra: json!({}),
            spent_by_others: limit * 2 / 3,
        },
    ];
    for case in cases {
        let f = rt.block_on(run(&case, limit, window, size));
        assert_eq!(f.requests, requests, "{}: every data request was answered once", case.name);
        if benching {
            assert_eq!(f.status_429, 0, "{}: the limiter kept under the tenant's limit", case.name);
        }
        println!(
            "  {:<52} {:.3} of R  ({} requests in {:.1}s), 429s: {}, limiter wait {:.1}s, longest gap {:.1}s",
            case.name,
            f.fraction,
            f.requests,
            f.span.as_secs_f64(),
            f.status_429,
            f.limiter_wait.as_secs_f64(),
            f.longest_gap.as_secs_f64()
        );
    }
}

async fn run(case: &Case, limit: u32, window: Duration, size: usize) -> Figures {
    let sim = corral_sim::start(Vendor::CrowdStrike, SimConfig::new(4, size).rate_limit(limit, window))
        .await
        .expect("start the simulator");
    let adapter = adapter(&sim, window, &case.extra);
    if case.spent_by_others > 0 {
        assert_eq!(sim.spend(case.spent_by_others), case.spent_by_others);
    }
    let stream = adapter.info().streams[0].clone();
    let (sink, mut rx) = PageSink::channel(16);
    let ctx = FetchContext::for_test("s4", stream, sink);
    let metrics = ctx.requests.clone();
    let started = Instant::now();
    let fetch = tokio::spawn(async move { adapter.fetch(ctx).await });
    let mut hosts = 0;
    while let Some(page) = rx.recv().await {
        hosts += page.record_hint.unwrap_or(0);
    }
    fetch.await.expect("join").expect("the fetch succeeds");
    assert_eq!(hosts, size, "every host fetched");
    let wall = started.elapsed();
    let events: Vec<_> = sim.counters.events().into_iter().filter(|e| e.endpoint != "cs.token").collect();
    let arrivals: Vec<Duration> = events.iter().map(|e| e.arrived).collect();
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(a), Some(b)) => *b - *a,
        _ => wall,
    };
    let answered = events.iter().filter(|e| e.status != 429).count();
    let rate = (answered.saturating_sub(1)) as f64 / span.as_secs_f64().max(1e-9);
    let longest_gap = arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let figures = Figures {
        requests: answered,
        span,
        fraction: rate / (f64::from(limit) / window.as_secs_f64()),
        status_429: sim.counters.snapshot().status(429),
        limiter_wait: Duration::from_millis(metrics.snapshot().limiter_wait_ms),
        longest_gap,
    };
    sim.shutdown().await;
    figures
}

fn adapter(sim: &SimHandle, window: Duration, extra: &Value) -> std::sync::Arc<dyn Adapter> {
    let creds = &sim.config.credentials;
    let mut config = json!({
        "base_url": sim.base_url,
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
        "ids_page_size": BATCHES_PER_PAGE * DETAILS_BATCH,
        "details_batch": DETAILS_BATCH,
        "rate_window_secs": window.as_secs(),
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    corral_adapter_crowdstrike::CrowdStrikeFactory.build("s4", config).expect("adapter")
}
