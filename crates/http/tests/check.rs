//! Hung vendors and `check` (issue 9, items 5 and 6): attempts never outlast
//! the request's budget, a slow answer is reported while it is awaited, and
//! `check` retries transient failures within its time and names what failed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{Counter, serve};
use corral_core::CheckOutcome;
use corral_http::{
    Auth, HttpClient, HttpConfig, HttpError, OAuth2Config, RetryConfig, SecretString, Timeouts, TransportKind,
};
use serde_json::json;

/// Log lines written while a test runs (its own thread's subscriber).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// Capture WARN and above on this thread until the guard drops.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }
    fn text(&self) -> String {
        self.0.lock().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default()
    }
}

/// A server whose `n`-th call (1-based) to `/api` waits `delay(n)`, then answers `status(n)`.
async fn server(delay: fn(usize) -> Duration, status: fn(usize) -> u16) -> (String, Arc<Counter>) {
    let calls = Arc::new(Counter::default());
    let c = calls.clone();
    let router = Router::new().route(
        "/api",
        get(move || {
            let n = c.bump();
            async move {
                tokio::time::sleep(delay(n)).await;
                let s = StatusCode::from_u16(status(n)).unwrap_or(StatusCode::IM_A_TEAPOT);
                (s, "{\"resources\":[]}").into_response()
            }
        }),
    );
    (serve(router).await, calls)
}

fn hang(_: usize) -> Duration {
    Duration::from_secs(3600)
}

fn ok(_: usize) -> u16 {
    200
}

/// Item 5: the default per-attempt timeout is five minutes and the read
/// timeout a minute, but a request whose retry budget is one second gets
/// one second in all, not one attempt of a minute.
#[tokio::test]
async fn an_attempt_never_outlasts_the_retry_budget() {
    let (base, calls) = server(hang, ok).await;
    let retry = RetryConfig { total_budget: Duration::from_secs(1), ..RetryConfig::default() };
    let c = HttpClient::new(HttpConfig::new(&base).with_retry(retry), Arc::default()).expect("client");
    // The guard only catches a hang; the budget is what ends the request.
    let r = tokio::time::timeout(Duration::from_secs(30), c.get("/api").send_bytes()).await;
    let err = r.expect("the request ends with its budget, not after the minute-long read timeout").expect_err("hung");
    assert!(matches!(err, HttpError::Transport { kind: TransportKind::Timeout, .. }), "{err:?}");
    assert_eq!(calls.get(), 1, "no second attempt: the budget is spent");
    assert!(err.to_string().contains("within 1.0s"), "{err}");
}

/// Item 5: a request in flight longer than `slow_warn` is logged while it
/// waits, again at each interval, naming the connection, the stream and the
/// endpoint (secrets redacted), and how long so far.
#[tokio::test]
async fn a_slow_answer_is_logged_while_it_is_awaited() {
    let (base, _) = server(|_| Duration::from_millis(1300), ok).await;
    let timeouts = Timeouts { slow_warn: Duration::from_millis(300), ..Timeouts::default() };
    let c =
        HttpClient::new(HttpConfig::new(&base).with_connection("falcon-eu").with_timeouts(timeouts), Arc::default())
            .expect("client")
            .with_stream("hosts");
    let (logs, _guard) = Logs::capture();
    c.get("/api").query(&[("api_key", "hunter2")]).send_bytes().await.expect("slow but fine");
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("still waiting for the vendor's answer")).collect();
    assert!(lines.len() >= 2, "logged while waiting, repeatedly: {text}");
    for l in &lines {
        assert!(l.contains("WARN") && l.contains("falcon-eu") && l.contains("hosts"), "{l}");
        assert!(l.contains("/api?api_key=***") && !l.contains("hunter2"), "{l}");
        assert!(l.contains("waiting_s="), "{l}");
    }
}

/// Item 5: `check` answers within its limit against a vendor that never
/// answers, and says it got no answer.
#[tokio::test]
async fn check_answers_within_its_limit_against_a_hung_vendor() {
    let (base, calls) = server(hang, ok).await;
    let c = HttpClient::new(HttpConfig::new(&base), Arc::default()).expect("client");
    let outcome = tokio::time::timeout(Duration::from_secs(30), c.check_within("/api", Duration::from_secs(1)))
        .await
        .expect("check ends with its limit");
    match &outcome {
        CheckOutcome::Unreachable { endpoint, detail } => {
            assert!(endpoint.ends_with("/api"), "{endpoint}");
            assert!(detail.contains("timed out"), "{detail}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    assert_eq!(calls.get(), 1);
}

/// Item 6: transient answers are retried within the check's time, and a
/// persistent one is named for what it is, never "authentication failed".
#[tokio::test]
async fn check_retries_transient_errors_and_names_what_failed() {
    let now = |_| Duration::ZERO;
    let (base, calls) = server(now, |n| if n < 3 { 503 } else { 200 }).await;
    let c = HttpClient::new(HttpConfig::new(&base), Arc::default()).expect("client");
    assert!(c.check_within("/api", Duration::from_secs(10)).await.is_ok());
    assert_eq!(calls.get(), 3, "two 503s retried");

    let (base, calls) = server(now, |_| 502).await;
    let c = HttpClient::new(HttpConfig::new(&base), Arc::default()).expect("client");
    match c.check_within("/api", Duration::from_secs(10)).await {
        CheckOutcome::ServerError { status: 502, attempts, .. } => assert!(attempts > 1, "{attempts}"),
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(calls.get() > 1);

    let (base, calls) = server(now, |_| 404).await;
    let c = HttpClient::new(HttpConfig::new(&base), Arc::default()).expect("client");
    let outcome = c.check_within("/api", Duration::from_secs(10)).await;
    assert!(matches!(outcome, CheckOutcome::NotFound { status: 404, .. }), "{outcome:?}");
    assert!(outcome.to_string().starts_with("not found: "), "{outcome}");
    assert_eq!(calls.get(), 1, "a 404 is not retried");

    let (base, calls) = server(now, |_| 403).await;
    let c = HttpClient::new(HttpConfig::new(&base), Arc::default()).expect("client");
    let outcome = c.check_within("/api", Duration::from_secs(10)).await;
    assert!(matches!(outcome, CheckOutcome::AuthError { status: Some(403), .. }), "{outcome:?}");
    assert!(outcome.to_string().starts_with("credentials refused by "), "{outcome}");
    assert_eq!(calls.get(), 1, "refused credentials are not retried");
}

/// A token endpoint whose `n`-th call answers `answer(n)`, and an API that
/// accepts its tokens.
async fn token_server(answer: fn(usize) -> Response) -> (String, Arc<Counter>) {
    let calls = Arc::new(Counter::default());
    let c = calls.clone();
    let router = Router::new()
        .route(
            "/oauth2/token",
            post(move || {
                let n = c.bump();
                async move { answer(n) }
            }),
        )
        .route("/api", get(|| async { (StatusCode::OK, "{}").into_response() }));
    (serve(router).await, calls)
}

fn token_ok() -> Response {
    (StatusCode::CREATED, axum::Json(json!({"access_token": "tok-ok", "expires_in": 1799}))).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

fn oauth_client(base: &str) -> HttpClient {
    let auth =
        Auth::OAuth2ClientCredentials(OAuth2Config::new("/oauth2/token", "cid", SecretString::from("s3cret-value")));
    HttpClient::new(HttpConfig::new(base).with_auth(auth), Arc::default()).expect("client")
}

/// Item 6, at the cause: a token endpoint answering 5xx or 404 is not a
/// credentials problem; only its refusals of the client are.
#[tokio::test]
async fn token_endpoint_answers_are_named_for_what_they_are() {
    // A 503 then a token: retried, the check passes.
    let (base, calls) =
        token_server(|n| if n == 1 { StatusCode::SERVICE_UNAVAILABLE.into_response() } else { token_ok() }).await;
    let outcome = oauth_client(&base).check_within("/api", Duration::from_secs(10)).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(calls.get(), 2);

    // 503 every time: a server error at the token endpoint.
    let (base, calls) = token_server(|_| StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let outcome = oauth_client(&base).check_within("/api", Duration::from_secs(10)).await;
    match &outcome {
        CheckOutcome::ServerError { endpoint, status: 503, .. } => assert!(endpoint.ends_with("/oauth2/token")),
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(calls.get() > 1, "retried");

    // 404: the token URL is wrong (base URL, tenant).
    let (base, calls) = token_server(|_| StatusCode::NOT_FOUND.into_response()).await;
    let outcome = oauth_client(&base).check_within("/api", Duration::from_secs(10)).await;
    assert!(matches!(&outcome, CheckOutcome::NotFound { status: 404, .. }), "{outcome:?}");
    assert_eq!(calls.get(), 1);

    // Microsoft's unknown tenant: 400 invalid_request "Tenant '...' not found".
    let (base, _) = token_server(|_| {
        oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS90002: Tenant 'nope' not found.")
    })
    .await;
    let outcome = oauth_client(&base).check_within("/api", Duration::from_secs(10)).await;
    assert!(matches!(&outcome, CheckOutcome::NotFound { status: 400, .. }), "{outcome:?}");

    // The client refused (401 or 400 invalid_client / unauthorized_client): credentials, not retried.
    for answer in [
        (|_| oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "bad secret")) as fn(usize) -> Response,
        |_| oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "bad secret"),
        |_| oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", "AADSTS700016: Application not found"),
    ] {
        let (base, calls) = token_server(answer).await;
        let outcome = oauth_client(&base).check_within("/api", Duration::from_secs(10)).await;
        assert!(matches!(&outcome, CheckOutcome::AuthError { .. }), "{outcome:?}");
        assert_eq!(calls.get(), 1, "refused credentials are asked once");
    }

    // A token endpoint that never answers: unreachable, within the limit.
    let (base, _) = token_server(|_| {
        let body = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}"))
        });
        (StatusCode::CREATED, axum::body::Body::from_stream(body)).into_response()
    })
    .await;
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), oauth_client(&base).check_within("/api", Duration::from_secs(1)))
            .await
            .expect("check ends with its limit");
    assert!(matches!(&outcome, CheckOutcome::Unreachable { .. }), "{outcome:?}");
}

/// A vendor with a sliding window of 4 requests per 2 s that reports only
/// limit and remaining (CrowdStrike-like), 3 of them spent by another client
/// just before the test; counts what it refused.
struct SharedWindow {
    admitted: Mutex<std::collections::VecDeque<std::time::Instant>>,
    refused: Counter,
}

async fn shared_window() -> (String, Arc<SharedWindow>) {
    let now = std::time::Instant::now();
    let state = Arc::new(SharedWindow { admitted: Mutex::new(vec![now; 3].into()), refused: Counter::default() });
    let s = state.clone();
    let router = Router::new().route(
        "/api",
        get(move || {
            let s = s.clone();
            async move {
                let now = std::time::Instant::now();
                let (allowed, remaining) = match s.admitted.lock() {
                    Ok(mut a) => {
                        while a.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(2)) {
                            a.pop_front();
                        }
                        let allowed = a.len() < 4;
                        if allowed {
                            a.push_back(now);
                        }
                        (allowed, 4 - a.len().min(4))
                    }
                    Err(_) => (false, 0),
                };
                if !allowed {
                    s.refused.bump();
                }
                let status = if allowed { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
                let headers =
                    [("x-ratelimit-limit", "4".to_string()), ("x-ratelimit-remaining", remaining.to_string())];
                (status, headers, "{}").into_response()
            }
        }),
    );
    (serve(router).await, state)
}

/// Item 2: a budget spent by another client is waited for, not failed on,
/// and the wait is visible: a warning naming the connection, the endpoint
/// and how long, and limiter wait in the request metrics.
#[tokio::test]
async fn a_wait_for_a_budget_spent_by_others_is_visible() {
    let (base, vendor) = shared_window().await;
    let rate = corral_http::RateConfig {
        default_window: Duration::from_secs(2),
        warn_wait: Duration::from_millis(100),
        ..corral_http::RateConfig::default()
    };
    let metrics = Arc::new(corral_core::metrics::RequestMetrics::default());
    let c = HttpClient::new(HttpConfig::new(&base).with_connection("falcon-eu").with_rate(rate), metrics.clone())
        .expect("client")
        .with_stream("hosts");
    let (logs, _guard) = Logs::capture();
    for _ in 0..6 {
        c.get("/api").send_bytes().await.expect("waited for, never refused nor failed");
    }
    assert_eq!(vendor.refused.get(), 0, "no 429");
    let text = logs.text();
    let line =
        text.lines().find(|l| l.contains("rate budget is spent")).unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(line.contains("WARN") && line.contains("falcon-eu") && line.contains("hosts"), "{line}");
    assert!(line.contains("/api") && line.contains("wait_s=") && line.contains("held_by_other_clients=3"), "{line}");
    assert!(metrics.snapshot().limiter_wait_ms >= 1000, "{:?}", metrics.snapshot());
}
