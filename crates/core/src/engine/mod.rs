//! The engine: runs connections through fetch -> normalize -> load.
//!
//! ```text
//!  fetch (tokio, one task per stream)          normalize (rayon pool)        load (tokio)
//!  adapter.fetch ─► PageSink ─► [raw channel] ─► ordered dispatch ─► [normalized channel] ─► batcher ─► store.upsert
//!                   bounded                      ≤ normalize_in_flight    bounded                     ≤ batches_in_flight
//! ```
//!
//! Every hop is bounded, so a slow store slows fetching and the data in flight
//! never exceeds [`EngineConfig::in_flight_record_bound`]. Connections run
//! concurrently up to `max_connections`; each one's failure is its own.

mod lag;
mod lease;
mod pipeline;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub use lag::{LagMonitor, LagRecorder, Staged};
pub use pipeline::{MALFORMED_PAGE, panic_message};

use crate::adapter::Adapter;
use crate::metrics::PipelineGauges;
use crate::redact::Redactor;
use crate::store::{StalePolicy, Store};
use crate::summary::RunSummary;

/// Engine limits. Memory in flight is bounded by these, never by inventory size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Connections synced at the same time.
    pub max_connections: usize,
    /// Raw pages waiting between fetch and normalize, per connection.
    pub raw_channel_capacity: usize,
    /// Pages being normalized at once, per connection (0: the pool's thread count).
    pub normalize_in_flight: usize,
    /// Normalized pages waiting for the batcher, per connection. One is
    /// enough: a page is usually several batches, and pages queued in front
    /// of a store that is behind add memory, not speed.
    pub normalized_channel_capacity: usize,
    /// A load batch closes at this many records...
    pub batch_max_records: usize,
    /// ...or this many bytes...
    pub batch_max_bytes: usize,
    /// ...or when its first record has waited this long (milliseconds).
    pub batch_max_wait_ms: u64,
    /// Batches written concurrently, per connection.
    pub batches_in_flight: usize,
    /// Threads of the normalize pool (0: one per core).
    pub normalize_threads: usize,
    /// Largest page an adapter is expected to hand over, in records; used for the in-flight bound.
    pub max_page_records: usize,
    /// Rejected records kept in the store per run (all are counted).
    pub max_rejects_kept: usize,
    /// Sample rejects per reason in the summary.
    pub reject_samples: usize,
    /// Runtime lag above this is logged as a warning (milliseconds).
    pub lag_warn_ms: u64,
    /// How often the lag monitor samples (milliseconds).
    pub lag_interval_ms: u64,
    /// Attempts for a batch whose store error is transient.
    pub load_attempts: u32,
    /// File descriptors the connections syncing at once may hold together,
    /// each as its adapter reports ([`Adapter::max_open_files`]); a
    /// connection waits for its share before it starts. 0: not budgeted.
    /// The CLI sets it from the open-file limit (`ulimit -n`).
    pub max_open_files: usize,
    /// Time to live of a run's lease on its connection (seconds): renewed
    /// every third of it while the run lives; a run that died holds its
    /// connection at most this long.
    pub lease_ttl_secs: u64,
    /// A connection whose lease another run holds waits for it instead of
    /// being skipped (`corral sync --wait`).
    pub wait_for_lease: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_connections: 16,
            raw_channel_capacity: 2,
            normalize_in_flight: 0,
            normalized_channel_capacity: 1,
            batch_max_records: 1000,
            batch_max_bytes: 4 * 1024 * 1024,
            batch_max_wait_ms: 2000,
            batches_in_flight: 2,
            normalize_threads: 0,
            max_page_records: 10_000,
            max_rejects_kept: 10_000,
            reject_samples: 5,
            lag_warn_ms: 50,
            lag_interval_ms: 10,
            load_attempts: 4,
            max_open_files: 0,
            lease_ttl_secs: 60,
            wait_for_lease: false,
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        let positive = [
            ("max_connections", self.max_connections),
            ("raw_channel_capacity", self.raw_channel_capacity),
            ("normalized_channel_capacity", self.normalized_channel_capacity),
            ("batch_max_records", self.batch_max_records),
            ("batch_max_bytes", self.batch_max_bytes),
            ("batches_in_flight", self.batches_in_flight),
            ("max_page_records", self.max_page_records),
            ("load_attempts", self.load_attempts as usize),
            ("lag_interval_ms", self.lag_interval_ms as usize),
            ("lease_ttl_secs", self.lease_ttl_secs as usize),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(EngineError::Config(format!("engine.{name} must be at least 1")));
            }
        }
        if self.lease_ttl_secs > 7 * 24 * 3600 {
            return Err(EngineError::Config("engine.lease_ttl_secs must be at most a week (604800)".into()));
        }
        if self.max_open_files > 1 << 30 {
            return Err(EngineError::Config("engine.max_open_files must be at most 1073741824".into()));
        }
        Ok(())
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    fn normalize_threads(&self) -> usize {
        if self.normalize_threads > 0 {
            self.normalize_threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        }
    }

    fn normalize_in_flight(&self) -> usize {
        if self.normalize_in_flight > 0 { self.normalize_in_flight } else { self.normalize_threads() }
    }

    /// The most records one connection fetching `streams` streams at once can
    /// hold between fetch and the store's acknowledgement: every page slot
    /// times the largest page, plus the open batch and the batches in flight.
    pub fn in_flight_record_bound(&self, streams: usize) -> usize {
        // Page slots: the raw channel, one page per fetcher waiting to send,
        // the pages on the pool (or finished and waiting to be passed on), the
        // normalized channel and the page the batcher is taking apart.
        let page_slots =
            self.raw_channel_capacity + streams + self.normalize_in_flight() + self.normalized_channel_capacity + 1;
        page_slots * self.max_page_records + (self.batches_in_flight + 1) * self.batch_max_records
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine configuration: {0}")]
    Config(String),
    #[error("could not start the normalize pool: {0}")]
    Pool(String),
}

/// One configured connection, ready to sync.
#[derive(Clone)]
pub struct Connection {
    pub name: String,
    pub adapter: Arc<dyn Adapter>,
    /// Streams to sync; empty means every stream the adapter offers.
    pub streams: Vec<String>,
    pub stale: StalePolicy,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("adapter", &self.adapter.info().name)
            .field("streams", &self.streams)
            .field("stale", &self.stale)
            .finish()
    }
}

/// Live counters for one connection, for progress bars and a service's live view.
#[derive(Debug, Default)]
pub struct Progress {
    pub records_fetched: AtomicU64,
    pub assets_loaded: AtomicU64,
    pub rejected: AtomicU64,
    pub done: std::sync::atomic::AtomicBool,
    /// The run's sync id and start, set once it holds its lease and starts.
    started: std::sync::OnceLock<(String, chrono::DateTime<chrono::Utc>)>,
    /// The run's in-flight gauges, set when its pipeline is built.
    gauges: std::sync::OnceLock<Arc<PipelineGauges>>,
}

impl Progress {
    /// The sync id and start of the run, once it started (holds its lease).
    pub fn started(&self) -> Option<(&str, chrono::DateTime<chrono::Utc>)> {
        self.started.get().map(|(id, at)| (id.as_str(), *at))
    }
    /// Records fetched and not yet acknowledged by the store, now.
    pub fn records_in_flight(&self) -> u64 {
        self.gauges.get().map_or(0, |g| g.snapshot().records as u64)
    }
    pub(crate) fn set_started(&self, sync_id: &str, at: chrono::DateTime<chrono::Utc>) {
        let _ = self.started.set((sync_id.to_string(), at));
    }
    pub(crate) fn set_gauges(&self, gauges: Arc<PipelineGauges>) {
        let _ = self.gauges.set(gauges);
    }
    pub fn fetched(&self) -> u64 {
        self.records_fetched.load(Ordering::Relaxed)
    }
    pub fn loaded(&self) -> u64 {
        self.assets_loaded.load(Ordering::Relaxed)
    }
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
}

/// Runs syncs. Cheap to clone; clones share the pool, the store and the lag monitor.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    config: EngineConfig,
    store: Arc<dyn Store>,
    pool: rayon::ThreadPool,
    lag: LagMonitor,
    progress: Mutex<BTreeMap<String, Arc<Progress>>>,
    cancel: tokio_util::sync::CancellationToken,
    redactor: Redactor,
    /// `max_open_files` as a FIFO weighted semaphore (None: not budgeted).
    open_files: Option<Arc<tokio::sync::Semaphore>>,
}

/// Niceness of the threads that do the engine's CPU work: the normalize
/// pool's and the stores' (0 is the default of every thread).
pub const NORMALIZE_NICENESS: i32 = 10;

/// Lower the calling thread's scheduling priority below the runtime's: on
/// Linux, the `SCHED_BATCH` policy at niceness [`NORMALIZE_NICENESS`]. Every
/// normalize thread calls it when it starts, the SQLite store on the threads
/// that write, read and checkpoint, and the MongoDB store where it encodes a
/// batch: the runtime only waits on I/O, and must get a core the moment it
/// wakes.
///
/// With the pool saturated (one thread per core), a runtime worker that wakes
/// for I/O or a timer otherwise queues behind a busy thread for up to the
/// kernel's scheduling slice (several ms); at niceness 10 such a thread weighs
/// about a tenth of a runtime worker, and a batch thread does not preempt
/// others when it wakes, so the runtime gets a core at once while the work
/// still has every cycle the runtime does not use. A process already run at
/// that niceness or more (`nice -n 15 corral ...`) is left as it is: no thread
/// is ever given a higher priority than the runtime. Elsewhere, or when the
/// system refuses, the thread keeps its priority (logged at debug). A thread
/// is changed once; later calls on it return at once.
pub fn yield_cpu_to_the_runtime() {
    #[cfg(target_os = "linux")]
    {
        thread_local! {
            static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        if DONE.replace(true) || thread_scheduling().is_none_or(|(_, nice)| nice >= i64::from(NORMALIZE_NICENESS)) {
            return;
        }
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        // thread-priority maps 0..=99 onto niceness 19..=-20: 22 is niceness 10 (a test checks it).
        let priority = thread_priority::ThreadPriority::Crossplatform(22u8.try_into().unwrap_or_default());
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), priority, policy) {
            tracing::debug!(error = ?e, "thread keeps its scheduling priority");
        }
    }
}

/// Run `f` on tokio's blocking pool, on a thread that gives way to the
/// runtime ([`yield_cpu_to_the_runtime`]): how the stores run their CPU work
/// (SQLite's statements, MongoDB's encoding of a batch).
pub async fn spawn_yielding<F, R>(f: F) -> Result<R, tokio::task::JoinError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        yield_cpu_to_the_runtime();
        f()
    })
    .await
}

/// The scheduling ([`thread_scheduling`]) that [`yield_cpu_to_the_runtime`]
/// gives a thread that had `inherited`: `SCHED_BATCH` (3) at
/// [`NORMALIZE_NICENESS`], unless the thread was already that nice or
/// nicer, when it is left as it was. For tests of threads that yield.
#[cfg(target_os = "linux")]
pub fn yielded_scheduling(inherited: (i64, i64)) -> (i64, i64) {
    const SCHED_BATCH: i64 = 3;
    let wanted = i64::from(NORMALIZE_NICENESS);
    if inherited.1 < wanted { (SCHED_BATCH, wanted) } else { inherited }
}

/// The calling thread's scheduling policy (0 normal, 3 `SCHED_BATCH`) and
/// niceness: fields 41 and 19 of /proc/thread-self/stat. Linux only; `None`
/// when /proc cannot be read.
#[cfg(target_os = "linux")]
pub fn thread_scheduling() -> Option<(i64, i64)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse().ok());
    Some((field(41)?, field(19)?))
}

/// CPU time the calling thread has used so far: the first field of
/// /proc/thread-self/schedstat (nanoseconds on a CPU). `None` where it
/// cannot be read (not Linux, no /proc). What the normalize stage's time
/// is measured in (and what tests that burn CPU for it should read).
pub fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Times a piece of work on one thread: its CPU time where
/// [`thread_cpu_time`] can be read, else the time that passed (which reads
/// higher when other threads share the cores).
pub(crate) struct ThreadTimer {
    cpu: Option<Duration>,
    started: std::time::Instant,
}

impl ThreadTimer {
    pub(crate) fn start() -> Self {
        ThreadTimer { cpu: thread_cpu_time(), started: std::time::Instant::now() }
    }

    pub(crate) fn took(&self) -> Duration {
        match (self.cpu, thread_cpu_time()) {
            (Some(before), Some(now)) => now.saturating_sub(before),
            _ => self.started.elapsed(),
        }
    }
}

impl Engine {
    /// Build an engine. Must be called inside a tokio runtime (it starts the lag monitor).
    pub fn new(config: EngineConfig, store: Arc<dyn Store>) -> Result<Self, EngineError> {
        Self::with_redactor(config, store, Redactor::default())
    }

    /// Like [`Engine::new`]; every run summary and kept reject is scrubbed of
    /// the secrets `redactor` knows before it is saved or returned.
    pub fn with_redactor(config: EngineConfig, store: Arc<dyn Store>, redactor: Redactor) -> Result<Self, EngineError> {
        config.validate()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.normalize_threads())
            .thread_name(|i| format!("corral-normalize-{i}"))
            .start_handler(|_| yield_cpu_to_the_runtime())
            .build()
            .map_err(|e| EngineError::Pool(e.to_string()))?;
        let lag =
            LagMonitor::start(Duration::from_millis(config.lag_interval_ms), Duration::from_millis(config.lag_warn_ms));
        let open_files =
            (config.max_open_files > 0).then(|| Arc::new(tokio::sync::Semaphore::new(config.max_open_files)));
        Ok(Engine {
            shared: Arc::new(Shared {
                config,
                store,
                pool,
                lag,
                progress: Mutex::default(),
                cancel: Default::default(),
                redactor,
                open_files,
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The runtime-lag monitor every run of this engine records from
    /// ([`LagMonitor::observe`] sees each tick).
    pub fn lag_monitor(&self) -> &LagMonitor {
        &self.shared.lag
    }

    /// Stop gracefully (an operator's Ctrl-C): every fetch stops, what was
    /// already fetched is normalized and loaded, checkpoints advance only for
    /// acknowledged data, nothing is marked stale, connections not yet started
    /// do not start, and every affected run is reported failed ("interrupted").
    /// The engine stays cancelled: build a new one for the next run.
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Live progress of the connections run so far, by name.
    pub fn progress(&self) -> Vec<(String, Arc<Progress>)> {
        match self.shared.progress.lock() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Sync several connections concurrently (at most `max_connections` at a
    /// time, and within `max_open_files`). Returns one summary per connection,
    /// in the order given. A connection that fails, or whose adapter panics,
    /// never stops the others.
    pub async fn run(&self, connections: Vec<Connection>) -> Vec<RunSummary> {
        let limit = self.shared.config.max_connections;
        let mut summaries: Vec<(usize, RunSummary)> = futures::stream::iter(connections.into_iter().enumerate())
            .map(|(i, conn)| {
                let engine = self.clone();
                async move { (i, engine.sync_isolated(conn).await) }
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        summaries.sort_by_key(|(i, _)| *i);
        summaries.into_iter().map(|(_, s)| s).collect()
    }

    /// Wait for `adapter`'s share of the open-file budget (FIFO: a big one is not starved).
    async fn open_files(&self, adapter: &dyn Adapter) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = self.shared.open_files.clone()?;
        let want = adapter.max_open_files().clamp(1, self.shared.config.max_open_files.max(1));
        sem.acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX)).await.ok()
    }

    /// Sync one connection: take its lease (skip, or wait, if another run
    /// holds it), wait for its open files, then fetch, normalize, load,
    /// handle stale assets, and save the summary in the store.
    pub async fn sync(&self, conn: Connection) -> RunSummary {
        let progress = Arc::new(Progress::default());
        if let Ok(mut map) = self.shared.progress.lock() {
            map.insert(conn.name.clone(), progress.clone());
        }
        let summary = pipeline::run_connection(self, conn, progress.clone()).await;
        let summary = self.save_run(summary).await;
        progress.done.store(true, Ordering::Relaxed);
        summary
    }

    /// Scrub secrets from a finished run's summary and save it in the store.
    async fn save_run(&self, mut summary: RunSummary) -> RunSummary {
        self.shared.redactor.redact_summary(&mut summary);
        if let Err(e) = self.shared.store.save_run(&summary).await {
            let error = self.shared.redactor.redact(&e.to_string());
            tracing::error!(connection = %summary.connection, sync_id = %summary.sync_id, %error, "could not save the run summary");
            summary.errors.push(format!("saving the run summary failed: {error}"));
            summary.status = crate::summary::RunStatus::Failed;
        }
        summary
    }

    /// Like [`Engine::sync`], on its own task so that a panicking adapter
    /// fails its own connection only.
    async fn sync_isolated(&self, conn: Connection) -> RunSummary {
        let name = conn.name.clone();
        let adapter = conn.adapter.info().name.clone();
        let engine = self.clone();
        match tokio::spawn(async move { engine.sync(conn).await }).await {
            Ok(summary) => summary,
            Err(e) => {
                tracing::error!(connection = %name, error = %e, "connection task panicked");
                let summary = pipeline::failed_summary(&name, &adapter, format!("connection task panicked: {e}"));
                self.save_run(summary).await
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn scheduling() -> (i64, i64) {
        thread_scheduling().expect("read /proc/thread-self/stat")
    }

    #[tokio::test]
    async fn normalize_threads_yield_the_cpu_to_the_runtime() {
        let store: Arc<dyn Store> = Arc::new(crate::testing::MemoryStore::default());
        let engine = Engine::new(EngineConfig::default(), store).expect("engine");
        // What this process inherited (a CI may run everything under `nice`).
        let inherited = scheduling();
        assert_eq!(engine.shared.pool.install(scheduling), yielded_scheduling(inherited), "a normalize thread");
        let blocking = spawn_yielding(scheduling).await.expect("a blocking-pool thread");
        assert_eq!(blocking, yielded_scheduling(inherited), "spawn_yielding's thread");
        assert_eq!(scheduling(), inherited, "the runtime's own thread is left as it was");
    }

    /// The normalize stage's time is CPU time: waiting (here, sleeping; in a
    /// run, for a core the writer or the runtime holds) does not count.
    #[test]
    fn the_thread_timer_counts_cpu_time_not_waiting() {
        assert!(thread_cpu_time().is_some(), "/proc/thread-self/schedstat is readable");
        let timer = ThreadTimer::start();
        std::thread::sleep(Duration::from_millis(300));
        let slept = timer.took();
        assert!(slept < Duration::from_millis(150), "sleeping 300 ms counted {slept:?}");
        let timer = ThreadTimer::start();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut spins = 0_u64;
        while timer.took() < Duration::from_millis(30) && std::time::Instant::now() < deadline {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        assert!(timer.took() >= Duration::from_millis(30), "30 ms of computing counted {:?}", timer.took());
    }

    #[test]
    fn a_yielded_thread_is_batch_at_niceness_10_unless_already_nicer() {
        assert_eq!(yielded_scheduling((0, 0)), (3, 10));
        assert_eq!(yielded_scheduling((0, -5)), (3, 10));
        // Already that nice or nicer: left alone, never given a higher priority.
        assert_eq!(yielded_scheduling((0, 10)), (0, 10));
        assert_eq!(yielded_scheduling((0, 15)), (0, 15));
    }
}
