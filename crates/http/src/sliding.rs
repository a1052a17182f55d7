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
//! the vendor's budget much faster than the assumed window allows (the limit
//! was learned from the headers, not configured), the client warms up: half
//! of its share of the budget at once, the rest spread evenly over what is
//! left of the assumed window, the first few of those sooner, at doubling
//! intervals (20 ms, 40 ms, ...), so that a much shorter window shows itself
//! within about twice its length. An answer after the real window ended
//! reports `remaining` going back up, which bounds the window (above); and
//! no request is ever sent beyond the budget, so learning costs no 429.
//! When the assumed window is the real one, the whole budget is used over
//! it (spending the second half at doubling intervals instead used a third
//! of it for probes that came later and later).
//!
//! Other clients of the tenant spend the same budget. What the vendor counts
//! beyond our own requests is theirs: the model keeps room for the most they
//! were seen to hold (plus one request of headroom) for a window after it was
//! last seen, and spaces our requests evenly over what is left. When they
//! hold all of it, the next request waits until their use is forgotten (at
//! most a window after it was seen), never longer.
//!
//! The model counts a request against the window a little longer than the
//! window itself (1 %, at most 500 ms): requests reach the vendor with some
//! jitter, and one arriving earlier than its predecessor's expiry would be
//! refused.

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
/// Probes stop doubling after this many (by then the even spread is sooner).
const PROBE_DOUBLINGS: u64 = 20;
/// Longest slack added to the window for requests reaching the vendor late.
const MAX_JITTER: Duration = Duration::from_millis(500);
/// Samples of other clients' use kept (over about one window).
const EXT_SAMPLES: usize = 32;
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
    /// Other clients' requests as each answer of the last window saw them
    /// (at most [`EXT_SAMPLES`], one per window / [`EXT_SAMPLES`]): how fast
    /// their use grows.
    ext_samples: VecDeque<(Instant, u64)>,
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
            ext_samples: VecDeque::new(),
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

    /// Other clients' requests the model keeps room for at `s`: what they
    /// were seen to hold, what they may have added since the last answer if
    /// their use has been growing, and one more for their jitter if any.
    fn others_at(&self, s: Instant) -> u64 {
        let ext = self.external_at(s).saturating_add(self.growth_until(s));
        ext.saturating_add(u64::from(ext > 0))
    }

    /// Requests other clients may add between the last answer and `s`, at
    /// the rate their use grew over the last window (zero when it was
    /// steady or shrinking). At most one window's worth is projected.
    fn growth_until(&self, s: Instant) -> u64 {
        let (Some(first), Some(last)) = (self.ext_samples.front(), self.ext_samples.back()) else { return 0 };
        let span = last.0.saturating_duration_since(first.0);
        let Some(grown) = last.1.checked_sub(first.1).filter(|g| *g > 0) else { return 0 };
        if span < self.window / 20 || s <= last.0 {
            return 0;
        }
        let ahead = s.saturating_duration_since(last.0).min(self.window);
        (grown as f64 * ahead.as_secs_f64() / span.as_secs_f64()).ceil() as u64
    }

    /// Other clients' requests the model keeps room for now (for log lines).
    pub(crate) fn others(&self, now: Instant) -> u64 {
        self.external_at(now)
    }

    /// What other clients leave of the vendor's budget at `s`.
    fn share_at(&self, s: Instant, limit: u64) -> u64 {
        limit.saturating_sub(self.others_at(s))
    }

    /// How long one of our requests counts against the window: the window,
    /// and a little more for requests that reach the vendor late.
    fn span(&self) -> Duration {
        self.window + (self.window / 100).min(MAX_JITTER)
    }

    /// Our requests with a send time in `(s - span, s]`.
    fn in_window(&self, s: Instant) -> usize {
        let Some(start) = s.checked_sub(self.span()) else { return self.log.len() };
        self.log.len() - self.log.partition_point(|e| e.at <= start)
    }

    /// The earliest instant at or after `s` when one more request fits the model.
    fn model_slot(&self, s: Instant, limit: u64) -> Instant {
        let mut s = s;
        for _ in 0..2 {
            let ours = self.in_window(s) as u64;
            let ext = self.external_at(s);
            let Some(need) = (ours + self.others_at(s) + 1).checked_sub(limit).filter(|n| *n > 0) else { return s };
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
            let leaves = self.log.get(oldest + need as usize - 1).map_or(s, |e| add(e.at, self.span()));
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
            let warm = self.warmup_slot(slot, limit);
            if warm > slot {
                slot = self.model_slot(warm, limit);
            }
        } else if let Some(last) = self.log.back() {
            // Evenly spaced at the sustainable rate of what other clients
            // leave of the window (as known now).
            let share = self.share_at(slot, limit).max(1);
            let even = add(last.at, self.window / u32::try_from(share).unwrap_or(u32::MAX));
            slot = self.model_slot(slot.max(even), limit);
        }
        slot
    }

    /// While warming up: the earliest instant at or after `s` for our next
    /// request. The first half of our share of the window goes at once; the
    /// `k`-th request after it at the earlier of `k` even steps over the rest
    /// of the assumed window and `PROBE_BASE * 2^(k-1)`. Never later than the
    /// end of the assumed window (the model decides from there on).
    fn warmup_slot(&self, s: Instant, limit: u64) -> Instant {
        let Some(first) = self.first_at else { return s };
        let share = self.share_at(s, limit);
        let burst = share.div_ceil(2);
        // Every request since the first is in the window while warming up.
        let ours = self.in_window(s);
        let Some(k) = (ours as u64 + 1).checked_sub(burst).filter(|k| *k > 0 && burst > 0) else { return s };
        // The burst ended with our `burst`-th request.
        let Some(burst_end) = (self.log.len() - ours)
            .checked_add(usize::try_from(burst).unwrap_or(usize::MAX) - 1)
            .and_then(|i| self.log.get(i))
            .map(|e| e.at)
        else {
            return s;
        };
        let end = add(first, self.default_window);
        let rest = share - burst;
        let spread = if k >= rest {
            end
        } else {
            add(burst_end, end.saturating_duration_since(burst_end).mul_f64(k as f64 / rest as f64))
        };
        let probe = add(burst_end, PROBE_BASE.saturating_mul(1 << (k - 1).min(PROBE_DOUBLINGS)));
        s.max(spread.min(probe))
    }

    /// Record request `seq` as sent at `slot` (from [`Sliding::plan`]).
    pub(crate) fn commit(&mut self, seq: u64, slot: Instant) {
        self.prune(slot);
        self.first_at.get_or_insert(slot);
        self.log.push_back(Sent { seq, at: slot, answered: None });
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
        self.sample_external(a, external);
    }

    /// Remember what other clients held at `a` (bounded: one sample per
    /// 1/[`EXT_SAMPLES`] of the window, over the last window).
    fn sample_external(&mut self, a: Instant, external: u64) {
        let start = a.checked_sub(self.window);
        while self.ext_samples.front().is_some_and(|(t, _)| start.is_some_and(|st| *t < st)) {
            self.ext_samples.pop_front();
        }
        let step = self.window / EXT_SAMPLES as u32;
        let several = self.ext_samples.len() > 1;
        match self.ext_samples.back_mut() {
            // Within one step of the last sample: keep the latest reading
            // (the oldest one stays, as the reference).
            Some(last) if several && a.saturating_duration_since(last.0) < step => *last = (a, external),
            _ => self.ext_samples.push_back((a, external)),
        }
        while self.ext_samples.len() > EXT_SAMPLES + 1 {
            self.ext_samples.pop_front();
        }
    }

    /// The vendor refused a request: the model was too optimistic.
    pub(crate) fn rate_limited(&mut self) {
        self.window = (self.window + self.window / 2).min(self.default_window);
    }
}
