//! Per-client rate limiting: a fixed governor quota, a cap on requests in
//! flight, and pacing learned from the vendor's rate-limit headers.
//!
//! Header pacing: when a vendor reports `remaining` requests until a `reset`
//! time, the client spreads those requests evenly over the time left (one
//! slot every `time_left / remaining`), and when `remaining` reaches 0 it
//! waits for the reset. With only limit/remaining (CrowdStrike's sliding
//! window) it paces at `limit / window` once less than a tenth of the budget
//! is left. A 429 pauses every request of the client, not just the one that
//! received it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_core::metrics::RequestMetrics;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use reqwest::header::HeaderMap;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::RateConfig;

/// What a vendor's rate-limit headers said about its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VendorRate {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Time until the window resets, from `now` (server clock when the
    /// response carries a `Date` header, to be immune to clock skew).
    pub reset_in: Option<Duration>,
}

/// Header families: generic/ServiceNow/CrowdStrike (`X-RateLimit-*`; header
/// names are case-insensitive, so CrowdStrike's `X-Ratelimit-*` is the same),
/// Okta (`X-Rate-Limit-*`) and the IETF draft (`RateLimit-*`).
const PREFIXES: &[&str] = &["x-ratelimit-", "x-rate-limit-", "ratelimit-"];

impl VendorRate {
    /// Read the rate-limit headers, if any. Reset values are read as an
    /// epoch instant (seconds or milliseconds) or a delay in seconds,
    /// decided by magnitude.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<VendorRate> {
        for prefix in PREFIXES {
            let get = |suffix: &str| {
                headers.get(format!("{prefix}{suffix}")).and_then(|v| v.to_str().ok()).and_then(leading_number)
            };
            let limit = get("limit").map(|n| n as u64);
            let remaining = get("remaining").map(|n| n as u64);
            let reset = get("reset");
            if limit.is_none() && remaining.is_none() && reset.is_none() {
                continue;
            }
            let reset_in = reset.map(|n| reset_delay(n, headers, now));
            return Some(VendorRate { limit, remaining, reset_in });
        }
        None
    }
}

/// `600`, `100, 100;w=60` (IETF draft), `1.5`: the first number, if non-negative.
fn leading_number(v: &str) -> Option<f64> {
    let end = v.trim_start().find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.trim_start().len());
    let n: f64 = v.trim_start()[..end].parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n)
}

fn reset_delay(n: f64, headers: &HeaderMap, now: SystemTime) -> Duration {
    let epoch_secs = if n >= 1e12 {
        n / 1000.0
    } else if n >= 1e9 {
        n
    } else {
        return Duration::from_secs_f64(n);
    };
    // Measure against the server's own clock when it tells us the time.
    let server_now = headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(now);
    let at = UNIX_EPOCH + Duration::from_secs_f64(epoch_secs);
    at.duration_since(server_now).unwrap_or(Duration::ZERO)
}

/// Slack added after a vendor's reset time before trusting the new window.
const RESET_MARGIN: Duration = Duration::from_millis(100);

/// The client's running estimate of the vendor's budget.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    remaining: Option<u64>,
    limit: Option<u64>,
    reset_at: Option<Instant>,
    next_slot: Option<Instant>,
    paused_until: Option<Instant>,
    /// Requests reserved but not yet answered.
    outstanding: u64,
    /// The vendor reports reset times (fixed windows).
    saw_reset: bool,
}

impl Budget {
    /// Reserve a slot for one request; returns when it may be sent.
    pub(crate) fn reserve(&mut self, now: Instant, window: Duration) -> Instant {
        self.outstanding += 1;
        let mut at = now;
        match self.paused_until {
            Some(p) if p > now => at = p,
            _ => self.paused_until = None,
        }
        if let Some(reset) = self.reset_at
            && reset + RESET_MARGIN <= at
        {
            // The window this estimate belongs to is over: assume a fresh budget
            // (bounded by the known limit) until the next answer tells us more.
            self.reset_at = None;
            self.remaining = self.limit;
        }
        let Some(rem) = self.remaining else { return at };
        let slot = self.next_slot.map_or(at, |s| s.max(at));
        let interval = match self.reset_at {
            Some(reset) if rem == 0 => return at.max(reset + RESET_MARGIN),
            Some(reset) => reset.saturating_duration_since(slot) / u32::try_from(rem).unwrap_or(u32::MAX),
            // Sliding window (no reset ever reported): pace at the sustainable rate once low.
            None => match self.limit {
                Some(limit) if !self.saw_reset && limit > 0 && rem <= limit / 10 => {
                    window / u32::try_from(limit).unwrap_or(u32::MAX)
                }
                _ => {
                    self.remaining = Some(rem.saturating_sub(1));
                    return at;
                }
            },
        };
        self.next_slot = Some(slot + interval);
        self.remaining = Some(rem.saturating_sub(1));
        slot
    }

    /// Learn from one answer's headers (the answering request is still outstanding).
    pub(crate) fn observe(&mut self, rate: VendorRate, now: Instant) {
        self.saw_reset |= rate.reset_in.is_some();
        if let Some(l) = rate.limit {
            self.limit = Some(l);
        }
        if let Some(r) = rate.remaining {
            // Requests still in flight will spend part of what is left.
            self.remaining = Some(r.saturating_sub(self.outstanding.saturating_sub(1)));
            self.reset_at = rate.reset_in.map(|d| now + d);
        } else if let Some(d) = rate.reset_in {
            self.reset_at = Some(now + d);
        }
    }

    pub(crate) fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    fn done(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }
}

/// One client's limiter. Shared by every clone of the client.
pub(crate) struct Limiter {
    governor: Option<DefaultDirectRateLimiter>,
    in_flight: Semaphore,
    adapt: bool,
    window: Duration,
    budget: Mutex<Budget>,
}

/// Held while a request is in flight.
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
    _slot: Option<SemaphorePermit<'a>>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.limiter.budget.lock() {
            b.done();
        }
    }
}

impl Limiter {
    pub(crate) fn new(cfg: &RateConfig) -> Self {
        Limiter {
            governor: cfg.quota.map(RateLimiter::direct),
            in_flight: Semaphore::new(cfg.max_in_flight.max(1)),
            adapt: cfg.adapt_to_headers,
            window: cfg.default_window,
            budget: Mutex::new(Budget::default()),
        }
    }

    /// Wait for an in-flight slot, the fixed quota and the vendor's pacing.
    /// Time spent on the quota and pacing is recorded as limiter wait.
    pub(crate) async fn acquire(&self, metrics: &RequestMetrics) -> Permit<'_> {
        // The semaphore is never closed, so an error cannot happen; without a slot we still proceed.
        let slot = self.in_flight.acquire().await.ok();
        let started = Instant::now();
        if let Some(g) = &self.governor {
            g.until_ready().await;
        }
        let at = match self.budget.lock() {
            Ok(mut b) => b.reserve(Instant::now(), self.window),
            Err(_) => Instant::now(),
        };
        let permit = Permit { limiter: self, _slot: slot };
        sleep_until(at).await;
        // A 429 elsewhere may have paused the client while we waited.
        loop {
            let paused = self.budget.lock().ok().and_then(|b| b.paused_until).filter(|p| *p > Instant::now());
            match paused {
                Some(p) => sleep_until(p).await,
                None => break,
            }
        }
        let waited = started.elapsed();
        if waited >= Duration::from_millis(1) {
            metrics.record_limiter_wait(waited);
        }
        permit
    }

    /// Learn from an answer's rate-limit headers.
    pub(crate) fn observe(&self, headers: &HeaderMap) {
        if !self.adapt {
            return;
        }
        if let Some(rate) = VendorRate::from_headers(headers, SystemTime::now())
            && let Ok(mut b) = self.budget.lock()
        {
            b.observe(rate, Instant::now());
        }
    }

    /// Pause every request of this client (after a 429 with a wait).
    pub(crate) fn pause_for(&self, wait: Duration) {
        if let Ok(mut b) = self.budget.lock() {
            b.pause_until(Instant::now() + wait);
        }
    }
}

async fn sleep_until(at: Instant) {
    if at > Instant::now() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("quota", &self.governor.is_some())
            .field("in_flight_available", &self.in_flight.available_permits())
            .field("adapt", &self.adapt)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const W: Duration = Duration::from_secs(60);

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn reads_each_header_family() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let okta = headers(&[
            ("X-Rate-Limit-Limit", "600"),
            ("X-Rate-Limit-Remaining", "12"),
            ("X-Rate-Limit-Reset", "1700000030"),
        ]);
        assert_eq!(
            VendorRate::from_headers(&okta, now),
            Some(VendorRate { limit: Some(600), remaining: Some(12), reset_in: Some(Duration::from_secs(30)) })
        );
        let cs = headers(&[("X-Ratelimit-Limit", "6000"), ("X-Ratelimit-Remaining", "5999")]);
        assert_eq!(
            VendorRate::from_headers(&cs, now),
            Some(VendorRate { limit: Some(6000), remaining: Some(5999), reset_in: None })
        );
        let delta = headers(&[("X-RateLimit-Remaining", "3"), ("X-RateLimit-Reset", "20")]);
        assert_eq!(VendorRate::from_headers(&delta, now).and_then(|r| r.reset_in), Some(Duration::from_secs(20)));
        let ietf = headers(&[("RateLimit-Limit", "100, 100;w=60"), ("RateLimit-Remaining", "4")]);
        assert_eq!(VendorRate::from_headers(&ietf, now).and_then(|r| r.limit), Some(100));
        assert_eq!(VendorRate::from_headers(&headers(&[("X-RateLimit-Remaining", "junk")]), now), None);
        assert_eq!(VendorRate::from_headers(&HeaderMap::new(), now), None);
    }

    #[test]
    fn epoch_reset_uses_server_date() {
        // Our clock runs 100 s ahead of the server; the Date header corrects it.
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let h = headers(&[
            ("X-Rate-Limit-Remaining", "0"),
            ("X-Rate-Limit-Reset", "1700000030"),
            ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"), // 1700000000
        ]);
        assert_eq!(VendorRate::from_headers(&h, now).and_then(|r| r.reset_in), Some(Duration::from_secs(30)));
    }

    #[test]
    fn paces_remaining_over_the_window() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        // Unknown budget: no pacing.
        assert_eq!(b.reserve(t0, W), t0);
        b.observe(VendorRate { limit: Some(10), remaining: Some(4), reset_in: Some(Duration::from_secs(4)) }, t0);
        b.done();
        // 4 left over 4 s: one per second.
        let slots: Vec<Duration> = (0..4).map(|_| b.reserve(t0, W) - t0).collect();
        assert_eq!(slots, vec![Duration::ZERO, Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(3)]);
        // Budget spent: wait for the reset.
        assert_eq!(b.reserve(t0, W), t0 + Duration::from_secs(4) + RESET_MARGIN);
        // After the reset: a fresh budget of `limit`, spent without pacing until an answer says more.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.reserve(later, W), later);
        assert_eq!(b.remaining, Some(9));
    }

    #[test]
    fn counts_requests_in_flight_against_remaining() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        for _ in 0..3 {
            b.reserve(t0, W);
        }
        // The first of three in-flight requests reports 2 left: the other two will spend them.
        b.observe(VendorRate { limit: Some(3), remaining: Some(2), reset_in: Some(Duration::from_secs(10)) }, t0);
        b.done();
        assert_eq!(b.reserve(t0, W), t0 + Duration::from_secs(10) + RESET_MARGIN);
    }

    #[test]
    fn sliding_window_paces_only_when_low() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        b.reserve(t0, W);
        b.observe(VendorRate { limit: Some(6000), remaining: Some(5000), reset_in: None }, t0);
        b.done();
        assert_eq!(b.reserve(t0, W), t0);
        assert_eq!(b.reserve(t0, W), t0);
        b.observe(VendorRate { limit: Some(6000), remaining: Some(100), reset_in: None }, t0);
        let a = b.reserve(t0, W);
        let c = b.reserve(t0, W);
        assert_eq!(c - a, Duration::from_millis(10));
    }

    #[test]
    fn pause_delays_everyone() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        b.pause_until(t0 + Duration::from_secs(2));
        b.pause_until(t0 + Duration::from_secs(1));
        assert_eq!(b.reserve(t0, W), t0 + Duration::from_secs(2));
        assert_eq!(b.reserve(t0 + Duration::from_secs(3), W), t0 + Duration::from_secs(3));
    }
}
