//! Serving a [`KitSpec`]: routes, auth, pages, rate-limit headers, errors.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{ErrorStyle, KitAuth, KitSpec, Pagination, RateHeaders, ResetStyle};
use crate::ratelimit::Decision;
use crate::server::{Kind, Sim, TokenState, blocking};
use crate::util::{
    PageIndex, bearer, get as qget, json as json_resp, parse_form, parse_query, percent_encode, seal, unseal,
};

/// Ids remembered for ids-then-details lookups without `KitSpec::index_of`.
const REMEMBERED_IDS: usize = 65_536;
/// Export jobs remembered (the oldest is forgotten).
const MAX_JOBS: usize = 64;

struct Job {
    id: String,
    generation: u64,
    chunk_size: usize,
    polls: u32,
}

/// Listed ids by (generation, id), and their order of arrival (oldest first).
type RememberedIds = (HashMap<(u64, String), u64>, VecDeque<(u64, String)>);

/// A kit simulator's spec and its (bounded) state.
pub(crate) struct Runtime {
    pub spec: KitSpec,
    ids: Mutex<RememberedIds>,
    jobs: Mutex<VecDeque<Job>>,
    job_seq: std::sync::atomic::AtomicU64,
}

impl Runtime {
    pub(crate) fn new(spec: KitSpec) -> Self {
        Runtime {
            spec,
            ids: Mutex::new((HashMap::new(), VecDeque::new())),
            jobs: Mutex::new(VecDeque::new()),
            job_seq: Default::default(),
        }
    }

    fn remember(&self, generation: u64, ids: &[(String, u64)]) {
        if self.spec.index_of.is_some() {
            return;
        }
        let mut guard = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        for (id, index) in ids {
            let key = (generation, id.clone());
            if map.insert(key.clone(), *index).is_none() {
                order.push_back(key);
            }
            while order.len() > REMEMBERED_IDS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    fn index_of(&self, id: &str, generation: u64) -> Option<u64> {
        if let Some(f) = &self.spec.index_of {
            return f(id, generation);
        }
        let guard = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.get(&(generation, id.to_string())).copied()
    }
}

fn kit(sim: &Sim) -> &Runtime {
    // `launch` always sets it for `Vendor::Kit`; the routes exist only then.
    sim.kit.as_deref().unwrap_or_else(|| unreachable!("kit routes on a simulator without a kit spec"))
}

pub(crate) fn router(sim: &Sim) -> Router<Arc<Sim>> {
    let spec = &kit(sim).spec;
    let mut r = Router::new();
    r = match &spec.pagination {
        Pagination::Export { .. } => r
            .route(&spec.list_path, post(export_create))
            .route(&format!("{}/{{job}}/status", spec.list_path), get(export_status))
            .route(&format!("{}/{{job}}/chunks/{{chunk}}", spec.list_path), get(export_chunk)),
        Pagination::IdsThenDetails { details_path, .. } => {
            r.route(&spec.list_path, get(list)).route(details_path, get(details))
        }
        _ => r.route(&spec.list_path, get(list)),
    };
    if let Some((token_path, _)) = spec.auth.oauth_token() {
        r = r.route(token_path, post(token));
    }
    if let Some((token_path, keep_alive, invalidate, _)) = spec.auth.basic_token() {
        r = r.route(token_path, post(basic_token));
        if let Some(p) = keep_alive {
            r = r.route(p, post(keep_alive_token));
        }
        if let Some(p) = invalidate {
            r = r.route(p, post(invalidate_token));
        }
    }
    if let Some(p) = &spec.check_path {
        r = r.route(p, get(check));
    }
    r.fallback(not_found)
}

pub(crate) fn classify(sim: &Sim, method: &Method, path: &str) -> (&'static str, Kind) {
    let spec = &kit(sim).spec;
    let m = method.as_str();
    if m == "POST" {
        if spec.auth.oauth_token().is_some_and(|(p, _)| p == path) {
            return ("kit.token", Kind::Auth);
        }
        if let Some((token_path, keep_alive, invalidate, _)) = spec.auth.basic_token() {
            if path == token_path {
                return ("kit.token", Kind::Auth);
            }
            if keep_alive == Some(path) {
                return ("kit.keep_alive", Kind::Auth);
            }
            if invalidate == Some(path) {
                return ("kit.invalidate", Kind::Auth);
            }
        }
    }
    match &spec.pagination {
        Pagination::Export { .. } => {
            if m == "POST" && path == spec.list_path {
                return ("kit.export", Kind::Data);
            }
            if let Some(rest) = path.strip_prefix(spec.list_path.as_str()).and_then(|r| r.strip_prefix('/')) {
                if rest.ends_with("/status") {
                    return ("kit.export_status", Kind::Data);
                }
                if rest.contains("/chunks/") {
                    return ("kit.chunk", Kind::Data);
                }
            }
        }
        Pagination::IdsThenDetails { details_path, .. } if m == "GET" && path == details_path => {
            return ("kit.details", Kind::Data);
        }
        _ => {}
    }
    if m == "GET" && path == spec.list_path {
        return ("kit.list", Kind::Data);
    }
    if spec.check_path.as_deref() == Some(path) {
        return ("kit.check", Kind::Other);
    }
    ("kit.other", Kind::Other)
}

/// An error body in `style`.
pub(crate) fn styled_error(style: ErrorStyle, status: StatusCode, code: &str, detail: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("");
    let body = match style {
        ErrorStyle::Kit => json!({"errors": [{"code": code, "title": reason, "detail": detail}]}),
        ErrorStyle::Jamf => json!({
            "httpStatus": status.as_u16(),
            "errors": [{"code": code.to_ascii_uppercase(), "description": detail, "id": "0", "field": null}],
        }),
        ErrorStyle::ServiceNow => json!({"error": {"message": reason, "detail": detail}, "status": "failure"}),
    };
    json_resp(status, &body)
}

fn error(sim: &Sim, status: StatusCode, code: &str, detail: &str) -> Response {
    styled_error(kit(sim).spec.error_style, status, code, detail)
}

pub(crate) fn server_error(sim: &Sim, status: StatusCode) -> Response {
    styled_error(
        kit(sim).spec.error_style,
        status,
        "server_error",
        "The service is temporarily unavailable. Please retry.",
    )
}

fn secs_until(at: Instant) -> u64 {
    (at.saturating_duration_since(Instant::now()).as_secs_f64().ceil() as u64).max(1)
}

pub(crate) fn too_many(sim: &Sim, d: &Decision) -> Response {
    let mut resp = error(sim, StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests; slow down.");
    if kit(sim).spec.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs_until(d.reset_at).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The (limit, remaining, reset) header names and the reset style of a spec.
fn rate_header_names(style: &RateHeaders) -> Option<([Option<String>; 3], ResetStyle)> {
    match style {
        RateHeaders::None => None,
        RateHeaders::XRateLimit { prefix, reset } => Some((
            [Some(format!("{prefix}-Limit")), Some(format!("{prefix}-Remaining")), Some(format!("{prefix}-Reset"))],
            *reset,
        )),
        RateHeaders::Named { limit, remaining, reset, reset_style } => {
            Some(([limit.clone(), remaining.clone(), reset.clone()], *reset_style))
        }
    }
}

pub(crate) fn rate_headers(sim: &Sim, headers: &mut HeaderMap, d: &Decision) {
    let Some((names, reset)) = rate_header_names(&kit(sim).spec.rate_headers) else { return };
    let reset = match reset {
        ResetStyle::Seconds => secs_until(d.reset_at),
        ResetStyle::Epoch => sim.epoch_secs(d.reset_at.max(Instant::now())),
    };
    for (name, value) in names.iter().zip([d.limit as u64, d.remaining as u64, reset]) {
        let Some(name) = name else { continue };
        if let (Ok(name), Ok(v)) =
            (axum::http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value.to_string()))
        {
            headers.insert(name, v);
        }
    }
}

/// The wait a 429 announced besides `Retry-After`: the reset header.
pub(crate) fn announced_wait(sim: &Sim, headers: &HeaderMap) -> Option<Duration> {
    let ([_, _, reset_name], reset) = rate_header_names(&kit(sim).spec.rate_headers)?;
    let v: u64 = headers.get(reset_name?.as_str())?.to_str().ok()?.trim().parse().ok()?;
    Some(match reset {
        ResetStyle::Seconds => Duration::from_secs(v),
        ResetStyle::Epoch => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            Duration::from_secs(v).saturating_sub(now)
        }
    })
}

async fn not_found(State(sim): State<Arc<Sim>>) -> Response {
    error(&sim, StatusCode::NOT_FOUND, "not_found", "No such endpoint")
}

fn refused(sim: &Sim, what: &str, given: Option<&str>) -> Response {
    let detail = match given {
        Some(g) if sim.config.faults.echo_credentials => format!("{what}: '{g}'"),
        _ => what.to_string(),
    };
    error(sim, StatusCode::UNAUTHORIZED, "unauthorized", &detail)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `(user, password)` of an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_str(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(std_b64_decode(b64.trim())?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

pub(crate) fn std_b64_decode(s: &str) -> Option<Vec<u8>> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = acc << 6 | T.iter().position(|&t| t == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xFF) as u8);
        }
    }
    Some(out)
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    let auth = &kit(sim).spec.auth;
    let styles = auth.styles();
    let mut first_refusal = None;
    for style in styles {
        match authorize_one(sim, style, headers) {
            Ok(()) => return Ok(()),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    Err(first_refusal.unwrap_or_else(|| refused(sim, "No credentials accepted", None)))
}

fn authorize_one(sim: &Sim, auth: &KitAuth, headers: &HeaderMap) -> Result<(), Response> {
    let creds = &sim.config.credentials;
    let ok_static = |given: Option<&str>, what: &str| {
        if given == Some(creds.token.as_str()) && sim.static_token_works() {
            Ok(())
        } else {
            Err(refused(sim, what, given))
        }
    };
    match auth {
        KitAuth::None => Ok(()),
        KitAuth::Bearer => ok_static(bearer(headers, "Bearer").as_deref(), "Invalid bearer token"),
        KitAuth::Header { name, prefix } => {
            let given = header_str(headers, name).map(|v| v.strip_prefix(prefix.as_str()).unwrap_or(v));
            ok_static(given, "Invalid API token")
        }
        KitAuth::Basic => match basic(headers) {
            Some((u, p)) if u == creds.client_id && p == creds.client_secret && sim.static_token_works() => Ok(()),
            Some((_, p)) => Err(refused(sim, "Invalid username or password", Some(&p))),
            None => Err(refused(sim, "Basic credentials required", None)),
        },
        KitAuth::OAuth2 { .. } | KitAuth::TokenFromBasic { .. } => {
            let token = bearer(headers, "Bearer");
            match sim.check_token(token.as_deref()) {
                TokenState::Valid => Ok(()),
                TokenState::Expired => Err(refused(sim, "Access token expired", None)),
                TokenState::Missing => Err(refused(sim, "Bearer token required", None)),
                TokenState::Unknown => Err(refused(sim, "Invalid access token", token.as_deref())),
            }
        }
        KitAuth::AnyOf(_) => Err(refused(sim, "No credentials accepted", None)),
    }
}

/// The `{"token", "expires"}` answer of a Basic-to-bearer login.
fn issue_basic_token(sim: &Sim, lifetime: Duration) -> Response {
    let (token, expires_in) = sim.issue_token(lifetime);
    let expires = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(expires_in);
    let expires = crate::data::iso_millis(expires.as_secs() as i64, u64::from(expires.subsec_millis()));
    json_resp(StatusCode::OK, &json!({"token": token, "expires": expires}))
}

/// `POST token_path` with HTTP Basic: a bearer token (Jamf Pro).
async fn basic_token(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let Some((_, _, _, lifetime)) = kit(&sim).spec.auth.basic_token() else {
        return server_error(&sim, StatusCode::INTERNAL_SERVER_ERROR);
    };
    let creds = &sim.config.credentials;
    match basic(&headers) {
        Some((u, p)) if u == creds.client_id && p == creds.client_secret => issue_basic_token(&sim, lifetime),
        Some((_, p)) => refused(&sim, "Invalid username or password", Some(&p)),
        None => refused(&sim, "Basic credentials required", None),
    }
}

/// `POST keep_alive_path` with a valid bearer token: a new token; the old one stops working.
async fn keep_alive_token(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let Some((_, _, _, lifetime)) = kit(&sim).spec.auth.basic_token() else {
        return server_error(&sim, StatusCode::INTERNAL_SERVER_ERROR);
    };
    let token = bearer(&headers, "Bearer");
    match sim.check_token(token.as_deref()) {
        TokenState::Valid => {
            if let Some(t) = &token {
                sim.invalidate_token(t);
            }
            issue_basic_token(&sim, lifetime)
        }
        TokenState::Expired => refused(&sim, "Access token expired", None),
        TokenState::Missing => refused(&sim, "Bearer token required", None),
        TokenState::Unknown => refused(&sim, "Invalid access token", token.as_deref()),
    }
}

/// `POST invalidate_path`: the bearer token stops working (204).
async fn invalidate_token(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let token = bearer(&headers, "Bearer");
    match sim.check_token(token.as_deref()) {
        TokenState::Valid => {
            if let Some(t) = &token {
                sim.invalidate_token(t);
            }
            let mut resp = Response::new(axum::body::Body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        _ => refused(&sim, "Invalid access token", None),
    }
}

async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((_, lifetime)) = kit(&sim).spec.auth.oauth_token() else {
        return server_error(&sim, StatusCode::INTERNAL_SERVER_ERROR);
    };
    let form = parse_form(&body);
    let creds = &sim.config.credentials;
    if qget(&form, "grant_type") != Some("client_credentials") {
        return json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}),
        );
    }
    let (id, secret) = match basic(&headers) {
        Some(pair) => pair,
        None => (
            qget(&form, "client_id").unwrap_or_default().to_string(),
            qget(&form, "client_secret").unwrap_or_default().to_string(),
        ),
    };
    if id != creds.client_id || secret != creds.client_secret {
        let description = if sim.config.faults.echo_credentials {
            format!("invalid client secret '{secret}'")
        } else {
            "invalid client credentials".to_string()
        };
        return json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": description}),
        );
    }
    let (access_token, expires_in) = sim.issue_token(lifetime);
    json_resp(StatusCode::OK, &json!({"access_token": access_token, "token_type": "bearer", "expires_in": expires_in}))
}

async fn check(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    match authorize(&sim, &headers) {
        Ok(()) => json_resp(StatusCode::OK, &json!({"ok": true})),
        Err(r) => r,
    }
}

/// Set `value` at `path` (object keys) inside `body`, creating objects on the way.
fn set_path(body: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *body = value;
        return;
    };
    let mut here = body;
    for key in parents {
        if !here.is_object() {
            *here = json!({});
        }
        let Some(obj) = here.as_object_mut() else { return };
        here = obj.entry(key.clone()).or_insert_with(|| json!({}));
    }
    if !here.is_object() {
        *here = json!({});
    }
    if let Some(obj) = here.as_object_mut() {
        obj.insert(last.clone(), value);
    }
}

fn bad_request(sim: &Sim, detail: &str) -> Response {
    error(sim, StatusCode::BAD_REQUEST, "bad_request", detail)
}

fn page_limit(sim: &Sim, spec: &KitSpec, pairs: &[(String, String)]) -> Result<usize, Response> {
    match qget(pairs, &spec.limit_param) {
        None | Some("") => Ok(spec.page_size.default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(spec.page_size.max)),
            _ => Err(bad_request(sim, &format!("{} must be a positive integer", spec.limit_param))),
        },
    }
}

fn number(sim: &Sim, pairs: &[(String, String)], name: &str, default: u64) -> Result<u64, Response> {
    match qget(pairs, name) {
        None | Some("") => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| bad_request(sim, &format!("{name} must be a non-negative integer"))),
    }
}

fn cursor_key(sim: &Sim) -> u64 {
    crate::data::h3(sim.config.seed, 0x4B10, 0)
}

/// Scheme and host the client used, so links work behind any bind address.
fn origin(sim: &Sim, headers: &HeaderMap) -> String {
    header_str(headers, header::HOST.as_str()).map_or_else(|| sim.base_url.clone(), |h| format!("http://{h}"))
}

async fn list(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    blocking(sim, move |sim| list_page(sim, &headers, q.as_deref())).await
}

fn list_page(sim: &Sim, headers: &HeaderMap, q: Option<&str>) -> Response {
    let rt = kit(sim);
    let spec = &rt.spec;
    let pairs = parse_query(q);
    let limit = match page_limit(sim, spec, &pairs) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if let Some(check) = &spec.param_check
        && let Err(why) = check(&pairs)
    {
        return bad_request(sim, &why);
    }
    let shape = match Shape::of(sim, spec, &pairs, headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let size = sim.config.size as u64;
    let key = cursor_key(sim);
    let token = |name: &str| -> Result<u64, Response> {
        match qget(&pairs, name).filter(|t| !t.is_empty()) {
            None => Ok(0),
            Some(t) => unseal(key, t, 1)
                .and_then(|f| f.first().copied())
                .ok_or_else(|| bad_request(sim, &format!("{name}: not a cursor this API issued"))),
        }
    };
    let start = match &spec.pagination {
        Pagination::BodyCursor { param, .. } | Pagination::LinkHeader { param } => token(param),
        Pagination::NextLink { .. } => token("skiptoken"),
        Pagination::OffsetLimit { offset_param } | Pagination::IdsThenDetails { offset_param, .. } => {
            number(sim, &pairs, offset_param, 0)
        }
        Pagination::PageNumber { page_param, first } => match number(sim, &pairs, page_param, *first) {
            Ok(p) if p >= *first => Ok((p - first).saturating_mul(limit as u64)),
            Ok(_) => Err(bad_request(sim, &format!("{page_param} starts at {first}"))),
            Err(r) => Err(r),
        },
        Pagination::Export { .. } => Err(bad_request(sim, "this API lists by export jobs")),
    };
    let start = match start {
        Ok(s) => s.min(size),
        Err(r) => return r,
    };
    let end = (start + limit as u64).min(size);
    let generation = sim.generation();
    let mut records: Vec<Value> = (start..end).map(|i| spec.record(i, generation)).collect();
    if let Some((param, field)) = &spec.since
        && let Some(since) = qget(&pairs, param).filter(|v| !v.is_empty())
    {
        records.retain(|r| r.get(field).and_then(Value::as_str).is_some_and(|v| v > since));
    }
    let items: Vec<Value> = if let Pagination::IdsThenDetails { .. } = spec.pagination {
        let ids: Vec<(String, u64)> =
            records.iter().zip(start..).filter_map(|(r, i)| Some((spec.id_of(r)?, i))).collect();
        rt.remember(generation, &ids);
        ids.into_iter().map(|(id, _)| Value::String(id)).collect()
    } else {
        records.into_iter().map(|r| shape.apply(r)).collect()
    };
    let more = end < size && end > start;
    let next_token = more.then(|| seal(key, &[end]));
    let mut body = json!({});
    set_path(&mut body, &spec.records_path, Value::Array(items));
    if let Some(total) = &spec.total_path {
        set_path(&mut body, total, json!(size));
    }
    let mut link_headers = Vec::new();
    match &spec.pagination {
        Pagination::BodyCursor { cursor_path, .. } => {
            set_path(&mut body, cursor_path, next_token.map_or(Value::Null, Value::String));
        }
        Pagination::NextLink { link_path } => {
            if let Some(t) = next_token {
                let base = list_url(sim, spec, headers, &pairs, "skiptoken", limit as u64);
                let url = format!("{base}&skiptoken={}", percent_encode(&t));
                set_path(&mut body, link_path, Value::String(url));
            }
        }
        Pagination::LinkHeader { param } => {
            let base = list_url(sim, spec, headers, &pairs, param, limit as u64);
            let current = qget(&pairs, param).filter(|t| !t.is_empty());
            let this = match current {
                Some(t) => format!("<{base}&{param}={}>; rel=\"self\"", percent_encode(t)),
                None => format!("<{base}>; rel=\"self\""),
            };
            link_headers.push(this);
            if let Some(t) = next_token {
                link_headers.push(format!("<{base}&{param}={}>; rel=\"next\"", percent_encode(&t)));
            }
        }
        Pagination::OffsetLimit { offset_param } if spec.offset_links => {
            link_headers.push(offset_links(sim, spec, headers, &pairs, offset_param, start, limit as u64));
        }
        _ => {}
    }
    let mut resp = json_resp(StatusCode::OK, &body);
    for l in link_headers {
        if let Ok(v) = HeaderValue::from_str(&l) {
            resp.headers_mut().append(header::LINK, v);
        }
    }
    if let Some(name) = &spec.total_header
        && let (Ok(name), Ok(v)) =
            (axum::http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&size.to_string()))
    {
        resp.headers_mut().insert(name, v);
    }
    resp.extensions_mut().insert(PageIndex((start / limit as u64) as usize));
    resp
}

/// The listing's URL for another page, as the vendors write their next
/// links: the request's own parameters (filters, field and section choices)
/// kept, the page size set to `limit`, and the position parameter `position`
/// left for the caller to append.
fn list_url(
    sim: &Sim,
    spec: &KitSpec,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    position: &str,
    limit: u64,
) -> String {
    let mut kept: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != position && *k != spec.limit_param)
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    kept.push(format!("{}={limit}", spec.limit_param));
    format!("{}{}?{}", origin(sim, headers), spec.list_path, kept.join("&"))
}

/// ServiceNow's one `Link` header: `<url>;rel="first",<url>;rel="prev",<url>;rel="next",<url>;rel="last"`
/// (no prev on the first page, no next on the last); each URL repeats the
/// request's other parameters with its own offset.
fn offset_links(
    sim: &Sim,
    spec: &KitSpec,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    offset_param: &str,
    start: u64,
    limit: u64,
) -> String {
    let size = sim.config.size as u64;
    let base = list_url(sim, spec, headers, pairs, offset_param, limit);
    let url = |offset: u64| format!("<{base}&{offset_param}={offset}>");
    let last = size.saturating_sub(1) / limit * limit;
    let mut links = vec![format!("{};rel=\"first\"", url(0))];
    if start > 0 {
        links.push(format!("{};rel=\"prev\"", url(start.saturating_sub(limit))));
    }
    if start + limit < size {
        links.push(format!("{};rel=\"next\"", url(start + limit)));
    }
    links.push(format!("{};rel=\"last\"", url(last)));
    links.join(",")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Display {
    Values,
    Displayed,
    All,
}

/// How the records of one page are shaped: sections, display values, fields.
struct Shape {
    /// Section fields left out (set to null).
    hidden_sections: Vec<String>,
    display: Option<(Display, bool)>,
    fields: Option<Vec<String>>,
    origin: String,
}

impl Shape {
    fn of(sim: &Sim, spec: &KitSpec, pairs: &[(String, String)], headers: &HeaderMap) -> Result<Shape, Response> {
        let mut hidden_sections = Vec::new();
        if let Some(sec) = &spec.sections {
            let asked: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| *k == sec.param)
                .flat_map(|(_, v)| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            if let Some(bad) = asked.iter().find(|a| !sec.sections.iter().any(|(n, _)| n == *a)) {
                return Err(bad_request(sim, &format!("{}: unknown section {bad:?}", sec.param)));
            }
            let chosen: Vec<&str> =
                if asked.is_empty() { sec.default.iter().map(String::as_str).collect() } else { asked };
            hidden_sections =
                sec.sections.iter().filter(|(n, _)| !chosen.contains(&n.as_str())).map(|(_, f)| f.clone()).collect();
        }
        let mut display = None;
        if let Some(dv) = &spec.display_values {
            let mode = match qget(pairs, &dv.param).map(str::trim) {
                None | Some("") | Some("false") => Display::Values,
                Some("true") => Display::Displayed,
                Some("all") => Display::All,
                Some(other) => {
                    return Err(bad_request(sim, &format!("{}: {other:?} is not true, false or all", dv.param)));
                }
            };
            let with_link = qget(pairs, &dv.exclude_link_param).map(str::trim) != Some("true");
            display = Some((mode, with_link));
        }
        let fields = spec
            .fields_param
            .as_ref()
            .and_then(|p| qget(pairs, p))
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect::<Vec<_>>());
        Ok(Shape { hidden_sections, display, fields, origin: origin(sim, headers) })
    }

    fn apply(&self, record: Value) -> Value {
        let Value::Object(mut map) = record else { return record };
        for f in &self.hidden_sections {
            if let Some(v) = map.get_mut(f) {
                *v = Value::Null;
            }
        }
        if let Some(fields) = &self.fields {
            map.retain(|k, _| fields.contains(k));
        }
        if let Some((mode, with_link)) = self.display {
            for v in map.values_mut() {
                *v = self.display_value(std::mem::take(v), mode, with_link);
            }
        }
        Value::Object(map)
    }

    fn display_value(&self, v: Value, mode: Display, with_link: bool) -> Value {
        let Value::Object(obj) = &v else {
            return match mode {
                Display::All => {
                    let shown = match &v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    json!({"display_value": shown, "value": v})
                }
                _ => v,
            };
        };
        let (Some(value), Some(shown)) = (obj.get("value"), obj.get("display_value")) else { return v };
        let link = obj
            .get("link")
            .and_then(Value::as_str)
            .map(|l| if l.starts_with('/') { format!("{}{l}", self.origin) } else { l.to_string() });
        let empty = value.as_str() == Some("");
        match (mode, link) {
            (Display::All, _) if empty => json!({"display_value": "", "value": ""}),
            (_, Some(_)) if empty => json!(""),
            (Display::Values, Some(l)) if with_link => json!({"link": l, "value": value}),
            (Display::Displayed, Some(l)) if with_link => json!({"display_value": shown, "link": l}),
            (Display::All, Some(l)) if with_link => json!({"display_value": shown, "link": l, "value": value}),
            (Display::Values, _) => value.clone(),
            (Display::Displayed, _) => shown.clone(),
            (Display::All, _) => json!({"display_value": shown, "value": value}),
        }
    }
}

async fn details(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    blocking(sim, move |sim| details_page(sim, q.as_deref())).await
}

fn details_page(sim: &Sim, q: Option<&str>) -> Response {
    let rt = kit(sim);
    let spec = &rt.spec;
    let Pagination::IdsThenDetails { ids_param, max_ids, .. } = &spec.pagination else {
        return server_error(sim, StatusCode::INTERNAL_SERVER_ERROR);
    };
    let pairs = parse_query(q);
    let ids: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == ids_param)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return bad_request(sim, &format!("{ids_param} is required"));
    }
    if ids.len() > *max_ids {
        return bad_request(sim, &format!("at most {max_ids} ids per request, got {}", ids.len()));
    }
    let generation = sim.generation();
    let records: Vec<Value> =
        ids.iter().filter_map(|id| rt.index_of(id, generation)).map(|i| spec.record(i, generation)).collect();
    let mut body = json!({});
    set_path(&mut body, &spec.records_path, Value::Array(records));
    json_resp(StatusCode::OK, &body)
}

async fn export_create(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let spec = &kit(&sim).spec;
    let asked = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v.get("chunk_size").and_then(Value::as_u64),
            Err(_) => return bad_request(&sim, "the body must be JSON"),
        }
    };
    let chunk_size = match asked {
        None => spec.page_size.default,
        Some(0) => return bad_request(&sim, "chunk_size must be at least 1"),
        Some(n) => (n as usize).min(spec.page_size.max),
    };
    let rt = kit(&sim);
    let seq = rt.job_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = sim.config.seed;
    let id = crate::data::guid(crate::data::h3(seed, 0x4B20, seq), crate::data::h3(seed, 0x4B21, seq));
    let mut jobs = rt.jobs.lock().unwrap_or_else(|e| e.into_inner());
    jobs.push_back(Job { id: id.clone(), generation: sim.generation(), chunk_size, polls: 0 });
    while jobs.len() > MAX_JOBS {
        jobs.pop_front();
    }
    json_resp(StatusCode::OK, &json!({"export_uuid": id}))
}

fn chunk_count(size: usize, chunk_size: usize) -> u64 {
    size.div_ceil(chunk_size.max(1)) as u64
}

async fn export_status(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(job): Path<String>) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let rt = kit(&sim);
    let Pagination::Export { polls_to_finish } = rt.spec.pagination else {
        return server_error(&sim, StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut jobs = rt.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(j) = jobs.iter_mut().find(|j| j.id == job) else {
        return error(&sim, StatusCode::NOT_FOUND, "not_found", "No such export");
    };
    j.polls = j.polls.saturating_add(1);
    let total = chunk_count(sim.config.size, j.chunk_size);
    let finish = u64::from(polls_to_finish.max(1));
    let available = if u64::from(j.polls) >= finish { total } else { total * u64::from(j.polls) / finish };
    let status = if available >= total { "FINISHED" } else { "PROCESSING" };
    json_resp(StatusCode::OK, &json!({"status": status, "chunks_available": (1..=available).collect::<Vec<_>>()}))
}

async fn export_chunk(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((job, chunk)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    blocking(sim, move |sim| chunk_page(sim, &job, &chunk)).await
}

fn chunk_page(sim: &Sim, job: &str, chunk: &str) -> Response {
    let rt = kit(sim);
    let found = rt
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|j| j.id == job)
        .map(|j| (j.generation, j.chunk_size));
    let Some((generation, chunk_size)) = found else {
        return error(sim, StatusCode::NOT_FOUND, "not_found", "No such export");
    };
    let total = chunk_count(sim.config.size, chunk_size);
    let n = match chunk.parse::<u64>() {
        Ok(n) if (1..=total).contains(&n) => n,
        _ => return error(sim, StatusCode::NOT_FOUND, "not_found", "No such chunk"),
    };
    let size = sim.config.size as u64;
    let start = (n - 1) * chunk_size as u64;
    let end = (start + chunk_size as u64).min(size);
    let records: Vec<Value> = (start..end).map(|i| rt.spec.record(i, generation)).collect();
    let mut body = json!({});
    set_path(&mut body, &rt.spec.records_path, Value::Array(records));
    let mut resp = json_resp(StatusCode::OK, &body);
    resp.extensions_mut().insert(PageIndex((n - 1) as usize));
    resp
}
