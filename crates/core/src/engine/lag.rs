//! Runtime lag: how late the tokio runtime runs scheduled work.
//!
//! Two instruments, because each misses what the other sees:
//! - a ticker task asks to wake every `interval` and records how late it woke
//!   (catches a runtime whose workers are all busy or blocked);
//! - [`Staged`] wraps each engine task and times every poll; a poll longer than
//!   the threshold means that task blocked its worker, and it is named
//!   (stage + connection) in a warning and in the summary.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::summary::LagStats;

/// Shared by every run of an engine: one ticker, many recorders.
#[derive(Debug, Clone)]
pub struct LagMonitor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    threshold: Duration,
    recorders: Mutex<Vec<Weak<LagRecorder>>>,
    stop: CancellationToken,
    /// When the last lag warning was logged: at most one a second.
    last_warning: Mutex<Option<Instant>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Collects lag samples for one connection's run.
#[derive(Debug)]
pub struct LagRecorder {
    state: Mutex<RecorderState>,
    threshold: Duration,
}

#[derive(Debug)]
struct RecorderState {
    histogram: Option<Histogram<u64>>,
    over_threshold: u64,
    long_polls: u64,
    max_poll: Duration,
    worst_stage: Option<String>,
}

impl LagMonitor {
    /// Start the ticker on the current runtime. It stops when the monitor is dropped.
    pub fn start(interval: Duration, threshold: Duration) -> Self {
        let inner = Arc::new(Inner {
            threshold,
            recorders: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            last_warning: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let stop = inner.stop.clone();
        tokio::spawn(async move {
            let mut due = tokio::time::Instant::now() + interval;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
                let lag = tokio::time::Instant::now().saturating_duration_since(due);
                let Some(inner) = weak.upgrade() else { return };
                inner.record(lag);
                drop(inner);
                due = tokio::time::Instant::now() + interval;
            }
        });
        LagMonitor { inner }
    }

    pub fn threshold(&self) -> Duration {
        self.inner.threshold
    }

    /// A recorder that receives every sample from now until it is dropped.
    pub fn recorder(&self) -> Arc<LagRecorder> {
        let rec = Arc::new(LagRecorder::new(self.inner.threshold));
        if let Ok(mut list) = self.inner.recorders.lock() {
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&rec));
        }
        rec
    }
}

impl Inner {
    fn record(&self, lag: Duration) {
        if lag >= self.threshold
            && let Ok(mut last) = self.last_warning.lock()
            && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            *last = Some(Instant::now());
            tracing::warn!(lag_ms = lag.as_millis() as u64, "tokio runtime ran late: a task blocked a worker");
        }
        let recorders: Vec<Arc<LagRecorder>> = match self.recorders.lock() {
            Ok(list) => list.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => return,
        };
        for r in recorders {
            r.sample(lag);
        }
    }
}

impl LagRecorder {
    pub fn new(threshold: Duration) -> Self {
        LagRecorder {
            state: Mutex::new(RecorderState {
                // 1 us .. 1 hour, 2 significant digits: a few KiB.
                histogram: Histogram::new_with_bounds(1, 3_600_000_000, 2).ok(),
                over_threshold: 0,
                long_polls: 0,
                max_poll: Duration::ZERO,
                worst_stage: None,
            }),
            threshold,
        }
    }

    pub fn sample(&self, lag: Duration) {
        if let Ok(mut s) = self.state.lock() {
            let us = (lag.as_micros() as u64).clamp(1, 3_600_000_000);
            if let Some(h) = s.histogram.as_mut() {
                let _ = h.record(us);
            }
            if lag >= self.threshold {
                s.over_threshold += 1;
            }
        }
    }

    fn long_poll(&self, stage: &str, connection: &str, took: Duration) {
        tracing::warn!(
            stage,
            connection,
            poll_ms = took.as_millis() as u64,
            "a task blocked the tokio runtime: CPU or blocking work belongs on the normalize pool"
        );
        if let Ok(mut s) = self.state.lock() {
            s.long_polls += 1;
            if took > s.max_poll {
                s.max_poll = took;
                s.worst_stage = Some(stage.to_string());
            }
        }
    }

    pub fn stats(&self) -> LagStats {
        let Ok(s) = self.state.lock() else { return LagStats::default() };
        let (samples, p50, p99, max) = match &s.histogram {
            Some(h) if !h.is_empty() => (h.len(), h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()),
            _ => (0, 0, 0, 0),
        };
        LagStats {
            samples,
            p50_us: p50,
            p99_us: p99,
            max_us: max,
            over_threshold: s.over_threshold,
            long_polls: s.long_polls,
            max_poll_us: s.max_poll.as_micros() as u64,
            blocking_stage: s.worst_stage.clone(),
        }
    }
}

/// Wraps an engine task's future and times each poll (see module docs).
pub struct Staged<F> {
    inner: Pin<Box<F>>,
    stage: &'static str,
    connection: Arc<str>,
    recorder: Arc<LagRecorder>,
}

impl<F: Future> Staged<F> {
    pub fn new(stage: &'static str, connection: Arc<str>, recorder: Arc<LagRecorder>, inner: F) -> Self {
        Staged { inner: Box::pin(inner), stage, connection, recorder }
    }
}

impl<F: Future> Future for Staged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        let took = started.elapsed();
        if took >= self.recorder.threshold {
            self.recorder.long_poll(self.stage, &self.connection, took);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_names_the_stage_that_blocked() {
        let rec = Arc::new(LagRecorder::new(Duration::from_millis(20)));
        Staged::new("fetch", Arc::from("conn-a"), rec.clone(), async {
            std::thread::sleep(Duration::from_millis(60));
        })
        .await;
        let stats = rec.stats();
        assert_eq!(stats.long_polls, 1);
        assert_eq!(stats.blocking_stage.as_deref(), Some("fetch"));
        assert!(stats.max_poll_us >= 60_000, "{stats:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ticker_sees_a_blocked_runtime() {
        let monitor = LagMonitor::start(Duration::from_millis(5), Duration::from_millis(50));
        let rec = monitor.recorder();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Block the only worker on purpose.
        std::thread::sleep(Duration::from_millis(150));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let stats = rec.stats();
        assert!(stats.max_us >= 100_000, "monitor missed a 150 ms block: {stats:?}");
        assert!(stats.over_threshold >= 1, "{stats:?}");
    }
}
