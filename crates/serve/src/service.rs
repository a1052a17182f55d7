//! The service: connections and their schedules, the runs in progress, the
//! scheduler, reloads and shutdown. The HTTP API ([`crate::api`]) reads and
//! drives it.
//!
//! - One [`Engine`] runs every sync (a new one after a reload that changed
//!   `[engine]`; runs already going keep theirs). `engine.max_connections`
//!   bounds the syncs running at once, across scheduled and manual runs;
//!   the others wait (`queued`).
//! - A connection has at most one run in this process (queued or running):
//!   a tick that falls due meanwhile is skipped and counted, a manual sync
//!   is refused (409). Across processes the engine's lease decides.
//! - At start, and for connections a reload adds, the next run is derived
//!   from the last run the store holds, so ticks missed while corral was not
//!   running run once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_core::store::{AssetFilter, RunQuery};
use corral_core::{Connection, Engine, EngineConfig, Redactor, RunStatus, RunSummary, Store};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::schedule::Schedule;

/// What the binary hands the service: settings, engine limits and the
/// connections, built and validated (adapters constructed, secrets resolved).
pub struct Plan {
    pub settings: Settings,
    pub engine: EngineConfig,
    pub connections: Vec<Planned>,
    /// Identifies the `[store]` configuration: a reload that changes it is
    /// refused (a different store needs a restart).
    pub store_fingerprint: u64,
}

/// One connection and its schedule (None: on demand only).
pub struct Planned {
    pub connection: Connection,
    pub schedule: Option<Schedule>,
}

/// Reads the configuration again, for a reload (SIGHUP, `POST /api/reload`).
/// Called off the async runtime: it may read files. Its error is shown in
/// the API and the log, so it must never quote a secret.
pub trait PlanSource: Send + Sync + 'static {
    fn load(&self) -> Result<Plan, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("could not start the engine: {0}")]
    Engine(#[from] corral_core::engine::EngineError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
}

/// The short form of a finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunBrief {
    pub sync_id: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub records_fetched: u64,
    pub assets_loaded: u64,
    pub records_rejected: u64,
    pub stale_marked: u64,
    pub stale_deleted: u64,
    /// The first error, if any (`errors` of the run has them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunBrief {
    pub fn of(s: &RunSummary) -> RunBrief {
        RunBrief {
            sync_id: s.sync_id.clone(),
            status: s.status,
            started_at: s.started_at,
            ended_at: s.ended_at,
            duration_ms: s.duration_ms(),
            records_fetched: s.records_fetched,
            assets_loaded: s.loaded(),
            records_rejected: s.records_rejected,
            stale_marked: s.stale_marked,
            stale_deleted: s.stale_deleted,
            error: s.errors.first().cloned(),
        }
    }
}

/// A run of this process: waiting for a slot, or syncing.
pub(crate) struct Active {
    pub engine: Engine,
    pub trigger: Trigger,
    pub queued_at: DateTime<Utc>,
    pub started: bool,
}

pub(crate) struct ConnState {
    /// None: removed from the configuration by a reload (kept while its run ends).
    pub connection: Option<Connection>,
    pub adapter: String,
    pub schedule: Option<Schedule>,
    pub next_due: Option<DateTime<Utc>>,
    pub last_run: Option<RunBrief>,
    pub last_success: Option<DateTime<Utc>>,
    pub active: Option<Active>,
    /// Scheduled runs that fell due, and those skipped because a run was still going.
    pub ticks_due: u64,
    pub ticks_skipped: u64,
    pub runs_started: u64,
}

/// How the last reload went.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// When the configuration in force was loaded.
    pub loaded_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt was refused: why (the configuration loaded before stays in force).
    pub error: Option<String>,
    /// Settings that changed but need a restart.
    pub warnings: Vec<String>,
}

/// Counts since the service started, for the soak check and `/api/status`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    pub ticks_due: u64,
    pub ticks_skipped: u64,
    pub scheduled_runs_started: u64,
    pub manual_runs_started: u64,
    pub runs_finished: u64,
}

pub(crate) struct State {
    pub settings: Settings,
    store_fingerprint: u64,
    pub engine: Engine,
    engine_config: EngineConfig,
    slots: Arc<Semaphore>,
    pub conns: BTreeMap<String, ConnState>,
    pub reload: ReloadStatus,
    pub totals: Totals,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub redactor: Redactor,
    source: Arc<dyn PlanSource>,
    pub started_at: DateTime<Utc>,
    state: Mutex<State>,
    pub metrics: Arc<Metrics>,
    /// No more runs start: shutting down.
    pub stopping: CancellationToken,
    /// Interrupt the running runs now (grace period over, or a second signal).
    interrupt: CancellationToken,
    /// The scheduler looks at its connections again.
    wake: Notify,
    /// The asset counts behind the metrics should be read again.
    counts_stale: Notify,
    runs: TaskTracker,
    reload_lock: tokio::sync::Mutex<()>,
    /// The address the HTTP server listens on (a port 0 resolved).
    pub listening: std::sync::OnceLock<std::net::SocketAddr>,
    /// Runtime lag over the current minute (and the one before), for `/api/status`.
    lag_window: Mutex<LagWindow>,
}

struct LagWindow {
    since: std::time::Instant,
    recorder: Arc<corral_core::engine::LagRecorder>,
    previous: Option<corral_core::summary::LagStats>,
}

impl Inner {
    /// The attributes `where=attributes.NAME=VALUE` may name: those the
    /// configured connections' streams declare.
    pub(crate) fn declared_attributes(&self) -> Vec<corral_core::schema::DeclaredAttribute> {
        let state = self.state();
        let infos: Vec<&corral_core::AdapterInfo> =
            state.conns.values().filter_map(|c| c.connection.as_ref()).map(|c| c.adapter.info()).collect();
        corral_core::schema::declared_attributes(infos)
    }

    /// Runtime lag seen in the last one to two minutes (the engine's ticker).
    pub(crate) fn recent_lag(&self) -> corral_core::summary::LagStats {
        let engine = self.state().engine.clone();
        let mut w = self.lag_window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.since.elapsed() >= Duration::from_secs(60) {
            w.previous = Some(w.recorder.stats());
            w.recorder = engine.lag_monitor().recorder();
            w.since = std::time::Instant::now();
        }
        let now = w.recorder.stats();
        match &w.previous {
            Some(p) if now.samples < 100 => p.clone(),
            _ => now,
        }
    }
}

/// The running service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

/// Why a sync was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRefused {
    UnknownConnection,
    /// This process runs it (or has it queued), or another holds its lease.
    Running(String),
    ShuttingDown,
}

/// How many runs of a connection's history are read at start to find its last success.
const LAST_SUCCESS_LOOKBACK: usize = 20;

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step: a panic
        // elsewhere must not take the service down with a poisoned lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service {
    /// Build the service from the first plan: the engine, each connection's
    /// last run (from the store) and next run. Inside a tokio runtime.
    pub async fn new(
        store: Arc<dyn Store>,
        redactor: Redactor,
        source: Arc<dyn PlanSource>,
        plan: Plan,
    ) -> Result<Service, ServeError> {
        let metrics = Metrics::new();
        let engine = new_engine(&plan.engine, &store, &redactor, &metrics)?;
        let history = load_history(&*store, plan.connections.iter().map(|p| p.connection.name.clone()).collect()).await;
        let now = Utc::now();
        let mut conns = BTreeMap::new();
        for p in plan.connections {
            let name = p.connection.name.clone();
            let (last, last_success) = history.get(&name).cloned().unwrap_or_default();
            metrics.seed(&name, last.as_ref(), last_success);
            conns.insert(name, new_conn_state(p, last.as_ref(), last_success, now));
        }
        let slots = Arc::new(Semaphore::new(plan.engine.max_connections));
        let lag_window =
            LagWindow { since: std::time::Instant::now(), recorder: engine.lag_monitor().recorder(), previous: None };
        let state = State {
            settings: plan.settings,
            store_fingerprint: plan.store_fingerprint,
            engine,
            engine_config: plan.engine,
            slots,
            conns,
            reload: ReloadStatus { loaded_at: now, last_attempt_at: None, error: None, warnings: Vec::new() },
            totals: Totals::default(),
        };
        Ok(Service {
            inner: Arc::new(Inner {
                store,
                redactor,
                source,
                started_at: now,
                state: Mutex::new(state),
                metrics,
                stopping: CancellationToken::new(),
                interrupt: CancellationToken::new(),
                wake: Notify::new(),
                counts_stale: Notify::new(),
                runs: TaskTracker::new(),
                reload_lock: tokio::sync::Mutex::new(()),
                listening: std::sync::OnceLock::new(),
                lag_window: Mutex::new(lag_window),
            }),
        })
    }

    pub fn settings(&self) -> Settings {
        self.inner.state().settings.clone()
    }

    pub fn totals(&self) -> Totals {
        self.inner.state().totals
    }

    /// Serve on `listener` until [`Service::shutdown`]: the scheduler, the
    /// HTTP API; then the grace period for the runs still going, their
    /// interruption when it is over, and the end of the HTTP server.
    pub async fn run(self, listener: tokio::net::TcpListener) -> Result<(), ServeError> {
        let inner = self.inner.clone();
        if let Ok(addr) = listener.local_addr() {
            let _ = inner.listening.set(addr);
        }
        let scheduler = tokio::spawn(scheduler(inner.clone()));
        let counter = tokio::spawn(asset_counter(inner.clone()));
        let http_done = CancellationToken::new();
        let app = crate::api::router(inner.clone());
        let server = axum::serve(listener, app).with_graceful_shutdown(http_done.clone().cancelled_owned());
        let server = tokio::spawn(async move { server.await });

        inner.stopping.cancelled().await;
        let _ = scheduler.await;
        self.drain().await;
        counter.abort();
        http_done.cancel();
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Http(e)),
            Err(e) => Err(ServeError::Http(std::io::Error::other(e.to_string()))),
        }
    }

    /// Stop starting runs; [`Service::run`] then lets the running ones finish
    /// within the grace period and returns.
    pub fn shutdown(&self) {
        if !self.inner.stopping.is_cancelled() {
            tracing::warn!("stopping: no new runs start; running syncs may finish within the grace period");
        }
        self.inner.stopping.cancel();
        self.inner.wake.notify_one();
    }

    /// Interrupt the running syncs now (as `corral sync` does on Ctrl-C):
    /// what was fetched is loaded, checkpoints only behind stored data,
    /// nothing marked stale.
    pub fn interrupt(&self) {
        self.inner.interrupt.cancel();
    }

    async fn drain(&self) {
        let inner = &self.inner;
        inner.runs.close();
        let (grace, active) = {
            let s = inner.state();
            (s.settings.grace_period, s.conns.values().filter(|c| c.active.is_some()).count())
        };
        if active > 0 {
            tracing::warn!(runs = active, grace_period = ?grace, "waiting for running syncs to finish");
        }
        tokio::select! {
            () = inner.runs.wait() => return,
            () = tokio::time::sleep(grace) => {
                tracing::warn!("grace period over: interrupting the syncs still running");
            }
            () = inner.interrupt.cancelled() => {
                tracing::warn!("interrupting the syncs still running");
            }
        }
        let engines: Vec<Engine> = {
            let s = inner.state();
            let mut e: Vec<Engine> =
                s.conns.values().filter_map(|c| c.active.as_ref().map(|a| a.engine.clone())).collect();
            e.push(s.engine.clone());
            e
        };
        for e in engines {
            e.cancel();
        }
        inner.runs.wait().await;
    }

    /// Start a sync of `name` now.
    pub async fn sync_now(&self, name: &str) -> Result<(), SyncRefused> {
        sync_now_inner(&self.inner, name).await
    }

    /// Read the configuration again and apply it; a configuration that does
    /// not load is refused and the one in force kept (the error is kept for
    /// `/api/status` and logged).
    pub async fn reload(&self) -> Result<usize, String> {
        reload_inner(&self.inner).await
    }
}

fn new_engine(
    config: &EngineConfig,
    store: &Arc<dyn Store>,
    redactor: &Redactor,
    metrics: &Arc<Metrics>,
) -> Result<Engine, ServeError> {
    let engine = Engine::with_redactor(config.clone(), store.clone(), redactor.clone())?;
    let m = metrics.clone();
    engine.lag_monitor().observe(move |lag| m.observe_lag(lag));
    Ok(engine)
}

fn new_conn_state(
    p: Planned,
    last: Option<&RunSummary>,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ConnState {
    let next_due = p.schedule.as_ref().and_then(|s| s.first_due(last.map(|r| r.started_at), now));
    ConnState {
        adapter: p.connection.adapter.info().name.clone(),
        connection: Some(p.connection),
        schedule: p.schedule,
        next_due,
        last_run: last.map(RunBrief::of),
        last_success,
        active: None,
        ticks_due: 0,
        ticks_skipped: 0,
        runs_started: 0,
    }
}

/// Each connection's last run and last success, from the store.
async fn load_history(
    store: &dyn Store,
    names: Vec<String>,
) -> BTreeMap<String, (Option<RunSummary>, Option<DateTime<Utc>>)> {
    futures::stream::iter(names)
        .map(|name| async move {
            let query = RunQuery { connection: Some(name.clone()), before: None };
            let runs = match store.list_runs(&query, LAST_SUCCESS_LOOKBACK).await {
                Ok(runs) => runs,
                Err(e) => {
                    tracing::warn!(connection = %name, error = %e, "could not read the connection's last runs; scheduling it as if it never ran");
                    Vec::new()
                }
            };
            let success = runs.iter().find(|r| r.status == RunStatus::Success).map(|r| r.started_at);
            (name, (runs.into_iter().next(), success))
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Start `name`'s run (the caller checked it has none): it waits for a slot,
/// then syncs on the engine in force.
fn start_run(inner: &Arc<Inner>, state: &mut State, name: &str, trigger: Trigger) {
    let Some(conn) = state.conns.get_mut(name) else { return };
    let Some(connection) = conn.connection.clone() else { return };
    let engine = state.engine.clone();
    let slots = state.slots.clone();
    conn.active = Some(Active { engine: engine.clone(), trigger, queued_at: Utc::now(), started: false });
    conn.runs_started += 1;
    match trigger {
        Trigger::Schedule => state.totals.scheduled_runs_started += 1,
        Trigger::Manual => state.totals.manual_runs_started += 1,
    }
    let inner2 = inner.clone();
    let name = name.to_string();
    inner.runs.spawn(async move {
        let inner = inner2;
        let permit = tokio::select! {
            p = slots.acquire_owned() => p.ok(),
            () = inner.stopping.cancelled() => None,
        };
        if permit.is_none() {
            // Shutting down before it could start: it never ran.
            finish(&inner, &name, None);
            return;
        }
        if let Some(a) = inner.state().conns.get_mut(&name).and_then(|c| c.active.as_mut()) {
            a.started = true;
        }
        tracing::info!(connection = %name, trigger = ?trigger, "run starting");
        let summary = engine.run(vec![connection]).await.into_iter().next();
        drop(permit);
        finish(&inner, &name, summary);
    });
}

fn finish(inner: &Arc<Inner>, name: &str, summary: Option<RunSummary>) {
    if let Some(s) = &summary {
        inner.metrics.record_run(s);
    }
    let mut state = inner.state();
    state.totals.runs_finished += u64::from(summary.is_some());
    let remove = match state.conns.get_mut(name) {
        Some(c) => {
            c.active = None;
            if let Some(s) = &summary {
                c.last_run = Some(RunBrief::of(s));
                if s.status == RunStatus::Success {
                    c.last_success = Some(s.started_at);
                }
            }
            c.connection.is_none()
        }
        None => false,
    };
    if remove {
        state.conns.remove(name);
    }
    drop(state);
    inner.counts_stale.notify_one();
}

/// The scheduler: starts each connection's run when it falls due.
async fn scheduler(inner: Arc<Inner>) {
    loop {
        if inner.stopping.is_cancelled() {
            return;
        }
        let now = Utc::now();
        let next_wake = {
            let mut guard = inner.state();
            let state = &mut *guard;
            let due: Vec<String> = state
                .conns
                .iter()
                .filter(|(_, c)| c.connection.is_some() && c.next_due.is_some_and(|d| d <= now))
                .map(|(n, _)| n.clone())
                .collect();
            for name in due {
                let Some(c) = state.conns.get_mut(&name) else { continue };
                c.ticks_due += 1;
                c.next_due = c.schedule.as_ref().and_then(|s| s.next_after(now));
                state.totals.ticks_due += 1;
                inner.metrics.tick(&name);
                if c.active.is_some() {
                    c.ticks_skipped += 1;
                    state.totals.ticks_skipped += 1;
                    inner.metrics.tick_skipped(&name);
                    tracing::warn!(connection = %name, "scheduled run skipped: the previous run is still going");
                    continue;
                }
                start_run(&inner, state, &name, Trigger::Schedule);
            }
            state.conns.values().filter_map(|c| c.next_due).min()
        };
        let wait = next_wake
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            () = inner.stopping.cancelled() => return,
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Keeps the asset counts behind `corral_assets` fresh: after runs end (at
/// most every few seconds), and every minute.
async fn asset_counter(inner: Arc<Inner>) {
    let filter = AssetFilter { include_stale: true, ..Default::default() };
    loop {
        match inner.store.count_assets(&filter).await {
            Ok(counts) => inner.metrics.set_assets(&counts),
            Err(e) => {
                tracing::warn!(error = %inner.redactor.redact(&e.to_string()), "could not count the stored assets for the metrics")
            }
        }
        tokio::select! {
            () = inner.counts_stale.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

pub(crate) async fn sync_now_inner(inner: &Arc<Inner>, name: &str) -> Result<(), SyncRefused> {
    if inner.stopping.is_cancelled() {
        return Err(SyncRefused::ShuttingDown);
    }
    {
        let s = inner.state();
        match s.conns.get(name) {
            Some(c) if c.connection.is_some() => {
                if let Some(a) = &c.active {
                    return Err(SyncRefused::Running(running_text(a)));
                }
            }
            _ => return Err(SyncRefused::UnknownConnection),
        }
    }
    // Another process (or machine) may be running it: its lease says so.
    if let Ok(Some(lease)) = inner.store.lease(name).await
        && lease.expires_at > Utc::now()
    {
        return Err(SyncRefused::Running(format!(
            "run {} on {} holds the connection's lease (until {})",
            lease.holder,
            lease.owner,
            lease.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    let mut guard = inner.state();
    let state = &mut *guard;
    if inner.stopping.is_cancelled() {
        return Err(SyncRefused::ShuttingDown);
    }
    match state.conns.get(name) {
        Some(c) if c.connection.is_some() => {
            if let Some(a) = &c.active {
                return Err(SyncRefused::Running(running_text(a)));
            }
        }
        _ => return Err(SyncRefused::UnknownConnection),
    }
    tracing::info!(connection = %name, "sync requested through the API");
    start_run(inner, state, name, Trigger::Manual);
    Ok(())
}

fn running_text(a: &Active) -> String {
    let since = a.queued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if a.started { format!("a run is in progress (since {since})") } else { format!("a run is queued (since {since})") }
}

pub(crate) async fn reload_inner(inner: &Arc<Inner>) -> Result<usize, String> {
    let _one_at_a_time = inner.reload_lock.lock().await;
    let source = inner.source.clone();
    let loaded = tokio::task::spawn_blocking(move || source.load())
        .await
        .unwrap_or_else(|e| Err(format!("reading the configuration failed: {e}")));
    let plan = match loaded {
        Ok(plan) => plan,
        Err(e) => return Err(refuse(inner, e)),
    };
    {
        let s = inner.state();
        if plan.store_fingerprint != s.store_fingerprint {
            drop(s);
            return Err(refuse(
                inner,
                "the [store] section changed: a different store needs a restart of corral serve".into(),
            ));
        }
    }
    let engine_changed = {
        let s = inner.state();
        serde_json::to_value(&s.engine_config).ok() != serde_json::to_value(&plan.engine).ok()
    };
    let new_engine = if engine_changed {
        match new_engine(&plan.engine, &inner.store, &inner.redactor, &inner.metrics) {
            Ok(e) => Some(e),
            Err(e) => return Err(refuse(inner, e.to_string())),
        }
    } else {
        None
    };
    let new_names: Vec<String> = {
        let s = inner.state();
        plan.connections
            .iter()
            .filter(|p| s.conns.get(&p.connection.name).is_none_or(|c| c.connection.is_none()))
            .map(|p| p.connection.name.clone())
            .collect()
    };
    let history = load_history(&*inner.store, new_names).await;
    let now = Utc::now();
    let mut guard = inner.state();
    let state = &mut *guard;
    let mut warnings = Vec::new();
    if plan.settings.listen != state.settings.listen {
        warnings.push(format!(
            "serve.listen changed to {}: still listening on {} until corral serve restarts",
            plan.settings.listen, state.settings.listen
        ));
    }
    let listen = state.settings.listen;
    state.settings = crate::config::Settings { listen, ..plan.settings };
    if let Some(engine) = new_engine {
        state.engine = engine;
        state.slots = Arc::new(Semaphore::new(plan.engine.max_connections));
        state.engine_config = plan.engine;
    }
    let mut keep = std::collections::BTreeSet::new();
    let count = plan.connections.len();
    for p in plan.connections {
        let name = p.connection.name.clone();
        keep.insert(name.clone());
        match state.conns.get_mut(&name) {
            Some(c) if c.connection.is_some() || c.active.is_some() => {
                let changed = c.schedule.as_ref().map(Schedule::describe)
                    != p.schedule.as_ref().map(Schedule::describe)
                    || c.schedule.as_ref().map(Schedule::offset) != p.schedule.as_ref().map(Schedule::offset);
                if changed {
                    let last = c.last_run.as_ref().map(|r| r.started_at);
                    c.next_due = p.schedule.as_ref().and_then(|s| s.first_due(last, now));
                }
                c.adapter = p.connection.adapter.info().name.clone();
                c.connection = Some(p.connection);
                c.schedule = p.schedule;
            }
            _ => {
                let (last, success) = history.get(&name).cloned().unwrap_or_default();
                inner.metrics.seed(&name, last.as_ref(), success);
                state.conns.insert(name, new_conn_state(p, last.as_ref(), success, now));
            }
        }
    }
    // Connections no longer configured: gone, once their run (if any) ends.
    state.conns.retain(|name, c| {
        if keep.contains(name) {
            return true;
        }
        c.connection = None;
        c.next_due = None;
        c.active.is_some()
    });
    for w in &warnings {
        tracing::warn!("{w}");
    }
    state.reload = ReloadStatus { loaded_at: now, last_attempt_at: Some(now), error: None, warnings };
    drop(guard);
    inner.metrics.reload(true);
    inner.wake.notify_one();
    tracing::info!(connections = count, "configuration reloaded");
    Ok(count)
}

/// A refused reload: kept for `/api/status`, logged, counted.
fn refuse(inner: &Inner, error: String) -> String {
    let error = inner.redactor.redact(&error);
    tracing::error!(error = %error, "configuration reload refused; the configuration loaded before stays in force");
    {
        let mut s = inner.state();
        s.reload.last_attempt_at = Some(Utc::now());
        s.reload.error = Some(error.clone());
    }
    inner.metrics.reload(false);
    error
}
