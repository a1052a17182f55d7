//! Runtime lag: how late the tokio runtime runs scheduled work.
//!
//! Two instruments, because each misses what the other sees:
//! - a ticker task asks to wake every `interval` and records how late it woke
//!   (catches a runtime whose workers are all busy or blocked);
//! - [`Staged`] wraps each engine task and times every poll; a poll longer than
//!   the threshold means that task blocked its worker, and it is named
//!   (stage + connection) in a warning and in the summary.
//!
//! When the ticker wakes late it names what was running: the engine tasks
//! still inside a poll that began before the tick was due, or the last long
//! poll that ended meanwhile. If no engine task was polling, the warning says
//! so: the workers were starved (a task outside the engine blocked, or the
//! machine's CPUs were saturated).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::summary::LagStats;

/// What [`LagStats::late_causes`] says when a tick was late but no engine task was polling.
pub const NO_ENGINE_TASK: &str = "(no engine task)";

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
    polls: Arc<Polls>,
    observers: Observers,
    /// When the ticker's next tick is due (a [`Polls::stamp`]; 0 before the first).
    next_due: AtomicU64,
}

/// Callbacks that see every tick's lag (a service's metrics histogram).
#[derive(Default)]
struct Observers(Mutex<Vec<Observer>>);

type Observer = Box<dyn Fn(Duration) + Send + Sync>;

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|o| o.len()).unwrap_or(0);
        f.debug_struct("Observers").field("count", &n).finish()
    }
}

/// The engine tasks and whether each is inside a poll, and the last long
/// poll, so that a late tick can name what was running. A poll costs two
/// atomic stores; the registry is locked only when a task is created and
/// when a tick is late.
#[derive(Debug)]
struct Polls {
    epoch: Instant,
    tasks: Mutex<Registry>,
    last_long: Mutex<Option<(String, Instant)>>,
}

#[derive(Debug, Default)]
struct Registry {
    slots: Vec<Weak<PollSlot>>,
    /// Live slots at the last clean-up: the next one runs at twice as many.
    pruned_at: usize,
}

/// One engine task: its name, and when its current poll began.
#[derive(Debug)]
struct PollSlot {
    stage: &'static str,
    connection: Arc<str>,
    /// Nanoseconds since `Polls::epoch` (plus one) when the running poll
    /// began; 0 while the task is not being polled.
    polling_since: AtomicU64,
}

impl Default for Polls {
    fn default() -> Self {
        Polls { epoch: Instant::now(), tasks: Mutex::default(), last_long: Mutex::default() }
    }
}

impl Polls {
    fn register(&self, stage: &'static str, connection: Arc<str>) -> Arc<PollSlot> {
        let slot = Arc::new(PollSlot { stage, connection, polling_since: AtomicU64::new(0) });
        if let Ok(mut reg) = self.tasks.lock() {
            if reg.slots.len() >= 2 * reg.pruned_at.max(64) {
                reg.slots.retain(|w| w.strong_count() > 0);
                reg.pruned_at = reg.slots.len();
            }
            reg.slots.push(Arc::downgrade(&slot));
        }
        slot
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn long_poll(&self, slot: &PollSlot) {
        if let Ok(mut last) = self.last_long.lock() {
            *last = Some((format!("{}@{}", slot.stage, slot.connection), Instant::now()));
        }
    }

    /// `stage@connection` of what blocked the runtime around `since`, if an engine task did.
    fn culprits(&self, since: Instant) -> Vec<String> {
        let since = self.stamp(since);
        let mut out: Vec<String> = match self.tasks.lock() {
            Ok(reg) => reg
                .slots
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|t| {
                    let began = t.polling_since.load(Ordering::Acquire);
                    began != 0 && began <= since
                })
                .map(|t| format!("{}@{}", t.stage, t.connection))
                .collect(),
            Err(_) => Vec::new(),
        };
        if out.is_empty()
            && let Ok(last) = self.last_long.lock()
            && let Some((name, ended)) = last.as_ref()
            && self.stamp(*ended) >= since
        {
            out.push(name.clone());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Collects lag samples for one connection's run.
#[derive(Debug)]
pub struct LagRecorder {
    state: Mutex<RecorderState>,
    threshold: Duration,
    /// The monitor's record of polls in progress (a recorder made on its own has its own).
    polls: Arc<Polls>,
}

#[derive(Debug)]
struct RecorderState {
    histogram: Option<Histogram<u64>>,
    over_threshold: u64,
    long_polls: u64,
    max_poll: Duration,
    worst_stage: Option<String>,
    late_causes: std::collections::BTreeMap<String, u64>,
}

impl LagMonitor {
    /// Start the ticker on the current runtime. It stops when the monitor is dropped.
    pub fn start(interval: Duration, threshold: Duration) -> Self {
        let inner = Arc::new(Inner {
            threshold,
            recorders: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            last_warning: Mutex::new(None),
            polls: Arc::default(),
            observers: Observers::default(),
            next_due: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let stop = inner.stop.clone();
        let first_due = tokio::time::Instant::now() + interval;
        inner.next_due.store(inner.polls.stamp(first_due.into_std()), Ordering::Release);
        tokio::spawn(async move {
            let mut due = first_due;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
                let lag = tokio::time::Instant::now().saturating_duration_since(due);
                let Some(inner) = weak.upgrade() else { return };
                inner.record(lag, due.into_std());
                due = tokio::time::Instant::now() + interval;
                inner.next_due.store(inner.polls.stamp(due.into_std()), Ordering::Release);
                drop(inner);
            }
        });
        LagMonitor { inner }
    }

    pub fn threshold(&self) -> Duration {
        self.inner.threshold
    }

    /// Call `f` with every tick's lag from now on, for as long as the monitor
    /// runs (a service exporting runtime lag as a histogram). `f` runs on the
    /// ticker task: it must be quick and must not block.
    pub fn observe(&self, f: impl Fn(Duration) + Send + Sync + 'static) {
        if let Ok(mut list) = self.inner.observers.0.lock() {
            list.push(Box::new(f));
        }
    }

    /// Close `recorder` (a run ending): a tick that is overdue now has not
    /// been counted yet, because the ticker could not run (the runtime's
    /// workers were blocked until this moment). A run that ends right after
    /// blocking the runtime would otherwise report no lag at all; the overdue
    /// tick is recorded into this recorder only (the others get it when the
    /// ticker wakes).
    pub fn settle(&self, recorder: &LagRecorder) {
        let due = self.inner.next_due.load(Ordering::Acquire);
        if due == 0 {
            return;
        }
        let now = self.inner.polls.stamp(Instant::now());
        if now <= due {
            return;
        }
        let lag = Duration::from_nanos(now - due);
        recorder.sample(lag);
        if lag >= self.inner.threshold {
            let due_at = self.inner.polls.epoch + Duration::from_nanos(due - 1);
            recorder.blame(&self.inner.polls.culprits(due_at));
        }
    }

    /// A recorder that receives every sample from now until it is dropped.
    pub fn recorder(&self) -> Arc<LagRecorder> {
        let rec = Arc::new(LagRecorder::with_polls(self.inner.threshold, self.inner.polls.clone()));
        if let Ok(mut list) = self.inner.recorders.lock() {
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&rec));
        }
        rec
    }
}

impl Inner {
    /// One tick's lateness; `due` is when it should have fired.
    fn record(&self, lag: Duration, due: Instant) {
        let culprits = if lag >= self.threshold { self.polls.culprits(due) } else { Vec::new() };
        if lag >= self.threshold
            && let Ok(mut last) = self.last_warning.lock()
            && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            *last = Some(Instant::now());
            let lag_ms = lag.as_millis() as u64;
            if culprits.is_empty() {
                tracing::warn!(
                    lag_ms,
                    stage = "none",
                    "tokio runtime ran late, but no engine task was polling: a task outside the engine \
                     blocked a worker, or the machine's CPUs were saturated"
                );
            } else {
                let stage = culprits.join(", ");
                tracing::warn!(lag_ms, %stage, "tokio runtime ran late: an engine task blocked a worker");
            }
        }
        let recorders: Vec<Arc<LagRecorder>> = match self.recorders.lock() {
            Ok(list) => list.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => return,
        };
        for r in recorders {
            r.sample(lag);
            if lag >= self.threshold {
                r.blame(&culprits);
            }
        }
        if let Ok(observers) = self.observers.0.lock() {
            for f in observers.iter() {
                f(lag);
            }
        }
    }
}

impl LagRecorder {
    pub fn new(threshold: Duration) -> Self {
        Self::with_polls(threshold, Arc::default())
    }

    fn with_polls(threshold: Duration, polls: Arc<Polls>) -> Self {
        LagRecorder {
            polls,
            state: Mutex::new(RecorderState {
                // 1 us .. 1 hour, 2 significant digits: a few KiB.
                histogram: Histogram::new_with_bounds(1, 3_600_000_000, 2).ok(),
                over_threshold: 0,
                long_polls: 0,
                max_poll: Duration::ZERO,
                worst_stage: None,
                late_causes: Default::default(),
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

    /// A late tick: what was running then (empty: no engine task).
    fn blame(&self, culprits: &[String]) {
        /// Distinct causes kept per run; a run that lags everywhere needs no longer list.
        const MAX_CAUSES: usize = 8;
        let Ok(mut s) = self.state.lock() else { return };
        let none = [NO_ENGINE_TASK.to_string()];
        let culprits = if culprits.is_empty() { &none[..] } else { culprits };
        for c in culprits {
            if s.late_causes.len() < MAX_CAUSES || s.late_causes.contains_key(c) {
                *s.late_causes.entry(c.clone()).or_default() += 1;
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
            late_causes: s.late_causes.clone(),
        }
    }
}

/// Wraps an engine task's future and times each poll (see module docs).
pub struct Staged<F> {
    inner: Pin<Box<F>>,
    slot: Arc<PollSlot>,
    recorder: Arc<LagRecorder>,
}

impl<F: Future> Staged<F> {
    pub fn new(stage: &'static str, connection: Arc<str>, recorder: Arc<LagRecorder>, inner: F) -> Self {
        let slot = recorder.polls.register(stage, connection);
        Staged { inner: Box::pin(inner), slot, recorder }
    }
}

impl<F: Future> Future for Staged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        self.slot.polling_since.store(self.recorder.polls.stamp(started), Ordering::Release);
        let out = self.inner.as_mut().poll(cx);
        self.slot.polling_since.store(0, Ordering::Release);
        let took = started.elapsed();
        if took >= self.recorder.threshold {
            self.recorder.polls.long_poll(&self.slot);
            self.recorder.long_poll(self.slot.stage, &self.slot.connection, took);
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

    /// A run that ends right after blocking the runtime: the ticker never got
    /// to run, yet the run's figures show the lag and what caused it.
    #[tokio::test(flavor = "current_thread")]
    async fn settle_counts_the_tick_a_blocked_runtime_could_not_run() {
        let monitor = LagMonitor::start(Duration::from_millis(5), Duration::from_millis(20));
        let rec = monitor.recorder();
        Staged::new("load", Arc::from("conn-b"), rec.clone(), async {
            std::thread::sleep(Duration::from_millis(80));
        })
        .await;
        assert_eq!(rec.stats().samples, 0, "the ticker ran while its only worker was blocked");
        monitor.settle(&rec);
        let stats = rec.stats();
        assert_eq!(stats.samples, 1, "{stats:?}");
        assert!(stats.max_us >= 70_000 && stats.over_threshold == 1, "{stats:?}");
        assert!(stats.late_causes.contains_key("load@conn-b"), "{stats:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn observers_see_every_tick() {
        let monitor = LagMonitor::start(Duration::from_millis(5), Duration::from_millis(50));
        let ticks = Arc::new(AtomicU64::new(0));
        let seen = ticks.clone();
        monitor.observe(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        let rec = monitor.recorder();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let samples = rec.stats().samples;
        assert!(samples > 0);
        assert_eq!(ticks.load(Ordering::Relaxed), samples, "the observer and the recorder saw the same ticks");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ticker_sees_a_blocked_runtime_and_says_no_engine_task_did_it() {
        let monitor = LagMonitor::start(Duration::from_millis(5), Duration::from_millis(50));
        let rec = monitor.recorder();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Block the only worker on purpose, outside any engine task.
        std::thread::sleep(Duration::from_millis(150));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let stats = rec.stats();
        assert!(stats.max_us >= 100_000, "monitor missed a 150 ms block: {stats:?}");
        assert!(stats.over_threshold >= 1, "{stats:?}");
        assert_eq!(stats.late_causes.keys().collect::<Vec<_>>(), [NO_ENGINE_TASK], "{stats:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_late_tick_names_the_engine_task_that_was_running() {
        let monitor = LagMonitor::start(Duration::from_millis(5), Duration::from_millis(50));
        let rec = monitor.recorder();
        tokio::time::sleep(Duration::from_millis(30)).await;
        Staged::new("normalize-dispatch", Arc::from("conn-b"), rec.clone(), async {
            std::thread::sleep(Duration::from_millis(150));
        })
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let stats = rec.stats();
        assert!(stats.over_threshold >= 1, "{stats:?}");
        assert_eq!(stats.late_causes.keys().collect::<Vec<_>>(), ["normalize-dispatch@conn-b"], "{stats:?}");
    }
}
