//! One connection's sync: the three stages wired together.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::lag::{LagRecorder, Staged};
use super::lease;
use super::{Connection, Engine, Progress};
use crate::adapter::{Adapter, Checkpoint, FetchContext, FetchItem, NormalizedPage, PageSink, RawPage, Reject};
use crate::asset::Asset;
use crate::metrics::{PipelineGauges, RequestMetrics};
use crate::store::{LoadBatch, LoadOutcome, StaleScope, Store, StoreError, StoredReject};
use crate::summary::{RejectGroup, RunStatus, RunSummary, StreamSummary, Timeline, TimelinePoint};

/// The fetch error of a stream cut short by [`Engine::cancel`].
pub(super) const INTERRUPTED: &str = "interrupted: the run was cancelled before this stream was fully fetched";

/// Undecodable pages listed by name per stream; all of them are counted as rejects.
const MAX_PAGE_ERRORS_LISTED: usize = 20;

/// The reject reason of a page that could not be decoded at all.
pub const MALFORMED_PAGE: &str = "malformed_page";

/// What normalize hands to load, in fetch order.
enum Normalized {
    Page(PageResult),
    StreamEnd { stream: String, result: Result<(), String> },
}

struct PageResult {
    stream: String,
    locator: String,
    assets: Vec<(Asset, usize)>,
    rejects: Vec<Reject>,
    page_error: Option<String>,
    /// The page could not be decoded: the records lost with it, when fetch
    /// knew how many it held (`RawPage::record_hint`).
    lost: Option<u64>,
    checkpoint: Option<Checkpoint>,
    records: u64,
    cpu: Duration,
}

/// Things that take effect once every batch before them is acknowledged.
enum Marker {
    Checkpoint { stream: String, checkpoint: Checkpoint },
    StreamEnd { stream: String, result: Result<(), String> },
}

struct BatchDone {
    result: Result<LoadOutcome, StoreError>,
    records: usize,
    /// The stream of each record the store refused, in the order of the
    /// outcome's `rejected` (empty when it refused none).
    refused_streams: Vec<String>,
    markers: Vec<Marker>,
    took: Duration,
}

/// A summary for a connection that could not even start.
pub(super) fn failed_summary(connection: &str, adapter: &str, error: String) -> RunSummary {
    let mut summary = RunSummary::new(connection, adapter);
    summary.status = RunStatus::Failed;
    summary.errors.push(error);
    summary
}

pub(super) async fn run_connection(engine: &Engine, conn: Connection, progress: Arc<Progress>) -> RunSummary {
    let shared = &engine.shared;
    let cfg = &shared.config;
    let info = conn.adapter.info().clone();
    let mut summary = RunSummary::new(&conn.name, &info.name);
    if shared.cancel.is_cancelled() {
        summary.status = RunStatus::Failed;
        summary.errors.push("interrupted: the run was cancelled before this connection started".to_string());
        return summary;
    }
    // One run per connection at a time, across processes and machines.
    let conn_cancel = shared.cancel.child_token();
    let ttl = cfg.lease_ttl();
    let lease = match lease::acquire(
        shared.store.clone(),
        &conn.name,
        &summary.sync_id,
        ttl,
        cfg.wait_for_lease,
        &shared.cancel,
        conn_cancel.clone(),
    )
    .await
    {
        Ok(guard) => guard,
        Err(refused) => return not_started(summary, refused),
    };
    let _files = engine.open_files(&*conn.adapter).await;
    // The run starts now that it holds its connection: its `seen_at`.
    summary.started_at = Utc::now();
    let started = Instant::now();
    progress.set_started(&summary.sync_id, summary.started_at);
    let name: Arc<str> = Arc::from(conn.name.as_str());
    let recorder = shared.lag.recorder();
    tracing::info!(connection = %conn.name, adapter = %info.name, sync_id = %summary.sync_id, "sync started");

    // Which streams to fetch.
    let mut streams = Vec::new();
    let wanted: Vec<String> = if conn.streams.is_empty() {
        info.streams.iter().map(|s| s.name.clone()).collect()
    } else {
        conn.streams.clone()
    };
    for s in wanted {
        match info.stream(&s) {
            Some(si) => streams.push(si.clone()),
            None => {
                let msg = format!("stream `{s}`: the {} adapter has no such stream", info.name);
                summary.streams.insert(s, StreamSummary { fetch_error: Some(msg.clone()), ..Default::default() });
                summary.errors.push(msg);
            }
        }
    }

    let gauges = Arc::new(PipelineGauges::default());
    progress.set_gauges(gauges.clone());
    let timeline = Sampler::start(engine, started, progress.clone(), gauges.clone());
    let requests = Arc::new(RequestMetrics::default());
    let (raw_tx, raw_rx) = mpsc::channel::<FetchItem>(cfg.raw_channel_capacity);
    let (norm_tx, norm_rx) = mpsc::channel::<Normalized>(cfg.normalized_channel_capacity);
    let fetch_ended = Arc::new(Mutex::new(started));

    // Stage 1: fetch, one task per stream.
    let mut fetchers = JoinSet::new();
    let mut resumed = BTreeSet::new();
    let mut started_over = BTreeMap::new();
    let mut keeps_checkpoint = BTreeMap::new();
    let mut incomplete = BTreeMap::new();
    for stream in streams {
        let checkpoint = match shared.store.load_checkpoint(&conn.name, &stream.name).await {
            Ok(Some(c)) if !c.0.is_null() => Some(c),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(connection = %conn.name, stream = %stream.name, error = %e, "could not read the checkpoint; fetching from the start");
                None
            }
        };
        if checkpoint.is_some() {
            resumed.insert(stream.name.clone());
        }
        summary.streams.entry(stream.name.clone()).or_default();
        let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        started_over.insert(stream.name.clone(), over.clone());
        let keep = Arc::new(std::sync::atomic::AtomicBool::new(false));
        keeps_checkpoint.insert(stream.name.clone(), keep.clone());
        let partly: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        incomplete.insert(stream.name.clone(), partly.clone());
        let ctx = FetchContext {
            connection: conn.name.clone(),
            stream,
            checkpoint,
            sink: PageSink::new(raw_tx.clone(), gauges.clone()),
            requests: requests.clone(),
            max_page_records: cfg.max_page_records,
            started_over: over,
            keeps_checkpoint: keep,
            incomplete: partly,
        };
        let fut = fetch_stream(conn.adapter.clone(), ctx, fetch_ended.clone(), conn_cancel.clone());
        fetchers.spawn(Staged::new("fetch", name.clone(), recorder.clone(), fut));
    }
    drop(raw_tx);
    let fetching = fetchers.len();

    // Stage 2: normalize on the rayon pool, results in fetch order.
    let normalizer = tokio::spawn(Staged::new(
        "normalize-dispatch",
        name.clone(),
        recorder.clone(),
        normalize_stage(engine.clone(), conn.adapter.clone(), name.clone(), raw_rx, norm_tx, gauges.clone()),
    ));

    // Stage 3: load, on this task.
    let mut loader = Loader {
        engine: engine.clone(),
        conn: &conn,
        sync_id: summary.sync_id.clone(),
        seen_at: summary.started_at,
        gauges: gauges.clone(),
        recorder: recorder.clone(),
        progress,
        summary: &mut summary,
        batch: OpenBatch::default(),
        in_flight: FuturesOrdered::new(),
        in_flight_aborts: Default::default(),
        tainted: BTreeSet::new(),
        resumed,
        started_over,
        keeps_checkpoint,
        incomplete,
        store_refused: BTreeSet::new(),
        rejects_buffer: Vec::new(),
        rejects_kept: 0,
        load_failure: None,
        ended: BTreeSet::new(),
        lease_lost: lease.lost_flag(),
    };
    Staged::new("load", name.clone(), recorder.clone(), loader.run(norm_rx)).await;
    let load_failed = loader.load_failure.is_some();
    let ended = std::mem::take(&mut loader.ended);
    drop(loader);

    if load_failed {
        // Stop fetching: nothing more can be stored in this run.
        fetchers.abort_all();
        normalizer.abort();
    }
    while let Some(joined) = fetchers.join_next().await {
        if let Err(e) = joined
            && !e.is_cancelled()
        {
            summary.errors.push(format!("fetch task failed: {e}"));
        }
    }
    let normalize_cpu = match normalizer.await {
        Ok(cpu) => cpu,
        Err(e) if e.is_cancelled() => Duration::ZERO,
        Err(e) => {
            summary.errors.push(format!("normalize stage failed: {e}"));
            Duration::ZERO
        }
    };

    // Streams that never reported an end did not complete.
    for (stream, s) in summary.streams.iter_mut() {
        if !ended.contains(stream) && s.fetch_error.is_none() {
            s.fetch_completed = false;
            if !load_failed {
                s.fetch_error = Some("fetch did not finish".to_string());
            }
        }
    }

    let fetch_ms = fetch_ended.lock().map(|t| t.duration_since(started)).unwrap_or_default().as_millis() as u64;
    summary.stages.fetch_ms = fetch_ms;
    summary.stages.normalize_cpu_ms = normalize_cpu.as_millis() as u64;
    summary.stages.fetch_blocked_ms = gauges.fetch_blocked_ms();
    summary.requests = requests.snapshot();
    summary.in_flight = gauges.snapshot();
    summary.in_flight.record_bound = cfg.in_flight_record_bound(fetching);
    shared.lag.settle(&recorder);
    summary.lag = recorder.stats();
    summary.timeline = timeline.finish().await;
    summary.ended_at = Utc::now();
    summary.status = status_of(&summary, load_failed);
    let lease_lost = lease.is_lost();
    lease.release().await;
    if lease_lost {
        summary.errors.push(format!(
            "lost the lease on connection `{}`: another run may have taken it over; what was loaded before is kept, \
             no checkpoint was saved and nothing was marked stale after that",
            conn.name
        ));
        summary.status = RunStatus::Failed;
    } else if summary.streams.values().any(|s| s.fetch_error.as_deref() == Some(INTERRUPTED)) {
        // Loaded data and its checkpoints are kept; the run itself did not complete.
        summary
            .errors
            .push("interrupted: the run was cancelled; what was loaded is kept, nothing was marked stale".into());
        summary.status = RunStatus::Failed;
    }
    log_end(&summary);
    summary
}

/// Samples a run's progress into its [`Timeline`] on a task of its own:
/// cumulative counts, records in flight, and the runtime lag since the
/// previous point (from a recorder of its own, renewed at each point).
struct Sampler {
    /// Cancelled when the run ends, or when its future is dropped.
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<Timeline>,
}

/// The first interval between timeline points; it doubles each time the
/// timeline fills up (see [`Timeline`]).
const TIMELINE_FIRST_INTERVAL_MS: u64 = 250;

impl Sampler {
    fn start(engine: &Engine, started: Instant, progress: Arc<Progress>, gauges: Arc<PipelineGauges>) -> Sampler {
        let stop = tokio_util::sync::CancellationToken::new();
        let lag = engine.shared.lag.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut timeline = Timeline::new(TIMELINE_FIRST_INTERVAL_MS);
            let mut recorder = lag.recorder();
            let point = |recorder: &LagRecorder| TimelinePoint {
                t_ms: started.elapsed().as_millis() as u64,
                records_fetched: progress.fetched(),
                assets_loaded: progress.loaded(),
                records_in_flight: gauges.snapshot().records as u64,
                lag_p99_us: recorder.stats().p99_us,
            };
            loop {
                let wait = Duration::from_millis(timeline.interval_ms());
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                timeline.push(point(&recorder));
                recorder = lag.recorder();
            }
            timeline.push(point(&recorder));
            timeline
        });
        Sampler { stop: stop.drop_guard(), task }
    }

    async fn finish(self) -> Vec<TimelinePoint> {
        drop(self.stop);
        self.task.await.map(Timeline::into_points).unwrap_or_default()
    }
}

/// The summary of a run that never started because it did not get its connection's lease.
fn not_started(mut summary: RunSummary, refused: lease::Refused) -> RunSummary {
    let connection = summary.connection.clone();
    match refused {
        lease::Refused::Held(l) => {
            tracing::warn!(connection = %connection, held_by = %l.owner, sync_id = %l.holder, expires_at = %l.expires_at,
                "skipped: another run of this connection is in progress");
            summary.status = RunStatus::Skipped;
            summary.errors.push(format!(
                "skipped: another run of connection `{connection}` is in progress (sync {} on {}; its lease runs until {} unless renewed)",
                l.holder,
                l.owner,
                l.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        lease::Refused::Cancelled => {
            summary.status = RunStatus::Failed;
            summary.errors.push("interrupted: the run was cancelled while waiting for the connection's lease".into());
        }
        lease::Refused::Store(e) => {
            tracing::error!(connection = %connection, error = %e, "could not take the connection's lease");
            summary.status = RunStatus::Failed;
            summary.errors.push(format!("could not take the lease on connection `{connection}`: {e}"));
        }
    }
    summary.ended_at = Utc::now();
    summary
}

fn status_of(s: &RunSummary, load_failed: bool) -> RunStatus {
    let streams = s.streams.len();
    let fetch_failed = s.streams.values().filter(|st| st.fetch_error.is_some()).count();
    if load_failed || (streams > 0 && fetch_failed == streams) || streams == 0 {
        RunStatus::Failed
    } else if fetch_failed > 0 || s.records_rejected > 0 || s.pages_rejected > 0 || !s.errors.is_empty() {
        RunStatus::Partial
    } else {
        RunStatus::Success
    }
}

fn log_end(s: &RunSummary) {
    let fields = (s.records_fetched, s.loaded(), s.records_rejected);
    match s.status {
        RunStatus::Success => tracing::info!(connection = %s.connection, sync_id = %s.sync_id, status = %s.status,
            fetched = fields.0, loaded = fields.1, rejected = fields.2, "sync finished"),
        _ => tracing::warn!(connection = %s.connection, sync_id = %s.sync_id, status = %s.status,
            fetched = fields.0, loaded = fields.1, rejected = fields.2, errors = s.errors.len(), "sync finished with problems"),
    }
}

/// Run the adapter's fetch for one stream and always report how it ended.
/// On cancellation the adapter's fetch is dropped and the stream ends with
/// [`INTERRUPTED`]: what was already fetched is still normalized and loaded.
async fn fetch_stream(
    adapter: Arc<dyn Adapter>,
    ctx: FetchContext,
    ended: Arc<Mutex<Instant>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let sink = ctx.sink.clone();
    let stream = ctx.stream.name.clone();
    let connection = ctx.connection.clone();
    let fetch = AssertUnwindSafe(adapter.fetch(ctx)).catch_unwind();
    let result = tokio::select! {
        r = fetch => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(crate::adapter::FetchError::Closed)) => return,
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!("fetch panicked: {}", panic_message(&panic))),
        },
        () = cancel.cancelled() => Err(INTERRUPTED.to_string()),
    };
    if let Err(e) = &result {
        tracing::error!(connection = %connection, stream = %stream, error = %e, "fetch failed");
    }
    if let Ok(mut t) = ended.lock() {
        *t = (*t).max(Instant::now());
    }
    sink.end_stream(stream, result).await;
}

/// The message of a caught panic (`std::panic::catch_unwind`'s error), for
/// an error that names it: its text when it was given one, or
/// "unknown panic".
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Stage 2: hand pages to the rayon pool, at most `normalize_in_flight` at
/// once, and pass results on in the order the pages arrived. Returns the CPU
/// time spent normalizing.
async fn normalize_stage(
    engine: Engine,
    adapter: Arc<dyn Adapter>,
    connection: Arc<str>,
    mut rx: mpsc::Receiver<FetchItem>,
    tx: mpsc::Sender<Normalized>,
    gauges: Arc<PipelineGauges>,
) -> Duration {
    let max = engine.shared.config.normalize_in_flight();
    let mut pending: FuturesOrdered<futures::future::BoxFuture<'static, Normalized>> = FuturesOrdered::new();
    let mut input_open = true;
    let mut cpu = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => {
                if let Normalized::Page(p) = &done {
                    cpu += p.cpu;
                }
                if tx.send(done).await.is_err() {
                    return cpu;
                }
            }
            item = rx.recv(), if input_open && pending.len() < max => match item {
                None => input_open = false,
                Some(FetchItem::Page(page)) => {
                    pending.push_back(dispatch(&engine, adapter.clone(), &connection, page, gauges.clone()).boxed());
                }
                Some(FetchItem::StreamEnd { stream, result }) => {
                    pending.push_back(futures::future::ready(Normalized::StreamEnd { stream, result }).boxed());
                }
            },
            else => return cpu,
        }
    }
}

fn dispatch(
    engine: &Engine,
    adapter: Arc<dyn Adapter>,
    connection: &Arc<str>,
    page: RawPage,
    gauges: Arc<PipelineGauges>,
) -> impl std::future::Future<Output = Normalized> + Send + 'static {
    let (tx, rx) = oneshot::channel();
    let stream = page.stream.clone();
    let locator = page.locator.clone();
    let max_page_records = engine.shared.config.max_page_records;
    let connection = connection.clone();
    engine.shared.pool.spawn(move || {
        let mut page = page;
        if tx.is_closed() {
            return; // the run was cancelled: skip the work
        }
        let timer = super::ThreadTimer::start();
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| adapter.normalize(&page)))
            .unwrap_or_else(|p| NormalizedPage::page_failed(format!("normalize panicked: {}", panic_message(&p))));
        let mut rejects = std::mem::take(&mut page.rejects);
        rejects.extend(out.rejects);
        // Attributes must be declared by the stream, with their type: a record
        // that breaks its declaration is rejected naming the attribute.
        let mut out_assets = out.assets;
        if out_assets.iter().any(|a| !a.attributes.is_empty()) {
            let info = adapter.info();
            let stream_info = info.stream(&page.stream);
            out_assets.retain(|a| {
                if a.attributes.is_empty() {
                    return true;
                }
                let checked = match stream_info {
                    Some(s) => s.check_attributes(a),
                    None => Err((
                        crate::adapter::UNDECLARED_ATTRIBUTE,
                        format!("stream `{}` is not declared by the adapter, so it has no attributes", page.stream),
                    )),
                };
                match checked {
                    Ok(()) => true,
                    Err((reason, detail)) => {
                        let record = format!("{} {} of {}", a.kind(), a.source_id(), page.locator);
                        let raw = serde_json::to_vec(&a.attributes).unwrap_or_default();
                        rejects.push(Reject::new(record, reason, detail).with_raw(&raw).with_key(a.source_id()));
                        false
                    }
                }
            });
        }
        // An undecodable page loses every record in it: as many as fetch said
        // it held, when it knew; it is kept as one `malformed_page` reject.
        let lost = out.page_error.as_ref().and(page.record_hint).map(|n| n as u64);
        let page_reject = out.page_error.as_ref().map(|err| {
            let detail = match lost {
                Some(n) => format!("{err} ({n} record(s) lost with the page)"),
                None => format!("{err} (the records in the page are unknown)"),
            };
            Reject::new(page.locator.clone(), MALFORMED_PAGE, detail).with_raw(&page.body)
        });
        let records = page.record_hint.map_or((out_assets.len() + rejects.len()) as u64, |n| n as u64);
        rejects.extend(page_reject);
        if records > max_page_records as u64 && gauges.oversized_page() == 0 {
            tracing::warn!(
                connection = %connection, stream = %page.stream, page = %page.locator, records, max_page_records,
                "a page holds more records than engine.max_page_records: the in-flight bound assumed no such page"
            );
        }
        let assets: Vec<(Asset, usize)> =
            out_assets.into_iter().map(|a| (a.approx_size(), a)).map(|(n, a)| (a, n)).collect();
        gauges.normalized(page.body.len(), page.record_hint.unwrap_or(0), assets.len());
        let _ = tx.send(PageResult {
            stream: page.stream,
            locator: page.locator,
            assets,
            rejects,
            page_error: out.page_error,
            lost,
            checkpoint: page.checkpoint,
            records,
            cpu: timer.took(),
        });
    });
    async move {
        match rx.await {
            Ok(result) => Normalized::Page(result),
            Err(_) => Normalized::Page(PageResult {
                stream,
                locator,
                assets: Vec::new(),
                rejects: Vec::new(),
                page_error: Some("normalize worker stopped before finishing the page".to_string()),
                lost: None,
                checkpoint: None,
                records: 0,
                cpu: Duration::ZERO,
            }),
        }
    }
}

#[derive(Default)]
struct OpenBatch {
    assets: Vec<Asset>,
    bytes: usize,
    opened: Option<tokio::time::Instant>,
    markers: Vec<Marker>,
    /// Keys of rejected records (`LoadBatch::seen`).
    seen: Vec<(crate::AssetKind, String)>,
}

/// Stage 3: cut batches, keep several in flight, apply markers in order.
struct Loader<'a> {
    engine: Engine,
    conn: &'a Connection,
    sync_id: String,
    seen_at: DateTime<Utc>,
    gauges: Arc<PipelineGauges>,
    recorder: Arc<LagRecorder>,
    progress: Arc<Progress>,
    summary: &'a mut RunSummary,
    batch: OpenBatch,
    in_flight: FuturesOrdered<tokio::task::JoinHandle<BatchDone>>,
    /// Abort handles of the batches in `in_flight`, in the same order.
    in_flight_aborts: std::collections::VecDeque<tokio::task::AbortHandle>,
    /// Streams with a page that could not be decoded: no checkpoint past it, no stale handling.
    tainted: BTreeSet<String>,
    /// Streams that resumed from a checkpoint: they did not see the whole inventory.
    resumed: BTreeSet<String>,
    /// Per stream: fetch said it dropped its checkpoint and read from the start
    /// (`FetchContext::fetching_from_start`; set before the stream's end arrives).
    started_over: BTreeMap<String, Arc<std::sync::atomic::AtomicBool>>,
    /// Per stream: fetch said its checkpoint is a watermark for the next run
    /// ([`FetchContext::keep_checkpoint`]): not cleared when the stream completes.
    keeps_checkpoint: BTreeMap<String, Arc<std::sync::atomic::AtomicBool>>,
    /// Per stream, what its fetch said it could not see ([`FetchContext::incomplete`]).
    incomplete: BTreeMap<String, Arc<std::sync::Mutex<Vec<String>>>>,
    /// Streams with a record the store refused: its stored copy was not
    /// refreshed, so stale handling would wrongly mark (and later delete) it.
    store_refused: BTreeSet<String>,
    rejects_buffer: Vec<StoredReject>,
    rejects_kept: usize,
    load_failure: Option<String>,
    ended: BTreeSet<String>,
    /// Set when the run lost its connection's lease: no checkpoint, no stale handling from then on.
    lease_lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Loader<'_> {
    fn store(&self) -> &Arc<dyn Store> {
        &self.engine.shared.store
    }

    fn lost_lease(&self) -> bool {
        self.lease_lost.load(Ordering::SeqCst)
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Normalized>) {
        let max_wait = Duration::from_millis(self.engine.shared.config.batch_max_wait_ms);
        loop {
            let deadline = self.batch.opened.map(|t| t + max_wait);
            tokio::select! {
                biased;
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => self.on_done(done).await,
                msg = rx.recv() => match msg {
                    None => break,
                    Some(Normalized::Page(page)) => self.on_page(page).await,
                    Some(Normalized::StreamEnd { stream, result }) => {
                        self.batch.markers.push(Marker::StreamEnd { stream, result });
                    }
                },
                _ = sleep_until_opt(deadline), if deadline.is_some() => self.submit().await,
            }
            if self.load_failure.is_some() {
                return;
            }
        }
        self.submit().await;
        while let Some(done) = self.in_flight.next().await {
            self.on_done(done).await;
            if self.load_failure.is_some() {
                return;
            }
        }
        self.flush_rejects().await;
    }

    async fn on_page(&mut self, page: PageResult) {
        let PageResult { stream, locator, assets, rejects, page_error, lost, checkpoint, records, .. } = page;
        let st = self.summary.streams.entry(stream.clone()).or_default();
        st.pages += 1;
        st.records_fetched += records;
        st.assets_normalized += assets.len() as u64;
        self.summary.pages += 1;
        self.summary.records_fetched += records;
        self.summary.assets_normalized += assets.len() as u64;
        self.progress.records_fetched.fetch_add(records, Ordering::Relaxed);
        if let Some(err) = page_error {
            let lost_text = lost.map_or("an unknown number of records".to_string(), |n| format!("{n} record(s)"));
            tracing::warn!(connection = %self.conn.name, stream = %stream, page = %locator, error = %err,
                records_lost = lost, "page could not be decoded: {lost_text} lost with it");
            // Every undecodable page is counted (pages, and the records known
            // to be lost with them) and kept as a `malformed_page` reject; only
            // the first few are listed, so a bad file cannot bloat the summary.
            st.pages_rejected += 1;
            self.summary.pages_rejected += 1;
            match lost {
                Some(n) => {
                    st.records_lost += n;
                    self.summary.records_lost += n;
                    self.progress.rejected.fetch_add(n, Ordering::Relaxed);
                }
                None => {
                    st.pages_rejected_unsized += 1;
                    self.summary.pages_rejected_unsized += 1;
                }
            }
            if st.page_errors.len() < MAX_PAGE_ERRORS_LISTED {
                st.page_errors.push(format!("{locator}: {err}"));
                self.summary.errors.push(format!(
                    "stream {stream}: {locator}: page could not be decoded ({lost_text} lost with it): {err}"
                ));
            }
            self.tainted.insert(stream.clone());
        }
        self.record_rejects(&stream, rejects).await;

        let cfg = &self.engine.shared.config;
        let (max_records, max_bytes) = (cfg.batch_max_records, cfg.batch_max_bytes);
        // A stream of nothing but rejects must not grow the batch without bound.
        if self.batch.seen.len() >= max_records {
            self.submit().await;
            if self.load_failure.is_some() {
                return;
            }
        }
        for (asset, size) in assets {
            if self.batch.opened.is_none() {
                self.batch.opened = Some(tokio::time::Instant::now());
            }
            self.batch.assets.push(asset);
            self.batch.bytes += size;
            if self.batch.assets.len() >= max_records || self.batch.bytes >= max_bytes {
                self.submit().await;
                if self.load_failure.is_some() {
                    return;
                }
            }
        }
        if let Some(checkpoint) = checkpoint
            && !self.tainted.contains(&stream)
        {
            self.batch.markers.push(Marker::Checkpoint { stream, checkpoint });
        }
    }

    async fn record_rejects(&mut self, stream: &str, rejects: Vec<Reject>) {
        if rejects.is_empty() {
            return;
        }
        // Rejected records the vendor still has: their stored assets stay fresh.
        let kind = self.conn.adapter.info().stream(stream).map(|s| s.kind);
        if let Some(kind) = kind {
            self.batch.seen.extend(rejects.iter().filter_map(|r| r.key.clone()).map(|k| (kind, k)));
        }
        let cfg = &self.engine.shared.config;
        // Records, not pages: an undecodable page is counted in `pages_rejected`.
        let records = rejects.iter().filter(|r| r.reason != MALFORMED_PAGE).count() as u64;
        self.summary.records_rejected += records;
        self.summary.streams.entry(stream.to_string()).or_default().rejected += records;
        self.progress.rejected.fetch_add(records, Ordering::Relaxed);
        for r in rejects {
            let group: &mut RejectGroup = self.summary.rejects.entry(r.reason.clone()).or_default();
            group.count += 1;
            if group.samples.len() < cfg.reject_samples {
                tracing::warn!(connection = %self.conn.name, stream, record = %r.record, reason = %r.reason, detail = %r.detail, "record rejected");
                group.samples.push(Reject { raw: None, ..r.clone() });
            } else {
                tracing::debug!(connection = %self.conn.name, stream, record = %r.record, reason = %r.reason, "record rejected");
            }
            if self.rejects_kept < cfg.max_rejects_kept {
                self.rejects_kept += 1;
                self.rejects_buffer.push(StoredReject {
                    sync_id: self.sync_id.clone(),
                    connection: self.conn.name.clone(),
                    stream: stream.to_string(),
                    reject: r,
                });
            }
        }
        if self.rejects_buffer.len() >= 500 {
            self.flush_rejects().await;
        }
    }

    async fn flush_rejects(&mut self) {
        if self.rejects_buffer.is_empty() {
            return;
        }
        let mut rejects = std::mem::take(&mut self.rejects_buffer);
        for r in &mut rejects {
            self.engine.shared.redactor.redact_stored_reject(r);
        }
        if let Err(e) = self.store().save_rejects(rejects).await {
            tracing::error!(connection = %self.conn.name, error = %e, "could not keep rejected records");
            self.summary.errors.push(format!("keeping rejected records failed: {e}"));
        }
    }

    /// Close the open batch and start writing it, waiting first if too many are in flight.
    async fn submit(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if batch.assets.is_empty() && batch.markers.is_empty() && batch.seen.is_empty() {
            return;
        }
        let limit = self.engine.shared.config.batches_in_flight;
        while self.in_flight.len() >= limit {
            let Some(done) = self.in_flight.next().await else { break };
            self.on_done(done).await;
            if self.load_failure.is_some() {
                self.gauges.records_done(batch.assets.len());
                return;
            }
        }
        let store = self.store().clone();
        let attempts = self.engine.shared.config.load_attempts;
        let records = batch.assets.len();
        let load = LoadBatch {
            sync_id: self.sync_id.clone(),
            connection: self.conn.name.clone(),
            seen_at: self.seen_at,
            assets: batch.assets.into(),
            seen: batch.seen,
        };
        let markers = batch.markers;
        let shared = Arc::clone(&self.engine.shared);
        let fut = async move {
            let started = Instant::now();
            let result = if load.assets.is_empty() && load.seen.is_empty() {
                Ok(LoadOutcome::default())
            } else {
                upsert_with_retry(&*store, &load, attempts).await
            };
            let refused_streams = refused_streams(&load, &result);
            // The batch's records are freed on the normalize pool: a thousand
            // assets with their raw JSON trees are tens of thousands of frees,
            // the largest CPU item left on the runtime's workers in a profile.
            shared.pool.spawn(move || drop(load));
            BatchDone { result, records, refused_streams, markers, took: started.elapsed() }
        };
        let name: Arc<str> = Arc::from(self.conn.name.as_str());
        let handle = tokio::spawn(Staged::new("load", name, self.recorder.clone(), fut));
        self.in_flight_aborts.push_back(handle.abort_handle());
        self.in_flight.push_back(handle);
    }

    async fn on_done(&mut self, joined: Result<BatchDone, tokio::task::JoinError>) {
        self.in_flight_aborts.pop_front();
        let done = match joined {
            Ok(done) => done,
            Err(e) => {
                self.fail(format!("load task failed: {e}"));
                return;
            }
        };
        self.gauges.records_done(done.records);
        if done.records > 0 {
            self.summary.batches += 1;
        }
        self.summary.stages.load_ms += done.took.as_millis() as u64;
        // A batch that failed after part of it was stored still counts that part.
        let (stored, error) = match done.result {
            Ok(outcome) => (Some(outcome), None),
            Err(StoreError::Partial { stored, source }) => (Some(stored), Some(*source)),
            Err(e) => (None, Some(e)),
        };
        if let Some(outcome) = stored {
            self.summary.inserted += outcome.inserted;
            self.summary.updated += outcome.updated;
            self.summary.unchanged += outcome.unchanged;
            self.progress.assets_loaded.fetch_add(outcome.stored(), Ordering::Relaxed);
            if !outcome.rejected.is_empty() {
                self.on_store_refused(&done.refused_streams, outcome.rejected).await;
            }
        }
        if let Some(e) = error {
            self.summary.failed_batches += 1;
            self.fail(format!("load of a batch of {} records failed: {e}", done.records));
            return;
        }
        for marker in done.markers {
            match marker {
                Marker::Checkpoint { stream, checkpoint } => {
                    if self.tainted.contains(&stream) || self.lost_lease() {
                        continue;
                    }
                    if let Err(e) = self.store().save_checkpoint(&self.conn.name, &stream, &checkpoint).await {
                        self.fail(format!("saving the checkpoint of stream {stream} failed: {e}"));
                        return;
                    }
                }
                Marker::StreamEnd { stream, result } => self.on_stream_end(stream, result).await,
            }
            if self.load_failure.is_some() {
                return;
            }
        }
    }

    /// Records the store refused one by one (too large, failed validation):
    /// rejects like any other, and their streams get no stale handling.
    async fn on_store_refused(&mut self, streams: &[String], rejected: Vec<Reject>) {
        let mut by_stream: BTreeMap<&str, Vec<Reject>> = BTreeMap::new();
        for (i, r) in rejected.into_iter().enumerate() {
            by_stream.entry(streams.get(i).map_or("(store)", String::as_str)).or_default().push(r);
        }
        for (stream, rejects) in by_stream {
            if self.store_refused.insert(stream.to_string()) {
                tracing::warn!(connection = %self.conn.name, stream, "the store refused records of this stream; its stale handling will be skipped");
            }
            self.record_rejects(stream, rejects).await;
        }
    }

    /// Every record of the stream before this point is stored.
    /// The stream's fetch dropped its checkpoint and read from the start.
    fn fetched_from_start(&self, stream: &str) -> bool {
        let over = self.started_over.get(stream).is_some_and(|f| f.load(Ordering::Acquire));
        if over {
            tracing::info!(connection = %self.conn.name, stream = %stream, "the adapter did not use the checkpoint and fetched from the start: stale handling applies");
        }
        over
    }

    async fn on_stream_end(&mut self, stream: String, result: Result<(), String>) {
        self.ended.insert(stream.clone());
        let st = self.summary.streams.entry(stream.clone()).or_default();
        match result {
            Err(e) => {
                st.fetch_error = Some(e.clone());
                self.summary.errors.push(format!("stream {stream}: fetch failed: {e}"));
                return;
            }
            Ok(()) => {
                let partly = self
                    .incomplete
                    .get(&stream)
                    .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
                    .unwrap_or_default();
                if !partly.is_empty() {
                    let reason = partly.join("; ");
                    tracing::warn!(connection = %self.conn.name, stream = %stream, reason = %reason, "stream fetched in part; stale handling skipped");
                    st.incomplete = Some(reason.clone());
                    self.summary.errors.push(format!("stream {stream}: fetched in part: {reason}"));
                    return;
                }
                st.fetch_completed = true;
            }
        }
        if self.tainted.contains(&stream) {
            tracing::warn!(connection = %self.conn.name, stream = %stream, "stale handling skipped: a page of this stream could not be decoded");
            return;
        }
        if self.lost_lease() {
            tracing::warn!(connection = %self.conn.name, stream = %stream, "stale handling skipped: this run lost its lease on the connection");
            return;
        }
        if self.store_refused.contains(&stream) {
            // Its checkpoint is still cleared below: a rerun would be refused the same records.
            tracing::warn!(connection = %self.conn.name, stream = %stream, "stale handling skipped: the store refused records of this stream");
        } else if self.resumed.contains(&stream) && !self.fetched_from_start(&stream) {
            tracing::info!(connection = %self.conn.name, stream = %stream, "stale handling skipped: this run resumed from a checkpoint");
        } else {
            // Everything before this marker is acknowledged and the fetch was clean.
            self.flush_rejects().await;
            let scope = StaleScope {
                connection: self.conn.name.clone(),
                stream: stream.clone(),
                sync_id: self.sync_id.clone(),
                started_at: self.seen_at,
                now: Utc::now(),
            };
            match self.store().handle_stale(&scope, self.conn.stale).await {
                Ok(outcome) => {
                    let st = self.summary.streams.entry(stream.clone()).or_default();
                    st.stale_handled = true;
                    st.stale = outcome;
                    self.summary.stale_marked += outcome.marked;
                    self.summary.stale_deleted += outcome.deleted;
                }
                Err(e) => {
                    self.fail(format!("stale handling of stream {stream} failed: {e}"));
                    return;
                }
            }
        }
        // A clean, complete stream: the next run starts from the beginning,
        // unless the adapter's checkpoint is a watermark for the next run
        // (and the store took every record before it).
        let keep = self.keeps_checkpoint.get(&stream).is_some_and(|f| f.load(Ordering::Acquire));
        if keep && !self.store_refused.contains(&stream) {
            tracing::debug!(connection = %self.conn.name, stream = %stream, "checkpoint kept for the next run (the adapter's watermark)");
            return;
        }
        if let Err(e) =
            self.store().save_checkpoint(&self.conn.name, &stream, &Checkpoint(serde_json::Value::Null)).await
        {
            self.fail(format!("clearing the checkpoint of stream {stream} failed: {e}"));
        }
    }

    fn fail(&mut self, error: String) {
        tracing::error!(connection = %self.conn.name, sync_id = %self.sync_id, error = %error, "load failed; stopping this connection");
        self.summary.errors.push(error.clone());
        self.load_failure = Some(error);
    }
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        // Batches still in flight when the loader gives up are abandoned.
        for handle in self.in_flight_aborts.drain(..) {
            handle.abort();
        }
        self.gauges.records_done(self.batch.assets.len());
    }
}

/// The stream of each record the store refused (the store contract: its
/// `Reject::record` names it, see [`Asset::is_named_by`]), looked up in the
/// batch it was given.
/// Work only when the store refused something.
fn refused_streams(batch: &LoadBatch, result: &Result<LoadOutcome, StoreError>) -> Vec<String> {
    let rejected = match result {
        Ok(outcome) => &outcome.rejected,
        Err(e) => match e.stored() {
            Some(stored) => &stored.rejected,
            None => return Vec::new(),
        },
    };
    rejected
        .iter()
        .map(|r| {
            // The later record of a key wins, as in the store.
            let asset = batch.assets.iter().rev().find(|a| a.is_named_by(&r.record));
            asset.map_or("(store)", |a| a.stream.as_str()).to_string()
        })
        .collect()
}

async fn upsert_with_retry(store: &dyn Store, batch: &LoadBatch, attempts: u32) -> Result<LoadOutcome, StoreError> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        // Upserts are idempotent, so retrying a batch whose outcome is unknown is safe.
        match store.upsert(batch.clone()).await {
            Ok(o) => return Ok(o),
            Err(e) if e.is_transient() && attempt < attempts => {
                tracing::warn!(connection = %batch.connection, attempt, error = %e, "transient store error; retrying the batch");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
