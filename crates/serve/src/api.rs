//! The HTTP API (JSON), `/metrics` and the web page.
//!
//! With a token configured every route but `/healthz` requires it, as
//! `Authorization: Bearer TOKEN`, or as the password of HTTP Basic
//! credentials (any user name) so that a browser can open the page: the
//! page's routes answer 401 with a Basic challenge, the API's with a Bearer
//! one. Tokens are compared in constant time; a refusal says nothing else.
//!
//! Errors are JSON `{"error": "..."}`: 400 names the bad query parameter,
//! 404 an unknown run or connection, 409 a sync of a connection that is
//! running, 422 a configuration reload that was refused, 503 a store that
//! cannot be reached or a service that is shutting down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use corral_core::store::{AssetCursor, AssetFilter, AssetKey, RunCursor, RunQuery};
use corral_core::{AssetKind, Engine, RunStatus};
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::service::{Inner, RunBrief, SyncRefused, Trigger};

/// Most items one page of runs, assets or rejects may hold.
pub const MAX_PAGE: usize = 1000;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/connections", get(connections))
        .route("/api/connections/{name}", get(connection))
        .route("/api/connections/{name}/sync", post(sync))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/rejects", get(rejects))
        .route("/api/assets", get(assets))
        .route("/api/assets/counts", get(asset_counts))
        .route("/api/reload", post(reload))
        .route("/", get(page))
        .route("/ui/app.js", get(script))
        .route("/ui/style.css", get(style))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(inner.clone(), auth))
        .with_state(inner)
}

type AppState = State<Arc<Inner>>;

/// An error answer: its status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    fn bad_param(name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("query parameter `{name}`: {why}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

fn store_error(inner: &Inner, e: corral_core::StoreError) -> ApiError {
    let message = inner.redactor.redact(&e.to_string());
    tracing::warn!(error = %message, "API: the store failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the store failed: {message}"))
}

fn json<T: Serialize>(value: T) -> Response {
    let mut r = Json(value).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

// ---------------------------------------------------------------------------
// Authentication.
// ---------------------------------------------------------------------------

async fn auth(State(inner): AppState, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/healthz" {
        return next.run(req).await;
    }
    let token = inner.state().settings.token.clone();
    let Some(token) = token else { return next.run(req).await };
    if presented_token(req.headers()).is_some_and(|t| same_token(t.as_bytes(), token.expose_secret().as_bytes())) {
        return next.run(req).await;
    }
    let api = path.starts_with("/api/") || path == "/metrics" || path == "/readyz";
    let challenge = if api { "Bearer realm=\"corral\"" } else { "Basic realm=\"corral\", charset=\"UTF-8\"" };
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "a valid API token is required").into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    r
}

/// The token in `Authorization`: `Bearer TOKEN`, or the password of `Basic base64(user:TOKEN)`.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_string());
    }
    None
}

/// Constant-time comparison: the time taken depends on the expected
/// token's length only, never on where the two differ.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let mut diff = subtle::Choice::from(u8::from(given.len() != expected.len()));
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!*e);
        diff |= !g.ct_eq(e);
    }
    !bool::from(diff)
}

// ---------------------------------------------------------------------------
// Query parameters.
// ---------------------------------------------------------------------------

/// The query's parameters, each once and each one this endpoint takes.
fn params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(params_with_list(query, allowed, None)?.0)
}

/// Like [`params`], with one parameter (`list`) that may be given many times:
/// its values, in order, come back apart.
fn params_with_list(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
    list: Option<&str>,
) -> Result<(BTreeMap<String, String>, Vec<String>), ApiError> {
    let Query(pairs) =
        query.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the query string could not be read"))?;
    let mut out = BTreeMap::new();
    let mut listed = Vec::new();
    for (k, v) in pairs {
        if list == Some(k.as_str()) {
            listed.push(v);
            continue;
        }
        if !allowed.contains(&k.as_str()) {
            let mut takes: Vec<&str> = allowed.to_vec();
            takes.extend(list);
            let takes = if takes.is_empty() { "none".to_string() } else { takes.join(", ") };
            return Err(ApiError::bad_param(&k, format!("unknown; this endpoint takes: {takes}")));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad_param(&k, "given more than once"));
        }
    }
    Ok((out, listed))
}

fn limit_param(p: &BTreeMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match p.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_param("limit", format!("`{v}` is not a number from 1 to {MAX_PAGE}"))),
        },
    }
}

fn bool_param(p: &BTreeMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match p.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(ApiError::bad_param(name, format!("`{v}` is not true or false"))),
    }
}

fn kind_param(p: &BTreeMap<String, String>) -> Result<Option<AssetKind>, ApiError> {
    match p.get("kind") {
        None => Ok(None),
        Some(v) => v.parse::<AssetKind>().map(Some).map_err(|e| ApiError::bad_param("kind", e.to_string())),
    }
}

/// Cursors are opaque to clients: base64url of JSON.
fn encode_cursor<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_vec(value).ok().map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn decode_cursor<T: DeserializeOwned>(name: &str, text: &str) -> Result<T, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::bad_param(name, "not a cursor this API gave out"))
}

fn no_params(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<(), ApiError> {
    params(query, &[]).map(|_| ())
}

// ---------------------------------------------------------------------------
// Health.
// ---------------------------------------------------------------------------

async fn healthz() -> Response {
    json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(inner): AppState) -> Response {
    // A keyed read: cheap on every store, and it fails when the store is gone.
    let probe = tokio::time::timeout(Duration::from_secs(10), inner.store.lease("corral-readyz-probe")).await;
    let store = inner.store.describe();
    match probe {
        Ok(Ok(_)) => json(serde_json::json!({ "ready": true, "store": store })),
        Ok(Err(e)) => {
            let error = inner.redactor.redact(&e.to_string());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "ready": false, "store": store, "error": error })),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({ "ready": false, "store": store, "error": "the store did not answer within 10 s" }),
            ),
        )
            .into_response(),
    }
}

async fn metrics(
    State(inner): AppState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_params(query)?;
    let (live, running, queued) = live_runs(&inner);
    let in_flight: Vec<(String, u64)> =
        live.iter().map(|l| (l.name.clone(), l.progress.as_ref().map_or(0, |p| p.records_in_flight))).collect();
    let text = inner
        .metrics
        .encode(&in_flight, running, queued)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be encoded"))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE), (header::CACHE_CONTROL, "no-store")], text)
        .into_response())
}

// ---------------------------------------------------------------------------
// Status and connections.
// ---------------------------------------------------------------------------

/// A run of this process, now.
#[derive(Debug, Clone, Serialize)]
struct RunningView {
    /// `queued` (waiting for `engine.max_connections`) or `running`.
    state: &'static str,
    trigger: Trigger,
    queued_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<DateTime<Utc>>,
    records_fetched: u64,
    assets_loaded: u64,
    records_rejected: u64,
    records_in_flight: u64,
}

#[derive(Debug, Clone)]
struct LiveProgress {
    sync_id: Option<String>,
    started_at: Option<DateTime<Utc>>,
    fetched: u64,
    loaded: u64,
    rejected: u64,
    records_in_flight: u64,
}

struct Live {
    name: String,
    view: RunningView,
    progress: Option<LiveProgress>,
}

/// The runs of this process with their live counters; and how many run and wait.
fn live_runs(inner: &Inner) -> (Vec<Live>, usize, usize) {
    let active: Vec<(String, Engine, Trigger, DateTime<Utc>, bool)> = {
        let s = inner.state();
        s.conns
            .iter()
            .filter_map(|(n, c)| {
                c.active.as_ref().map(|a| (n.clone(), a.engine.clone(), a.trigger, a.queued_at, a.started))
            })
            .collect()
    };
    let (mut running, mut queued) = (0, 0);
    let mut out = Vec::new();
    for (name, engine, trigger, queued_at, started) in active {
        if started {
            running += 1
        } else {
            queued += 1
        }
        let progress = engine.progress().into_iter().find(|(n, _)| *n == name).map(|(_, p)| p);
        // The engine keeps the progress of a connection's last run: only a started one is this run's.
        let progress = progress.filter(|p| started && !p.is_done()).map(|p| LiveProgress {
            sync_id: p.started().map(|(id, _)| id.to_string()),
            started_at: p.started().map(|(_, at)| at),
            fetched: p.fetched(),
            loaded: p.loaded(),
            rejected: p.rejected.load(std::sync::atomic::Ordering::Relaxed),
            records_in_flight: p.records_in_flight(),
        });
        let view = RunningView {
            state: if started { "running" } else { "queued" },
            trigger,
            queued_at,
            sync_id: progress.as_ref().and_then(|p| p.sync_id.clone()),
            started_at: progress.as_ref().and_then(|p| p.started_at),
            records_fetched: progress.as_ref().map_or(0, |p| p.fetched),
            assets_loaded: progress.as_ref().map_or(0, |p| p.loaded),
            records_rejected: progress.as_ref().map_or(0, |p| p.rejected),
            records_in_flight: progress.as_ref().map_or(0, |p| p.records_in_flight),
        };
        out.push(Live { name, view, progress });
    }
    (out, running, queued)
}

async fn status(
    State(inner): AppState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_params(query)?;
    let (_, running, queued) = live_runs(&inner);
    let lag = inner.recent_lag();
    let s = inner.state();
    Ok(json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": inner.started_at,
        "store": inner.store.describe(),
        "listen": inner.listening.get().copied().unwrap_or(s.settings.listen).to_string(),
        "auth": s.settings.token.is_some(),
        "grace_period_secs": s.settings.grace_period.as_secs(),
        "shutting_down": inner.stopping.is_cancelled(),
        "connections": s.conns.values().filter(|c| c.connection.is_some()).count(),
        "runs_running": running,
        "runs_queued": queued,
        "runtime_lag": { "p50_us": lag.p50_us, "p99_us": lag.p99_us, "max_us": lag.max_us, "samples": lag.samples },
        "totals": s.totals,
        "config": s.reload,
    })))
}

#[derive(Debug, Serialize)]
struct LeaseView {
    holder: String,
    owner: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct ConnectionView {
    name: String,
    adapter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_run_at: Option<DateTime<Utc>>,
    /// `ok` (last run succeeded), `degraded` (partial), `failing`, `skipped`, `unknown` (never ran).
    health: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_run: Option<RunBrief>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_success_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<RunningView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseView>,
    ticks_due: u64,
    ticks_skipped: u64,
    runs_started: u64,
}

fn health(last: Option<&RunBrief>) -> &'static str {
    match last.map(|r| r.status) {
        Some(RunStatus::Success) => "ok",
        Some(RunStatus::Partial) => "degraded",
        Some(RunStatus::Failed) => "failing",
        Some(RunStatus::Skipped) => "skipped",
        None => "unknown",
    }
}

async fn connection_views(inner: &Arc<Inner>, only: Option<&str>) -> Vec<ConnectionView> {
    let (live, _, _) = live_runs(inner);
    let mut live: BTreeMap<String, RunningView> = live.into_iter().map(|l| (l.name, l.view)).collect();
    let mut views: Vec<ConnectionView> = {
        let s = inner.state();
        s.conns
            .iter()
            .filter(|(n, c)| c.connection.is_some() && only.is_none_or(|o| o == n.as_str()))
            .map(|(name, c)| ConnectionView {
                name: name.clone(),
                adapter: c.adapter.clone(),
                schedule: c.schedule.as_ref().map(crate::schedule::Schedule::describe),
                next_run_at: c.next_due,
                health: health(c.last_run.as_ref()),
                last_run: c.last_run.clone(),
                last_success_at: c.last_success,
                running: live.remove(name),
                lease: None,
                ticks_due: c.ticks_due,
                ticks_skipped: c.ticks_skipped,
                runs_started: c.runs_started,
            })
            .collect()
    };
    // Who holds each lease: this process or another, as the store says.
    let store = inner.store.clone();
    let names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
    let leases: BTreeMap<String, corral_core::Lease> = futures::stream::iter(names)
        .map(|name| {
            let store = store.clone();
            async move {
                let lease = tokio::time::timeout(Duration::from_secs(5), store.lease(&name))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                (name, lease)
            }
        })
        .buffer_unordered(16)
        .filter_map(|(n, l)| async move { l.map(|l| (n, l)) })
        .collect()
        .await;
    let now = Utc::now();
    for v in &mut views {
        if let Some(l) = leases.get(&v.name).filter(|l| l.expires_at > now) {
            v.lease = Some(LeaseView { holder: l.holder.clone(), owner: l.owner.clone(), expires_at: l.expires_at });
        }
    }
    views
}

async fn connections(
    State(inner): AppState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_params(query)?;
    Ok(json(serde_json::json!({ "connections": connection_views(&inner, None).await })))
}

async fn connection(
    State(inner): AppState,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_params(query)?;
    match connection_views(&inner, Some(&name)).await.into_iter().next() {
        Some(v) => Ok(json(v)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no connection named `{name}`"))),
    }
}

async fn sync(
    State(inner): AppState,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_params(query)?;
    match crate::service::sync_now_inner(&inner, &name).await {
        Ok(()) => {
            let body = serde_json::json!({ "connection": name, "state": "queued" });
            let mut r = (StatusCode::ACCEPTED, Json(body)).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        }
        Err(SyncRefused::UnknownConnection) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, format!("no connection named `{name}`")))
        }
        Err(SyncRefused::Running(why)) => {
            Err(ApiError::new(StatusCode::CONFLICT, format!("connection `{name}` is already syncing: {why}")))
        }
        Err(SyncRefused::ShuttingDown) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "corral serve is shutting down; no new runs start"))
        }
    }
}

async fn reload(
    State(inner): AppState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_params(query)?;
    match crate::service::reload_inner(&inner).await {
        Ok(n) => Ok(json(serde_json::json!({ "reloaded": true, "connections": n }))),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("configuration refused, the one loaded before stays in force: {e}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Runs.
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct RunItem {
    connection: String,
    adapter: String,
    #[serde(flatten)]
    brief: RunBrief,
    errors: usize,
}

async fn runs(
    State(inner): AppState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query, &["connection", "limit", "before"])?;
    let limit = limit_param(&p, 50)?;
    let before: Option<RunCursor> = p.get("before").map(|c| decode_cursor("before", c)).transpose()?;
    let q = RunQuery { connection: p.get("connection").cloned(), before };
    let mut list = inner.store.list_runs(&q, limit + 1).await.map_err(|e| store_error(&inner, e))?;
    let more = list.len() > limit;
    list.truncate(limit);
    let next = if more { list.last().and_then(|r| encode_cursor(&RunCursor::of(r))) } else { None };
    let runs: Vec<RunItem> = list
        .iter()
        .map(|r| RunItem {
            connection: r.connection.clone(),
            adapter: r.adapter.clone(),
            brief: RunBrief::of(r),
            errors: r.errors.len(),
        })
        .collect();
    Ok(json(serde_json::json!({ "runs": runs, "next": next })))
}

async fn run(
    State(inner): AppState,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_params(query)?;
    match inner.store.run(&id).await.map_err(|e| store_error(&inner, e))? {
        Some(summary) => Ok(json(summary)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run with sync id `{id}`"))),
    }
}

async fn rejects(
    State(inner): AppState,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query, &["limit"])?;
    let limit = limit_param(&p, 100)?;
    let kept = inner.store.rejects(&id, limit).await.map_err(|e| store_error(&inner, e))?;
    if kept.is_empty() && inner.store.run(&id).await.map_err(|e| store_error(&inner, e))?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run with sync id `{id}`")));
    }
    Ok(json(serde_json::json!({ "sync_id": id, "rejects": kept })))
}

// ---------------------------------------------------------------------------
// Assets.
// ---------------------------------------------------------------------------

/// The filter of `GET /api/assets` and `/api/assets/counts`: `connection`,
/// `kind`, `include_stale`, `where` (repeatable, `FIELD=VALUE` as `corral
/// assets --where`, attributes as the configured connections declare them)
/// and `points_at` (`CONNECTION/KIND/SOURCE_ID`).
fn asset_filter(inner: &Inner, p: &BTreeMap<String, String>, wheres: &[String]) -> Result<AssetFilter, ApiError> {
    let kind = kind_param(p)?;
    let mut conditions = Vec::new();
    if !wheres.is_empty() {
        let declared = inner.declared_attributes();
        for text in wheres {
            let c = corral_core::schema::parse_where(text, kind, &declared)
                .map_err(|e| ApiError::bad_param("where", e.to_string()))?;
            conditions.push(c);
        }
    }
    let points_at = match p.get("points_at") {
        None => None,
        Some(v) => {
            let mut parts = v.splitn(3, '/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(connection), Some(kind), Some(source_id)) if !connection.is_empty() && !source_id.is_empty() => {
                    let kind =
                        kind.parse::<AssetKind>().map_err(|e| ApiError::bad_param("points_at", e.to_string()))?;
                    Some(AssetKey { connection: connection.to_string(), kind, source_id: source_id.to_string() })
                }
                _ => return Err(ApiError::bad_param("points_at", format!("`{v}` is not CONNECTION/KIND/SOURCE_ID"))),
            }
        }
    };
    Ok(AssetFilter {
        connection: p.get("connection").cloned(),
        kind,
        include_stale: bool_param(p, "include_stale")?,
        conditions,
        points_at,
    })
}

async fn assets(
    State(inner): AppState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (p, wheres) = params_with_list(
        query,
        &["connection", "kind", "include_stale", "points_at", "limit", "after"],
        Some("where"),
    )?;
    let filter = asset_filter(&inner, &p, &wheres)?;
    let limit = limit_param(&p, 100)?;
    let after: Option<AssetCursor> = p.get("after").map(|c| decode_cursor("after", c)).transpose()?;
    let mut page =
        inner.store.list_assets_after(&filter, after.as_ref(), limit + 1).await.map_err(|e| store_error(&inner, e))?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more { page.last().and_then(|a| encode_cursor(&AssetCursor::of(a))) } else { None };
    Ok(json(serde_json::json!({ "assets": page, "next": next })))
}

async fn asset_counts(
    State(inner): AppState,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (p, wheres) = params_with_list(query, &["connection", "kind", "include_stale", "points_at"], Some("where"))?;
    let filter = asset_filter(&inner, &p, &wheres)?;
    let counts = inner.store.count_assets(&filter).await.map_err(|e| store_error(&inner, e))?;
    Ok(json(serde_json::json!({ "counts": counts })))
}

// ---------------------------------------------------------------------------
// The page: static files compiled into the binary.
// ---------------------------------------------------------------------------

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    static_file("text/html; charset=utf-8", include_str!("ui/index.html"))
}

async fn script() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("ui/app.js"))
}

async fn style() -> Response {
    static_file("text/css; charset=utf-8", include_str!("ui/style.css"))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"a-long-enough-api-token", b"a-long-enough-api-token"));
        assert!(!same_token(b"a-long-enough-api-tokeN", b"a-long-enough-api-token"));
        assert!(!same_token(b"a-long-enough-api-token-and-more", b"a-long-enough-api-token"));
        assert!(!same_token(b"a-long", b"a-long-enough-api-token"));
        assert!(!same_token(b"", b"a-long-enough-api-token"));
    }

    #[test]
    fn the_token_is_read_from_bearer_or_basic() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
        // "corral:abc:def" — the password may hold colons.
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("corral:abc:def"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&basic).expect("header"));
        assert_eq!(presented_token(&h).as_deref(), Some("abc:def"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert_eq!(presented_token(&h), None);
    }

    #[test]
    fn cursors_round_trip_and_junk_names_the_parameter() {
        let key = AssetKey { connection: "c".into(), kind: AssetKind::User, source_id: "u/1?&=".into() };
        let cursor = AssetCursor { key: key.clone(), position: Some(41) };
        let text = encode_cursor(&cursor).expect("encode");
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{text}");
        assert_eq!(decode_cursor::<AssetCursor>("after", &text).expect("decode"), cursor);
        // A cursor of an earlier version (the key alone) still reads, without a position.
        let old = encode_cursor(&key).expect("encode key");
        let read = decode_cursor::<AssetCursor>("after", &old).expect("decode key");
        assert_eq!(read, AssetCursor { key, position: None });
        let err = decode_cursor::<AssetCursor>("after", "!!").expect_err("junk");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("`after`"), "{}", err.message);
    }
}
