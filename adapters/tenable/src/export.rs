//! Tenable export jobs: create (retrying 409 refusals with backoff), poll,
//! download chunks as they appear, with [`corral_http::run_export`].
//!
//! Failure handling, per export:
//! - **409** on create (too many exports of the kind running, or a duplicate
//!   of one running): waited out with exponential backoff (from the poll
//!   interval up to one minute) for at most `conflict_wait_secs`, then the
//!   stream fails naming the refusal.
//! - **429**: corral-http waits out `Retry-After` (Tenable's 429 body is an
//!   HTML page; only the header is read).
//! - **CANCELLED / ERROR** job: the stream fails with an error naming the
//!   export and its status; chunks already delivered stay stored, nothing is
//!   marked stale (the fetch did not complete).
//! - **Expired chunk** (404 on a listed chunk: Tenable keeps chunks 24 h):
//!   the export's data is gone, so the export is started again from scratch,
//!   once; a second expiry fails the stream. Chunks of the first attempt were
//!   already stored and are stored again (idempotent upserts).
//! - Anything else (timeout of the whole export, 5xx past the retries): the
//!   job is cancelled at Tenable (freeing its export slot) and the stream fails.
//! - The fetch dropped mid-export (the run interrupted): the job is cancelled
//!   at Tenable from a task spawned on drop.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corral_core::{Checkpoint, FetchContext, FetchError, RawPage};
use corral_http::{ChunkBody, ExportJob, ExportOptions, ExportState, ExportStatus, HttpClient, RetryConfig};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Settings;

/// Which export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    Assets,
    Vulns,
}

impl ExportKind {
    fn path(self) -> &'static str {
        match self {
            ExportKind::Assets => "/assets/export",
            ExportKind::Vulns => "/vulns/export",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            ExportKind::Assets => "asset",
            ExportKind::Vulns => "vulnerability",
        }
    }
}

/// The longest wait between two attempts to create a refused (409) export.
const MAX_CONFLICT_BACKOFF: Duration = Duration::from_secs(60);

/// One export request: what [`run_export`](corral_http::run_export) drives.
pub struct TenableExport<'a> {
    client: &'a HttpClient,
    settings: &'a Settings,
    kind: ExportKind,
    body: Value,
    /// The job's creation time as Tenable reports it (`created`, epoch ms), from its status.
    created_ms: Mutex<Option<i64>>,
    /// A listed chunk answered 404: the export's data is gone.
    expired: AtomicBool,
    /// Creates refused with 409, over this export's attempts.
    pub conflicts: std::sync::atomic::AtomicU32,
    /// The job this export created, once it did.
    job: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct Created {
    export_uuid: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    status: Option<String>,
    #[serde(default)]
    chunks_available: Vec<u64>,
    #[serde(default)]
    created: Option<i64>,
}

impl<'a> TenableExport<'a> {
    pub fn new(client: &'a HttpClient, settings: &'a Settings, kind: ExportKind, body: Value) -> Self {
        TenableExport {
            client,
            settings,
            kind,
            body,
            created_ms: Mutex::new(None),
            expired: AtomicBool::new(false),
            conflicts: Default::default(),
            job: Mutex::new(None),
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}{rest}", self.kind.path())
    }

    /// When Tenable created the (last) job, in epoch seconds, if its status said.
    pub fn created_secs(&self) -> Option<i64> {
        self.created_ms.lock().ok().and_then(|g| *g).map(|ms| ms.div_euclid(1000))
    }

    fn options(&self) -> ExportOptions {
        ExportOptions {
            poll_initial: self.settings.poll_interval,
            poll_max: self.settings.max_poll_interval,
            concurrency: self.settings.chunk_concurrency,
            timeout: self.settings.export_timeout,
        }
    }
}

impl ExportJob for TenableExport<'_> {
    type Chunk = u64;

    /// `POST /{assets,vulns}/export`; a 409 (too many exports, or a duplicate
    /// of a running one) is retried with backoff for `conflict_wait`. The
    /// create is retried after a 5xx too: Tenable refuses a duplicate of a
    /// running export with 409, so a retry can never start a second job.
    async fn create(&self) -> Result<String, FetchError> {
        let started = Instant::now();
        let mut delay = self.settings.poll_interval;
        loop {
            let resp = self.client.post_json(self.kind.path(), &self.body).allow_status(409).send_bytes().await?;
            if resp.status.as_u16() != 409 {
                let body = resp.body.clone();
                let created =
                    corral_http::off_runtime(move || serde_json::from_slice::<Created>(&body).ok()).await.flatten();
                return match created.and_then(|c| c.export_uuid).filter(|u| !u.trim().is_empty()) {
                    Some(uuid) => {
                        tracing::info!(export = %uuid, kind = self.kind.noun(), "export started");
                        if let Ok(mut g) = self.job.lock() {
                            *g = Some(uuid.clone());
                        }
                        Ok(uuid)
                    }
                    None => Err(FetchError::Protocol {
                        endpoint: resp.endpoint(),
                        detail: "the export was accepted without an `export_uuid`".into(),
                    }),
                };
            }
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            let body = resp.body.clone();
            let message = corral_http::off_runtime(move || {
                corral_http::extract_json_string(&body, &["message"]).map(|m| m.chars().take(200).collect::<String>())
            })
            .await
            .flatten()
            .unwrap_or_else(|| "no message".into());
            let waited = started.elapsed();
            if waited + delay > self.settings.conflict_wait {
                return Err(FetchError::Http {
                    endpoint: resp.endpoint(),
                    detail: format!(
                        "the {} export was refused with HTTP 409 for {:.0} s ({message}): too many exports are \
                         running, or one identical to it; retry later or raise conflict_wait_secs",
                        self.kind.noun(),
                        waited.as_secs_f64()
                    ),
                });
            }
            tracing::warn!(kind = self.kind.noun(), wait_ms = delay.as_millis() as u64, %message,
                "export refused with HTTP 409 (too many exports running, or a duplicate); retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_CONFLICT_BACKOFF);
        }
    }

    async fn status(&self, job: &str) -> Result<ExportStatus<u64>, FetchError> {
        let resp = self.client.get(&self.url(&format!("/{job}/status"))).send_bytes().await?;
        let body = resp.body.clone();
        let status =
            corral_http::off_runtime(move || serde_json::from_slice::<Status>(&body).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|| Err("could not decode".into()))
                .map_err(|e| FetchError::Protocol {
                    endpoint: resp.endpoint(),
                    detail: format!("export {job}: unreadable status: {e}"),
                })?;
        if let Some(ms) = status.created
            && let Ok(mut g) = self.created_ms.lock()
        {
            *g = Some(ms);
        }
        let word = status.status.unwrap_or_default();
        let state = match word.to_ascii_uppercase().as_str() {
            "QUEUED" => ExportState::Queued,
            "PROCESSING" => ExportState::Running,
            "FINISHED" => ExportState::Finished,
            "CANCELLED" | "ERROR" => ExportState::Failed(word.to_ascii_uppercase()),
            other => ExportState::Failed(format!("an unknown status `{}`", other.chars().take(40).collect::<String>())),
        };
        Ok(ExportStatus { state, chunks: status.chunks_available })
    }

    async fn fetch_chunk(&self, job: &str, chunk: &u64) -> Result<ChunkBody, FetchError> {
        let resp = self.client.get(&self.url(&format!("/{job}/chunks/{chunk}"))).allow_status(404).send_bytes().await?;
        if resp.status.as_u16() == 404 {
            tracing::warn!(export = %job, chunk, "export chunk is gone (404): it expired");
            self.expired.store(true, Ordering::Release);
            return Ok(ChunkBody::Expired);
        }
        Ok(ChunkBody::Data(resp.body))
    }

    async fn cancel(&self, job: &str) {
        let r = self.client.post(&self.url(&format!("/{job}/cancel"))).retry(RetryConfig::none()).send_bytes().await;
        match r {
            Ok(_) => tracing::info!(export = %job, "export cancelled at Tenable"),
            Err(e) => tracing::warn!(export = %job, error = %e, "could not cancel the export"),
        }
    }

    fn endpoint(&self) -> String {
        self.client.url(self.kind.path()).map(|u| u.to_string()).unwrap_or_else(|_| self.kind.path().to_string())
    }
}

/// Cancels the export at Tenable when the fetch is dropped mid-export (the
/// run was interrupted): a job left running would hold an export slot and
/// make the next run's identical request a 409 duplicate until it finished.
/// `run_export` cancels on its own errors; this covers the drop.
struct CancelOnDrop<'a> {
    export: &'a TenableExport<'a>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(job) = self.export.job.lock().ok().and_then(|g| g.clone()) else { return };
        let client = self.export.client.clone();
        let url = self.export.url(&format!("/{job}/cancel"));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                match client.post(&url).retry(RetryConfig::none()).send_bytes().await {
                    Ok(_) => tracing::info!(export = %job, "fetch interrupted: export cancelled at Tenable"),
                    Err(e) => {
                        tracing::warn!(export = %job, error = %e, "fetch interrupted: could not cancel the export")
                    }
                }
            });
        }
    }
}

/// What one stream's export gave.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub chunks: usize,
    pub attempts: u32,
    /// The job's creation time (epoch s) as Tenable reported it.
    pub created: Option<i64>,
}

/// Run the export with `body` and send every chunk to the sink as one raw
/// page (decoded on the normalize pool). An expired chunk restarts the
/// export once.
pub async fn run(
    client: &HttpClient,
    settings: &Settings,
    ctx: &FetchContext,
    kind: ExportKind,
    body: Value,
) -> Result<Outcome, FetchError> {
    let mut out = Outcome::default();
    for attempt in 1..=2u32 {
        out.attempts = attempt;
        let job = TenableExport::new(client, settings, kind, body.clone());
        let stream = ctx.stream.name.clone();
        let mut guard = CancelOnDrop { export: &job, armed: true };
        let result = corral_http::run_export(&job, job.options(), |chunk, bytes: Bytes| {
            let page = RawPage::new(stream.clone(), bytes, format!("{} export chunk {chunk}", kind.noun()));
            let sink = ctx.sink.clone();
            async move { sink.send(page).await }
        })
        .await;
        guard.armed = false;
        drop(guard);
        match result {
            Ok(report) => {
                out.chunks += report.chunks;
                out.created = job.created_secs();
                tracing::info!(stream = %ctx.stream.name, export = %report.job, chunks = report.chunks,
                    polls = report.polls, bytes = report.bytes, "export complete");
                return Ok(out);
            }
            Err(e) if attempt == 1 && job.expired.load(Ordering::Acquire) => {
                tracing::warn!(stream = %ctx.stream.name, error = %e,
                    "a chunk expired before it was downloaded: starting the export again (once)");
            }
            Err(FetchError::Protocol { endpoint, detail }) if job.expired.load(Ordering::Acquire) => {
                return Err(FetchError::Protocol {
                    endpoint,
                    detail: format!("{detail} (this was already the second export: giving up)"),
                });
            }
            Err(e) => return Err(e),
        }
    }
    // The loop returns on its second attempt.
    Err(FetchError::Other("the export could not be completed".into()))
}

/// The checkpoint of the vulnerabilities stream: a watermark for the next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// Epoch seconds: when the last complete export was created at Tenable.
    pub since: i64,
    /// Incremental runs since the last full export.
    pub incremental_runs: u32,
}

impl Watermark {
    pub fn read(c: Option<&Checkpoint>) -> Option<Watermark> {
        let v = &c?.0;
        Some(Watermark {
            since: v.get("since")?.as_i64()?,
            incremental_runs: v.get("incremental_runs").and_then(Value::as_u64).unwrap_or(0).min(u64::from(u32::MAX))
                as u32,
        })
    }
    pub fn checkpoint(self) -> Checkpoint {
        Checkpoint(json!({"since": self.since, "incremental_runs": self.incremental_runs}))
    }
}

/// Every finding state: FIXED ones arrive only when asked for, and the
/// incremental runs need them to see findings being fixed.
pub const ALL_STATES: [&str; 3] = ["OPEN", "REOPENED", "FIXED"];

/// The vulnerabilities stream: a full export, or the findings changed since
/// the last complete export's creation; the new watermark goes out as a last,
/// empty page, so it is saved only after every chunk before it was stored.
pub async fn vulnerabilities(client: &HttpClient, settings: &Settings, ctx: &FetchContext) -> Result<(), FetchError> {
    ctx.keep_checkpoint();
    let previous = Watermark::read(ctx.checkpoint.as_ref());
    let incremental = previous.filter(|w| w.incremental_runs + 1 < settings.full_resync_every);
    if ctx.checkpoint.is_some() && incremental.is_none() {
        // A full export: the run sees every finding, so stale handling applies.
        ctx.fetching_from_start();
    }
    let mut filters = json!({"state": ALL_STATES});
    if let Some(w) = incremental {
        filters["since"] = json!(w.since);
        tracing::info!(stream = %ctx.stream.name, since = w.since, "incremental export: findings changed since the last complete export");
    } else {
        tracing::info!(stream = %ctx.stream.name, "full export of every finding");
    }
    let body = json!({"num_assets": settings.vulns_num_assets, "filters": filters});
    let outcome = run(client, settings, ctx, ExportKind::Vulns, body).await?;
    match outcome.created {
        Some(since) => {
            let next = Watermark { since, incremental_runs: incremental.map_or(0, |w| w.incremental_runs + 1) };
            let page = RawPage::new(ctx.stream.name.clone(), Bytes::from_static(b"[]"), "end of the export")
                .with_record_hint(0)
                .with_checkpoint(next.checkpoint());
            ctx.sink.send(page).await?;
        }
        None => tracing::warn!(stream = %ctx.stream.name,
            "the export's status never said when it was created: the next run keeps the previous watermark"),
    }
    Ok(())
}
