//! The request loop: limiter -> auth -> send -> read body -> classify ->
//! (refresh | back off | wait as told | fail).

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use corral_core::metrics::RequestMetrics;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{StatusCode, Url};

use crate::client::{Body, RequestBuilder, Response};
use crate::error::{HttpError, TransportKind, describe_reqwest, redact_url, snippet};
use crate::ratelimit::Asker;
use crate::retry::{Class, backoff, backoff_cap, classify};

/// How much of an error answer is read (for its detail) before giving up on it.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Never pre-allocate more than this on the word of a `Content-Length`.
const MAX_PREALLOC: usize = 64 * 1024 * 1024;
/// Length of a vendor's error body quoted in an error.
const DETAIL_CHARS: usize = 300;

enum Outcome {
    Answer { status: StatusCode, headers: HeaderMap, body: Bytes, url: Url },
    Transport(TransportKind, String),
    TooLarge(StatusCode),
}

pub(crate) async fn execute(rb: RequestBuilder) -> Result<Response, HttpError> {
    let RequestBuilder { client, method, url, headers, body: rb_body, idempotent, allow, timeout, max_body, retry } =
        rb;
    let url = url?;
    let shared = &client.shared;
    let m_arc: &std::sync::Arc<RequestMetrics> = &client.metrics;
    let m: &RequestMetrics = m_arc;
    let endpoint = redact_url(&url);
    let asker = client.asker(&endpoint);
    // Credentials go only to the vendor's own origin.
    let same_origin = url.origin() == shared.base.origin();
    let oauth = shared.oauth.as_ref().filter(|_| same_origin);
    let signer = match &shared.auth {
        crate::Auth::Signed(s) if same_origin => Some(s),
        _ => None,
    };
    // A signed form goes as the bytes that were signed.
    let rb_body = match rb_body {
        Body::Form(fields) if signer.is_some() => {
            let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
            Body::Bytes { data: Bytes::from(encoded), content_type: "application/x-www-form-urlencoded" }
        }
        other => other,
    };
    let max_body = max_body.unwrap_or(shared.max_body);
    let per_attempt = timeout.unwrap_or(shared.total_timeout);
    let started = Instant::now();
    let deadline = started.checked_add(retry.total_budget);
    let (mut attempts, mut errors, mut slowdowns, mut refreshed) = (0u32, 0u32, 0u32, false);
    let mut last_failure: Option<HttpError> = None;

    loop {
        attempts += 1;
        let mut req = shared.http.request(method.clone(), url.clone()).headers(headers.clone());
        let mut token_generation = 0;
        let mut signed_generation = 0;
        // The token first: a slow token endpoint must not hold an in-flight slot.
        if let Some(o) = oauth {
            let t = o.token(&shared.http, &retry, m, deadline, asker).await?;
            token_generation = t.generation;
            req = req.header(o.header.clone(), t.header.clone());
        } else if same_origin && let Some((name, value)) = &shared.static_auth {
            req = req.header(name.clone(), value.clone());
        }
        let permit = match shared.limiter.acquire(m, deadline, asker).await {
            Ok(p) => p,
            Err(wait) => return Err(HttpError::Throttled { endpoint, wait }),
        };
        // One attempt never runs past the request's retry budget.
        let left = deadline.map_or(per_attempt, |d| d.saturating_duration_since(Instant::now()));
        let attempt_timeout = per_attempt.min(left);
        if attempt_timeout.is_zero() {
            return Err(last_failure.unwrap_or_else(|| HttpError::Transport {
                endpoint: endpoint.clone(),
                kind: TransportKind::Timeout,
                attempts: attempts - 1,
                detail: "the retry budget was spent before the request could be sent".into(),
            }));
        }
        req = req.timeout(attempt_timeout);
        if let Some(signer) = signer {
            let body: &[u8] = match &rb_body {
                Body::Bytes { data, .. } => data,
                Body::None | Body::Form(_) => &[],
            };
            let mut signed_headers = headers.clone();
            if let Body::Bytes { content_type, .. } = &rb_body {
                signed_headers.insert(CONTENT_TYPE, reqwest::header::HeaderValue::from_static(content_type));
            }
            let sig = signer
                .sign(crate::ToSign { method: &method, url: &url, headers: &signed_headers, body, metrics: m_arc })
                .await?;
            signed_generation = sig.generation;
            for (name, mut value) in sig.headers {
                value.set_sensitive(true);
                req = req.header(name, value);
            }
        }
        req = match &rb_body {
            Body::None => req,
            Body::Bytes { data, content_type } => req.header(CONTENT_TYPE, *content_type).body(data.clone()),
            Body::Form(fields) => req.form(fields),
        };
        let allowed = |s: StatusCode| s.is_success() || allow.contains(&s.as_u16());

        let attempt_started = Instant::now();
        let requested = &url;
        let (wait, failure) = match watched(read(req, max_body, allowed), shared.slow_warn, asker, attempts).await {
            Outcome::TooLarge(status) => {
                m.record_status(status.as_u16());
                return Err(HttpError::BodyTooLarge { endpoint, limit: max_body });
            }
            Outcome::Transport(kind, detail) => {
                m.record_transport_error();
                drop(permit);
                let detail = if kind == TransportKind::Timeout {
                    format!("no complete answer within {:.1}s ({detail})", attempt_timeout.as_secs_f64())
                } else {
                    detail
                };
                let failure =
                    HttpError::Transport { endpoint: endpoint.clone(), kind, attempts, detail: client.scrub(&detail) };
                // Only a failed connect proves a non-idempotent request was never sent.
                errors += 1;
                if !(idempotent || kind == TransportKind::Connect) || errors >= retry.max_attempts {
                    return Err(failure);
                }
                (backoff(&retry, errors), failure)
            }
            Outcome::Answer { status, headers, body, url } => {
                crate::record::note(|| crate::record::Exchange {
                    method: method.to_string(),
                    url: requested.clone(),
                    request_body: match &rb_body {
                        Body::Bytes { data, .. } => Some(data.clone()),
                        Body::None | Body::Form(_) => None,
                    },
                    token_request: false,
                    status: status.as_u16(),
                    headers: headers.clone(),
                    body: body.clone(),
                })
                .await;
                m.record_status(status.as_u16());
                shared.limiter.observe(&headers, &permit, asker);
                drop(permit);
                if allow.contains(&status.as_u16()) {
                    return Ok(Response { status, headers, body, url });
                }
                let code = status.as_u16();
                // Scrubbed before it is cut short: a secret cut in two would survive.
                let detail = || snippet(client.scrub(&String::from_utf8_lossy(&body)).as_bytes(), DETAIL_CHARS);
                let slow_down = shared.slow_down.as_ref().is_some_and(|r| r.matches(code, &headers, &body));
                let class = if slow_down {
                    Class::RateLimited(crate::retry::wait_from_headers(&headers, SystemTime::now()))
                } else {
                    classify(code, &headers, oauth.is_some(), SystemTime::now())
                };
                if let Some(signer) = signer
                    && matches!(code, 400 | 401 | 403)
                    && matches!(class, Class::ConfigError)
                    && !refreshed
                    && signer.refused(signed_generation, code, &body, m_arc).await?
                {
                    refreshed = true;
                    tracing::debug!(%endpoint, status = code, "signed request refused; trying once more with renewed credentials");
                    m.record_retry(Duration::ZERO);
                    continue;
                }
                match class {
                    Class::Success => return Ok(Response { status, headers, body, url }),
                    Class::RefreshAuth => {
                        let Some(o) = oauth else {
                            return Err(HttpError::Auth { endpoint, status: Some(code), detail: detail() });
                        };
                        if refreshed {
                            return Err(HttpError::Auth {
                                endpoint,
                                status: Some(code),
                                detail: format!(
                                    "a fresh token from {} was refused too: {}",
                                    redact_url(&o.url),
                                    detail()
                                ),
                            });
                        }
                        refreshed = true;
                        tracing::debug!(%endpoint, "HTTP 401 with an OAuth2 token; refreshing it once");
                        o.refresh_after_reject(token_generation, &shared.http, &retry, m, deadline, asker).await?;
                        m.record_retry(Duration::ZERO);
                        continue;
                    }
                    Class::ConfigError if code == 401 || code == 403 => {
                        return Err(HttpError::Auth { endpoint, status: Some(code), detail: detail() });
                    }
                    Class::ConfigError if code == 404 || code == 410 => {
                        return Err(HttpError::NotFound { endpoint, status: code, detail: detail() });
                    }
                    Class::ConfigError | Class::Fatal => {
                        return Err(HttpError::Status { endpoint, status: code, attempts, detail: detail() });
                    }
                    Class::RateLimited(hint) => {
                        if code != 429 {
                            m.record_rate_limited();
                        }
                        shared.limiter.rate_limited();
                        slowdowns += 1;
                        let failure =
                            HttpError::RateLimited { endpoint: endpoint.clone(), status: code, attempts, wait: hint };
                        if slowdowns > retry.max_rate_limited {
                            return Err(failure);
                        }
                        // Without a vendor hint: "equal jitter", never a near-zero wait. A hint of
                        // zero is no hint: Qualys refuses a call over its concurrency limit (409, code
                        // 1960) with `X-RateLimit-ToWait-Sec: 0`, and coming back at once would only
                        // collect refusals until a running call ends.
                        let wait = hint
                            .filter(|d| !d.is_zero())
                            .unwrap_or_else(|| backoff_cap(&retry, slowdowns) / 2 + backoff(&retry, slowdowns) / 2);
                        if started.elapsed().saturating_add(wait) <= retry.total_budget {
                            shared.limiter.pause_for(wait);
                        }
                        tracing::warn!(connection = asker.connection, stream = asker.stream, %endpoint, status = code, wait_ms = wait.as_millis() as u64, "vendor rate limit; waiting");
                        (wait, failure)
                    }
                    Class::Retry(hint) => {
                        errors += 1;
                        let failure =
                            HttpError::Status { endpoint: endpoint.clone(), status: code, attempts, detail: detail() };
                        if !idempotent || errors >= retry.max_attempts {
                            return Err(failure);
                        }
                        (backoff(&retry, errors).max(hint.unwrap_or_default()), failure)
                    }
                }
            }
        };
        if started.elapsed().saturating_add(wait) > retry.total_budget {
            return Err(failure);
        }
        let took = attempt_started.elapsed();
        let wait_ms = wait.as_millis() as u64;
        if matches!(failure, HttpError::Transport { kind: TransportKind::Timeout, .. })
            || (!shared.slow_warn.is_zero() && took >= shared.slow_warn)
        {
            tracing::warn!(connection = asker.connection, stream = asker.stream, %endpoint, attempt = attempts, took_s = took.as_secs(), wait_ms, error = %failure.what(), "attempt failed after a long wait; retrying");
        } else {
            tracing::debug!(%endpoint, attempt = attempts, wait_ms, error = %failure, "retrying");
        }
        m.record_retry(wait);
        last_failure = Some(failure);
        tokio::time::sleep(wait).await;
    }
}

/// `attempt`, logging a warning every `every` while it waits (zero: never).
async fn watched(attempt: impl Future<Output = Outcome>, every: Duration, asker: Asker<'_>, n: u32) -> Outcome {
    if every.is_zero() {
        return attempt.await;
    }
    tokio::pin!(attempt);
    let began = tokio::time::Instant::now();
    let mut next = began + every;
    loop {
        tokio::select! {
            out = &mut attempt => return out,
            _ = tokio::time::sleep_until(next) => {
                tracing::warn!(
                    connection = asker.connection,
                    stream = asker.stream,
                    endpoint = %asker.endpoint,
                    attempt = n,
                    waiting_s = began.elapsed().as_secs(),
                    "request in flight, still waiting for the vendor's answer"
                );
                next += every;
            }
        }
    }
}

/// Send and read the body: success bodies whole (up to `max`), error bodies
/// up to [`ERROR_BODY_LIMIT`] (only their start is ever quoted).
async fn read(req: reqwest::RequestBuilder, max: usize, allowed: impl Fn(StatusCode) -> bool) -> Outcome {
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let (kind, detail) = describe_reqwest(e);
            return Outcome::Transport(kind, detail);
        }
    };
    let status = resp.status();
    let keep_all = allowed(status);
    let limit = if keep_all { max } else { ERROR_BODY_LIMIT.min(max) };
    let declared = resp.content_length().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if keep_all && declared.is_some_and(|n| n > max) {
        return Outcome::TooLarge(status);
    }
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut len = 0usize;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if len + chunk.len() > limit {
                    if keep_all {
                        return Outcome::TooLarge(status);
                    }
                    break; // enough of an error body
                }
                len += chunk.len();
                match (&mut buf, first.take()) {
                    (Some(b), _) => b.extend_from_slice(&chunk),
                    (None, None) => first = Some(chunk),
                    (None, Some(f)) => {
                        let cap = declared.unwrap_or(0).clamp(len, limit.min(MAX_PREALLOC).max(len));
                        let mut b = BytesMut::with_capacity(cap);
                        b.extend_from_slice(&f);
                        b.extend_from_slice(&chunk);
                        buf = Some(b);
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                // A connection cut mid-body: a truncated answer is never passed on.
                let (kind, detail) = describe_reqwest(e);
                let kind = if kind == TransportKind::Timeout { kind } else { TransportKind::Body };
                return Outcome::Transport(kind, detail);
            }
        }
    }
    let body = match (buf, first) {
        (Some(b), _) => b.freeze(),
        (None, Some(f)) => f,
        (None, None) => Bytes::new(),
    };
    let url = resp.url().clone();
    let headers = std::mem::take(resp.headers_mut());
    Outcome::Answer { status, headers, body, url }
}
