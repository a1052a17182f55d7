//! OAuth2 token lifecycle, static credentials, and secrets kept out of output.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{Counter, client, count, serve};
use corral_core::{CheckOutcome, FetchError};
use corral_http::{Auth, HttpConfig, HttpError, OAuth2Config, SecretString, TransportKind};
use serde_json::json;

const SECRET: &str = "s3cr3t-client-value";

#[derive(Default)]
struct Vendor {
    tokens: Counter,
    api_calls: Counter,
    expires_in: u64,
    /// Refuse the first token ever issued (as if revoked mid-run).
    reject_first_token: bool,
    always_401: bool,
    /// The token endpoint refuses the client and echoes the secret back.
    refuse_client: bool,
    forms: Mutex<Vec<String>>,
    seen_auth: Mutex<Vec<String>>,
}

async fn token(State(v): State<Arc<Vendor>>, headers: HeaderMap, body: String) -> Response {
    let n = v.tokens.bump();
    let auth = headers.get("authorization").and_then(|h| h.to_str().ok()).unwrap_or("");
    if let Ok(mut f) = v.forms.lock() {
        f.push(format!("{auth}|{body}"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    if v.refuse_client {
        let e = json!({"error": "invalid_client", "error_description": format!("client secret {SECRET} is wrong")});
        return (StatusCode::UNAUTHORIZED, axum::Json(e)).into_response();
    }
    // CrowdStrike answers 201.
    let t = json!({"access_token": format!("tok-{n}"), "expires_in": v.expires_in, "token_type": "bearer"});
    (StatusCode::CREATED, axum::Json(t)).into_response()
}

async fn api(State(v): State<Arc<Vendor>>, headers: HeaderMap) -> Response {
    v.api_calls.bump();
    let auth = headers.get("authorization").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    if let Ok(mut s) = v.seen_auth.lock() {
        s.push(auth.clone());
    }
    if v.always_401 || (v.reject_first_token && auth == "Bearer tok-1") || !auth.starts_with("Bearer tok-") {
        return (StatusCode::UNAUTHORIZED, format!("bad token {auth}")).into_response();
    }
    (StatusCode::OK, "{\"resources\":[]}").into_response()
}

async fn vendor(v: Vendor) -> (String, Arc<Vendor>) {
    let v = Arc::new(v);
    let router = Router::new()
        .route("/oauth2/token", post(token))
        .route("/devices/queries/devices/v1", get(api))
        .with_state(v.clone());
    (serve(router).await, v)
}

fn oauth(base: &str) -> HttpConfig {
    HttpConfig::new(base).with_auth(Auth::OAuth2ClientCredentials(
        OAuth2Config::new("/oauth2/token", "client-id", SecretString::from(SECRET)).param("member_cid", "child"),
    ))
}

#[tokio::test]
async fn token_is_shared_and_refreshed_before_expiry() {
    let (base, v) = vendor(Vendor { expires_in: 2, ..Default::default() }).await;
    let (c, m) = client(oauth(&base));
    // Eight concurrent first requests share one token fetch.
    let reqs = (0..8).map(|_| c.get("/devices/queries/devices/v1").send_bytes());
    for r in futures::future::join_all(reqs).await {
        r.expect("request succeeds");
    }
    assert_eq!(v.tokens.get(), 1);
    let form = v.forms.lock().map(|f| f[0].clone()).unwrap_or_default();
    assert!(form.contains("grant_type=client_credentials") && form.contains("member_cid=child"), "{form}");
    // A 2 s token is refreshed after 1 s, before the vendor would refuse it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.get("/devices/queries/devices/v1").send_bytes().await.expect("request after refresh");
    assert_eq!(v.tokens.get(), 2);
    assert_eq!(count(&m, 401), 0);
    assert_eq!(count(&m, 201), 2);
    assert_eq!(count(&m, 200), 9);
}

#[tokio::test]
async fn client_credentials_as_basic_auth() {
    let (base, v) = vendor(Vendor { expires_in: 600, ..Default::default() }).await;
    let mut cfg = OAuth2Config::new("/oauth2/token", "id", SecretString::from("pw")).scope("api");
    cfg.basic_client_auth = true;
    let (c, _) = client(HttpConfig::new(&base).with_auth(Auth::OAuth2ClientCredentials(cfg)));
    c.get("/devices/queries/devices/v1").send_bytes().await.expect("ok");
    let form = v.forms.lock().map(|f| f[0].clone()).unwrap_or_default();
    assert_eq!(form, "Basic aWQ6cHc=|grant_type=client_credentials&scope=api");
}

#[tokio::test]
async fn one_refresh_on_401_for_concurrent_requests() {
    let (base, v) = vendor(Vendor { expires_in: 1799, reject_first_token: true, ..Default::default() }).await;
    let (c, m) = client(oauth(&base));
    let reqs = (0..6).map(|_| c.get("/devices/queries/devices/v1").send_bytes());
    for r in futures::future::join_all(reqs).await {
        r.expect("request succeeds after the refresh");
    }
    assert_eq!(v.tokens.get(), 2, "exactly one refresh");
    assert_eq!(count(&m, 401), 6);
    assert_eq!(count(&m, 200), 6);
    assert_eq!(m.snapshot().retries, 6);
}

#[tokio::test]
async fn persistent_401_fails_after_one_refresh() {
    let (base, v) = vendor(Vendor { expires_in: 1799, always_401: true, ..Default::default() }).await;
    let (c, _) = client(oauth(&base));
    let err = c.get("/devices/queries/devices/v1?limit=1").send_bytes().await.expect_err("refused");
    assert_eq!(v.tokens.get(), 2);
    assert_eq!(v.api_calls.get(), 2);
    assert!(matches!(err, HttpError::Auth { status: Some(401), .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/devices/queries/devices/v1?limit=1") && msg.contains("HTTP 401"), "{msg}");
    assert!(msg.contains("/oauth2/token"), "{msg}");
    assert!(!msg.contains("tok-"), "the refused token is not quoted: {msg}");
}

#[tokio::test]
async fn token_endpoint_refusal_names_it_and_hides_the_secret() {
    let (base, v) = vendor(Vendor { refuse_client: true, ..Default::default() }).await;
    let (c, _) = client(oauth(&base));
    let err = c.get("/devices/queries/devices/v1").send_bytes().await.expect_err("refused");
    assert_eq!(v.tokens.get(), 1, "a refused client is not retried");
    assert_eq!(v.api_calls.get(), 0);
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(&format!("{base}/oauth2/token")), "{shown}");
    assert!(shown.contains("401") && shown.contains("invalid_client"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    let fetch: FetchError = err.clone().into();
    assert!(matches!(fetch, FetchError::Auth { .. }));
    assert!(!fetch.to_string().contains(SECRET));
    // check() reports it as an auth error with endpoint and status.
    match c.check("/devices/queries/devices/v1").await {
        CheckOutcome::AuthError { endpoint, status, detail } => {
            assert!(endpoint.ends_with("/oauth2/token"));
            assert_eq!(status, Some(401));
            assert!(!detail.contains(SECRET));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn secrets_absent_from_debug() {
    let (c, _) = client(oauth("https://api.example.com"));
    let cfg = oauth("https://api.example.com");
    for shown in [format!("{c:?}"), format!("{cfg:?}"), format!("{cfg:#?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    let token = SecretString::from("00abcdefTOKEN");
    for auth in [Auth::okta_ssws(&token), Auth::sentinelone(&token), Auth::Bearer(token.clone())] {
        let (c, _) = client(HttpConfig::new("https://api.example.com").with_auth(auth));
        assert!(!format!("{c:?}").contains("TOKEN"));
    }
}

async fn echo(headers: HeaderMap) -> Response {
    let auth = headers.get("authorization").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let keys = headers.get("x-apikeys").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let xrw = headers.get("x-requested-with").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    if auth.contains("wrong") {
        return (StatusCode::UNAUTHORIZED, format!("token {auth} invalid")).into_response();
    }
    (StatusCode::OK, format!("{auth}|{keys}|{xrw}")).into_response()
}

#[tokio::test]
async fn static_credentials_are_sent_and_refusals_not_retried() {
    let calls = Arc::new(Counter::default());
    let c2 = calls.clone();
    let router = Router::new().route(
        "/x",
        get(move |h: HeaderMap| {
            c2.bump();
            echo(h)
        }),
    );
    let base = serve(router).await;
    let t = SecretString::from("tok123456789");
    let body = |c: corral_http::HttpClient| async move {
        let r = c.get("/x").send_bytes().await.expect("ok");
        String::from_utf8(r.body.to_vec()).expect("utf8")
    };
    let (c, _) = client(HttpConfig::new(&base).with_auth(Auth::okta_ssws(&t)));
    assert_eq!(body(c).await, "SSWS tok123456789||");
    let (c, _) = client(HttpConfig::new(&base).with_auth(Auth::tenable(&t, &SecretString::from("sk"))));
    assert_eq!(body(c).await, "|accessKey=tok123456789;secretKey=sk|");
    let basic = Auth::Basic { user: "user".into(), password: SecretString::from("pass") };
    let (c, _) = client(HttpConfig::new(&base).with_auth(basic).with_header("X-Requested-With", "corral"));
    assert_eq!(body(c).await, "Basic dXNlcjpwYXNz||corral");

    let before = calls.get();
    let wrong = SecretString::from("wrong-token-value");
    let (c, m) = client(HttpConfig::new(&base).with_auth(Auth::Bearer(wrong)));
    let err = c.get("/x").send_bytes().await.expect_err("refused");
    assert_eq!(calls.get() - before, 1, "static credentials: 401 is not retried");
    assert!(matches!(err, HttpError::Auth { status: Some(401), .. }));
    assert!(!err.to_string().contains("wrong-token-value"), "{err}");
    assert_eq!(m.snapshot().retries, 0);
}

/// A token endpoint on its own, answering with `answer` (after counting the call).
async fn token_endpoint(answer: fn() -> Response) -> (String, Arc<Counter>, Arc<Mutex<Vec<std::time::Instant>>>) {
    let calls = Arc::new(Counter::default());
    let times = Arc::new(Mutex::new(Vec::new()));
    let (c, t) = (calls.clone(), times.clone());
    let router = Router::new()
        .route(
            "/oauth2/token",
            post(move || {
                c.bump();
                if let Ok(mut t) = t.lock() {
                    t.push(std::time::Instant::now());
                }
                async move { answer() }
            }),
        )
        .route(
            "/api",
            get(|headers: HeaderMap| async move {
                match headers.get("authorization").and_then(|h| h.to_str().ok()) {
                    Some("Bearer tok-ok") => (StatusCode::OK, "{}").into_response(),
                    _ => (StatusCode::UNAUTHORIZED, "no").into_response(),
                }
            }),
        );
    (serve(router).await, calls, times)
}

#[tokio::test]
async fn an_oversized_token_answer_is_a_clear_error() {
    let (base, calls, _) = token_endpoint(|| {
        let t = json!({"access_token": "x".repeat(100 * 1024), "expires_in": 1799});
        (StatusCode::CREATED, axum::Json(t)).into_response()
    })
    .await;
    let (c, _) = client(oauth(&base));
    let err = c.get("/api").send_bytes().await.expect_err("too large");
    assert!(
        matches!(&err, HttpError::BodyTooLarge { limit: 65536, endpoint } if endpoint.ends_with("/oauth2/token")),
        "{err:?}"
    );
    assert_eq!(calls.get(), 1, "not retried");
}

#[tokio::test]
async fn a_trickling_token_endpoint_times_out_and_frees_the_refresh() {
    // Headers at once, then one byte every 200 ms, forever.
    let (base, calls, _) = token_endpoint(|| {
        let body = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")), ()))
        });
        (StatusCode::CREATED, axum::body::Body::from_stream(body)).into_response()
    })
    .await;
    let timeouts = corral_http::Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(60),
        total: Duration::from_millis(500),
        ..corral_http::Timeouts::default()
    };
    let (c, _) = client(oauth(&base).with_timeouts(timeouts));
    let both = futures::future::join(c.get("/api").send_bytes(), c.get("/api").send_bytes());
    let (a, b) = tokio::time::timeout(Duration::from_secs(20), both).await.expect("neither request hangs");
    for r in [a, b] {
        let err = r.expect_err("no token");
        assert!(
            matches!(&err, HttpError::Transport { kind: TransportKind::Timeout, endpoint, .. } if endpoint.ends_with("/oauth2/token")),
            "{err:?}"
        );
    }
    // One refresh for both (single-flight), each attempt cut at 500 ms, retried.
    assert_eq!(calls.get(), 4, "the quick retry policy's four attempts");
}

#[tokio::test]
async fn token_requests_are_paced_by_the_token_quota() {
    // Every token is refused by the API, so each request asks for a new one.
    let (base, calls, times) = token_endpoint(|| {
        (StatusCode::CREATED, axum::Json(json!({"access_token": "tok-refused", "expires_in": 1799}))).into_response()
    })
    .await;
    let quota = corral_http::Quota::with_period(Duration::from_millis(250)).expect("non-zero period");
    let cfg = HttpConfig::new(&base).with_auth(Auth::OAuth2ClientCredentials(
        OAuth2Config::new("/oauth2/token", "client-id", SecretString::from(SECRET)).token_quota(quota),
    ));
    let (c, m) = client(cfg);
    for _ in 0..5 {
        assert!(c.get("/api").send_bytes().await.is_err());
    }
    let times = times.lock().map(|t| t.clone()).unwrap_or_default();
    assert_eq!(times.len(), calls.get());
    assert!(times.len() >= 6, "a token, then one refresh per refused request: {}", times.len());
    for (i, t) in times.iter().enumerate() {
        let in_a_second = times[i..].iter().filter(|u| u.duration_since(*t) < Duration::from_secs(1)).count();
        assert!(in_a_second <= 5, "{in_a_second} token requests within one second at 4/s");
    }
    assert!(m.snapshot().limiter_wait_ms >= 500, "{:?}", m.snapshot());
}

#[tokio::test(flavor = "current_thread")]
async fn the_token_answer_is_decoded_off_the_runtime() {
    let (base, _, _) = token_endpoint(|| {
        (StatusCode::OK, axum::Json(json!({"access_token": "tok-ok", "expires_in": 3599}))).into_response()
    })
    .await;
    let (c, _) = client(oauth(&base));
    let before = corral_http::offloaded_on_this_thread();
    c.get("/api").send_bytes().await.expect("authorized");
    assert_eq!(corral_http::offloaded_on_this_thread() - before, 1, "the token answer, nothing else");
}

/// A vendor that quotes the credentials it got in its refusal: none of their
/// forms reaches the error, whatever their length.
#[tokio::test]
async fn refusals_quoting_credentials_never_leak_them() {
    let router = Router::new().route(
        "/x",
        get(|h: HeaderMap| async move {
            let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let keys = h.get("x-apikeys").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            (StatusCode::UNAUTHORIZED, format!("refused {auth} {keys} for this request")).into_response()
        }),
    );
    let base = serve(router).await;
    let cases = [
        (
            Auth::Basic { user: "svc".into(), password: SecretString::from("hunter2pw") },
            vec!["hunter2pw", "c3ZjOmh1bnRlcjJwdw=="],
        ),
        (Auth::Basic { user: "svc".into(), password: SecretString::from("pw") }, vec!["c3ZjOnB3", " pw "]),
        (Auth::Bearer(SecretString::from("abc")), vec!["abc"]),
        (Auth::tenable(&SecretString::from("access-key-1"), &SecretString::from("sk")), vec!["access-key-1", "=sk"]),
    ];
    for (auth, leaks) in cases {
        let (c, _) = client(HttpConfig::new(&base).with_auth(auth));
        let err = c.get("/x").send_bytes().await.expect_err("refused");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, HttpError::Auth { status: Some(401), .. }), "{shown}");
        for leak in leaks {
            assert!(!shown.contains(leak), "{leak:?} leaked: {shown}");
        }
    }
}
