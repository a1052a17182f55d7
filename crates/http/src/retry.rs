//! Response classification, backoff and the vendors' "wait this long" headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use crate::config::RetryConfig;

/// What to do with one answer (or transport failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    /// Transient: 5xx, 408, transport errors, timeouts, truncated bodies.
    /// Carries the vendor's requested wait, if it sent one (503 + Retry-After).
    Retry(Option<Duration>),
    /// "Slow down": 429, or Qualys' 409 with `X-RateLimit-ToWait-Sec`.
    RateLimited(Option<Duration>),
    /// 401 while using OAuth2: refresh the token once and try again.
    RefreshAuth,
    /// 400/401/403/404/405/410/422: the request or the credentials are wrong;
    /// retrying cannot help.
    ConfigError,
    /// Anything else that is not success (3xx left over, 409 conflicts, other 4xx).
    Fatal,
}

/// Classify a status. `oauth2` says whether a 401 may be cured by a new token.
pub fn classify(status: u16, headers: &HeaderMap, oauth2: bool, now: SystemTime) -> Class {
    match status {
        200..=299 => Class::Success,
        429 => Class::RateLimited(wait_from_headers(headers, now)),
        409 if headers.contains_key("x-ratelimit-towait-sec") => Class::RateLimited(wait_from_headers(headers, now)),
        401 if oauth2 => Class::RefreshAuth,
        400 | 401 | 403 | 404 | 405 | 410 | 422 => Class::ConfigError,
        408 | 500 | 502 | 503 | 504 | 507 | 509 | 520..=599 => Class::Retry(server_error_wait(headers, now)),
        _ => Class::Fatal,
    }
}

/// Epoch seconds from here on are read as an instant, not a delay
/// (2001-09-09; no vendor asks to wait 31 years).
const EPOCH_SECONDS_FLOOR: f64 = 1_000_000_000.0;
/// Epoch milliseconds from here on.
const EPOCH_MILLIS_FLOOR: f64 = 1_000_000_000_000.0;

/// The longest wait the toolkit ever computes (about 31 years): sums that
/// would overflow an `Instant` are clamped to it, and such a wait is beyond
/// any retry budget.
pub const MAX_WAIT: Duration = Duration::from_secs(1_000_000_000);

/// The longest wait a vendor's header may plausibly ask for: a day (daily
/// quotas exist) and an hour of slack. A longer wait, an instant further
/// away, a value that is not a time at all: nonsense (a misread field, a
/// vendor clock gone wrong), ignored rather than waited for or failed on.
pub const MAX_PLAUSIBLE_WAIT: Duration = Duration::from_secs(25 * 3600);

/// What a header that names a time said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// This long from now (zero for an instant already past).
    In(Duration),
    /// Not a time, or not a plausible one (see [`MAX_PLAUSIBLE_WAIT`]).
    Nonsense,
}

impl When {
    pub(crate) fn delay(self) -> Option<Duration> {
        match self {
            When::In(d) => Some(d),
            When::Nonsense => None,
        }
    }
}

/// Read a time from a vendor header, in every form vendors use:
/// - a delay in seconds: `120`, `1.5` (Retry-After, `X-RateLimit-Reset` of
///   GitHub-likes in delay form, `X-RateLimit-Reset-After`, IETF `RateLimit-Reset`);
/// - an epoch instant in seconds or milliseconds, told apart from a delay by
///   magnitude (CrowdStrike's `X-Ratelimit-Retryafter: 1700000000`, Okta's
///   `X-Rate-Limit-Reset`, Discord's `1700000000.250`);
/// - an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`);
/// - an RFC 3339 / ISO 8601 timestamp (`2015-10-21T07:28:00Z`,
///   `2015-10-21T09:28:00.000+02:00`; without an offset: UTC), as Atlassian sends.
///
/// Instants are measured from `now` (pass the server's `Date` when there is
/// one). An instant in the past is zero. Anything else (negative, `NaN`,
/// exponents, units, more than [`MAX_PLAUSIBLE_WAIT`] away) is
/// [`When::Nonsense`]. Never panics, whatever the vendor sends.
pub(crate) fn parse_when(value: &str, now: SystemTime) -> When {
    let v = value.trim();
    if v.is_empty() {
        return When::Nonsense;
    }
    let plausible = |d: Duration| if d <= MAX_PLAUSIBLE_WAIT { When::In(d) } else { When::Nonsense };
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Only digits and dots: never negative; a digit string too long for an
        // f64 parses as infinity and is nonsense below.
        let Ok(n) = v.parse::<f64>() else { return When::Nonsense };
        if !n.is_finite() {
            return When::Nonsense;
        }
        if n >= EPOCH_MILLIS_FLOOR {
            return plausible(until_epoch(n / 1000.0, now));
        }
        if n >= EPOCH_SECONDS_FLOOR {
            return plausible(until_epoch(n, now));
        }
        return plausible(seconds(n));
    }
    if let Ok(at) = httpdate::parse_http_date(v) {
        return plausible(until(at, now));
    }
    match parse_timestamp(v) {
        Some(at) => plausible(until(at, now)),
        None => When::Nonsense,
    }
}

/// An RFC 3339 / ISO 8601 timestamp (`T` or a space between date and time;
/// no offset means UTC).
fn parse_timestamp(v: &str) -> Option<SystemTime> {
    use chrono::{DateTime, NaiveDateTime};
    let utc = DateTime::parse_from_rfc3339(v).map(|t| t.to_utc()).ok().or_else(|| {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"]
            .iter()
            .find_map(|f| {
                DateTime::parse_from_str(v, f)
                    .map(|t| t.to_utc())
                    .ok()
                    .or_else(|| NaiveDateTime::parse_from_str(v, f).ok().map(|t| t.and_utc()))
            })
    })?;
    let secs = utc.timestamp();
    let nanos = utc.timestamp_subsec_nanos();
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(u64::try_from(secs).ok()?, nanos))
    } else {
        // Before 1970: long past, as good as the epoch.
        Some(UNIX_EPOCH)
    }
}

/// Parse a "wait" header value into a delay from `now`, in any of the forms
/// [`parse_when`] reads (delay seconds, epoch seconds or milliseconds, HTTP
/// date, RFC 3339). Instants in the past give zero; anything unparseable or
/// implausible (more than [`MAX_PLAUSIBLE_WAIT`]) gives `None`: the caller
/// backs off as if the vendor had said nothing. Never panics.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    parse_when(value, now).delay()
}

/// A non-negative number of seconds as a [`Duration`], clamped to [`MAX_WAIT`].
pub(crate) fn seconds(n: f64) -> Duration {
    if n.is_nan() || n <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(n).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
}

/// The time from `now` until the epoch instant `epoch_secs`, clamped to [`MAX_WAIT`].
pub(crate) fn until_epoch(epoch_secs: f64, now: SystemTime) -> Duration {
    match Duration::try_from_secs_f64(epoch_secs).ok().and_then(|d| UNIX_EPOCH.checked_add(d)) {
        Some(at) => until(at, now),
        None if epoch_secs.is_nan() || epoch_secs <= 0.0 => Duration::ZERO,
        None => MAX_WAIT,
    }
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_WAIT)
}

/// Headers that say how long to wait, in order of preference.
const WAIT_HEADERS: &[&str] =
    &["retry-after", "x-ratelimit-retryafter", "x-ratelimit-towait-sec", "x-rate-limit-retry-after"];

/// The wait a vendor asked for: an explicit wait header, else (when its
/// budget is exhausted) the reset time of its rate-limit window.
pub fn wait_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in WAIT_HEADERS {
        if let Some(d) = headers.get(*name).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, now)) {
            return Some(d);
        }
    }
    let reset = crate::ratelimit::VendorRate::from_headers(headers, now)?;
    match reset.remaining {
        Some(0) | None => reset.reset_in,
        Some(_) => None,
    }
}

/// The wait a server error asked for: an explicit wait header, else the
/// reset of a window the vendor says is spent (remaining 0). Unlike a 429,
/// a 5xx does not say the budget is spent, so a reset without a remaining
/// count (ServiceNow sends none; its windows are an hour) is no wait.
fn server_error_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in WAIT_HEADERS {
        if let Some(d) = headers.get(*name).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, now)) {
            return Some(d);
        }
    }
    let reset = crate::ratelimit::VendorRate::from_headers(headers, now)?;
    match reset.remaining {
        Some(0) => reset.reset_in,
        _ => None,
    }
}

/// Full-jitter exponential backoff for retry number `n` (1-based):
/// a uniform delay in `[0, min(max_delay, base_delay * 2^(n-1))]`.
pub fn backoff(cfg: &RetryConfig, n: u32) -> Duration {
    let cap = backoff_cap(cfg, n);
    if cap.is_zero() {
        return cap;
    }
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=nanos))
}

/// The upper bound [`backoff`] draws from.
pub fn backoff_cap(cfg: &RetryConfig, n: u32) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(31));
    cfg.base_delay.saturating_mul(factor).min(cfg.max_delay)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_error_waits_for_a_reset_only_when_the_budget_is_spent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", "1000".parse().expect("header"));
        h.insert("x-ratelimit-reset", "1700003000".parse().expect("header"));
        // ServiceNow: a limit and a reset, no remaining count.
        assert_eq!(classify(503, &h, false, now), Class::Retry(None));
        assert_eq!(classify(429, &h, false, now), Class::RateLimited(Some(Duration::from_secs(3000))));
        h.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        assert_eq!(classify(503, &h, false, now), Class::Retry(Some(Duration::from_secs(3000))));
        h.insert("x-ratelimit-remaining", "5".parse().expect("header"));
        assert_eq!(classify(503, &h, false, now), Class::Retry(None));
        h.insert("retry-after", "7".parse().expect("header"));
        assert_eq!(classify(503, &h, false, now), Class::Retry(Some(Duration::from_secs(7))));
    }

    use super::*;
    use reqwest::header::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_seconds() {
        let now = at(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_after_http_date() {
        // Wed, 21 Oct 2015 07:28:00 GMT = 1445412480
        let now = at(1_445_412_480 - 30);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(30)));
        // In the past: no wait.
        let later = at(1_445_412_480 + 3600);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", later), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_epoch_instant_by_magnitude() {
        let now = at(1_699_999_990);
        assert_eq!(parse_retry_after("1700000000", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("1700000000000", now), Some(Duration::from_secs(10)));
        // Past instant.
        assert_eq!(parse_retry_after("1600000000", now), Some(Duration::ZERO));
        // Just under the floor is still a delay, not an instant: 31 years, nonsense.
        assert_eq!(parse_retry_after("999999999", now), None);
        // A day is plausible (daily quotas); a day and a half is not.
        assert_eq!(parse_retry_after("86400", now), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_retry_after("129600", now), None);
    }

    #[test]
    fn retry_after_rfc3339() {
        let now = at(1_700_000_000); // 2023-11-14T22:13:20Z
        assert_eq!(parse_retry_after("2023-11-14T22:13:30Z", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("2023-11-14T23:13:30+01:00", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("2023-11-14T22:00:00Z", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("2026-12-01T10:00:00Z", now), None, "three years away: nonsense");
    }

    #[test]
    fn retry_after_garbage() {
        let now = at(1_700_000_000);
        for bad in [
            "",
            "soon",
            "-5",
            "-1700000000",
            "1e3",
            "1e400",
            "12s",
            "Wed, 99 Foo 2015",
            "1.2.3",
            "NaN",
            "inf",
            ".",
            "+5",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_huge_values_are_ignored_never_panic() {
        let now = at(1_700_000_000);
        // Epoch milliseconds far beyond what a SystemTime or Duration can hold.
        assert_eq!(parse_retry_after("100000000000000000000000", now), None);
        assert_eq!(parse_retry_after("18446744073709551616000", now), None);
        // More digits than an f64 can hold.
        assert_eq!(parse_retry_after(&"9".repeat(400), now), None);
        assert_eq!(parse_retry_after(&format!("{}.5", "9".repeat(400)), now), None);
        assert_eq!(parse_retry_after("999999999.999", now), None);
        // An HTTP date in the far future.
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now), None);
        // The same through the header helper, with Okta's reset and remaining 0:
        // no wait from nonsense (the caller backs off instead).
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-remaining", HeaderValue::from_static("0"));
        h.insert("x-rate-limit-reset", HeaderValue::from_static("100000000000000000000000"));
        assert_eq!(wait_from_headers(&h, now), None);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-retryafter", HeaderValue::from_static("100000000000000000000000"));
        assert_eq!(classify(429, &h, false, now), Class::RateLimited(None));
        // A nonsense Retry-After does not hide a sensible header after it.
        h.insert("retry-after", HeaderValue::from_static("soon"));
        h.insert("x-rate-limit-retry-after", HeaderValue::from_static("3"));
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(3)));
    }

    #[test]
    fn waits_from_vendor_headers() {
        let now = at(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-towait-sec", HeaderValue::from_static("7"));
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-retryafter", HeaderValue::from_static("1700000003"));
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(3)));
        // Retry-After wins over the others.
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(2)));
        // Okta: remaining 0, reset as epoch seconds.
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-remaining", HeaderValue::from_static("0"));
        h.insert("x-rate-limit-reset", HeaderValue::from_static("1700000042"));
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(42)));
        // Budget left: the reset is no reason to wait.
        h.insert("x-rate-limit-remaining", HeaderValue::from_static("5"));
        assert_eq!(wait_from_headers(&h, now), None);
    }

    #[test]
    fn classification() {
        let now = at(1_700_000_000);
        let h = HeaderMap::new();
        assert_eq!(classify(200, &h, false, now), Class::Success);
        assert_eq!(classify(201, &h, false, now), Class::Success);
        assert_eq!(classify(503, &h, false, now), Class::Retry(None));
        assert_eq!(classify(408, &h, false, now), Class::Retry(None));
        assert_eq!(classify(429, &h, false, now), Class::RateLimited(None));
        assert_eq!(classify(401, &h, true, now), Class::RefreshAuth);
        for s in [400, 401, 403, 404] {
            assert_eq!(classify(s, &h, false, now), Class::ConfigError, "{s}");
        }
        assert_eq!(classify(403, &h, true, now), Class::ConfigError);
        assert_eq!(classify(409, &h, false, now), Class::Fatal);
        let mut q = HeaderMap::new();
        q.insert("x-ratelimit-towait-sec", HeaderValue::from_static("3"));
        assert_eq!(classify(409, &q, false, now), Class::RateLimited(Some(Duration::from_secs(3))));
        assert_eq!(classify(501, &h, false, now), Class::Fatal);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cfg = RetryConfig {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryConfig::default()
        };
        assert_eq!(backoff_cap(&cfg, 1), Duration::from_millis(100));
        assert_eq!(backoff_cap(&cfg, 3), Duration::from_millis(400));
        assert_eq!(backoff_cap(&cfg, 10), Duration::from_secs(1));
        assert_eq!(backoff_cap(&cfg, u32::MAX), Duration::from_secs(1));
        for n in 1..20 {
            assert!(backoff(&cfg, n) <= backoff_cap(&cfg, n));
        }
    }
}
