//! Okta users API.
//!
//! - `GET /api/v1/users?limit=&after=` (limit default and maximum 200; larger values are
//!   capped), cursor in `Link: <...>; rel="next"`
//! - `GET /api/v1/users/me` (the token's owner: use it to check credentials)
//! - `GET /api/v1/users/{id}`
//!
//! Auth: `Authorization: SSWS <token>` (or `Bearer <token>`) with the configured token.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use crate::ratelimit::Decision;
use crate::server::{Kind, Sim};
use crate::util::{PageIndex, bearer, get as qget, json as json_resp, parse_query, percent_encode};

const MAX_LIMIT: usize = 200;

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/v1/users", get(users))
        .route("/api/v1/users/me", get(me))
        .route("/api/v1/users/{id}", get(user))
        .fallback(not_found)
}

pub(crate) fn classify(method: &Method, path: &str) -> (&'static str, Kind) {
    match (method.as_str(), path) {
        ("GET", "/api/v1/users") => ("okta.users", Kind::Data),
        ("GET", "/api/v1/users/me") => ("okta.me", Kind::Other),
        ("GET", p) if p.starts_with("/api/v1/users/") => ("okta.user", Kind::Other),
        _ => ("okta.other", Kind::Other),
    }
}

fn error(status: StatusCode, code: &str, summary: &str) -> Response {
    json_resp(
        status,
        &json!({
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": format!("oae{}", uuid::Uuid::new_v4().simple()),
            "errorCauses": [],
        }),
    )
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    error(status, "E0000009", "Internal Server Error")
}

pub(crate) fn too_many(_sim: &Sim, _d: &Decision) -> Response {
    error(StatusCode::TOO_MANY_REQUESTS, "E0000047", "API call exceeded rate limit due to too many requests.")
}

pub(crate) fn rate_headers(sim: &Sim, headers: &mut HeaderMap, d: &Decision) {
    let reset = sim.epoch_secs(d.reset_at.max(Instant::now()));
    for (name, value) in [
        ("X-Rate-Limit-Limit", d.limit as u64),
        ("X-Rate-Limit-Remaining", d.remaining as u64),
        ("X-Rate-Limit-Reset", reset),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            headers.insert(name, v);
        }
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "E0000007", "Not found: Resource not found")
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    let token = bearer(headers, "SSWS").or_else(|| bearer(headers, "Bearer"));
    if token.as_deref() == Some(sim.config.credentials.token.as_str()) && sim.static_token_works() {
        Ok(())
    } else if sim.config.faults.echo_credentials {
        let quoted = format!("Invalid token provided: {}", token.unwrap_or_default());
        Err(error(StatusCode::UNAUTHORIZED, "E0000011", &quoted))
    } else {
        Err(error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided"))
    }
}

/// Scheme and host the client used, so links work behind any bind address.
fn origin(sim: &Sim, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| sim.base_url.clone(), |h| format!("http://{h}"))
}

async fn users(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let pairs = parse_query(q.as_deref());
    for unsupported in ["q", "filter", "search", "sortBy"] {
        if qget(&pairs, unsupported).is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "E0000031",
                &format!("Invalid search criteria: '{unsupported}' is not supported by corral-sim"),
            );
        }
    }
    let limit = match qget(&pairs, "limit") {
        None => MAX_LIMIT,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n.min(MAX_LIMIT),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    "Api validation failed: limit must be a positive integer",
                );
            }
        },
    };
    let after = qget(&pairs, "after").filter(|a| !a.is_empty());
    let start = match after {
        None => 0,
        Some(a) => match sim.okta().index_of(a) {
            Some(i) => i as usize + 1,
            None => {
                return error(StatusCode::BAD_REQUEST, "E0000001", "Api validation failed: after");
            }
        },
    };
    let size = sim.config.size;
    let end = (start + limit).min(size);
    let data = sim.okta();
    let users: Vec<_> = (start..end).map(|i| data.user(i as u64)).collect();

    let base = origin(&sim, &headers);
    let self_link = match after {
        Some(a) => format!("<{base}/api/v1/users?after={}&limit={limit}>; rel=\"self\"", percent_encode(a)),
        None => format!("<{base}/api/v1/users?limit={limit}>; rel=\"self\""),
    };
    let next_link = (end < size && end > start).then(|| {
        let last = sim.okta().user_id(end as u64 - 1);
        format!("<{base}/api/v1/users?after={}&limit={limit}>; rel=\"next\"", percent_encode(&last))
    });
    let mut resp = json_resp(StatusCode::OK, &users);
    let h = resp.headers_mut();
    let links: Vec<String> = if sim.config.behavior.okta_joined_link {
        vec![[Some(self_link), next_link].into_iter().flatten().collect::<Vec<_>>().join(", ")]
    } else {
        [Some(self_link), next_link].into_iter().flatten().collect()
    };
    for l in links {
        if let Ok(v) = HeaderValue::from_str(&l) {
            h.append(header::LINK, v);
        }
    }
    resp.extensions_mut().insert(PageIndex(start / limit));
    resp
}

async fn me(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    json_resp(StatusCode::OK, &sim.okta().token_owner())
}

async fn user(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    match sim.okta().index_of(&id) {
        Some(i) => json_resp(StatusCode::OK, &sim.okta().user(i)),
        None => error(StatusCode::NOT_FOUND, "E0000007", &format!("Not found: Resource not found: {id} (User)")),
    }
}
