//! Per-instance rate limiting: a sliding window (CrowdStrike, Graph) or fixed windows
//! (Okta). Admitted requests count against the limit; every attempt (admitted or not)
//! counts toward `Counters::max_in_window`, so a test can check that a client never sent
//! more than the limit in any window.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    Sliding,
    Fixed,
}

/// Outcome of one request against the limiter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When the window resets (fixed) or the next slot frees (sliding).
    pub reset_at: Instant,
    /// Attempts seen in the current window, this one included.
    pub attempts_in_window: u64,
}

pub(crate) struct Limiter {
    limit: RateLimit,
    window: Window,
    state: Mutex<State>,
}

struct State {
    start: Instant,
    admitted: VecDeque<Instant>,
    attempts: VecDeque<Instant>,
    window_index: u64,
    window_admitted: u32,
    window_attempts: u64,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit, window: Window, start: Instant) -> Self {
        Limiter {
            limit,
            window,
            state: Mutex::new(State {
                start,
                admitted: VecDeque::new(),
                attempts: VecDeque::new(),
                window_index: 0,
                window_admitted: 0,
                window_attempts: 0,
            }),
        }
    }

    fn per(&self) -> Duration {
        self.limit.per.max(Duration::from_millis(1))
    }

    /// Another client of the tenant spends `n` requests at `now` (as many as
    /// the limit leaves; what is beyond it would have been refused). They
    /// count against the limit like any other; they are not attempts of the
    /// client under test (`Counters::max_in_window` ignores them). Returns
    /// how many were admitted.
    pub(crate) fn spend(&self, now: Instant, n: u32) -> u32 {
        let per = self.per();
        let limit = self.limit.requests;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match self.window {
            Window::Sliding => {
                while s.admitted.front().is_some_and(|t| now.duration_since(*t) >= per) {
                    s.admitted.pop_front();
                }
                let take = n.min(limit.saturating_sub(s.admitted.len() as u32));
                s.admitted.extend(std::iter::repeat_n(now, take as usize));
                take
            }
            Window::Fixed => {
                let elapsed = now.saturating_duration_since(s.start);
                let index = (elapsed.as_nanos() / per.as_nanos()) as u64;
                if index != s.window_index {
                    s.window_index = index;
                    s.window_admitted = 0;
                    s.window_attempts = 0;
                }
                let take = n.min(limit.saturating_sub(s.window_admitted));
                s.window_admitted += take;
                take
            }
        }
    }

    /// Count one request and decide; `consume == false` only reports the state.
    pub(crate) fn check(&self, now: Instant, consume: bool) -> Decision {
        let per = self.per();
        let limit = self.limit.requests;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match self.window {
            Window::Sliding => {
                while s.admitted.front().is_some_and(|t| now.duration_since(*t) >= per) {
                    s.admitted.pop_front();
                }
                while s.attempts.front().is_some_and(|t| now.duration_since(*t) >= per) {
                    s.attempts.pop_front();
                }
                let allowed = (s.admitted.len() as u64) < limit as u64;
                if consume {
                    s.attempts.push_back(now);
                    if allowed {
                        s.admitted.push_back(now);
                    }
                }
                let used = s.admitted.len() as u32;
                let reset_at = if used >= limit { s.admitted.front().map_or(now, |t| *t + per) } else { now };
                Decision {
                    allowed: allowed || !consume,
                    limit,
                    remaining: limit.saturating_sub(used),
                    reset_at,
                    attempts_in_window: s.attempts.len() as u64,
                }
            }
            Window::Fixed => {
                let elapsed = now.saturating_duration_since(s.start);
                let index = (elapsed.as_nanos() / per.as_nanos()) as u64;
                if index != s.window_index {
                    s.window_index = index;
                    s.window_admitted = 0;
                    s.window_attempts = 0;
                }
                let allowed = s.window_admitted < limit;
                if consume {
                    s.window_attempts += 1;
                    if allowed {
                        s.window_admitted += 1;
                    }
                }
                let reset_at = s.start + Duration::from_nanos((per.as_nanos() as u64).saturating_mul(index + 1));
                Decision {
                    allowed: allowed || !consume,
                    limit,
                    remaining: limit.saturating_sub(s.window_admitted),
                    reset_at,
                    attempts_in_window: s.window_attempts,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_admits_limit_then_frees_slots() {
        let t0 = Instant::now();
        let l = Limiter::new(RateLimit::per_second(3), Window::Sliding, t0);
        for i in 0..3 {
            let d = l.check(t0 + Duration::from_millis(i * 10), true);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i as u32);
        }
        let d = l.check(t0 + Duration::from_millis(500), true);
        assert!(!d.allowed);
        assert_eq!(d.reset_at, t0 + Duration::from_secs(1));
        assert_eq!(d.attempts_in_window, 4);
        assert!(l.check(t0 + Duration::from_millis(1001), true).allowed);
    }

    #[test]
    fn another_client_spends_part_of_the_window() {
        let t0 = Instant::now();
        let l = Limiter::new(RateLimit::per_second(5), Window::Sliding, t0);
        assert_eq!(l.spend(t0, 3), 3);
        let d = l.check(t0 + Duration::from_millis(10), true);
        assert!(d.allowed);
        assert_eq!(d.remaining, 1);
        assert_eq!(d.attempts_in_window, 1, "the other client's requests are not the client's attempts");
        assert_eq!(l.spend(t0 + Duration::from_millis(20), 3), 1, "no more than the limit leaves");
        assert!(!l.check(t0 + Duration::from_millis(30), true).allowed);
        assert!(l.check(t0 + Duration::from_millis(1001), true).allowed, "spent requests leave the window too");
    }

    #[test]
    fn fixed_window_resets() {
        let t0 = Instant::now();
        let l = Limiter::new(RateLimit::per_second(2), Window::Fixed, t0);
        assert!(l.check(t0, true).allowed);
        assert!(l.check(t0, true).allowed);
        let d = l.check(t0 + Duration::from_millis(999), true);
        assert!(!d.allowed);
        assert_eq!(d.reset_at, t0 + Duration::from_secs(1));
        assert!(l.check(t0 + Duration::from_millis(1000), true).allowed);
    }
}
