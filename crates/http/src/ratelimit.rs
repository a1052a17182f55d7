//! Per-client rate limiting: a fixed governor quota, a cap on requests in
//! flight, and pacing learned from the vendor's rate-limit headers.
//!
//! Header pacing: when a vendor reports `remaining` requests until a `reset`
//! time (fixed windows: Okta, ServiceNow), the client spreads those requests
//! evenly over the time left (one slot every `time_left / remaining`), and
//! when `remaining` reaches 0 it waits for the reset. With only
//! limit/remaining (CrowdStrike's sliding window) it models the window from
//! its own send times and learns how long the window is (see `sliding.rs`).
//! A 429 pauses every request of the client, not just the one that received
//! it. A pacing wait that would end past the request's retry budget fails
//! the request at once instead of sleeping through it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use corral_core::metrics::RequestMetrics;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use reqwest::header::HeaderMap;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::config::RateConfig;
use crate::retry::{MAX_WAIT, seconds, until_epoch};
use crate::sliding::Sliding;

/// What a vendor's rate-limit headers said about its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VendorRate {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Time until the window resets, from `now` (server clock when the
    /// response carries a `Date` header, to be immune to clock skew), at most
    /// [`crate::MAX_WAIT`].
    pub reset_in: Option<Duration>,
}

/// Header families: generic/ServiceNow/CrowdStrike (`X-RateLimit-*`; header
/// names are case-insensitive, so CrowdStrike's `X-Ratelimit-*` is the same),
/// Okta (`X-Rate-Limit-*`) and the IETF draft (`RateLimit-*`).
const PREFIXES: &[&str] = &["x-ratelimit-", "x-rate-limit-", "ratelimit-"];

impl VendorRate {
    /// Read the rate-limit headers, if any. Reset values are read as an
    /// epoch instant (seconds or milliseconds) or a delay in seconds,
    /// decided by magnitude. Never panics, whatever the values.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<VendorRate> {
        for prefix in PREFIXES {
            let get = |suffix: &str| {
                headers.get(format!("{prefix}{suffix}")).and_then(|v| v.to_str().ok()).and_then(leading_number)
            };
            // `as` saturates: a limit of 1e30 is u64::MAX, not a panic.
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
    let v = v.trim_start();
    let end = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let n: f64 = v[..end].parse().ok()?;
    (!n.is_nan() && n >= 0.0).then_some(n)
}

fn reset_delay(n: f64, headers: &HeaderMap, now: SystemTime) -> Duration {
    let epoch_secs = if n >= 1e12 {
        n / 1000.0
    } else if n >= 1e9 {
        n
    } else {
        return seconds(n);
    };
    // Measure against the server's own clock when it tells us the time.
    let server_now = headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(now);
    until_epoch(epoch_secs, server_now)
}

/// Slack added after a vendor's reset time before trusting the new window.
const RESET_MARGIN: Duration = Duration::from_millis(100);

/// `at + d`, or `at + MAX_WAIT` (still far beyond any budget) if that overflows.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).or_else(|| at.checked_add(MAX_WAIT)).unwrap_or(at)
}

/// The client's running estimate of the vendor's budget.
#[derive(Debug)]
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
    /// The vendor's sliding window (used while no reset was ever reported).
    sliding: Sliding,
    seq: u64,
}

/// What [`Budget::reserve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// Reserved: send at `at`.
    Go(Slot),
    /// Nothing reserved: ask again at this instant (or when the model changes).
    Later(Instant),
}

/// A reserved slot: when to send, and the request's number for [`Budget::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) at: Instant,
    pub(crate) seq: u64,
}

impl Budget {
    pub(crate) fn new(default_window: Duration, quota_rate: Option<f64>) -> Self {
        Budget {
            remaining: None,
            limit: None,
            reset_at: None,
            next_slot: None,
            paused_until: None,
            outstanding: 0,
            saw_reset: false,
            sliding: Sliding::new(default_window, quota_rate),
            seq: 0,
        }
    }

    /// Reserve a slot for one request. A slot later than `deadline` is not
    /// reserved: the error is how long the request would have had to wait.
    ///
    /// Fixed windows: the slot may lie in the future (it is the request's
    /// share of what remains). Sliding windows: a request is only ever
    /// reserved for `now`; otherwise the answer is when to ask again (sooner,
    /// if an answer changes the model in the meantime).
    pub(crate) fn reserve(&mut self, now: Instant, deadline: Option<Instant>) -> Result<Reservation, Duration> {
        let mut at = now;
        match self.paused_until {
            Some(p) if p > now => at = p,
            _ => self.paused_until = None,
        }
        if let Some(reset) = self.reset_at
            && later(reset, RESET_MARGIN) <= at
        {
            // The window this estimate belongs to is over: assume a fresh budget
            // (bounded by the known limit) until the next answer tells us more.
            self.reset_at = None;
            self.remaining = self.limit;
        }
        // (slot, next_slot and remaining to commit)
        let (slot, fixed) = if !self.saw_reset {
            (self.sliding.plan(at), None)
        } else {
            match (self.remaining, self.reset_at) {
                (None, _) => (at, None),
                (Some(0), Some(reset)) => (at.max(later(reset, RESET_MARGIN)), None),
                (Some(rem), Some(reset)) => {
                    let slot = self.next_slot.map_or(at, |s| s.max(at));
                    let interval = reset.saturating_duration_since(slot) / u32::try_from(rem).unwrap_or(u32::MAX);
                    (slot, Some((Some(later(slot, interval)), rem - 1)))
                }
                (Some(rem), None) => (at, Some((self.next_slot, rem.saturating_sub(1)))),
            }
        };
        if deadline.is_some_and(|d| slot > d) {
            return Err(slot.saturating_duration_since(now));
        }
        if !self.saw_reset && slot > now {
            return Ok(Reservation::Later(slot));
        }
        if let Some((next, rem)) = fixed {
            self.next_slot = next;
            self.remaining = Some(rem);
        }
        self.seq += 1;
        self.outstanding += 1;
        if !self.saw_reset {
            self.sliding.commit(self.seq, slot);
        }
        Ok(Reservation::Go(Slot { at: slot, seq: self.seq }))
    }

    /// Learn from the headers of the answer to request `seq` (still outstanding).
    pub(crate) fn observe(&mut self, seq: u64, rate: VendorRate, now: Instant) {
        self.saw_reset |= rate.reset_in.is_some();
        if let Some(l) = rate.limit {
            self.limit = Some(l);
        }
        if let Some(r) = rate.remaining {
            // Requests still in flight will spend part of what is left.
            self.remaining = Some(r.saturating_sub(self.outstanding.saturating_sub(1)));
            self.reset_at = rate.reset_in.map(|d| later(now, d));
        } else if let Some(d) = rate.reset_in {
            self.reset_at = Some(later(now, d));
        }
        if self.saw_reset {
            self.sliding.answered(seq, now);
        } else {
            self.sliding.observe(seq, rate.limit, rate.remaining, now);
        }
    }

    pub(crate) fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// The vendor answered "slow down" although the model let the request go.
    pub(crate) fn rate_limited(&mut self) {
        if !self.saw_reset {
            self.sliding.rate_limited();
        }
    }

    fn done(&mut self, seq: u64, now: Instant) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.sliding.answered(seq, now);
    }

    #[cfg(test)]
    pub(crate) fn sliding(&self) -> &Sliding {
        &self.sliding
    }
}

/// One client's limiter. Shared by every clone of the client.
pub(crate) struct Limiter {
    governor: Option<DefaultDirectRateLimiter>,
    in_flight: Semaphore,
    adapt: bool,
    budget: Mutex<Budget>,
    /// Wakes requests waiting for a sliding-window slot when an answer changed the model.
    changed: Notify,
}

/// Held while a request is in flight.
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
    seq: u64,
    _slot: Option<SemaphorePermit<'a>>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.limiter.budget.lock() {
            b.done(self.seq, Instant::now());
        }
    }
}

/// Requests per second a quota allows in the long run.
fn quota_rate(cfg: &RateConfig) -> Option<f64> {
    let q = cfg.quota?;
    let period = q.replenish_interval().as_secs_f64();
    (period > 0.0).then(|| 1.0 / period)
}

impl Limiter {
    pub(crate) fn new(cfg: &RateConfig) -> Self {
        Limiter {
            governor: cfg.quota.map(RateLimiter::direct),
            in_flight: Semaphore::new(cfg.max_in_flight.max(1)),
            adapt: cfg.adapt_to_headers,
            budget: Mutex::new(Budget::new(cfg.default_window, quota_rate(cfg))),
            changed: Notify::new(),
        }
    }

    /// Wait for an in-flight slot, the fixed quota and the vendor's pacing.
    /// All of that time is recorded as limiter wait. A pacing wait that
    /// would end after `deadline` is not waited for: the error is its length.
    pub(crate) async fn acquire(
        &self,
        metrics: &RequestMetrics,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, Duration> {
        let started = Instant::now();
        let record = || {
            let waited = started.elapsed();
            if waited >= Duration::from_millis(1) {
                metrics.record_limiter_wait(waited);
            }
        };
        // The semaphore is never closed, so an error cannot happen; without a slot we still proceed.
        let slot = self.in_flight.acquire().await.ok();
        if let Some(g) = &self.governor {
            g.until_ready().await;
        }
        let reserved = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let r = match self.budget.lock() {
                Ok(mut b) => b.reserve(Instant::now(), deadline),
                Err(_) => Ok(Reservation::Go(Slot { at: Instant::now(), seq: 0 })),
            };
            match r {
                Ok(Reservation::Go(slot)) => break slot,
                Ok(Reservation::Later(at)) => {
                    tokio::select! {
                        _ = sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                Err(wait) => {
                    record();
                    return Err(wait);
                }
            }
        };
        let permit = Permit { limiter: self, seq: reserved.seq, _slot: slot };
        sleep_until(reserved.at).await;
        // A 429 elsewhere may have paused the client while we waited.
        loop {
            let paused = self.budget.lock().ok().and_then(|b| b.paused_until).filter(|p| *p > Instant::now());
            match paused {
                Some(p) if deadline.is_some_and(|d| p > d) => {
                    record();
                    return Err(p.saturating_duration_since(Instant::now()));
                }
                Some(p) => sleep_until(p).await,
                None => break,
            }
        }
        record();
        Ok(permit)
    }

    /// Learn from the rate-limit headers of the answer to `permit`'s request.
    pub(crate) fn observe(&self, headers: &HeaderMap, permit: &Permit<'_>) {
        if !self.adapt {
            return;
        }
        if let Some(rate) = VendorRate::from_headers(headers, SystemTime::now())
            && let Ok(mut b) = self.budget.lock()
        {
            b.observe(permit.seq, rate, Instant::now());
            drop(b);
            self.changed.notify_waiters();
        }
    }

    /// Pause every request of this client (after a 429 with a wait).
    pub(crate) fn pause_for(&self, wait: Duration) {
        if let Ok(mut b) = self.budget.lock() {
            b.pause_until(later(Instant::now(), wait));
        }
    }

    /// The vendor said "slow down" to a request the limiter let through.
    pub(crate) fn rate_limited(&self) {
        if self.adapt
            && let Ok(mut b) = self.budget.lock()
        {
            b.rate_limited();
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
#[path = "ratelimit_tests.rs"]
mod tests;
