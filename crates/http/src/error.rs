//! [`HttpError`]: what a request ends with when it does not succeed. Every
//! variant names the endpoint (scheme, host, path and query with secret-looking
//! values redacted) and, when there was an answer, its status.

use std::time::Duration;

use corral_core::{CheckOutcome, FetchError};
use reqwest::Url;

/// Why a request failed, after retries.
///
/// `Display` names the endpoint once; [`HttpError::what`] is the same text
/// without it, for messages that name the endpoint themselves
/// ([`FetchError`], [`CheckOutcome`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// Credentials were refused (401/403 from the API, or the OAuth2 token
    /// endpoint refused the client: `invalid_client`, `unauthorized_client`,
    /// `invalid_grant`, `invalid_scope`). `endpoint` is the URL that refused.
    #[error("authentication failed at {endpoint}: {}", self.what())]
    Auth { endpoint: String, status: Option<u16>, detail: String },
    /// Nothing there (404/410; or a token endpoint saying the tenant does not
    /// exist): a wrong base URL, path or tenant.
    #[error("{endpoint} {}", self.what())]
    NotFound { endpoint: String, status: u16, detail: String },
    /// The vendor answered with a status that is not success, after retries
    /// where the status is transient.
    #[error("{endpoint} {}", self.what())]
    Status { endpoint: String, status: u16, attempts: u32, detail: String },
    /// The vendor kept saying "slow down" past the retry budget, or asked for
    /// a longer wait than the budget allows.
    #[error("{endpoint}: {}", self.what())]
    RateLimited { endpoint: String, status: u16, attempts: u32, wait: Option<Duration> },
    /// The vendor's rate-limit headers (or a pause after a 429) allow the next
    /// request only after `wait`, later than the retry budget allows.
    #[error("rate limited by {endpoint}: {}", self.what())]
    Throttled { endpoint: String, wait: Duration },
    /// No (complete) answer: connect failure, timeout, connection reset, truncated body.
    #[error("request to {endpoint} failed: {}", self.what())]
    Transport { endpoint: String, kind: TransportKind, attempts: u32, detail: String },
    /// The vendor's answer breaks the protocol (a next link off the vendor's
    /// origin, paging in a loop, a token endpoint's 200 without a token).
    #[error("{endpoint}: {detail}")]
    Protocol { endpoint: String, detail: String },
    #[error("{endpoint}: {}", self.what())]
    BodyTooLarge { endpoint: String, limit: usize },
    /// The request could not be built (bad base URL, invalid header).
    #[error("invalid request configuration: {0}")]
    Config(String),
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
            HttpError::Status { status, .. }
            | HttpError::NotFound { status, .. }
            | HttpError::RateLimited { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The endpoint the error is about (redacted), if any.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            HttpError::Auth { endpoint, .. }
            | HttpError::NotFound { endpoint, .. }
            | HttpError::Status { endpoint, .. }
            | HttpError::RateLimited { endpoint, .. }
            | HttpError::Throttled { endpoint, .. }
            | HttpError::Protocol { endpoint, .. }
            | HttpError::Transport { endpoint, .. }
            | HttpError::BodyTooLarge { endpoint, .. } => Some(endpoint),
            HttpError::Config(_) => None,
        }
    }

    /// What went wrong, without the endpoint (which `Display` adds once).
    pub fn what(&self) -> String {
        match self {
            HttpError::Auth { status: Some(s), detail, .. } => format!("HTTP {s}: {detail}"),
            HttpError::Auth { status: None, detail, .. } => detail.clone(),
            HttpError::NotFound { status, detail, .. } => format!("answered HTTP {status} (not found): {detail}"),
            HttpError::Status { status, attempts, detail, .. } => {
                format!("answered HTTP {status} after {attempts} attempt(s): {detail}")
            }
            HttpError::RateLimited { status, attempts, wait, .. } => {
                format!("rate limited (HTTP {status}) after {attempts} attempt(s){}", wait_suffix(*wait))
            }
            HttpError::Throttled { wait, .. } => format!(
                "its rate-limit headers allow the next request only in {:.1}s, beyond the retry budget",
                wait.as_secs_f64()
            ),
            HttpError::Transport { kind, attempts, detail, .. } => {
                format!("{kind} after {attempts} attempt(s): {detail}")
            }
            HttpError::Protocol { detail, .. } => detail.clone(),
            HttpError::BodyTooLarge { limit, .. } => format!("the response is larger than the {limit}-byte limit"),
            HttpError::Config(msg) => format!("invalid request configuration: {msg}"),
        }
    }

    /// Map a failed `check` request to what operators need to know: refused
    /// credentials, nothing there (wrong base URL or tenant), no answer
    /// (connect, DNS, TLS, timeout), a server error or rate limiting that
    /// outlasted the check's retries, or another refusal.
    pub fn to_check_outcome(&self) -> CheckOutcome {
        let endpoint = self.endpoint().unwrap_or("(no endpoint)").to_string();
        match self {
            HttpError::Auth { status, detail, .. } => {
                CheckOutcome::AuthError { endpoint, status: *status, detail: detail.clone() }
            }
            HttpError::Status { status: s @ (401 | 403), detail, .. } => {
                CheckOutcome::AuthError { endpoint, status: Some(*s), detail: detail.clone() }
            }
            HttpError::NotFound { status, detail, .. } => {
                CheckOutcome::NotFound { endpoint, status: *status, detail: detail.clone() }
            }
            HttpError::Status { status: 429, .. } | HttpError::RateLimited { .. } | HttpError::Throttled { .. } => {
                CheckOutcome::RateLimited { endpoint, detail: self.what() }
            }
            HttpError::Status { status: s @ 500..=599, attempts, detail, .. } => {
                CheckOutcome::ServerError { endpoint, status: *s, attempts: *attempts, detail: detail.clone() }
            }
            HttpError::Transport { .. } => CheckOutcome::Unreachable { endpoint, detail: self.what() },
            HttpError::Status { status, detail, .. } => {
                CheckOutcome::Failed { endpoint, status: Some(*status), detail: detail.clone() }
            }
            HttpError::Protocol { .. } | HttpError::BodyTooLarge { .. } | HttpError::Config(_) => {
                CheckOutcome::Failed { endpoint, status: None, detail: self.what() }
            }
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
                FetchError::Http { endpoint, detail: other.what() }
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

    const URL: &str = "https://api.example.com/devices/v1?limit=5";

    fn every_error() -> Vec<HttpError> {
        let endpoint = || URL.to_string();
        vec![
            HttpError::Auth { endpoint: endpoint(), status: Some(401), detail: "invalid_client".into() },
            HttpError::Auth { endpoint: endpoint(), status: None, detail: "no token".into() },
            HttpError::NotFound { endpoint: endpoint(), status: 404, detail: "Not Found".into() },
            HttpError::Status { endpoint: endpoint(), status: 503, attempts: 4, detail: "try later".into() },
            HttpError::Status { endpoint: endpoint(), status: 400, attempts: 1, detail: "bad filter".into() },
            HttpError::RateLimited {
                endpoint: endpoint(),
                status: 429,
                attempts: 3,
                wait: Some(Duration::from_secs(7)),
            },
            HttpError::Throttled { endpoint: endpoint(), wait: Duration::from_secs(1000) },
            HttpError::Transport {
                endpoint: endpoint(),
                kind: TransportKind::Timeout,
                attempts: 2,
                detail: "operation timed out".into(),
            },
            HttpError::Protocol { endpoint: endpoint(), detail: "next link off the origin".into() },
            HttpError::BodyTooLarge { endpoint: endpoint(), limit: 10 },
        ]
    }

    /// Issue 9, item 9: each message names the URL once (the fetch error's
    /// detail used to be the whole `HttpError` text, URL included).
    #[test]
    fn every_message_names_the_endpoint_once() {
        for e in every_error() {
            let direct = e.to_string();
            let check = e.to_check_outcome().to_string();
            let fetch = FetchError::from(e.clone()).to_string();
            for text in [&direct, &check, &fetch] {
                assert_eq!(text.matches("api.example.com").count(), 1, "{e:?} renders as {text:?}");
            }
        }
        let e = HttpError::Status { endpoint: URL.into(), status: 503, attempts: 4, detail: "try later".into() };
        assert_eq!(
            FetchError::from(e).to_string(),
            format!("request to {URL} failed: answered HTTP 503 after 4 attempt(s): try later")
        );
    }

    /// Issue 9, item 6: `check` names what failed.
    #[test]
    fn check_outcome_names_what_failed() {
        let kinds: Vec<&str> = every_error()
            .iter()
            .map(|e| match e.to_check_outcome() {
                CheckOutcome::Ok { .. } => "ok",
                CheckOutcome::AuthError { .. } => "credentials",
                CheckOutcome::NotFound { .. } => "not found",
                CheckOutcome::Unreachable { .. } => "unreachable",
                CheckOutcome::ServerError { .. } => "server error",
                CheckOutcome::RateLimited { .. } => "rate limited",
                CheckOutcome::Failed { .. } => "failed",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "credentials",
                "credentials",
                "not found",
                "server error",
                "failed",
                "rate limited",
                "rate limited",
                "unreachable",
                "failed",
                "failed"
            ]
        );
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
