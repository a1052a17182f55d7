//! What an adapter configures for one connection: where, how to authenticate,
//! how fast, how persistently.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use crate::auth::Auth;

/// Everything [`crate::HttpClient::new`] needs. Build with [`HttpConfig::new`]
/// and the `with_*` methods; the defaults suit a typical vendor REST API.
///
/// `Debug` never shows secrets (see [`Auth`]).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Scheme, host and optional path prefix (`https://api.crowdstrike.com`,
    /// `https://corp.example/jamf`). Request paths are appended to it.
    pub base_url: String,
    pub timeouts: Timeouts,
    pub auth: Auth,
    /// Sent with every request (Qualys `X-Requested-With`, `Accept`). Not secret:
    /// secret headers belong in [`Auth::Header`].
    pub extra_headers: Vec<(String, String)>,
    pub rate: RateConfig,
    pub retry: RetryConfig,
    pub user_agent: String,
    /// Largest response body read into memory; larger answers fail with
    /// [`crate::HttpError::BodyTooLarge`] instead of exhausting memory.
    pub max_body_bytes: usize,
    /// The connection's name, for log lines (a long wait, a slow answer).
    pub connection: Option<String>,
    /// A vendor's "slow down" answer told by its body (AWS's 503
    /// `RequestLimitExceeded`): handled like a 429. See [`crate::SlowDownRule`].
    pub slow_down: Option<crate::SlowDownRule>,
}

impl HttpConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpConfig {
            base_url: base_url.into(),
            timeouts: Timeouts::default(),
            auth: Auth::None,
            extra_headers: Vec::new(),
            rate: RateConfig::default(),
            retry: RetryConfig::default(),
            user_agent: concat!("corral/", env!("CARGO_PKG_VERSION")).to_string(),
            max_body_bytes: 256 * 1024 * 1024,
            connection: None,
            slow_down: None,
        }
    }
    /// Name log lines after this connection.
    pub fn with_connection(mut self, name: impl Into<String>) -> Self {
        self.connection = Some(name.into());
        self
    }
    /// Recognise the vendor's "slow down" answers by their body too.
    pub fn with_slow_down(mut self, rule: crate::SlowDownRule) -> Self {
        self.slow_down = Some(rule);
        self
    }
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    pub fn with_rate(mut self, rate: RateConfig) -> Self {
        self.rate = rate;
        self
    }
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }
    pub fn with_user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }
    pub fn with_max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }
}

/// Connect, per-read and per-attempt timeouts, and when a slow answer is
/// reported.
///
/// `total` bounds one attempt (connect, send, read the whole body); an
/// attempt never runs past the request's remaining retry budget
/// ([`RetryConfig::total_budget`]) either. A hung vendor is cut after `read`
/// without a byte, and the request retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub total: Duration,
    /// A request still waiting for its answer after this long is logged as
    /// a warning (connection, stream, endpoint, how long so far), and again
    /// every `slow_warn` while it waits. Zero: never.
    pub slow_warn: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            total: Duration::from_secs(300),
            slow_warn: Duration::from_secs(30),
        }
    }
}

/// How fast one connection may talk to its vendor.
///
/// Three mechanisms stack: a fixed [`Quota`] (the adapter's documented vendor
/// limit, overridable by the operator), a cap on requests in flight, and, when
/// `adapt_to_headers` is on, pacing from the vendor's own rate-limit headers
/// so the client slows down before the vendor answers 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateConfig {
    /// `None`: no fixed quota (headers and 429s still slow the client down).
    pub quota: Option<Quota>,
    /// Requests sent and not yet answered, at most. The client may hold one
    /// connection more for a moment: a request's slot is freed once its
    /// answer is read, before its connection is back in the pool.
    pub max_in_flight: usize,
    pub adapt_to_headers: bool,
    /// Window assumed when a vendor reports limit/remaining without a reset
    /// time (CrowdStrike: per minute).
    pub default_window: Duration,
    /// A wait for the vendor's budget at least this long is logged as a
    /// warning (at most every 30 s per connection), naming the connection,
    /// the endpoint and the wait. Default 5 s.
    pub warn_wait: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            quota: None,
            max_in_flight: 16,
            adapt_to_headers: true,
            default_window: Duration::from_secs(60),
            warn_wait: Duration::from_secs(5),
        }
    }
}

impl RateConfig {
    /// No fixed quota; `max_in_flight` 16; header adaptation on.
    pub fn unlimited() -> Self {
        Self::default()
    }
    /// `n` requests per second, burst 1 (0 means unlimited).
    pub fn per_second(n: u32) -> Self {
        Self::every(n, Duration::from_secs(1))
    }
    /// `n` requests per minute, burst 1 (0 means unlimited).
    pub fn per_minute(n: u32) -> Self {
        Self::every(n, Duration::from_secs(60))
    }
    /// `n` requests per `window`, evenly spaced (burst 1; 0 means unlimited).
    pub fn every(n: u32, window: Duration) -> Self {
        let quota = if n == 0 { None } else { Quota::with_period(window / n) };
        RateConfig { quota, ..Self::default() }
    }
    /// A fractional rate such as `0.5` (one request every two seconds).
    /// Non-positive or non-finite values mean unlimited.
    pub fn from_rps(rps: f64) -> Self {
        let quota =
            if rps.is_finite() && rps > 0.0 { Quota::with_period(Duration::from_secs_f64(1.0 / rps)) } else { None };
        RateConfig { quota, ..Self::default() }
    }
    /// Allow bursts of up to `burst` requests on top of the steady rate.
    pub fn with_burst(mut self, burst: u32) -> Self {
        if let (Some(q), Some(b)) = (self.quota, NonZeroU32::new(burst)) {
            self.quota = Some(q.allow_burst(b));
        }
        self
    }
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
    pub fn with_header_adaptation(mut self, on: bool) -> Self {
        self.adapt_to_headers = on;
        self
    }
}

/// How persistently one request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts for transient failures (5xx, 408, transport errors), counting the first.
    pub max_attempts: u32,
    /// Backoff is full-jitter exponential: `random(0, min(max_delay, base_delay * 2^n))`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Waits for "slow down" answers (429, Qualys 409) before giving up.
    /// They are bounded by this count and by `total_budget`, not by `max_attempts`.
    pub max_rate_limited: u32,
    /// Wall time one request may spend including every retry and wait.
    pub total_budget: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_rate_limited: 20,
            total_budget: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryConfig {
    /// One attempt, no retries.
    pub fn none() -> Self {
        RetryConfig { max_attempts: 1, max_rate_limited: 0, ..Self::default() }
    }

    /// For `check`: transient failures (5xx, timeouts, connect errors, 429
    /// with a wait) retried quickly, everything within `limit`.
    pub fn within(limit: Duration) -> Self {
        RetryConfig {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            max_rate_limited: 3,
            total_budget: limit,
        }
    }
}
