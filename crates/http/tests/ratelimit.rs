//! The fixed quota and the adaptation to vendor rate-limit headers.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{client, count, serve};
use corral_http::{HttpConfig, RateConfig, RetryConfig};

#[derive(Default)]
struct Log {
    at: Mutex<Vec<Instant>>,
}

#[tokio::test]
async fn quota_keeps_requests_under_the_rate() {
    let log = Arc::new(Log::default());
    let router = Router::new()
        .route(
            "/r",
            get(|State(l): State<Arc<Log>>| async move {
                if let Ok(mut v) = l.at.lock() {
                    v.push(Instant::now());
                }
                "ok"
            }),
        )
        .with_state(log.clone());
    let base = serve(router).await;
    let (c, m) = client(HttpConfig::new(&base).with_rate(RateConfig::per_second(10).with_max_in_flight(8)));
    let started = Instant::now();
    let reqs = (0..12).map(|_| c.get("/r").send_bytes());
    for r in futures::future::join_all(reqs).await {
        r.expect("ok");
    }
    // 12 requests at 10/s, burst 1: at least 1.1 s.
    assert!(started.elapsed() >= Duration::from_millis(1050), "{:?}", started.elapsed());
    let at = log.at.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(at.len(), 12);
    for (i, t) in at.iter().enumerate() {
        let in_window = at[i..].iter().filter(|u| **u < *t + Duration::from_secs(1)).count();
        assert!(in_window <= 11, "{in_window} requests within one second");
    }
    assert!(m.snapshot().limiter_wait_ms >= 500, "{:?}", m.snapshot());
}

/// A vendor with fixed windows of `window` allowing `limit` requests each,
/// reporting its budget like Okta (`epoch`: reset as epoch seconds with a
/// `Date` header) or as seconds until reset.
struct Windowed {
    start: Instant,
    window: Duration,
    limit: u64,
    epoch: bool,
    counts: Mutex<BTreeMap<usize, u64>>,
    rejected: Mutex<u64>,
}

impl Windowed {
    fn new(window: Duration, limit: u64, epoch: bool) -> Arc<Self> {
        Arc::new(Windowed {
            start: Instant::now(),
            window,
            limit,
            epoch,
            counts: Mutex::new(BTreeMap::new()),
            rejected: Mutex::new(0),
        })
    }
}

async fn windowed(State(w): State<Arc<Windowed>>) -> Response {
    let (idx, left) = if w.epoch {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        (now.as_secs() as usize, Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos())))
    } else {
        let e = w.start.elapsed();
        let idx = (e.as_nanos() / w.window.as_nanos()) as usize;
        (idx, w.window * (idx as u32 + 1) - e)
    };
    let used = {
        let Ok(mut counts) = w.counts.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        let c = counts.entry(idx).or_default();
        *c += 1;
        *c
    };
    let reset = if w.epoch {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        (now + 1).to_string()
    } else {
        // Whole seconds, rounded up (never earlier than the real reset).
        left.as_secs_f64().ceil().to_string()
    };
    let remaining = w.limit.saturating_sub(used);
    let (prefix, status) = if w.epoch { ("x-rate-limit", StatusCode::OK) } else { ("x-ratelimit", StatusCode::OK) };
    let status = if used > w.limit {
        if let Ok(mut r) = w.rejected.lock() {
            *r += 1;
        }
        StatusCode::TOO_MANY_REQUESTS
    } else {
        status
    };
    let mut resp = (status, "{}").into_response();
    let h = resp.headers_mut();
    for (k, v) in [("limit", w.limit.to_string()), ("remaining", remaining.to_string()), ("reset", reset)] {
        if let (Ok(name), Ok(value)) = (format!("{prefix}-{k}").parse::<axum::http::HeaderName>(), v.parse()) {
            h.insert(name, value);
        }
    }
    if used > w.limit
        && let Ok(v) = "1".parse()
    {
        h.insert("retry-after", v);
    }
    resp
}

async fn run(w: Arc<Windowed>, n: usize, rate: RateConfig, retry: RetryConfig) -> (u64, usize) {
    let router = Router::new().route("/r", get(windowed)).with_state(w.clone());
    let base = serve(router).await;
    let (c, m) = client(HttpConfig::new(&base).with_rate(rate));
    let reqs = (0..n).map(|_| c.get("/r").retry(retry).send_bytes());
    let ok = futures::future::join_all(reqs).await.into_iter().filter(|r| r.is_ok()).count();
    let rejected = w.rejected.lock().map(|r| *r).unwrap_or(0);
    assert_eq!(rejected, count(&m, 429));
    (rejected, ok)
}

#[tokio::test]
async fn without_adaptation_the_vendor_answers_429() {
    // Control for the test below: same vendor, headers ignored, no retries.
    let w = Windowed::new(Duration::from_secs(1), 4, false);
    let (rejected, _) =
        run(w, 8, RateConfig::unlimited().with_max_in_flight(3).with_header_adaptation(false), RetryConfig::none())
            .await;
    assert!(rejected > 0);
}

#[tokio::test]
async fn header_adaptation_avoids_429() {
    let w = Windowed::new(Duration::from_secs(1), 4, false);
    let started = Instant::now();
    let (rejected, ok) = run(w.clone(), 10, RateConfig::unlimited().with_max_in_flight(3), common::quick_retry()).await;
    assert_eq!(ok, 10);
    assert_eq!(rejected, 0, "paced by the headers, never refused; windows {:?}", w.counts.lock().map(|c| c.clone()));
    // 10 requests at 4 per window need a third window.
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn okta_epoch_reset_avoids_429() {
    let w = Windowed::new(Duration::from_secs(1), 4, true);
    let (rejected, ok) = run(w.clone(), 8, RateConfig::unlimited().with_max_in_flight(3), common::quick_retry()).await;
    assert_eq!(ok, 8);
    assert_eq!(rejected, 0, "windows {:?}", w.counts.lock().map(|c| c.clone()));
}

/// Waiting for an in-flight slot is limiter wait too: with one request in
/// flight at a time, the second of two concurrent requests waits for the first.
#[tokio::test]
async fn waiting_for_an_in_flight_slot_counts_as_limiter_wait() {
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "ok"
        }),
    );
    let base = serve(router).await;
    let (c, m) = client(HttpConfig::new(&base).with_rate(RateConfig::unlimited().with_max_in_flight(1)));
    let (a, b) = tokio::join!(c.get("/slow").send_bytes(), c.get("/slow").send_bytes());
    assert!(a.is_ok() && b.is_ok());
    let waited = m.snapshot().limiter_wait_ms;
    assert!(waited >= 250, "the second request waited about 300 ms for the slot: {waited} ms");
}
