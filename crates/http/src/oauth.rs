//! OAuth2 client credentials: a token cache shared by every clone of a
//! client, refreshed ahead of expiry and once after a 401, single-flight so
//! concurrent requests never stampede the token endpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use corral_core::metrics::RequestMetrics;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::auth::{OAuth2Config, base64, scrub_all, sensitive};
use crate::config::RetryConfig;
use crate::error::{HttpError, TransportKind, describe_reqwest, redact_url, snippet};
use crate::ratelimit::Asker;
use crate::retry::{Class, backoff, classify};

/// Largest token endpoint answer read; a bigger one is an error, not a token.
pub(crate) const TOKEN_BODY_LIMIT: usize = 64 * 1024;

/// One access token and when to replace it.
pub(crate) struct CachedToken {
    pub(crate) header: HeaderValue,
    secret: SecretString,
    refresh_at: Instant,
    pub(crate) generation: u64,
}

#[derive(Default)]
struct TokenState {
    token: Option<Arc<CachedToken>>,
    generation: u64,
    failures: u64,
    last_error: Option<HttpError>,
}

/// Token cache shared by every clone of a client. Refreshes are single-flight:
/// concurrent callers wait for the one refresh in progress and reuse its result.
pub(crate) struct TokenSource {
    cfg: OAuth2Config,
    pub(crate) url: Url,
    /// The header data requests carry the token in (`Authorization`).
    pub(crate) header: HeaderName,
    state: Mutex<TokenState>,
    refresh: tokio::sync::Mutex<()>,
    /// The connection's whole-request timeout, for each token request too:
    /// a token endpoint that trickles its answer must not hold `refresh` forever.
    timeout: Duration,
    quota: Option<DefaultDirectRateLimiter>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl TokenSource {
    pub(crate) fn new(cfg: OAuth2Config, url: Url, timeout: Duration) -> Result<Self, HttpError> {
        let quota = cfg.token_quota.map(RateLimiter::direct);
        let header = match &cfg.token_call {
            None => AUTHORIZATION,
            Some(c) => HeaderName::from_bytes(c.header.as_bytes())
                .map_err(|_| HttpError::Config(format!("invalid auth header name `{}`", c.header)))?,
        };
        Ok(TokenSource {
            cfg,
            url,
            header,
            state: Mutex::new(TokenState::default()),
            refresh: tokio::sync::Mutex::new(()),
            timeout,
            quota,
        })
    }

    fn cached(&self) -> (Option<Arc<CachedToken>>, u64) {
        match self.state.lock() {
            Ok(s) => (s.token.clone(), s.failures),
            Err(_) => (None, 0),
        }
    }

    /// A valid token, fetching one if none is cached or it is due for refresh.
    /// Waiting for another request's refresh and the token requests
    /// themselves end by `deadline` (the asking request's retry budget).
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        retry: &RetryConfig,
        m: &RequestMetrics,
        deadline: Option<Instant>,
        asker: Asker<'_>,
    ) -> Result<Arc<CachedToken>, HttpError> {
        let (cached, failures) = self.cached();
        if let Some(t) = cached.filter(|t| t.refresh_at > Instant::now()) {
            return Ok(t);
        }
        let _guard = self.lock_refresh(deadline).await?;
        let (cached, now_failures) = self.cached();
        if let Some(t) = cached.filter(|t| t.refresh_at > Instant::now()) {
            return Ok(t);
        }
        self.refresh_locked(http, retry, m, failures, now_failures, deadline, asker).await
    }

    /// The API refused token `rejected`: get a new one, unless another
    /// request already did.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn refresh_after_reject(
        &self,
        rejected: u64,
        http: &reqwest::Client,
        retry: &RetryConfig,
        m: &RequestMetrics,
        deadline: Option<Instant>,
        asker: Asker<'_>,
    ) -> Result<Arc<CachedToken>, HttpError> {
        let (_, failures) = self.cached();
        let _guard = self.lock_refresh(deadline).await?;
        let (cached, now_failures) = self.cached();
        if let Some(t) = cached.filter(|t| t.generation != rejected && t.refresh_at > Instant::now()) {
            return Ok(t);
        }
        self.refresh_locked(http, retry, m, failures, now_failures, deadline, asker).await
    }

    /// The single-flight refresh lock, waited for at most until `deadline`.
    async fn lock_refresh(&self, deadline: Option<Instant>) -> Result<tokio::sync::MutexGuard<'_, ()>, HttpError> {
        let Some(d) = deadline else { return Ok(self.refresh.lock().await) };
        tokio::time::timeout_at(tokio::time::Instant::from_std(d), self.refresh.lock()).await.map_err(|_| {
            HttpError::Transport {
                endpoint: redact_url(&self.url),
                kind: TransportKind::Timeout,
                attempts: 0,
                detail: "another request's token refresh outlasted this request's retry budget".into(),
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn refresh_locked(
        &self,
        http: &reqwest::Client,
        retry: &RetryConfig,
        m: &RequestMetrics,
        seen_failures: u64,
        now_failures: u64,
        deadline: Option<Instant>,
        asker: Asker<'_>,
    ) -> Result<Arc<CachedToken>, HttpError> {
        // A refresh failed while we waited: share its error instead of hammering the endpoint.
        if now_failures != seen_failures
            && let Ok(s) = self.state.lock()
            && let Some(e) = &s.last_error
        {
            return Err(e.clone());
        }
        match self.fetch(http, retry, m, deadline, asker).await {
            Ok((secret, expires_in)) => {
                let prefix = self.cfg.token_call.as_ref().map_or("Bearer ", |c| c.prefix.as_str());
                let header = sensitive(&format!("{prefix}{}", secret.expose_secret()))?;
                let mut s = self.state.lock().map_err(|_| HttpError::Config("token cache poisoned".into()))?;
                s.generation += 1;
                let token = Arc::new(CachedToken {
                    header,
                    secret,
                    refresh_at: Instant::now() + refresh_after(expires_in),
                    generation: s.generation,
                });
                s.token = Some(token.clone());
                s.last_error = None;
                tracing::debug!(endpoint = %redact_url(&self.url), expires_in_s = expires_in.as_secs(), "OAuth2 token refreshed");
                Ok(token)
            }
            Err(e) => {
                if let Ok(mut s) = self.state.lock() {
                    s.failures += 1;
                    s.last_error = Some(e.clone());
                    s.token = None;
                }
                Err(e)
            }
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        retry: &RetryConfig,
        m: &RequestMetrics,
        deadline: Option<Instant>,
        asker: Asker<'_>,
    ) -> Result<(SecretString, Duration), HttpError> {
        let endpoint = redact_url(&self.url);
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if !self.cfg.basic_client_auth {
            form.push(("client_id", &self.cfg.client_id));
            form.push(("client_secret", self.cfg.client_secret.expose_secret()));
        }
        if let Some(scope) = &self.cfg.scope {
            form.push(("scope", scope));
        }
        for (k, v) in &self.cfg.extra_params {
            form.push((k, v));
        }
        let started = Instant::now();
        // The token requests end when the asking request's budget does.
        let deadline = match (deadline, started.checked_add(retry.total_budget)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (mut attempt, mut slowdowns) = (0u32, 0u32);
        let mut last_failure: Option<HttpError> = None;
        loop {
            attempt += 1;
            if let Some(q) = &self.quota {
                let waited = Instant::now();
                q.until_ready().await;
                if waited.elapsed() >= Duration::from_millis(1) {
                    m.record_limiter_wait(waited.elapsed());
                }
            }
            let left = deadline.map_or(self.timeout, |d| d.saturating_duration_since(Instant::now()));
            let timeout = self.timeout.min(left);
            if timeout.is_zero() {
                return Err(last_failure.unwrap_or_else(|| HttpError::Transport {
                    endpoint: endpoint.clone(),
                    kind: TransportKind::Timeout,
                    attempts: attempt - 1,
                    detail: "the retry budget was spent before the token request could be sent".into(),
                }));
            }
            let mut req = http.post(self.url.clone()).header("Accept", "application/json").timeout(timeout);
            if self.cfg.token_call.is_none() {
                req = req.form(&form);
            }
            if self.cfg.basic_client_auth {
                let raw = format!("{}:{}", self.cfg.client_id, self.cfg.client_secret.expose_secret());
                req = req.header(AUTHORIZATION, sensitive(&format!("Basic {}", base64(raw.as_bytes())))?);
            }
            let answer = tokio::time::timeout(timeout, read_token_answer(req)).await.unwrap_or_else(|_| {
                Err(TokenFailure::Transport(
                    TransportKind::Timeout,
                    format!("the token request got no complete answer within {:.1}s", timeout.as_secs_f64()),
                ))
            });
            if let Ok((status, headers, body)) = &answer {
                crate::record::note(|| crate::record::Exchange {
                    method: "POST".into(),
                    url: self.url.clone(),
                    request_body: None,
                    token_request: true,
                    status: *status,
                    headers: headers.clone(),
                    body: bytes::Bytes::copy_from_slice(body),
                })
                .await;
            }
            let (class, failure) = match answer {
                Ok((status, headers, body)) => {
                    m.record_status(status);
                    if status == 200 || status == 201 {
                        if let Some(call) = &self.cfg.token_call {
                            let call = call.clone();
                            let parsed = crate::off_runtime(move || token_call_answer(&body, &call))
                                .await
                                .ok_or_else(|| HttpError::Config("the token response decoder failed".into()))?;
                            return parsed.map_err(|detail| HttpError::Protocol {
                                endpoint: endpoint.clone(),
                                detail: format!("HTTP {status} but {detail}"),
                            });
                        }
                        let parsed = crate::off_runtime(move || serde_json::from_slice::<TokenResponse>(&body))
                            .await
                            .ok_or_else(|| HttpError::Config("the token response decoder failed".into()))?;
                        // An answer that is not a token is the endpoint's fault, not the credentials'.
                        let parsed = parsed.map_err(|e| HttpError::Protocol {
                            endpoint: endpoint.clone(),
                            detail: format!(
                                "HTTP {status} but the token response is not the expected JSON ({})",
                                e.classify_name()
                            ),
                        })?;
                        return Ok((SecretString::from(parsed.access_token), expires_in(parsed.expires_in.as_ref())));
                    }
                    let class = classify(status, &headers, false, SystemTime::now());
                    // Scrubbed before it is cut short: a secret cut in two would survive.
                    let secrets = self.secret_forms();
                    let refusal = crate::off_runtime(move || refusal(&body, &secrets)).await.unwrap_or_default();
                    (class, self.token_error(&endpoint, status, attempt, &class, refusal))
                }
                Err(TokenFailure::TooLarge(status)) => {
                    m.record_status(status);
                    return Err(HttpError::BodyTooLarge { endpoint, limit: TOKEN_BODY_LIMIT });
                }
                Err(TokenFailure::Transport(kind, detail)) => {
                    m.record_transport_error();
                    let detail = if kind == TransportKind::Timeout && !detail.contains("within") {
                        format!("no complete answer within {:.1}s ({detail})", timeout.as_secs_f64())
                    } else {
                        detail
                    };
                    (
                        Class::Retry(None),
                        HttpError::Transport {
                            endpoint: endpoint.clone(),
                            kind,
                            attempts: attempt,
                            detail: self.scrub(&detail),
                        },
                    )
                }
            };
            let wait = match class {
                Class::Retry(hint) if attempt < retry.max_attempts.max(1) => {
                    backoff(retry, attempt).max(hint.unwrap_or_default())
                }
                Class::RateLimited(hint) if slowdowns < retry.max_rate_limited => {
                    slowdowns += 1;
                    if failure.status() != Some(429) {
                        m.record_rate_limited();
                    }
                    hint.unwrap_or_else(|| backoff(retry, slowdowns))
                }
                _ => return Err(failure),
            };
            if deadline.is_some_and(|d| Instant::now().checked_add(wait).is_none_or(|at| at > d)) {
                return Err(failure);
            }
            tracing::warn!(
                connection = asker.connection,
                endpoint = %endpoint,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %failure.what(),
                "token request failed; retrying"
            );
            m.record_retry(wait);
            last_failure = Some(failure);
            tokio::time::sleep(wait).await;
        }
    }

    /// What a token endpoint's refusal means: refused credentials (401/403;
    /// 400 with `invalid_client`, `unauthorized_client`, `invalid_grant`,
    /// `invalid_scope`, `access_denied`), an unknown tenant or a wrong URL
    /// (404; Microsoft's 400 `invalid_request` saying the tenant is not
    /// found), rate limiting, a server error (5xx, retried first), or another
    /// refusal of the request.
    fn token_error(&self, endpoint: &str, status: u16, attempts: u32, class: &Class, r: Refusal) -> HttpError {
        let endpoint = endpoint.to_string();
        let detail = r.detail.clone();
        let code = r.error.as_deref().unwrap_or_default();
        let describes = |words: &[&str]| {
            let text = r.detail.to_ascii_lowercase();
            words.iter().all(|w| text.contains(w))
        };
        match (status, class) {
            (_, Class::RateLimited(wait)) => HttpError::RateLimited { endpoint, status, attempts, wait: *wait },
            (401 | 403, _) => HttpError::Auth { endpoint, status: Some(status), detail },
            (400, _) if CREDENTIAL_ERRORS.contains(&code) => HttpError::Auth { endpoint, status: Some(status), detail },
            (400, _) if code == "invalid_request" && describes(&["tenant", "not found"]) => {
                HttpError::NotFound { endpoint, status, detail }
            }
            (404 | 410, _) => HttpError::NotFound { endpoint, status, detail },
            _ => HttpError::Status { endpoint, status, attempts, detail },
        }
    }

    /// Every secret this source knows: the client secret (and its Basic
    /// form), the current token.
    pub(crate) fn secret_forms(&self) -> Vec<String> {
        let secret = self.cfg.client_secret.expose_secret();
        let mut out = vec![secret.to_string(), base64(format!("{}:{secret}", self.cfg.client_id).as_bytes())];
        if let Ok(s) = self.state.lock()
            && let Some(t) = &s.token
        {
            out.push(t.secret.expose_secret().to_string());
        }
        out
    }

    /// Remove every secret this source knows from `text`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        scrub_all(text, &self.secret_forms())
    }
}

/// Why a token request got no usable answer.
enum TokenFailure {
    TooLarge(u16),
    Transport(TransportKind, String),
}

/// Send a token request and read its answer, at most [`TOKEN_BODY_LIMIT`] bytes.
async fn read_token_answer(
    req: reqwest::RequestBuilder,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), TokenFailure> {
    let transport = |e: reqwest::Error| {
        let (kind, detail) = describe_reqwest(e);
        TokenFailure::Transport(kind, detail)
    };
    let mut resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    if resp.content_length().is_some_and(|n| n > TOKEN_BODY_LIMIT as u64) {
        return Err(TokenFailure::TooLarge(status));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        let (kind, detail) = describe_reqwest(e);
        TokenFailure::Transport(if kind == TransportKind::Timeout { kind } else { TransportKind::Body }, detail)
    })? {
        if body.len() + chunk.len() > TOKEN_BODY_LIMIT {
            return Err(TokenFailure::TooLarge(status));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, std::mem::take(resp.headers_mut()), body))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "i/o",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "missing access_token",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// OAuth2 `error` codes that mean the client's credentials (or what they
/// may ask for) were refused (RFC 6749 section 5.2).
const CREDENTIAL_ERRORS: &[&str] =
    &["invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope", "access_denied"];

/// A token endpoint's refusal: its OAuth2 `error` code, if any, and a detail
/// (`error: description`, or a short snippet of the body), scrubbed.
#[derive(Debug, Default, PartialEq)]
struct Refusal {
    error: Option<String>,
    detail: String,
}

/// The OAuth2 error fields of a token endpoint's answer, or a short snippet,
/// scrubbed of `secrets` (before any of it is cut short).
fn refusal(body: &[u8], secrets: &[String]) -> Refusal {
    #[derive(Deserialize)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    let scrub = |text: &str| scrub_all(text, secrets);
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(OAuthError { error: Some(e), error_description: Some(d) }) => {
            Refusal { detail: format!("{}: {}", scrub(&e), snippet(scrub(&d).as_bytes(), 300)), error: Some(e) }
        }
        Ok(OAuthError { error: Some(e), .. }) => Refusal { detail: scrub(&e), error: Some(e) },
        _ => Refusal { error: None, detail: snippet(scrub(&String::from_utf8_lossy(body)).as_bytes(), 300) },
    }
}

/// `expires_in` as a number or a numeric string (older Microsoft endpoints);
/// one hour when absent or unreadable (a 401 still triggers a refresh).
fn expires_in(v: Option<&serde_json::Value>) -> Duration {
    let secs = match v {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s.min(86_400.0 * 365.0)),
        _ => Duration::from_secs(3600),
    }
}

/// A token-call answer: the token and its lifetime, or what is wrong
/// (never quoting the answer, which holds the token).
fn token_call_answer(body: &[u8], call: &crate::auth::TokenCall) -> Result<(SecretString, Duration), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the token answer is not JSON ({})", e.classify_name()))?;
    let at = |keys: &[String]| keys.iter().try_fold(&v, |cur, k| cur.get(k.as_str()));
    let token = match at(&call.token_field) {
        Some(serde_json::Value::String(t)) if !t.trim().is_empty() => t.trim().to_string(),
        _ => return Err(format!("the token answer has no token at `{}`", call.token_field.join("."))),
    };
    let lifetime =
        at(&call.expires_field).and_then(|e| lifetime_of(e, SystemTime::now())).unwrap_or(call.default_lifetime);
    Ok((SecretString::from(token), lifetime))
}

/// How long a token lives by its expiry field: a small number is a lifetime
/// in seconds, a large one an epoch instant (seconds or milliseconds), a
/// string an RFC 3339 instant (or such a number). An instant already past
/// (a clock behind the vendor's) counts as one minute, not as no time.
fn lifetime_of(v: &serde_json::Value, now: SystemTime) -> Option<Duration> {
    let until_epoch = |secs: f64| {
        let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs_f64();
        Some(Duration::from_secs_f64((secs - now).clamp(60.0, 86_400.0 * 365.0)))
    };
    let number = |n: f64| -> Option<Duration> {
        if !n.is_finite() || n <= 0.0 {
            None
        } else if n < 10_000_000.0 {
            Some(Duration::from_secs_f64(n))
        } else if n >= 1e12 {
            until_epoch(n / 1000.0)
        } else {
            until_epoch(n)
        }
    };
    match v {
        serde_json::Value::Number(n) => number(n.as_f64()?),
        serde_json::Value::String(s) => match s.trim().parse::<f64>() {
            Ok(n) => number(n),
            Err(_) => {
                let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
                until_epoch(t.timestamp_millis() as f64 / 1000.0)
            }
        },
        _ => None,
    }
}

/// Refresh ahead of expiry: 60 s early (at most half the lifetime), and never
/// later than 90 % of the lifetime.
pub(crate) fn refresh_after(lifetime: Duration) -> Duration {
    let lead = Duration::from_secs(60).min(lifetime / 2).max(lifetime / 10);
    lifetime.saturating_sub(lead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_call_lifetimes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let j = |v: serde_json::Value| lifetime_of(&v, now);
        assert_eq!(j(serde_json::json!(1200)), Some(Duration::from_secs(1200)));
        assert_eq!(j(serde_json::json!("1200")), Some(Duration::from_secs(1200)));
        assert_eq!(j(serde_json::json!(1_700_001_200)), Some(Duration::from_secs(1200)));
        assert_eq!(j(serde_json::json!(1_700_001_200_000u64)), Some(Duration::from_secs(1200)));
        // 2023-11-14T22:13:20Z is 1_700_000_000.
        assert_eq!(j(serde_json::json!("2023-11-14T22:33:20.000Z")), Some(Duration::from_secs(1200)));
        assert_eq!(j(serde_json::json!("2023-11-14T22:00:00Z")), Some(Duration::from_secs(60)), "past: a minute");
        assert_eq!(j(serde_json::json!("soon")), None);
        assert_eq!(j(serde_json::json!(0)), None);
        assert_eq!(j(serde_json::Value::Null), None);
    }

    #[test]
    fn token_call_answers() {
        let call = crate::auth::TokenCall::default();
        let (t, life) = token_call_answer(br#"{"token": "abc", "expires": 600}"#, &call).expect("a token");
        assert_eq!((t.expose_secret(), life), ("abc", Duration::from_secs(600)));
        let (_, life) = token_call_answer(br#"{"token": "abc"}"#, &call).expect("a token");
        assert_eq!(life, Duration::from_secs(1200), "no expiry: the default");
        let err = token_call_answer(br#"{"access_token": "secret-xyz"}"#, &call).expect_err("no token");
        assert!(err.contains("no token at `token`") && !err.contains("secret-xyz"), "{err}");
    }

    #[test]
    fn refresh_schedule() {
        assert_eq!(refresh_after(Duration::from_secs(1799)), Duration::from_secs_f64(1799.0 * 0.9));
        assert_eq!(refresh_after(Duration::from_secs(599)), Duration::from_secs(539));
        assert_eq!(refresh_after(Duration::from_secs(60)), Duration::from_secs(30));
        assert_eq!(refresh_after(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn expires_in_forms() {
        assert_eq!(expires_in(Some(&serde_json::json!(1799))), Duration::from_secs(1799));
        assert_eq!(expires_in(Some(&serde_json::json!("3599"))), Duration::from_secs(3599));
        assert_eq!(expires_in(Some(&serde_json::json!(-1))), Duration::from_secs(3600));
        assert_eq!(expires_in(None), Duration::from_secs(3600));
    }

    #[test]
    fn token_error_detail_is_scrubbed() {
        let secrets = ["hunter2-secret".to_string()];
        let body = br#"{"error":"invalid_client","error_description":"bad secret hunter2-secret"}"#;
        assert_eq!(refusal(body, &secrets).detail, "invalid_client: bad secret ***");
        // The form-encoded echo of the request, past the 300 characters kept:
        // scrubbed before it is cut, so no start of the secret survives.
        let secrets = ["hunter2~secret-with-a-tail".to_string()];
        let echo = format!("{}client_secret=hunter2%7Esecret-with-a-tail", "x".repeat(280));
        let d = refusal(echo.as_bytes(), &secrets).detail;
        assert!(!d.contains("hunter2") && !d.contains("%7E"), "{d}");
        let body = serde_json::json!({ "error": "invalid_request", "error_description": echo }).to_string();
        let r = refusal(body.as_bytes(), &secrets);
        assert!(r.detail.starts_with("invalid_request: xxx") && !r.detail.contains("hunter2"), "{r:?}");
        assert_eq!(r.error.as_deref(), Some("invalid_request"));
    }
}
