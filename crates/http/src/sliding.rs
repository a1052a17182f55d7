//! A model of a vendor's sliding rate-limit window that reports only its
//! limit and what remains (CrowdStrike: `X-Ratelimit-Limit`,
//! `X-Ratelimit-Remaining`), never when the window ends nor how long it is.
//!
//! The client logs when it sends each request and admits a new one only
//! while fewer than `limit` of its own requests (plus what other clients of
//! the tenant are seen to use) fall inside the window. The window's length
//! is an upper bound: the configured one (CrowdStrike: a minute) until the
//! vendor's answers prove it shorter. An answer saying `n` requests are in
//! the window proves that our request `n + k + 1` back (counting the answered
//! one, skipping the `k` that overlapped it and may not have reached the
//! vendor yet) has left it, so the window is at most the time since that
//! request was sent. Once learned, requests are spaced evenly at
//! `window / limit`, which keeps the bound tight.
//!
//! Until the window is learned, and only when the configured pace could spend
//! the vendor's budget much faster than the assumed window allows, half the
//! budget is spent at once and the rest kept for probes sent at doubling
//! intervals: a probe answered after the window ended reveals its length,
//! and no probe is ever sent beyond the budget, so learning costs no 429.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Requests remembered at most (a vendor limit above this is not modelled per
/// request); fewer while no limit is known, twice the limit once it is.
const MAX_LOG: usize = 20_000;
const LOG_WITHOUT_LIMIT: usize = 256;
/// Requests looked at, back from an answered one, for the ones that overlapped it.
const OVERLAP_SCAN: usize = 256;
/// The first probe's delay after half the budget is spent, while the window is unknown.
const PROBE_BASE: Duration = Duration::from_millis(20);
/// Shortest window the model believes in.
const MIN_WINDOW: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    at: Instant,
    answered: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Sliding {
    /// Upper bound on the vendor's window.
    window: Duration,
    default_window: Duration,
    /// An answer confirmed the window (shorter than, or about, the default).
    learned: bool,
    /// Requests per second of the fixed quota, if any.
    quota_rate: Option<f64>,
    /// Decided when the first limit is seen.
    probing: Option<bool>,
    limit: Option<u64>,
    /// Our requests by send time (non-decreasing).
    log: VecDeque<Sent>,
    /// Requests of other clients seen in the window, until `external_until`.
    external: u64,
    external_until: Option<Instant>,
    /// When half the budget was in use (warm-up probes are timed from it).
    half_at: Option<Instant>,
    /// The first request: after one assumed window, the assumption stands.
    first_at: Option<Instant>,
}

fn add(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or(at)
}

impl Sliding {
    pub(crate) fn new(default_window: Duration, quota_rate: Option<f64>) -> Self {
        let default_window = default_window.max(MIN_WINDOW);
        Sliding {
            window: default_window,
            default_window,
            learned: false,
            quota_rate,
            probing: None,
            limit: None,
            log: VecDeque::new(),
            external: 0,
            external_until: None,
            half_at: None,
            first_at: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    #[cfg(test)]
    pub(crate) fn learned(&self) -> bool {
        self.learned
    }

    #[cfg(test)]
    pub(crate) fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Warming up: the window may be much shorter than assumed and no
    /// answer told yet; for at most one assumed window.
    fn probing(&self, at: Instant) -> bool {
        self.probing.unwrap_or(false) && !self.learned && self.first_at.is_none_or(|f| at < add(f, self.default_window))
    }

    fn external_at(&self, s: Instant) -> u64 {
        match self.external_until {
            Some(until) if until > s => self.external,
            _ => 0,
        }
    }

    /// Our requests with a send time in `(s - window, s]`.
    fn in_window(&self, s: Instant) -> usize {
        let Some(start) = s.checked_sub(self.window) else { return self.log.len() };
        self.log.len() - self.log.partition_point(|e| e.at <= start)
    }

    /// The earliest instant at or after `s` when one more request fits the model.
    fn model_slot(&self, s: Instant, limit: u64) -> Instant {
        let mut s = s;
        for _ in 0..2 {
            let ours = self.in_window(s) as u64;
            let ext = self.external_at(s);
            // With other clients about, one slot of headroom for their jitter.
            let headroom = u64::from(ext > 0);
            let Some(need) = (ours + ext + 1 + headroom).checked_sub(limit).filter(|n| *n > 0) else { return s };
            if need > ours {
                // Other clients hold the budget: wait until their use is forgotten.
                match self.external_until {
                    Some(until) if until > s => {
                        s = until;
                        continue;
                    }
                    _ => return add(s, self.window),
                }
            }
            // The `need`-th oldest of our requests in the window must leave it.
            let oldest = self.log.len() - ours as usize;
            let leaves = self.log.get(oldest + need as usize - 1).map_or(s, |e| add(e.at, self.window));
            let candidate = leaves.max(s);
            match self.external_until {
                // The others' use ends first: look again from there without it.
                Some(until) if ext > 0 && until > s && until < candidate => s = until,
                _ => return candidate,
            }
        }
        s
    }

    /// When a request reserved at `t` may be sent (pure; see [`Sliding::commit`]).
    pub(crate) fn plan(&self, t: Instant) -> Instant {
        // Never before one already scheduled, so a new request only affects later windows.
        let t = self.log.back().map_or(t, |e| e.at.max(t));
        let Some(limit) = self.limit.filter(|l| *l > 0) else { return t };
        let mut slot = self.model_slot(t, limit);
        if self.probing(slot) {
            let used = self.in_window(slot) as u64 + self.external_at(slot);
            let half = limit.div_ceil(2);
            if let (Some(j), Some(half_at)) = (used.checked_sub(half), self.half_at) {
                let factor = 1u32 << j.min(30) as u32;
                slot = slot.max(add(half_at, PROBE_BASE.saturating_mul(factor)));
            }
        } else if let Some(last) = self.log.back() {
            // Evenly spaced at the window's sustainable rate (as known now).
            let even = add(last.at, self.window / u32::try_from(limit).unwrap_or(u32::MAX));
            slot = self.model_slot(slot.max(even), limit);
        }
        slot
    }

    /// Record request `seq` as sent at `slot` (from [`Sliding::plan`]).
    pub(crate) fn commit(&mut self, seq: u64, slot: Instant) {
        self.prune(slot);
        self.first_at.get_or_insert(slot);
        self.log.push_back(Sent { seq, at: slot, answered: None });
        if let Some(limit) = self.limit.filter(|l| *l > 0) {
            let used = self.in_window(slot) as u64 + self.external_at(slot);
            if used < limit.div_ceil(2) {
                self.half_at = None;
            } else if self.half_at.is_none() {
                self.half_at = Some(slot);
            }
        }
    }

    /// Forget requests older than the window (and a tenth, to confirm it),
    /// and beyond the log's cap: memory stays bounded by the vendor's limit.
    fn prune(&mut self, now: Instant) {
        let keep_after = now.checked_sub(self.window + self.window / 10);
        let cap = self.limit.map_or(LOG_WITHOUT_LIMIT, |l| {
            usize::try_from(l).unwrap_or(MAX_LOG).saturating_mul(2).saturating_add(OVERLAP_SCAN).min(MAX_LOG)
        });
        while let Some(front) = self.log.front() {
            let old = keep_after.is_some_and(|k| front.at <= k);
            if old || self.log.len() >= cap {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Sequence numbers are assigned in send order, so the log is sorted by them too.
    fn position(&self, seq: u64) -> Option<usize> {
        self.log.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    /// Request `seq` ended (answered or failed) at `at`.
    pub(crate) fn answered(&mut self, seq: u64, at: Instant) {
        if let Some(e) = self.position(seq).and_then(|p| self.log.get_mut(p))
            && e.answered.is_none()
        {
            e.answered = Some(at);
        }
    }

    /// Learn from the answer to request `seq`, received at `a`.
    pub(crate) fn observe(&mut self, seq: u64, limit: Option<u64>, remaining: Option<u64>, a: Instant) {
        if let Some(l) = limit {
            self.limit = Some(l);
            if self.probing.is_none() {
                let budget_per_window = self.default_window.as_secs_f64() * self.quota_rate.unwrap_or(f64::INFINITY);
                self.probing = Some(budget_per_window > 2.0 * l as f64);
            }
        }
        self.answered(seq, a);
        let (Some(l), Some(r)) = (self.limit, remaining) else { return };
        // Requests in the vendor's window when it answered, this one included.
        let n = l.saturating_sub(r);
        let Some(pos) = self.position(seq) else { return };
        if n == 0 {
            return;
        }
        let x_at = self.log[pos].at;
        // Earlier requests still unanswered when this one was sent: they may
        // have reached the vendor after it, so they prove nothing.
        let overlapped = self
            .log
            .range(pos.saturating_sub(OVERLAP_SCAN)..pos)
            .filter(|e| e.answered.is_none_or(|t| t > x_at))
            .count();
        let back = usize::try_from(n).unwrap_or(usize::MAX).saturating_add(overlapped);
        if let Some(gone) = pos.checked_sub(back).and_then(|i| self.log.get(i)) {
            let bound = a.saturating_duration_since(gone.at);
            // Slack for requests reaching the vendor a little later than others.
            let bound = bound + bound / 50 + Duration::from_millis(2);
            if bound < self.window {
                self.window = bound.max(MIN_WINDOW);
                self.learned = true;
            } else if bound <= self.default_window + self.default_window / 10 {
                self.learned = true;
            }
        }
        // What the vendor counts beyond our own requests is someone else's.
        let first = a.checked_sub(self.window).map_or(0, |start| self.log.partition_point(|e| e.at <= start));
        let ours = (pos + 1).saturating_sub(first);
        // The most seen in the last window (other clients' use fluctuates).
        let external = n.saturating_sub(ours as u64);
        if external >= self.external || self.external_until.is_none_or(|u| u <= a) {
            self.external = external;
            self.external_until = Some(add(a, self.window));
        }
    }

    /// The vendor refused a request: the model was too optimistic.
    pub(crate) fn rate_limited(&mut self) {
        self.window = (self.window + self.window / 2).min(self.default_window);
    }
}
