//! [`HttpError`]: what a request ends with when it does not succeed. Every
//! variant names the endpoint (scheme, host, path and query with secret-looking
//! values redacted) and, when there was an answer, its status.

use std::time::Duration;

use corral_core::{CheckOutcome, FetchError};
use reqwest::Url;

/// Why a request failed, after retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// Credentials were refused (401/403 from the API, or the OAuth2 token
    /// endpoint refused the client). `endpoint` is the URL that refused.
    #[error("authentication failed at {endpoint}{}: {detail}", status_suffix(*status))]
    Auth { endpoint: String, status: Option<u16>, detail: String },
    /// The vendor answered with a status that is not success, after retries
    /// where the status is transient.
    #[error("{endpoint} answered HTTP {status} after {attempts} attempt(s): {detail}")]
    Status { endpoint: String, status: u16, attempts: u32, detail: String },
    /// The vendor kept saying "slow down" past the retry budget, or asked for
    /// a longer wait than the budget allows.
    #[error("rate limited by {endpoint} (HTTP {status}) after {attempts} attempt(s){}", wait_suffix(*wait))]
    RateLimited { endpoint: String, status: u16, attempts: u32, wait: Option<Duration> },
    /// The vendor's rate-limit headers (or a pause after a 429) allow the next
    /// request only after `wait`, later than the retry budget allows.
    #[error("rate limited by {endpoint}: its rate-limit headers allow the next request only in {:.1}s, beyond the retry budget", wait.as_secs_f64())]
    Throttled { endpoint: String, wait: Duration },
    /// No (complete) answer: connect failure, timeout, connection reset, truncated body.
    #[error("request to {endpoint} failed after {attempts} attempt(s): {kind}: {detail}")]
    Transport { endpoint: String, kind: TransportKind, attempts: u32, detail: String },
    /// The vendor's answer breaks the protocol (a next link off the vendor's
    /// origin, paging in a loop).
    #[error("{endpoint}: {detail}")]
    Protocol { endpoint: String, detail: String },
    #[error("response from {endpoint} is larger than the {limit}-byte limit")]
    BodyTooLarge { endpoint: String, limit: usize },
    /// The request could not be built (bad base URL, invalid header).
    #[error("invalid request configuration: {0}")]
    Config(String),
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

fn wait_suffix(wait: Option<Duration>) -> String {
    wait.map(|w| format!("; vendor asked to wait {:.1}s", w.as_secs_f64())).unwrap_or_default()
}

/// What kind of transport failure ended a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Connect,
    Timeout,
    /// The connection broke while reading the body (truncated response).
    Body,
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "connect error",
            TransportKind::Timeout => "timed out",
            TransportKind::Body => "body interrupted",
            TransportKind::Other => "transport error",
        })
    }
}

impl HttpError {
    /// The HTTP status, when the vendor answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Auth { status, .. } => *status,
            HttpError::Status { status, .. } | HttpError::RateLimited { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The endpoint the error is about (redacted), if any.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            HttpError::Auth { endpoint, .. }
            | HttpError::Status { endpoint, .. }
            | HttpError::RateLimited { endpoint, .. }
            | HttpError::Throttled { endpoint, .. }
            | HttpError::Protocol { endpoint, .. }
            | HttpError::Transport { endpoint, .. }
            | HttpError::BodyTooLarge { endpoint, .. } => Some(endpoint),
            HttpError::Config(_) => None,
        }
    }

    /// Map a failed `check` request to the outcome operators see: refused
    /// credentials are an auth error naming endpoint and status; everything
    /// else (connect failures, timeouts, wrong base URL) is "unreachable".
    pub fn to_check_outcome(&self) -> CheckOutcome {
        let endpoint = self.endpoint().unwrap_or("(no endpoint)").to_string();
        match self {
            HttpError::Auth { status, detail, .. } => {
                CheckOutcome::AuthError { endpoint, status: *status, detail: detail.clone() }
            }
            HttpError::Status { status: s @ (401 | 403), detail, .. } => {
                CheckOutcome::AuthError { endpoint, status: Some(*s), detail: detail.clone() }
            }
            other => CheckOutcome::Unreachable { endpoint, detail: other.to_string() },
        }
    }
}

impl From<HttpError> for FetchError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Auth { endpoint, status, detail } => FetchError::Auth {
                endpoint,
                detail: format!("{}{detail}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default()),
            },
            HttpError::Config(msg) => FetchError::Other(format!("invalid request configuration: {msg}")),
            HttpError::Protocol { endpoint, detail } => FetchError::Protocol { endpoint, detail },
            other => {
                let endpoint = other.endpoint().unwrap_or_default().to_string();
                FetchError::Http { endpoint, detail: other.to_string() }
            }
        }
    }
}

/// Turn the result of a cheap request into a [`CheckOutcome`].
pub fn check_outcome<T>(result: &Result<T, HttpError>, ok_detail: impl Into<String>) -> CheckOutcome {
    match result {
        Ok(_) => CheckOutcome::Ok { detail: ok_detail.into() },
        Err(e) => e.to_check_outcome(),
    }
}

/// Query parameter names whose values are never shown.
const SECRET_KEYS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "sig",
    "signature",
    "auth",
    "credential",
    "code",
    "session",
];

/// A URL fit for error messages and logs: no user info, no fragment, and the
/// values of secret-looking query parameters replaced by `***`.
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    let mut first = true;
    for (k, v) in url.query_pairs() {
        out.push(if first { '?' } else { '&' });
        first = false;
        let lower = k.to_ascii_lowercase();
        let secret = SECRET_KEYS.iter().any(|s| lower.contains(s));
        out.push_str(&k);
        out.push('=');
        out.push_str(if secret { "***" } else { &v });
    }
    out
}

/// At most `max` bytes of a response body as text, on a char boundary, for error details.
pub(crate) fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max)]);
    let mut s: String = text.chars().filter(|c| !c.is_control() || *c == ' ').collect();
    if body.len() > max {
        s.push('…');
    }
    s.trim().to_string()
}

/// Describe a reqwest error without its URL (which may carry secrets in the
/// query) but with its cause chain (which says *why*).
pub(crate) fn describe_reqwest(e: reqwest::Error) -> (TransportKind, String) {
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else if e.is_body() || e.is_decode() {
        TransportKind::Body
    } else {
        TransportKind::Other
    };
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    (kind, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_and_secret_query_values() {
        let url = Url::parse("https://bob:hunter2@api.example.com:8443/v1/x?limit=5&api_key=abc&access_token=def#frag")
            .expect("valid url");
        let r = redact_url(&url);
        assert_eq!(r, "https://api.example.com:8443/v1/x?limit=5&api_key=***&access_token=***");
    }

    #[test]
    fn check_outcome_maps_auth_and_unreachable() {
        let e = HttpError::Status { endpoint: "https://h/p".into(), status: 403, attempts: 1, detail: "no".into() };
        assert!(matches!(e.to_check_outcome(), CheckOutcome::AuthError { status: Some(403), .. }));
        let e = HttpError::Transport {
            endpoint: "https://h/p".into(),
            kind: TransportKind::Connect,
            attempts: 3,
            detail: "refused".into(),
        };
        assert!(matches!(e.to_check_outcome(), CheckOutcome::Unreachable { .. }));
        let ok: Result<(), HttpError> = Ok(());
        assert!(check_outcome(&ok, "fine").is_ok());
    }

    #[test]
    fn converts_to_fetch_error_with_endpoint() {
        let e = HttpError::Auth {
            endpoint: "https://h/oauth2/token".into(),
            status: Some(401),
            detail: "invalid_client".into(),
        };
        let f: FetchError = e.into();
        assert_eq!(f.to_string(), "authentication failed at https://h/oauth2/token: HTTP 401: invalid_client");
    }
}
