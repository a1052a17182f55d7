//! Tenable Vulnerability Management: asset and vulnerability export jobs.
//!
//! A hand-written simulator rather than a kit spec: the two exports serve
//! two linked datasets (findings reference assets of the same generation), a
//! job has a life (QUEUED, PROCESSING, FINISHED, CANCELLED, ERROR) with chunks
//! appearing out of order, and the filters (`since`, `state`, `severity`)
//! decide what a job contains; the kit's single-generator export is too small
//! for that. Data: [`crate::data::tenable`].
//!
//! What it reproduces:
//! - **Auth**: `X-ApiKeys: accessKey=<client_id>;secretKey=<client_secret>` (the
//!   [`SimConfig`](crate::SimConfig) credentials; order and spaces free), else
//!   **401** `{"statusCode": 401, "error": "Unauthorized", "message": "Invalid Credentials"}`.
//!   `GET /session` answers the user (a cheap credentials check).
//! - **Asset export**: `POST /assets/export` JSON `{"chunk_size": 100..=10000, "filters": {...}}`
//!   (`chunk_size` is required; outside the range 400; filters are accepted and not
//!   applied) → `{"export_uuid"}`. `GET /assets/export/{uuid}/status` →
//!   `{"status", "chunks_available": [...], "chunks_failed", "chunks_cancelled", "total_chunks"}`;
//!   `GET /assets/export/{uuid}/chunks/{n}` → a JSON array of assets (`chunk_size`
//!   assets per chunk). Assets carry arrays of identifiers and `installed_software` CPEs.
//! - **Vulnerability export**: `POST /vulns/export` JSON
//!   `{"num_assets": 50..=5000 (default 50), "filters": {"since": epoch s, "state": [...], "severity": [...]}}`
//!   → `{"export_uuid"}`. Each chunk holds the findings of `num_assets` consecutive
//!   assets (so a chunk may be empty). Without `state` only OPEN and REOPENED
//!   findings are exported (Tenable's default: FIXED ones come only when asked
//!   for); `since` keeps findings changed at or after it (see
//!   [`crate::data::tenable`] for the data's clock). Other filter keys are a 400
//!   (not simulated) rather than silently ignored. Status adds `uuid`,
//!   `num_assets_per_chunk`, `finished_chunks`, `filters`, `created` (epoch ms on the
//!   data's clock, as Tenable's is the clock of its findings: the job's generation's
//!   [`generation_time`](crate::data::tenable::generation_time), so a `since` taken
//!   from it selects exactly what changed in later generations).
//! - **Job life**: the first status poll says QUEUED; chunks become available over
//!   the next polls, **out of order** (chunk ids in `chunks_available` come with
//!   gaps, e.g. `[2, 5, 6]`), all of them and FINISHED after
//!   `Behavior::export_polls` polls. Any available chunk can be fetched, in any
//!   order, any number of times; a chunk not (yet) available is a 404.
//!   `POST /{assets,vulns}/export/{uuid}/cancel` → `{"status": "CANCELLED"}`: the
//!   remaining chunks go to `chunks_cancelled`.
//! - **Limits**: a new export while `Behavior::max_running_exports` (default 2) of
//!   its kind are QUEUED or PROCESSING is a **409** (fault `export_too_many`); a
//!   request identical to a running export's is a **409** "Duplicate export"
//!   (fault `export_duplicate`), as Tenable refuses duplicates. A job that is never
//!   polled to the end keeps running: cancel the ones you abandon. With a rate
//!   limit, a request over it is **429** with `Retry-After` (seconds) and an HTML
//!   body (Tenable's 429 page is not JSON). Sliding window; no rate-limit headers.
//! - **Faults** (see [`Faults`](crate::Faults)): `chunk_ttl` (a chunk expires that long
//!   after it became available: 404, `chunk_expired`), `expired_chunks`
//!   (`(export number, chunk)` already expired), `cancel_exports` /
//!   `error_exports` (export numbers that end CANCELLED / ERROR halfway:
//!   `export_cancelled`, `export_error`), plus the shared 5xx/slow/hang/
//!   truncate/malformed ones on exports, status polls and chunks. Page index
//!   (for `malformed_pages`): chunk id - 1.
//! - Endpoint labels: `tenable.assets_export`, `tenable.assets_status`,
//!   `tenable.assets_chunk`, `tenable.vulns_export`, `tenable.vulns_status`,
//!   `tenable.vulns_chunk`, `tenable.cancel`, `tenable.session`, `tenable.other`.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::data::tenable::{FindingState, SEVERITIES, TenableData, VulnFilter};
use crate::ratelimit::Decision;
use crate::server::{Kind, Sim, blocking};
use crate::util::{PageIndex, json as json_resp, json_bytes};

/// Export jobs remembered (the oldest finished ones are forgotten first).
const MAX_JOBS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExportKind {
    Assets,
    Vulns,
}

impl ExportKind {
    fn path(self) -> &'static str {
        match self {
            ExportKind::Assets => "assets",
            ExportKind::Vulns => "vulns",
        }
    }
}

/// How a job ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Finish,
    Cancel,
    Error,
}

struct Job {
    /// 1-based, in creation order (what the fault knobs name).
    number: u64,
    uuid: String,
    kind: ExportKind,
    generation: u64,
    /// Assets per chunk.
    per_chunk: u64,
    filter: VulnFilter,
    /// The request, normalised, for duplicate detection.
    request: String,
    filters_echo: Value,
    created: i64,
    total: u64,
    /// When each status poll happened.
    polls: Vec<Instant>,
    end: End,
    /// The client cancelled it after this many chunks were available.
    cancelled_at: Option<u64>,
    /// Permutation of chunk ranks: rank(k) = (a * (k - 1) + b) % total.
    a: u64,
    b: u64,
}

#[derive(Debug)]
struct Progress {
    status: &'static str,
    /// How many chunks are available (those of rank below it).
    available: u64,
    /// Chunks no longer coming (cancelled or failed).
    stopped: bool,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Job {
    fn rank(&self, chunk: u64) -> u64 {
        if self.total == 0 { 0 } else { (self.a.wrapping_mul(chunk - 1) % self.total + self.b) % self.total }
    }

    /// Chunks available after `poll` status polls (ignoring how the job ends).
    fn count_after(&self, polls_to_finish: u32, poll: usize) -> u64 {
        let n = u64::from(polls_to_finish.max(1));
        let p = poll as u64;
        if p == 0 {
            0
        } else if p >= n {
            self.total
        } else if p == 1 {
            0
        } else {
            self.total * (p - 1) / (n - 1)
        }
    }

    /// The poll at which a failing job stops: the first with half the chunks out.
    fn stop_poll(&self, polls_to_finish: u32) -> usize {
        let half = self.total.div_ceil(2);
        (1..=polls_to_finish.max(1) as usize).find(|p| self.count_after(polls_to_finish, *p) >= half).unwrap_or(1)
    }

    fn progress(&self, polls_to_finish: u32) -> Progress {
        let polls = self.polls.len();
        if let Some(at) = self.cancelled_at {
            return Progress { status: "CANCELLED", available: at, stopped: true };
        }
        if self.end != End::Finish {
            let stop = self.stop_poll(polls_to_finish);
            if polls >= stop {
                let status = if self.end == End::Cancel { "CANCELLED" } else { "ERROR" };
                return Progress { status, available: self.count_after(polls_to_finish, stop), stopped: true };
            }
        }
        let available = self.count_after(polls_to_finish, polls);
        let status = if available >= self.total && polls >= 1 {
            "FINISHED"
        } else if polls <= 1 {
            "QUEUED"
        } else {
            "PROCESSING"
        };
        Progress { status, available, stopped: false }
    }

    fn running(&self, polls_to_finish: u32) -> bool {
        matches!(self.progress(polls_to_finish).status, "QUEUED" | "PROCESSING")
    }

    /// When chunk `k` became available (the poll that first listed it).
    fn available_since(&self, polls_to_finish: u32, chunk: u64) -> Option<Instant> {
        let rank = self.rank(chunk);
        (1..=self.polls.len())
            .find(|p| self.count_after(polls_to_finish, *p) > rank)
            .and_then(|p| self.polls.get(p - 1).copied())
    }
}

/// The export jobs of one simulator.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: Mutex<VecDeque<Job>>,
    seq: AtomicU64,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/session", get(session))
        .route("/assets/export", post(create_assets))
        .route("/vulns/export", post(create_vulns))
        .route("/assets/export/{uuid}/status", get(status_assets))
        .route("/vulns/export/{uuid}/status", get(status_vulns))
        .route("/assets/export/{uuid}/chunks/{chunk}", get(chunk_assets))
        .route("/vulns/export/{uuid}/chunks/{chunk}", get(chunk_vulns))
        .route("/assets/export/{uuid}/cancel", post(cancel_assets))
        .route("/vulns/export/{uuid}/cancel", post(cancel_vulns))
        .fallback(not_found)
}

pub(crate) fn classify(method: &Method, path: &str) -> (&'static str, Kind) {
    let m = method.as_str();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (m, parts.as_slice()) {
        ("GET", ["session"]) => ("tenable.session", Kind::Other),
        ("POST", ["assets", "export"]) => ("tenable.assets_export", Kind::Data),
        ("POST", ["vulns", "export"]) => ("tenable.vulns_export", Kind::Data),
        ("GET", ["assets", "export", _, "status"]) => ("tenable.assets_status", Kind::Data),
        ("GET", ["vulns", "export", _, "status"]) => ("tenable.vulns_status", Kind::Data),
        ("GET", ["assets", "export", _, "chunks", _]) => ("tenable.assets_chunk", Kind::Data),
        ("GET", ["vulns", "export", _, "chunks", _]) => ("tenable.vulns_chunk", Kind::Data),
        ("POST", [_, "export", _, "cancel"]) => ("tenable.cancel", Kind::Other),
        _ => ("tenable.other", Kind::Other),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json_resp(
        status,
        &json!({"statusCode": status.as_u16(), "error": status.canonical_reason().unwrap_or(""), "message": message}),
    )
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    error(status, "An internal error occurred. Please retry.")
}

/// 429 with `Retry-After` seconds and an HTML body.
pub(crate) fn too_many(_sim: &Sim, d: &Decision) -> Response {
    let wait = (d.reset_at.saturating_duration_since(Instant::now()).as_secs_f64().ceil() as u64).max(1);
    let mut resp = Response::new(Body::from(
        "<html><head><title>429 Too Many Requests</title></head><body><center><h1>429 Too Many Requests</h1>\
</center><hr><center>tenable</center></body></html>",
    ));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

/// `X-ApiKeys: accessKey=..;secretKey=..` against the configured client id and secret.
fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    let value = headers.get("x-apikeys").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut access = None;
    let mut secret = None;
    for part in value.split(';') {
        if let Some((k, v)) = part.split_once('=') {
            match k.trim() {
                "accessKey" => access = Some(v.trim()),
                "secretKey" => secret = Some(v.trim()),
                _ => {}
            }
        }
    }
    let c = &sim.config.credentials;
    if access == Some(c.client_id.as_str()) && secret == Some(c.client_secret.as_str()) && sim.static_token_works() {
        return Ok(());
    }
    let message = match (sim.config.faults.echo_credentials, secret) {
        (true, Some(s)) => format!("Invalid Credentials (secretKey={s})"),
        _ => "Invalid Credentials".to_string(),
    };
    Err(error(StatusCode::UNAUTHORIZED, &message))
}

async fn session(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    json_resp(StatusCode::OK, &json!({"id": 1, "username": "corral-sim@example.com", "permissions": 64}))
}

fn data(sim: &Sim, generation: u64) -> TenableData {
    TenableData::new(sim.config.seed, sim.config.size, generation, sim.config.behavior.findings_per_asset)
}

/// The parsed request of a new export.
struct NewExport {
    per_chunk: u64,
    filter: VulnFilter,
    filters_echo: Value,
}

fn parse_assets(body: &Value) -> Result<NewExport, String> {
    let chunk_size = match body.get("chunk_size") {
        None => return Err("chunk_size is required".into()),
        Some(v) => v.as_u64().ok_or("chunk_size must be an integer")?,
    };
    if !(100..=10_000).contains(&chunk_size) {
        return Err(format!("chunk_size must be between 100 and 10000, got {chunk_size}"));
    }
    let filters = body.get("filters").cloned().unwrap_or(json!({}));
    if !filters.is_object() {
        return Err("filters must be an object".into());
    }
    Ok(NewExport { per_chunk: chunk_size, filter: VulnFilter::default(), filters_echo: filters })
}

fn parse_vulns(body: &Value) -> Result<NewExport, String> {
    let num_assets = match body.get("num_assets") {
        None => 50,
        Some(v) => v.as_u64().ok_or("num_assets must be an integer")?,
    };
    if !(50..=5000).contains(&num_assets) {
        return Err(format!("num_assets must be between 50 and 5000, got {num_assets}"));
    }
    let mut filter = VulnFilter::default();
    let filters = body.get("filters").cloned().unwrap_or(json!({}));
    let Some(map) = filters.as_object() else { return Err("filters must be an object".into()) };
    for (k, v) in map {
        match k.as_str() {
            "since" => filter.since = Some(v.as_i64().ok_or("filters.since must be epoch seconds")?),
            "state" => {
                let list = v.as_array().ok_or("filters.state must be an array")?;
                filter.states = list
                    .iter()
                    .map(|s| s.as_str().and_then(FindingState::parse).ok_or(format!("filters.state: bad state {s}")))
                    .collect::<Result<_, _>>()?;
            }
            "severity" => {
                let list = v.as_array().ok_or("filters.severity must be an array")?;
                filter.severities = list
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .and_then(|s| SEVERITIES.iter().position(|x| x.eq_ignore_ascii_case(s)))
                            .map(|p| p as u8)
                            .ok_or(format!("filters.severity: bad severity {s}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("filters.{other} is not simulated by corral-sim")),
        }
    }
    Ok(NewExport { per_chunk: num_assets, filter, filters_echo: filters })
}

async fn create_assets(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    create(sim, headers, body, ExportKind::Assets)
}

async fn create_vulns(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    create(sim, headers, body, ExportKind::Vulns)
}

fn create(sim: Arc<Sim>, headers: HeaderMap, body: Bytes, kind: ExportKind) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => v,
            _ => return error(StatusCode::BAD_REQUEST, "The request body must be a JSON object"),
        }
    };
    let new = match kind {
        ExportKind::Assets => parse_assets(&parsed),
        ExportKind::Vulns => parse_vulns(&parsed),
    };
    let new = match new {
        Ok(n) => n,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let b = &sim.config.behavior;
    let request = format!("{}|{}|{}", kind.path(), new.per_chunk, new.filters_echo);
    let mut jobs = sim.jobs.lock();
    let running: Vec<&Job> = jobs.iter().filter(|j| j.kind == kind && j.running(b.export_polls)).collect();
    if running.iter().any(|j| j.request == request) {
        sim.counters.fault("export_duplicate");
        return error(
            StatusCode::CONFLICT,
            "Duplicate export not allowed. Please modify request or wait until existing export is complete.",
        );
    }
    if running.len() >= b.max_running_exports {
        sim.counters.fault("export_too_many");
        return error(
            StatusCode::CONFLICT,
            &format!("Too many {} exports are running; wait for one to finish.", kind.path()),
        );
    }
    let number = sim.jobs.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let seed = sim.config.seed;
    let uuid = crate::data::guid(crate::data::h3(seed, 0x7E20, number), crate::data::h3(seed, 0x7E21, number));
    let total = (sim.config.size as u64).div_ceil(new.per_chunk);
    let mut a = (total / 2 + 1).max(1) | 1;
    while total > 1 && gcd(a, total) != 1 {
        a += 1;
    }
    let f = &sim.config.faults;
    let end = if f.cancel_exports.contains(&number) {
        End::Cancel
    } else if f.error_exports.contains(&number) {
        End::Error
    } else {
        End::Finish
    };
    // The data's clock, not the wall clock: a client's next `since` comes from it.
    let now = crate::data::tenable::generation_time(sim.generation());
    jobs.push_back(Job {
        number,
        uuid: uuid.clone(),
        kind,
        generation: sim.generation(),
        per_chunk: new.per_chunk,
        filter: new.filter,
        request,
        filters_echo: new.filters_echo,
        created: now,
        total,
        polls: Vec::new(),
        end,
        cancelled_at: None,
        a,
        b: crate::data::h3(seed, 0x7E22, number) % total.max(1),
    });
    while jobs.len() > MAX_JOBS {
        // Forget the oldest job that is not running, else the oldest.
        let polls = b.export_polls;
        let victim = jobs.iter().position(|j| !j.running(polls)).unwrap_or(0);
        jobs.remove(victim);
    }
    json_resp(StatusCode::OK, &json!({"export_uuid": uuid}))
}

async fn status_assets(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(uuid): Path<String>) -> Response {
    status(&sim, &headers, &uuid, ExportKind::Assets)
}

async fn status_vulns(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(uuid): Path<String>) -> Response {
    status(&sim, &headers, &uuid, ExportKind::Vulns)
}

fn status(sim: &Sim, headers: &HeaderMap, uuid: &str, kind: ExportKind) -> Response {
    if let Err(r) = authorize(sim, headers) {
        return r;
    }
    let polls_to_finish = sim.config.behavior.export_polls;
    let mut jobs = sim.jobs.lock();
    let Some(job) = jobs.iter_mut().find(|j| j.uuid == uuid && j.kind == kind) else {
        return error(StatusCode::NOT_FOUND, "Export not found");
    };
    let was = job.progress(polls_to_finish);
    if !was.stopped && was.status != "FINISHED" {
        job.polls.push(Instant::now());
    }
    let p = job.progress(polls_to_finish);
    if p.stopped && !was.stopped && job.cancelled_at.is_none() {
        sim.counters.fault(if job.end == End::Cancel { "export_cancelled" } else { "export_error" });
    }
    let (mut available, mut rest) = (Vec::new(), Vec::new());
    for k in 1..=job.total {
        if job.rank(k) < p.available {
            available.push(k);
        } else if p.stopped {
            rest.push(k);
        }
    }
    let (failed, cancelled) = if p.status == "ERROR" { (rest, Vec::new()) } else { (Vec::new(), rest) };
    let mut body = json!({
        "status": p.status,
        "chunks_available": available,
        "chunks_failed": failed,
        "chunks_cancelled": cancelled,
        "total_chunks": job.total,
    });
    if kind == ExportKind::Vulns
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("uuid".into(), json!(job.uuid));
        obj.insert("num_assets_per_chunk".into(), json!(job.per_chunk));
        obj.insert("finished_chunks".into(), json!(p.available));
        obj.insert("filters".into(), job.filters_echo.clone());
        obj.insert("created".into(), json!(job.created * 1000));
    }
    json_resp(StatusCode::OK, &body)
}

async fn cancel_assets(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(uuid): Path<String>) -> Response {
    cancel(&sim, &headers, &uuid, ExportKind::Assets)
}

async fn cancel_vulns(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(uuid): Path<String>) -> Response {
    cancel(&sim, &headers, &uuid, ExportKind::Vulns)
}

fn cancel(sim: &Sim, headers: &HeaderMap, uuid: &str, kind: ExportKind) -> Response {
    if let Err(r) = authorize(sim, headers) {
        return r;
    }
    let polls_to_finish = sim.config.behavior.export_polls;
    let mut jobs = sim.jobs.lock();
    let Some(job) = jobs.iter_mut().find(|j| j.uuid == uuid && j.kind == kind) else {
        return error(StatusCode::NOT_FOUND, "Export not found");
    };
    let p = job.progress(polls_to_finish);
    if !p.stopped && p.status != "FINISHED" {
        job.cancelled_at = Some(p.available);
    }
    json_resp(StatusCode::OK, &json!({"status": job.progress(polls_to_finish).status}))
}

async fn chunk_assets(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((uuid, chunk)): Path<(String, String)>,
) -> Response {
    chunk_route(sim, headers, uuid, chunk, ExportKind::Assets).await
}

async fn chunk_vulns(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((uuid, chunk)): Path<(String, String)>,
) -> Response {
    chunk_route(sim, headers, uuid, chunk, ExportKind::Vulns).await
}

/// What a chunk request may serve: the job's generation, assets range and filter.
struct ChunkPlan {
    generation: u64,
    assets: std::ops::Range<u64>,
    filter: VulnFilter,
}

fn plan_chunk(sim: &Sim, uuid: &str, chunk: &str, kind: ExportKind) -> Result<(ChunkPlan, u64), Response> {
    let polls_to_finish = sim.config.behavior.export_polls;
    let jobs = sim.jobs.lock();
    let Some(job) = jobs.iter().find(|j| j.uuid == uuid && j.kind == kind) else {
        return Err(error(StatusCode::NOT_FOUND, "Export not found"));
    };
    let k = match chunk.parse::<u64>() {
        Ok(k) if (1..=job.total).contains(&k) => k,
        _ => return Err(error(StatusCode::NOT_FOUND, "Chunk not found")),
    };
    let p = job.progress(polls_to_finish);
    if job.rank(k) >= p.available {
        let why = if p.stopped { "Chunk was cancelled or failed" } else { "Chunk is not available yet" };
        return Err(error(StatusCode::NOT_FOUND, why));
    }
    let f = &sim.config.faults;
    let expired_now = f.expired_chunks.contains(&(job.number, k));
    let expired_ttl = f
        .chunk_ttl
        .is_some_and(|ttl| job.available_since(polls_to_finish, k).is_some_and(|since| since.elapsed() >= ttl));
    if expired_now || expired_ttl {
        sim.counters.fault("chunk_expired");
        return Err(error(StatusCode::NOT_FOUND, "Chunk has expired"));
    }
    let size = sim.config.size as u64;
    let start = (k - 1) * job.per_chunk;
    let plan = ChunkPlan {
        generation: job.generation,
        assets: start..(start + job.per_chunk).min(size),
        filter: job.filter.clone(),
    };
    Ok((plan, k))
}

async fn chunk_route(sim: Arc<Sim>, headers: HeaderMap, uuid: String, chunk: String, kind: ExportKind) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let (plan, k) = match plan_chunk(&sim, &uuid, &chunk, kind) {
        Ok(p) => p,
        Err(r) => return r,
    };
    blocking(sim, move |sim| {
        let d = data(sim, plan.generation);
        let mut out = Vec::with_capacity(64 * 1024);
        out.push(b'[');
        let mut first = true;
        let mut put = |v: &Value, out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
            let _ = serde_json::to_writer(&mut *out, v);
        };
        match kind {
            ExportKind::Assets => {
                for i in plan.assets.clone() {
                    put(&d.asset(i), &mut out);
                }
            }
            ExportKind::Vulns => {
                let bytes = sim.config.behavior.finding_output_bytes;
                for f in d.findings_in(plan.assets.clone(), &plan.filter) {
                    put(&d.finding(&f, bytes), &mut out);
                }
            }
        }
        let _ = out.write_all(b"]");
        let mut resp = json_bytes(StatusCode::OK, out);
        resp.extensions_mut().insert(PageIndex((k - 1) as usize));
        resp
    })
    .await
}
