//! [`HttpClient`]: one persistent, pooled client per connection, and the
//! request builder adapters use. Bodies come back as raw [`Bytes`]; nothing is
//! decoded on the runtime.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use corral_core::CheckOutcome;
use corral_core::metrics::RequestMetrics;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::auth::{Auth, scrub_all, static_header};
use crate::config::{HttpConfig, RetryConfig};
use crate::error::{HttpError, redact_url};
use crate::oauth::TokenSource;
use crate::ratelimit::Limiter;

/// One vendor connection's HTTP client. Cheap to clone: clones share the
/// connection pool, the rate limiter and the token cache.
#[derive(Clone)]
pub struct HttpClient {
    pub(crate) shared: Arc<Shared>,
    pub(crate) metrics: Arc<RequestMetrics>,
    /// The stream being fetched, for log lines.
    pub(crate) stream: Option<Arc<str>>,
}

/// How long [`HttpClient::check`] may take, retries included.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) struct Shared {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) auth: Auth,
    pub(crate) static_auth: Option<(HeaderName, HeaderValue)>,
    pub(crate) oauth: Option<TokenSource>,
    pub(crate) limiter: Limiter,
    pub(crate) retry: RetryConfig,
    pub(crate) max_body: usize,
    pub(crate) total_timeout: Duration,
    pub(crate) slow_warn: Duration,
    /// The connection's name for log lines ("-" when not configured).
    pub(crate) connection: String,
    pub(crate) slow_down: Option<crate::SlowDownRule>,
}

impl HttpClient {
    /// Build the client. Validates the base URL, headers and credentials'
    /// header encoding; nothing is sent.
    pub fn new(config: HttpConfig, metrics: Arc<RequestMetrics>) -> Result<Self, HttpError> {
        let base = Url::parse(config.base_url.trim())
            .map_err(|e| HttpError::Config(format!("base_url is not a valid URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(HttpError::Config("base_url must be an http(s) URL with a host".into()));
        }
        let mut defaults = HeaderMap::new();
        for (name, value) in &config.extra_headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Config(format!("invalid header name `{name}`")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| HttpError::Config(format!("invalid value for header `{name}`")))?;
            defaults.append(n, v);
        }
        let origin = base.origin();
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .default_headers(defaults)
            .gzip(true)
            .connect_timeout(config.timeouts.connect)
            .read_timeout(config.timeouts.read)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.rate.max_in_flight.max(1))
            .tcp_nodelay(true)
            // Credentials (some in non-standard headers) must not follow a redirect off the vendor's host.
            .redirect(reqwest::redirect::Policy::custom(move |a| {
                if a.previous().len() >= 10 || a.url().origin() != origin { a.stop() } else { a.follow() }
            }))
            .build()
            .map_err(|e| HttpError::Config(format!("cannot build the HTTP client: {}", e.without_url())))?;
        let static_auth = static_header(&config.auth)?;
        let oauth = match &config.auth {
            Auth::OAuth2ClientCredentials(c) => {
                Some(TokenSource::new(c.clone(), resolve(&base, &c.token_url)?, config.timeouts.total)?)
            }
            _ => None,
        };
        let shared = Shared {
            http,
            base,
            auth: config.auth.clone(),
            static_auth,
            oauth,
            limiter: Limiter::new(&config.rate),
            retry: config.retry,
            max_body: config.max_body_bytes,
            total_timeout: config.timeouts.total,
            slow_warn: config.timeouts.slow_warn,
            connection: config.connection.clone().unwrap_or_else(|| "-".to_string()),
            slow_down: config.slow_down.clone(),
        };
        Ok(HttpClient { shared: Arc::new(shared), metrics, stream: None })
    }

    /// The same client (pool, limiter, tokens) recording into other metrics:
    /// adapters build their client once and call
    /// `client.with_metrics(ctx.requests.clone())` in each `fetch`.
    pub fn with_metrics(&self, metrics: Arc<RequestMetrics>) -> HttpClient {
        HttpClient { shared: self.shared.clone(), metrics, stream: self.stream.clone() }
    }

    /// The same client naming `stream` in its log lines (a long wait, a slow answer).
    pub fn with_stream(&self, stream: &str) -> HttpClient {
        HttpClient { stream: Some(Arc::from(stream)), ..self.clone() }
    }

    /// The connection and stream for log lines.
    pub(crate) fn asker<'a>(&'a self, endpoint: &'a str) -> crate::ratelimit::Asker<'a> {
        crate::ratelimit::Asker {
            connection: &self.shared.connection,
            stream: self.stream.as_deref().unwrap_or("-"),
            endpoint,
        }
    }

    pub fn metrics(&self) -> &Arc<RequestMetrics> {
        &self.metrics
    }

    pub fn base_url(&self) -> &Url {
        &self.shared.base
    }

    /// Resolve a path (appended to the base URL's path) or an absolute URL
    /// (used as is: Graph's `@odata.nextLink`, a `Link` header).
    pub fn url(&self, path_or_url: &str) -> Result<Url, HttpError> {
        resolve(&self.shared.base, path_or_url)
    }

    pub fn request(&self, method: Method, path_or_url: &str) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            url: self.url(path_or_url),
            headers: HeaderMap::new(),
            body: Body::None,
            idempotent: true,
            allow: Vec::new(),
            timeout: None,
            max_body: None,
            retry: self.shared.retry,
        }
    }
    pub fn get(&self, path_or_url: &str) -> RequestBuilder {
        self.request(Method::GET, path_or_url)
    }
    pub fn post(&self, path_or_url: &str) -> RequestBuilder {
        self.request(Method::POST, path_or_url)
    }
    /// POST a JSON body (serialized once, resent as is on retries).
    pub fn post_json(&self, path_or_url: &str, body: &serde_json::Value) -> RequestBuilder {
        self.post(path_or_url).json(body)
    }
    /// POST an `application/x-www-form-urlencoded` body.
    pub fn post_form<K: AsRef<str>, V: AsRef<str>>(&self, path_or_url: &str, fields: &[(K, V)]) -> RequestBuilder {
        self.post(path_or_url).form(fields)
    }

    /// One cheap GET for [`corral_core::Adapter::check`] within
    /// [`CHECK_TIMEOUT`]; see [`HttpClient::check_within`].
    pub async fn check(&self, path_or_url: &str) -> CheckOutcome {
        self.check_within(path_or_url, CHECK_TIMEOUT).await
    }

    /// One cheap GET answering within about `limit`: transient failures
    /// (5xx, timeouts, connect errors, a 429 with a short wait, the same from
    /// the token endpoint) are retried while time is left, each attempt cut
    /// at what is left; the failure is named ([`HttpError::to_check_outcome`]).
    pub async fn check_within(&self, path_or_url: &str, limit: Duration) -> CheckOutcome {
        let result = self.get(path_or_url).retry(RetryConfig::within(limit)).send_bytes().await;
        match result {
            Ok(r) => CheckOutcome::Ok { detail: format!("{} answered HTTP {}", r.endpoint(), r.status.as_u16()) },
            Err(e) => e.to_check_outcome(),
        }
    }

    /// Remove every secret the client knows from `text` (for error details
    /// that quote a vendor's answer).
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut secrets = self.shared.auth.secret_forms();
        if let Some(o) = &self.shared.oauth {
            secrets.extend(o.secret_forms());
        }
        scrub_all(text, &secrets)
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base_url", &redact_url(&self.shared.base))
            .field("auth", &self.shared.auth)
            .field("limiter", &self.shared.limiter)
            .field("retry", &self.shared.retry)
            .finish_non_exhaustive()
    }
}

pub(crate) fn resolve(base: &Url, path_or_url: &str) -> Result<Url, HttpError> {
    let p = path_or_url.trim();
    let lower = p.get(..8).unwrap_or(p).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Url::parse(p).map_err(|e| HttpError::Config(format!("not a valid URL ({e})")));
    }
    let mut joined = base.clone();
    joined.set_query(None);
    joined.set_fragment(None);
    let (path, query) = match p.split_once('?') {
        Some((path, q)) => (path, Some(q)),
        None => (p, None),
    };
    let prefix = joined.path().trim_end_matches('/').to_string();
    let path = path.trim_start_matches('/');
    joined.set_path(&if path.is_empty() { format!("{prefix}/") } else { format!("{prefix}/{path}") });
    joined.set_query(query);
    Ok(joined)
}

#[derive(Clone)]
pub(crate) enum Body {
    None,
    Bytes { data: Bytes, content_type: &'static str },
    Form(Vec<(String, String)>),
}

/// One request being assembled. Nothing is sent until [`RequestBuilder::send_bytes`].
pub struct RequestBuilder {
    pub(crate) client: HttpClient,
    pub(crate) method: Method,
    pub(crate) url: Result<Url, HttpError>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    pub(crate) idempotent: bool,
    pub(crate) allow: Vec<u16>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_body: Option<usize>,
    pub(crate) retry: RetryConfig,
}

impl RequestBuilder {
    /// Append query parameters (percent-encoded).
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        if let Ok(url) = &mut self.url {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k.as_ref(), v.as_ref());
            }
        }
        self
    }
    /// Add a header. An invalid name or value fails the request when sent.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => self.url = Err(HttpError::Config(format!("invalid header `{name}`"))),
        }
        self
    }
    pub fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(v) => self.body = Body::Bytes { data: Bytes::from(v), content_type: "application/json" },
            Err(e) => self.url = Err(HttpError::Config(format!("request body is not serializable: {e}"))),
        }
        self
    }
    pub fn form<K: AsRef<str>, V: AsRef<str>>(mut self, fields: &[(K, V)]) -> Self {
        self.body = Body::Form(fields.iter().map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())).collect());
        self
    }
    pub fn body(mut self, data: Bytes, content_type: &'static str) -> Self {
        self.body = Body::Bytes { data, content_type };
        self
    }
    /// Whether resending after an ambiguous failure is safe (default true:
    /// vendor reads, including POST searches). Set false for requests with
    /// side effects (creating an export job): then only connect failures and
    /// "slow down" answers are retried.
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }
    /// Return this status as `Ok(Response)` instead of an error, without
    /// retrying (Tenable: 404 for an expired chunk, 409 for a duplicate export).
    pub fn allow_status(mut self, status: u16) -> Self {
        self.allow.push(status);
        self
    }
    /// Override the whole-request timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Override the client's maximum body size for this request.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body = Some(n);
        self
    }
    /// Override the client's retry policy for this request.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Send (with rate limiting, auth and retries) and read the whole body.
    /// Success (2xx, or an [`allow_status`](Self::allow_status)) is `Ok`;
    /// everything else, after retries, is an [`HttpError`] naming the endpoint.
    pub async fn send_bytes(self) -> Result<Response, HttpError> {
        crate::send::execute(self).await
    }
}

/// A complete answer: status, headers, the whole body as bytes, and the final URL.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub url: Url,
}

impl Response {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The `Link: <...>; rel="next"` target, resolved against this response's
    /// URL into an absolute URL to pass back to [`HttpClient::get`].
    pub fn next_link(&self) -> Option<String> {
        let link = crate::paginate::next_link(&self.headers)?;
        self.url.join(&link).ok().map(String::from)
    }
    /// The URL for error messages and page locators (secrets redacted).
    pub fn endpoint(&self) -> String {
        redact_url(&self.url)
    }
    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_and_client_are_send_and_sync() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<HttpClient>();
        assert_sync::<Response>();
        let c = HttpClient::new(HttpConfig::new("https://api.example.com"), Arc::default()).expect("client");
        let fut = c.get("/x").send_bytes();
        assert_send(&fut);
        let check = c.check("/x");
        assert_send(&check);
    }

    #[test]
    fn rejects_bad_base_urls_without_echoing_secrets() {
        for bad in ["not a url", "ftp://host/x", "file:///etc/passwd"] {
            let e = HttpClient::new(HttpConfig::new(bad), Arc::default()).expect_err("invalid base");
            assert!(matches!(e, HttpError::Config(_)), "{e:?}");
        }
        let cfg = HttpConfig::new("https://h").with_header("X-Requested-With", "line\nbreak");
        assert!(matches!(HttpClient::new(cfg, Arc::default()), Err(HttpError::Config(_))));
        let token = secrecy::SecretString::from("hunter2\nInjected: yes");
        let cfg = HttpConfig::new("https://h").with_auth(Auth::Bearer(token));
        let e = HttpClient::new(cfg, Arc::default()).expect_err("newline in a token");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    }

    #[test]
    fn resolves_paths_under_the_base_prefix() {
        let base = Url::parse("https://corp.example/jamf/").expect("url");
        let r = |p: &str| resolve(&base, p).map(String::from).unwrap_or_else(|e| e.to_string());
        assert_eq!(r("/api/v1/computers"), "https://corp.example/jamf/api/v1/computers");
        assert_eq!(r("api/v1/x?page=0&sort=id:asc"), "https://corp.example/jamf/api/v1/x?page=0&sort=id:asc");
        let bare = Url::parse("https://api.crowdstrike.com").expect("url");
        assert_eq!(
            resolve(&bare, "/devices/queries/devices/v1").map(String::from).ok().as_deref(),
            Some("https://api.crowdstrike.com/devices/queries/devices/v1")
        );
        assert_eq!(
            r("https://graph.microsoft.com/v1.0/users?$skiptoken=abc"),
            "https://graph.microsoft.com/v1.0/users?$skiptoken=abc"
        );
    }
}
