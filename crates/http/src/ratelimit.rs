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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use corral_core::metrics::RequestMetrics;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use reqwest::header::HeaderMap;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::config::RateConfig;
use crate::retry::{MAX_WAIT, When, parse_when};
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

/// Header families: generic/ServiceNow/CrowdStrike/GitHub/Discord/Atlassian
/// (`X-RateLimit-*`; header names are case-insensitive, so CrowdStrike's
/// `X-Ratelimit-*` is the same), Okta/Twitter (`X-Rate-Limit-*`) and the
/// IETF draft's separate fields (`RateLimit-Limit`, `-Remaining`, `-Reset`).
const PREFIXES: &[&str] = &["x-ratelimit-", "x-rate-limit-", "ratelimit-"];

/// What [`read_rate`] found: the budget, and a header it ignored because its
/// value made no sense (name and the start of the value, for one log line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RateRead {
    pub(crate) rate: Option<VendorRate>,
    pub(crate) ignored: Option<(String, String)>,
}

impl VendorRate {
    /// Read the rate-limit headers, if any. Reset times are read in every
    /// form vendors use (see [`crate::parse_retry_after`]: delay seconds,
    /// epoch seconds or milliseconds, HTTP date, RFC 3339), from
    /// `X-RateLimit-Reset-After` (a delay, preferred: immune to clock skew) or
    /// `*-Reset`, and from the IETF draft's structured `RateLimit` /
    /// `RateLimit-Policy` fields. Absolute times are measured against the
    /// response's `Date` when it has one. A reset that makes no sense (not a
    /// time, more than [`crate::MAX_PLAUSIBLE_WAIT`] away) is left out, as if
    /// the vendor had not sent it. Never panics, whatever the values.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<VendorRate> {
        read_rate(headers, now).rate
    }
}

/// [`VendorRate::from_headers`], also naming a header it ignored.
pub(crate) fn read_rate(headers: &HeaderMap, now: SystemTime) -> RateRead {
    // Measure against the server's own clock when it tells us the time.
    let server_now = headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(now);
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut ignored = None;
    let mut reset_of = |name: &str, value: &str| match parse_when(value, server_now) {
        When::In(d) => Some(d),
        When::Nonsense => {
            ignored.get_or_insert_with(|| (name.to_string(), value.chars().take(64).collect()));
            None
        }
    };
    if let Some(v) = text("ratelimit")
        && let Some(f) = structured(v, text("ratelimit-policy"))
    {
        let reset_in = f.reset.and_then(|r| reset_of("RateLimit", r));
        if f.limit.is_some() || f.remaining.is_some() || reset_in.is_some() {
            return RateRead { rate: Some(VendorRate { limit: f.limit, remaining: f.remaining, reset_in }), ignored };
        }
    }
    for prefix in PREFIXES {
        let name = |suffix: &str| format!("{prefix}{suffix}");
        let limit = text(&name("limit")).and_then(count);
        let remaining = text(&name("remaining")).and_then(count);
        let after = text(&name("reset-after")).and_then(|v| reset_of(&name("reset-after"), v));
        let reset_in = after.or_else(|| text(&name("reset")).and_then(|v| reset_of(&name("reset"), v)));
        if limit.is_none() && remaining.is_none() && reset_in.is_none() {
            continue;
        }
        return RateRead { rate: Some(VendorRate { limit, remaining, reset_in }), ignored };
    }
    RateRead { rate: None, ignored }
}

/// `600`, `100, 100;w=60` (IETF draft 3: the first number is the limit),
/// `1.5`: a non-negative number standing alone or before a `,` or `;`.
/// Saturates (a limit of 1e30 is `u64::MAX`, never a panic).
fn count(v: &str) -> Option<u64> {
    let v = v.trim();
    let head = v.split([',', ';']).next().unwrap_or_default().trim();
    if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let n: f64 = head.parse().ok()?;
    // `as` saturates.
    (!n.is_nan() && n >= 0.0).then_some(n as u64)
}

/// The IETF draft's combined fields.
#[derive(Debug, Default, PartialEq, Eq)]
struct Structured<'a> {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<&'a str>,
}

/// `RateLimit` in either shape the drafts used:
/// - a dictionary (drafts 5-6): `limit=100, remaining=50, reset=30`;
/// - a list of policies (draft 7 on): `"default";r=50;t=30` with the quota
///   in `RateLimit-Policy: "default";q=100;w=60`. With several policies,
///   the one with the least remaining counts.
fn structured<'a>(ratelimit: &'a str, policy: Option<&'a str>) -> Option<Structured<'a>> {
    let params = |member: &'a str| {
        member.split(';').map(str::trim).filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim()))
    };
    let mut dict = Structured::default();
    let mut best: Option<(&str, u64, Option<&str>)> = None;
    for member in ratelimit.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let name = member.split(';').next().unwrap_or_default().trim();
        if let Some((k, v)) = name.split_once('=') {
            match k.trim().to_ascii_lowercase().as_str() {
                "limit" => dict.limit = count(v),
                "remaining" => dict.remaining = count(v),
                "reset" => dict.reset = Some(v.trim()),
                _ => {}
            }
            continue;
        }
        let r = params(member).find(|(k, _)| *k == "r").and_then(|(_, v)| count(v));
        let t = params(member).find(|(k, _)| *k == "t").map(|(_, v)| v);
        if let Some(r) = r
            && best.is_none_or(|(_, b, _)| r < b)
        {
            best = Some((name.trim_matches('"'), r, t));
        }
    }
    if dict != Structured::default() {
        return Some(dict);
    }
    let (name, remaining, reset) = best?;
    let limit = policy.and_then(|p| {
        let quota = |m: &'a str| params(m).find(|(k, _)| *k == "q").and_then(|(_, v)| count(v));
        let members = || p.split(',').map(str::trim).filter(|m| !m.is_empty());
        members()
            .find(|m| m.split(';').next().unwrap_or_default().trim().trim_matches('"') == name)
            .and_then(quota)
            .or_else(|| members().next().and_then(quota))
    });
    Some(Structured { limit, remaining: Some(remaining), reset })
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

    /// The vendor's limit as known, and how much of it other clients hold (sliding windows).
    fn pressure(&self, now: Instant) -> (Option<u64>, u64) {
        (self.limit, if self.saw_reset { 0 } else { self.sliding.others(now) })
    }

    #[cfg(test)]
    pub(crate) fn sliding(&self) -> &Sliding {
        &self.sliding
    }
}

/// Who waits, for log lines: the connection, the stream when known, the
/// endpoint (redacted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    pub(crate) connection: &'a str,
    pub(crate) stream: &'a str,
    pub(crate) endpoint: &'a str,
}

/// A long limiter wait ([`RateConfig::warn_wait`]) is logged as a warning
/// at most once per this long per client (the others at debug).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// One client's limiter. Shared by every clone of the client.
pub(crate) struct Limiter {
    governor: Option<DefaultDirectRateLimiter>,
    in_flight: Semaphore,
    adapt: bool,
    budget: Mutex<Budget>,
    /// Wakes requests waiting for a sliding-window slot when an answer changed the model.
    changed: Notify,
    /// When a long wait was last logged as a warning.
    warned: Mutex<Option<Instant>>,
    /// A nonsensical rate-limit header was logged (once per client).
    ignored_logged: AtomicBool,
    /// A pacing wait this long is logged as a warning.
    warn_wait: Duration,
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
            warned: Mutex::new(None),
            ignored_logged: AtomicBool::new(false),
            warn_wait: cfg.warn_wait,
        }
    }

    /// Wait for an in-flight slot, the fixed quota and the vendor's pacing.
    /// All of that time is recorded as limiter wait. A pacing wait that
    /// would end after `deadline` is not waited for: the error is its length.
    /// A long pacing wait (the vendor's budget spent, by this client or by
    /// others sharing it) is logged as a warning naming `asker` and the wait.
    pub(crate) async fn acquire(
        &self,
        metrics: &RequestMetrics,
        deadline: Option<Instant>,
        asker: Asker<'_>,
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
        let mut announced = false;
        let reserved = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let r = match self.budget.lock() {
                Ok(mut b) => b.reserve(now, deadline).map(|r| (r, b.pressure(now))),
                Err(_) => Ok((Reservation::Go(Slot { at: now, seq: 0 }), (None, 0))),
            };
            match r {
                Ok((Reservation::Go(slot), pressure)) => {
                    if !announced {
                        self.announce(slot.at.saturating_duration_since(now), pressure, asker);
                    }
                    break slot;
                }
                Ok((Reservation::Later(at), pressure)) => {
                    if !announced {
                        announced = self.announce(at.saturating_duration_since(now), pressure, asker);
                    }
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

    /// Log a long pacing wait: a warning at most every [`WARN_EVERY`] per
    /// client, debug otherwise. Returns whether the wait was long.
    fn announce(&self, wait: Duration, (limit, others): (Option<u64>, u64), asker: Asker<'_>) -> bool {
        if wait < self.warn_wait {
            return false;
        }
        let now = Instant::now();
        let warn = match self.warned.lock() {
            Ok(mut w) if w.is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY) => {
                *w = Some(now);
                true
            }
            _ => false,
        };
        let wait_s = (wait.as_secs_f64() * 10.0).round() / 10.0;
        let limit = limit.map_or_else(|| "unknown".to_string(), |l| l.to_string());
        let (connection, stream, endpoint) = (asker.connection, asker.stream, asker.endpoint);
        if warn {
            tracing::warn!(
                connection,
                stream,
                %endpoint,
                wait_s,
                vendor_limit = %limit,
                held_by_other_clients = others,
                "the vendor's rate budget is spent; waiting for its window to free (counted as limiter wait)"
            );
        } else {
            tracing::debug!(connection, stream, %endpoint, wait_s, "waiting for the vendor's rate budget");
        }
        true
    }

    /// Learn from the rate-limit headers of the answer to `permit`'s request.
    pub(crate) fn observe(&self, headers: &HeaderMap, permit: &Permit<'_>, asker: Asker<'_>) {
        if !self.adapt {
            return;
        }
        let read = read_rate(headers, SystemTime::now());
        if let Some((header, value)) = &read.ignored
            && !self.ignored_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                connection = asker.connection,
                endpoint = %asker.endpoint,
                header = %header,
                value = %value,
                "ignoring a rate-limit header whose value is not a plausible time (logged once per connection)"
            );
        }
        if let Some(rate) = read.rate
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
