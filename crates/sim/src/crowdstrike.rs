//! CrowdStrike Falcon hosts API.
//!
//! - `POST /oauth2/token` (form `client_id`, `client_secret`) -> 201
//! - `GET  /devices/queries/devices/v1?offset=&limit=&filter=` (limit 1..=5000, offset+limit <= 10000)
//! - `GET  /devices/queries/devices-scroll/v1?offset=<opaque>&limit=&filter=` (limit 1..=10000)
//! - `POST /devices/entities/devices/v2` `{"ids":[...]}` (1..=5000 ids)
//! - `GET  /devices/entities/devices/v2?ids=..&ids=..` (1..=100 ids)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::fql::Filter;
use crate::ratelimit::Decision;
use crate::server::{Kind, Sim, TokenState, blocking};
use crate::util::{
    PageIndex, bearer, get as qget, json as json_resp, json_bytes, parse_form, parse_query, seal, unseal,
};

const TOKEN_TTL: Duration = Duration::from_secs(1799);
const QUERY_MAX_LIMIT: usize = 5000;
const QUERY_MAX_WINDOW: usize = 10_000;
const SCROLL_MAX_LIMIT: usize = 10_000;
const ENTITIES_MAX_IDS: usize = 5000;
const ENTITIES_GET_MAX_IDS: usize = 100;

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/devices/queries/devices/v1", get(query))
        .route("/devices/queries/devices-scroll/v1", get(scroll))
        .route("/devices/entities/devices/v2", post(entities_post).get(entities_get))
        .fallback(not_found)
}

pub(crate) fn classify(method: &Method, path: &str) -> (&'static str, Kind) {
    match (method.as_str(), path) {
        ("POST", "/oauth2/token") => ("cs.token", Kind::Auth),
        ("GET", "/devices/queries/devices/v1") => ("cs.query", Kind::Data),
        ("GET", "/devices/queries/devices-scroll/v1") => ("cs.scroll", Kind::Data),
        (_, "/devices/entities/devices/v2") => ("cs.entities", Kind::Data),
        _ => ("cs.other", Kind::Other),
    }
}

fn meta(extra: Option<Value>) -> Value {
    let mut m = json!({
        "query_time": 0.004_213,
        "powered_by": "device-api",
        "trace_id": uuid::Uuid::new_v4().to_string(),
    });
    if let (Some(obj), Some(extra)) = (m.as_object_mut(), extra) {
        obj.insert("pagination".into(), extra);
    }
    m
}

/// An error envelope `{"meta","resources":[],"errors":[{code,message}]}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json_resp(
        status,
        &json!({
            "meta": meta(None),
            "resources": [],
            "errors": [{"code": status.as_u16(), "message": message}],
        }),
    )
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    error(status, "Internal Server Error: please try again later")
}

pub(crate) fn too_many(sim: &Sim, d: &Decision) -> Response {
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "API rate limit exceeded.");
    let at = sim.epoch_secs(d.reset_at.max(Instant::now()));
    if let Ok(v) = HeaderValue::from_str(&at.to_string()) {
        resp.headers_mut().insert("X-Ratelimit-Retryafter", v);
    }
    resp
}

pub(crate) fn rate_headers(headers: &mut HeaderMap, d: &Decision) {
    if let Ok(v) = HeaderValue::from_str(&d.limit.to_string()) {
        headers.insert("X-Ratelimit-Limit", v);
    }
    if let Ok(v) = HeaderValue::from_str(&d.remaining.to_string()) {
        headers.insert("X-Ratelimit-Remaining", v);
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

async fn token(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let (Some(id), Some(secret)) = (qget(&form, "client_id"), qget(&form, "client_secret")) else {
        return error(StatusCode::BAD_REQUEST, "client_id and client_secret are required form fields");
    };
    let creds = &sim.config.credentials;
    if id != creds.client_id || secret != creds.client_secret {
        if sim.config.faults.echo_credentials {
            return error(StatusCode::UNAUTHORIZED, &format!("access denied, invalid client {id}:{secret}"));
        }
        return error(StatusCode::UNAUTHORIZED, "access denied, invalid client");
    }
    let (token, expires_in) = sim.issue_token(TOKEN_TTL);
    json_resp(StatusCode::CREATED, &json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in}))
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    match sim.check_token(bearer(headers, "Bearer").as_deref()) {
        TokenState::Valid => Ok(()),
        TokenState::Missing => Err(error(StatusCode::UNAUTHORIZED, "access denied, authorization failed")),
        TokenState::Unknown | TokenState::Expired => {
            Err(error(StatusCode::UNAUTHORIZED, "access denied, invalid bearer token"))
        }
    }
}

/// The positions a listing walks: everything, or the matches of a filter.
enum View {
    All(usize),
    Filtered(Arc<Vec<u64>>),
}

impl View {
    fn len(&self) -> usize {
        match self {
            View::All(n) => *n,
            View::Filtered(v) => v.len(),
        }
    }
    fn index(&self, pos: usize) -> u64 {
        match self {
            View::All(_) => pos as u64,
            View::Filtered(v) => v.get(pos).copied().unwrap_or(0),
        }
    }
}

fn view(sim: &Sim, filter: Option<&str>) -> Result<View, Response> {
    let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(View::All(sim.config.size));
    };
    let parsed = Filter::parse(f).map_err(|e| error(StatusCode::BAD_REQUEST, &e))?;
    let cs = sim.cs();
    let key = (cs.generation, f.to_string());
    let mut cache = sim.filter_cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, hits)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(View::Filtered(hits.clone()));
    }
    let hits: Arc<Vec<u64>> =
        Arc::new((0..sim.config.size as u64).filter(|&i| parsed.matches(&cs.host_value(i))).collect());
    if cache.len() >= 8 {
        cache.remove(0);
    }
    cache.push((key, hits.clone()));
    Ok(View::Filtered(hits))
}

fn parse_num(pairs: &[(String, String)], name: &str, default: usize) -> Result<usize, Response> {
    match qget(pairs, name) {
        None | Some("") => Ok(default),
        Some(v) => v.trim().parse::<usize>().map_err(|_| {
            error(StatusCode::BAD_REQUEST, &format!("invalid {name}: {v:?} is not a non-negative integer"))
        }),
    }
}

fn ids_page(sim: &Sim, view: &View, from: usize, to: usize) -> Vec<String> {
    let cs = sim.cs();
    (from..to).map(|p| cs.device_id(view.index(p))).collect()
}

async fn query(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    blocking(sim, move |sim| query_page(sim, &headers, q)).await
}

fn query_page(sim: &Sim, headers: &HeaderMap, q: Option<String>) -> Response {
    if let Err(r) = authorize(sim, headers) {
        return r;
    }
    let pairs = parse_query(q.as_deref());
    let (limit, offset) = match (parse_num(&pairs, "limit", 100), parse_num(&pairs, "offset", 0)) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if limit == 0 || limit > QUERY_MAX_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("invalid limit {limit}: must be between 1 and {QUERY_MAX_LIMIT}"),
        );
    }
    if offset + limit > QUERY_MAX_WINDOW {
        return error(
            StatusCode::BAD_REQUEST,
            "offset + limit must be less than or equal to 10000; use /devices/queries/devices-scroll/v1 to page further",
        );
    }
    let view = match view(sim, qget(&pairs, "filter")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let total = view.len();
    let (from, to) = (offset.min(total), (offset + limit).min(total));
    let body = json!({
        "meta": meta(Some(json!({"offset": offset, "limit": limit, "total": total}))),
        "resources": ids_page(sim, &view, from, to),
        "errors": [],
    });
    let mut resp = json_resp(StatusCode::OK, &body);
    resp.extensions_mut().insert(PageIndex(offset / limit));
    resp
}

fn filter_hash(filter: Option<&str>) -> u64 {
    filter.map_or(0, |f| {
        f.trim().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    })
}

async fn scroll(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    blocking(sim, move |sim| scroll_page(sim, &headers, q)).await
}

fn scroll_page(sim: &Sim, headers: &HeaderMap, q: Option<String>) -> Response {
    if let Err(r) = authorize(sim, headers) {
        return r;
    }
    let pairs = parse_query(q.as_deref());
    let limit = match parse_num(&pairs, "limit", 100) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if limit == 0 || limit > SCROLL_MAX_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("invalid limit {limit}: must be between 1 and {SCROLL_MAX_LIMIT}"),
        );
    }
    let filter = qget(&pairs, "filter");
    let fhash = filter_hash(filter);
    let key = crate::data::h3(sim.config.seed, 0x5C, sim.config.generation);
    let now_ms = sim.started.elapsed().as_millis() as u64;
    let (position, page) = match qget(&pairs, "offset").map(str::trim).filter(|o| !o.is_empty()) {
        None => (0usize, 0usize),
        Some(token) => match unseal(key, token, 4) {
            Some(f) if f[2] != fhash => {
                return error(StatusCode::BAD_REQUEST, "offset does not belong to this filter");
            }
            Some(f) if now_ms.saturating_sub(f[1]) > sim.config.behavior.scroll_ttl.as_millis() as u64 => {
                return error(StatusCode::BAD_REQUEST, "scroll offset has expired, start a new scroll");
            }
            Some(f) => (f[0] as usize, f[3] as usize),
            None => return error(StatusCode::BAD_REQUEST, "invalid offset"),
        },
    };
    let view = match view(sim, filter) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let total = view.len();
    let (from, to) = (position.min(total), (position + limit).min(total));
    let mut pagination = json!({"limit": limit, "total": total});
    if from < total {
        // The last page still carries an offset; following it yields an empty page
        // without one.
        let next = seal(key, &[to as u64, now_ms, fhash, page as u64 + 1]);
        let expires = std::time::SystemTime::now() + sim.config.behavior.scroll_ttl;
        let expires_ns = expires.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        if let Some(obj) = pagination.as_object_mut() {
            obj.insert("offset".into(), Value::String(next));
            obj.insert("expires_at".into(), json!(expires_ns));
        }
    }
    let body = json!({
        "meta": meta(Some(pagination)),
        "resources": ids_page(sim, &view, from, to),
        "errors": [],
    });
    let mut resp = json_resp(StatusCode::OK, &body);
    resp.extensions_mut().insert(PageIndex(page));
    resp
}

async fn entities_post(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
    };
    let Some(ids) = parsed.get("ids").and_then(Value::as_array) else {
        return error(StatusCode::BAD_REQUEST, "body must be {\"ids\": [...]}");
    };
    let ids: Option<Vec<String>> = ids.iter().map(|v| v.as_str().map(str::to_string)).collect();
    let Some(ids) = ids else {
        return error(StatusCode::BAD_REQUEST, "ids must be strings");
    };
    blocking(sim, move |sim| details(sim, ids, ENTITIES_MAX_IDS)).await
}

async fn entities_get(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let ids = parse_query(q.as_deref()).into_iter().filter(|(k, _)| k == "ids").map(|(_, v)| v).collect();
    blocking(sim, move |sim| details(sim, ids, ENTITIES_GET_MAX_IDS)).await
}

fn details(sim: &Sim, ids: Vec<String>, max: usize) -> Response {
    if ids.is_empty() {
        return error(StatusCode::BAD_REQUEST, "at least one id is required");
    }
    if ids.len() > max {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("too many ids: {} requested, at most {max} per request", ids.len()),
        );
    }
    let cs = sim.cs();
    let mut seen = HashSet::with_capacity(ids.len());
    let mut found = Vec::with_capacity(ids.len());
    let mut errors = Vec::new();
    for id in &ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        match cs.index_of(id) {
            Some(i) => found.push(i),
            None => errors.push(json!({"code": 404, "id": id, "message": format!("device {id} not found")})),
        }
    }
    let status = if found.is_empty() { StatusCode::NOT_FOUND } else { StatusCode::OK };
    // Serialise the records straight into the body: no per-record JSON tree.
    let mut out = Vec::with_capacity(found.len() * 1400 + 256);
    out.extend_from_slice(b"{\"meta\":");
    let _ = serde_json::to_writer(&mut out, &meta(None));
    out.extend_from_slice(b",\"resources\":[");
    for (k, i) in found.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &cs.host(*i));
    }
    out.extend_from_slice(b"],\"errors\":");
    let _ = serde_json::to_writer(&mut out, &errors);
    out.push(b'}');
    let mut resp = json_bytes(status, out);
    if let Some(first) = found.first() {
        resp.extensions_mut().insert(PageIndex(*first as usize / ids.len()));
    }
    resp
}
