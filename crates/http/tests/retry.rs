//! Retries, backoff, the vendors' wait headers, transport failures and body limits.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{Counter, client, count, serve};
use corral_core::CheckOutcome;
use corral_http::{HttpConfig, HttpError, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server whose `n`-th call (1-based) answers `script(n)`.
async fn scripted<F>(script: F) -> (String, Arc<Counter>)
where
    F: Fn(usize) -> Response + Clone + Send + Sync + 'static,
{
    let calls = Arc::new(Counter::default());
    let c = calls.clone();
    let handler = move || {
        let n = c.bump();
        let r = script(n);
        async move { r }
    };
    let router = Router::new().route("/r", get(handler.clone())).route("/r", post(handler));
    (serve(router).await, calls)
}

fn status(s: u16) -> Response {
    (StatusCode::from_u16(s).unwrap_or(StatusCode::IM_A_TEAPOT), format!("status {s}")).into_response()
}

fn with_header(mut r: Response, name: &'static str, value: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
    r
}

#[tokio::test]
async fn server_errors_are_retried_to_success() {
    let (base, calls) = scripted(|n| match n {
        1 => status(503),
        2 => status(502),
        3 => status(500),
        _ => (StatusCode::OK, "done").into_response(),
    })
    .await;
    let (c, m) = client(HttpConfig::new(&base));
    let r = c.get("/r").send_bytes().await.expect("succeeds on the 4th attempt");
    assert_eq!(&r.body[..], b"done");
    assert_eq!(calls.get(), 4);
    let s = m.snapshot();
    assert_eq!(s.retries, 3);
    assert_eq!((count(&m, 503), count(&m, 502), count(&m, 500), count(&m, 200)), (1, 1, 1, 1));
    assert_eq!(s.total, 4);
}

#[tokio::test]
async fn server_errors_give_up_after_max_attempts() {
    let (base, calls) = scripted(|_| status(500)).await;
    let (c, _) = client(HttpConfig::new(&base));
    let err = c.get("/r?page=2").send_bytes().await.expect_err("keeps failing");
    assert_eq!(calls.get(), 4);
    assert!(matches!(err, HttpError::Status { status: 500, attempts: 4, .. }), "{err:?}");
    assert!(err.to_string().contains("/r?page=2"), "{err}");
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    for s in [400u16, 403, 404, 409] {
        let (base, calls) = scripted(move |_| status(s)).await;
        let (c, m) = client(HttpConfig::new(&base));
        let err = c.get("/r").send_bytes().await.expect_err("client error");
        assert_eq!(calls.get(), 1, "HTTP {s} must not be retried");
        assert_eq!(err.status(), Some(s));
        assert_eq!(m.snapshot().retries, 0);
        if s == 403 {
            assert!(matches!(err, HttpError::Auth { .. }));
        }
    }
}

#[tokio::test]
async fn allowed_status_is_returned() {
    let (base, calls) = scripted(|_| status(404)).await;
    let (c, _) = client(HttpConfig::new(&base));
    let r = c.get("/r").allow_status(404).send_bytes().await.expect("404 allowed");
    assert_eq!(r.status, 404);
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn non_idempotent_post_is_not_resent_after_a_5xx() {
    let (base, calls) = scripted(|_| status(503)).await;
    let (c, _) = client(HttpConfig::new(&base));
    let err = c.post_json("/r", &serde_json::json!({"chunk_size": 100})).idempotent(false).send_bytes().await;
    assert!(err.is_err());
    assert_eq!(calls.get(), 1);
}

/// A 429 carrying `header: value(now)` first, then success; returns the time waited.
async fn waited_for(header: &'static str, value: impl Fn() -> String + Clone + Send + Sync + 'static) -> Duration {
    let (base, calls) =
        scripted(move |n| if n == 1 { with_header(status(429), header, value()) } else { status(200) }).await;
    let (c, m) = client(HttpConfig::new(&base));
    let t = Instant::now();
    c.get("/r").send_bytes().await.expect("succeeds after waiting");
    let waited = t.elapsed();
    assert_eq!(calls.get(), 2);
    let s = m.snapshot();
    assert_eq!(s.rate_limited, 1);
    assert_eq!(s.retries, 1);
    waited
}

fn epoch_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let w = waited_for("retry-after", || "1".into()).await;
    assert!(w >= Duration::from_millis(950), "waited at least what the vendor asked: {w:?}");
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let w = waited_for("retry-after", || httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2))).await;
    // HTTP dates have whole seconds: at least 1 s of the 2 asked.
    assert!(w >= Duration::from_millis(950), "{w:?}");
}

#[tokio::test]
async fn crowdstrike_epoch_retry_after_is_honoured() {
    let w = waited_for("x-ratelimit-retryafter", || (epoch_now() + 2).to_string()).await;
    // Whole epoch seconds: at least 1 s of the 2 asked.
    assert!(w >= Duration::from_millis(950), "{w:?}");
}

#[tokio::test]
async fn qualys_409_to_wait_is_honoured() {
    let (base, calls) =
        scripted(|n| if n == 1 { with_header(status(409), "x-ratelimit-towait-sec", "1".into()) } else { status(200) })
            .await;
    let (c, m) = client(HttpConfig::new(&base));
    let t = Instant::now();
    c.get("/r").send_bytes().await.expect("succeeds after waiting");
    assert!(t.elapsed() >= Duration::from_millis(950), "{:?}", t.elapsed());
    assert_eq!(calls.get(), 2);
    assert_eq!(m.snapshot().rate_limited, 1);
    assert_eq!(count(&m, 409), 1);
}

#[tokio::test]
async fn a_zero_wait_on_a_slow_down_answer_is_backed_off_not_retried_at_once() {
    // Qualys over its concurrency limit: 409 (code 1960) with X-RateLimit-ToWait-Sec: 0.
    let (base, calls) =
        scripted(|n| if n <= 3 { with_header(status(409), "x-ratelimit-towait-sec", "0".into()) } else { status(200) })
            .await;
    let (c, m) = client(HttpConfig::new(&base));
    c.get("/r").send_bytes().await.expect("succeeds once the running call ended");
    assert_eq!(calls.get(), 4);
    let s = m.snapshot();
    assert_eq!((s.rate_limited, s.retries), (3, 3));
    assert!(s.retry_wait_ms > 0, "each refusal was backed off: {s:?}");
}

#[tokio::test]
async fn wait_beyond_the_budget_fails_at_once() {
    let (base, calls) = scripted(|_| with_header(status(429), "retry-after", "3600".into())).await;
    let (c, m) = client(HttpConfig::new(&base));
    let err = c.get("/r").send_bytes().await.expect_err("budget exceeded");
    assert_eq!(calls.get(), 1);
    let s = m.snapshot();
    assert_eq!((s.retries, s.retry_wait_ms), (0, 0), "failed without waiting: {s:?}");
    assert!(matches!(err, HttpError::RateLimited { status: 429, wait: Some(w), .. } if w == Duration::from_secs(3600)));
    assert!(err.to_string().contains("3600.0s"), "{err}");
}

/// Raw HTTP/1.1 server: the first connection sends half a body and hangs up.
async fn truncating_server() -> (String, Arc<Counter>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(Counter::default());
    let c = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let n = c.bump();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let reply: &[u8] = if n == 1 {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"resources\":["
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"resources\":[]}"
                };
                let _ = sock.write_all(reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), calls)
}

#[tokio::test]
async fn truncated_body_is_retried_never_returned() {
    let (base, calls) = truncating_server().await;
    let (c, m) = client(HttpConfig::new(&base));
    let r = c.get("/x").send_bytes().await.expect("second attempt is complete");
    assert_eq!(&r.body[..], b"{\"resources\":[]}");
    assert_eq!(calls.get(), 2);
    let s = m.snapshot();
    assert_eq!(s.transport_errors, 1);
    assert_eq!(s.retries, 1);
}

#[tokio::test]
async fn oversized_body_is_refused_without_retry() {
    let (base, calls) = scripted(|_| (StatusCode::OK, "x".repeat(10_000)).into_response()).await;
    let (c, _) = client(HttpConfig::new(&base).with_max_body_bytes(1000));
    let err = c.get("/r").send_bytes().await.expect_err("too large");
    assert!(matches!(err, HttpError::BodyTooLarge { limit: 1000, .. }), "{err:?}");
    assert_eq!(calls.get(), 1);
    let ok = c.get("/r").max_body_bytes(20_000).send_bytes().await.expect("raised limit");
    assert_eq!(ok.body.len(), 10_000);
}

#[tokio::test]
async fn unreachable_vendor() {
    // Bind then drop: nothing listens on this port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (c, m) = client(HttpConfig::new(format!("http://127.0.0.1:{port}")));
    let err = c.get("/api?api_key=hunter2").send_bytes().await.expect_err("refused");
    assert!(matches!(err, HttpError::Transport { kind: TransportKind::Connect, attempts: 4, .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("api_key=***"), "{err}");
    assert_eq!(m.snapshot().transport_errors, 4);
    assert!(matches!(c.check("/api").await, CheckOutcome::Unreachable { .. }));
}

#[tokio::test]
async fn query_secrets_never_reach_error_messages() {
    let (base, _) = scripted(|_| status(500)).await;
    let (c, _) = client(HttpConfig::new(&base));
    let err = c.get("/r").query(&[("access_token", "hunter2"), ("limit", "5")]).send_bytes().await.expect_err("500");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("access_token=***&limit=5"), "{shown}");
}

/// A vendor sending absurd wait headers: huge epoch instants, negative and
/// not-a-number delays, limits beyond u64. The client neither panics nor
/// waits nor fails because of them (issue 9, item 2): a value that is not a
/// plausible time is ignored, as if the vendor had sent nothing (plain
/// backoff after a 429 or 5xx, no pacing after a 200).
#[tokio::test]
async fn hostile_wait_headers_are_ignored_neither_waited_for_nor_failed_on() {
    let run = |script: fn(usize) -> Response| async move {
        let (base, calls) = scripted(script).await;
        let (c, m) = client(HttpConfig::new(&base));
        let first = tokio::time::timeout(Duration::from_secs(30), c.get("/r").send_bytes()).await;
        let second = tokio::time::timeout(Duration::from_secs(30), c.get("/r").send_bytes()).await;
        (first.expect("first request returns"), second.expect("second request returns"), calls.get(), m)
    };

    // A 429 with an epoch-milliseconds instant far beyond any clock: backed
    // off as if without a hint, then the answer that follows is used.
    let (first, second, calls, m) = run(|n| match n {
        1 => with_header(status(429), "x-ratelimit-retryafter", "100000000000000000000000".into()),
        _ => status(200),
    })
    .await;
    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    assert_eq!(calls, 3);
    assert_eq!(m.snapshot().rate_limited, 1);

    // Okta-style: remaining 0 until an absurd reset. The reset is ignored:
    // the next request is neither refused nor parked for decades.
    let (first, second, calls, m) = run(|_| {
        let r = with_header(status(200), "x-rate-limit-remaining", "0".into());
        with_header(r, "x-rate-limit-reset", "100000000000000000000000".into())
    })
    .await;
    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    assert_eq!(calls, 2);
    assert!(m.snapshot().limiter_wait_ms < 1000, "{:?}", m.snapshot());

    // A reset as an RFC 3339 timestamp years away (it was read as its
    // leading digits, 2026 seconds, before): ignored too.
    let (first, second, calls, _) = run(|_| {
        let r = with_header(status(200), "x-ratelimit-remaining", "0".into());
        with_header(r, "x-ratelimit-reset", "2126-12-01T10:00:00Z".into())
    })
    .await;
    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    assert_eq!(calls, 2);

    // Negative and NaN delays are ignored: plain backoff, then success.
    let (first, second, calls, m) = run(|n| match n {
        1 => with_header(status(429), "retry-after", "-5".into()),
        2 => with_header(status(429), "retry-after", "NaN".into()),
        _ => status(200),
    })
    .await;
    assert!(first.is_ok() && second.is_ok());
    assert_eq!(calls, 4);
    assert_eq!(m.snapshot().rate_limited, 2);

    // A 503 asking to wait more seconds than an f64 holds: retried like any 503.
    let (first, _, calls, _) =
        run(|n| if n == 1 { with_header(status(503), "retry-after", "9".repeat(400)) } else { status(200) }).await;
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(calls, 3);

    // Limits and remainders beyond u64 (sliding-window headers) are harmless.
    let (first, second, calls, _) = run(|_| {
        let r = with_header(status(200), "x-ratelimit-limit", "9".repeat(400));
        with_header(r, "x-ratelimit-remaining", "100000000000000000000000".into())
    })
    .await;
    assert!(first.is_ok() && second.is_ok());
    assert_eq!(calls, 2);
}

/// A plausible wait that is longer than the budget still fails at once,
/// naming the wait (a vendor's daily quota is spent).
#[tokio::test]
async fn a_plausible_reset_beyond_the_budget_fails_at_once() {
    let (base, calls) = scripted(|_| {
        let r = with_header(status(200), "x-rate-limit-remaining", "0".into());
        with_header(r, "x-rate-limit-reset", "7200".into())
    })
    .await;
    let (c, _) = client(HttpConfig::new(&base));
    c.get("/r").send_bytes().await.expect("the first answer is used");
    let err = c.get("/r").send_bytes().await.expect_err("paced beyond the budget");
    assert!(matches!(err, HttpError::Throttled { wait, .. } if wait >= Duration::from_secs(7000)), "{err:?}");
    assert!(err.to_string().contains("beyond the retry budget"), "{err}");
    assert_eq!(calls.get(), 1, "the second request was never sent");
}
