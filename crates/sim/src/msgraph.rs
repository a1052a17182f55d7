//! Microsoft Graph: Intune managed devices and Entra ID users.
//!
//! - `POST /{tenant}/oauth2/v2.0/token` (form `grant_type=client_credentials`,
//!   `client_id`, `client_secret`, `scope=https://graph.microsoft.com/.default`) -> 200
//! - `GET /v1.0/deviceManagement/managedDevices?$top=&$select=` (`$top` 1..=1000, default 1000)
//! - `GET /v1.0/users?$top=&$select=` (`$top` 1..=999, default 100; default property set
//!   unless `$select`)
//!
//! Pages link with `@odata.nextLink`, a full URL carrying an opaque `$skiptoken`.
//! `$skip` is rejected (400), as are `$filter`, `$orderby`, `$search`, `$expand`, `$count`
//! (not simulated).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::data::msgraph::{USER_DEFAULT_PROPERTIES, project};
use crate::ratelimit::Decision;
use crate::server::{Kind, Sim, TokenState, blocking};
use crate::util::{
    PageIndex, bearer, get as qget, json as json_resp, json_bytes, parse_form, parse_query, seal, unseal,
};

const TOKEN_TTL: Duration = Duration::from_secs(3599);
const SCOPE: &str = "https://graph.microsoft.com/.default";

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/deviceManagement/managedDevices", get(devices))
        .route("/v1.0/users", get(users))
        .fallback(not_found)
}

pub(crate) fn classify(method: &Method, path: &str) -> (&'static str, Kind) {
    match (method.as_str(), path) {
        ("POST", p) if p.ends_with("/oauth2/v2.0/token") => ("graph.token", Kind::Auth),
        ("GET", "/v1.0/deviceManagement/managedDevices") => ("graph.devices", Kind::Data),
        ("GET", "/v1.0/users") => ("graph.users", Kind::Data),
        _ => ("graph.other", Kind::Other),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_resp(
        status,
        &json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": uuid::Uuid::new_v4().to_string(),
                "client-request-id": uuid::Uuid::new_v4().to_string(),
            },
        }}),
    )
}

/// Identity-platform (token endpoint) error.
fn oauth_error(status: StatusCode, error: &str, aadsts: u32, description: &str) -> Response {
    json_resp(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{aadsts}: {description}"),
            "error_codes": [aadsts],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    let code = if status == StatusCode::SERVICE_UNAVAILABLE { "serviceNotAvailable" } else { "generalException" };
    error(status, code, "The service is temporarily unavailable. Please retry.")
}

pub(crate) fn too_many(_sim: &Sim, d: &Decision) -> Response {
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Too many requests from this application; retry after the Retry-After interval.",
    );
    let wait = d.reset_at.saturating_duration_since(Instant::now());
    let secs = (wait.as_secs_f64().ceil() as u64).max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The identity platform throttling token requests: 429, OAuth error shape, `Retry-After` seconds.
pub(crate) fn token_too_many(_sim: &Sim, d: &Decision) -> Response {
    let mut resp = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        50196,
        "The server terminated an operation because it encountered a client request loop or too many requests.",
    );
    let wait = d.reset_at.saturating_duration_since(Instant::now());
    let secs = (wait.as_secs_f64().ceil() as u64).max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "ResourceNotFound", "Resource not found for the segment.")
}

async fn token(State(sim): State<Arc<Sim>>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let creds = &sim.config.credentials;
    if tenant != creds.tenant {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if qget(&form, "grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if qget(&form, "scope") != Some(SCOPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    match (qget(&form, "client_id"), qget(&form, "client_secret")) {
        (Some(id), _) if id != creds.client_id => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!("Application with identifier '{id}' was not found in the directory."),
            );
        }
        (Some(_), Some(secret)) if secret == creds.client_secret => {}
        (None, _) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            );
        }
        (_, secret) => {
            if sim.config.faults.echo_credentials {
                let quoted = format!("Invalid client secret provided: '{}'.", secret.unwrap_or_default());
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, &quoted);
            }
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, "Invalid client secret provided.");
        }
    }
    let (token, expires_in) = sim.issue_token(TOKEN_TTL);
    json_resp(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": token}),
    )
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    let message = match sim.check_token(bearer(headers, "Bearer").as_deref()) {
        TokenState::Valid => return Ok(()),
        TokenState::Missing => "Access token is empty.",
        TokenState::Unknown => "Invalid JWT token. The token is malformed or has an invalid signature.",
        TokenState::Expired => "Lifetime validation failed, the token is expired.",
    };
    Err(error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message))
}

/// One listing endpoint's shape.
struct Listing {
    path: &'static str,
    context: &'static str,
    entity: &'static str,
    default_top: usize,
    max_top: usize,
    kind: u64,
}

const DEVICES: Listing = Listing {
    path: "/v1.0/deviceManagement/managedDevices",
    context: "deviceManagement/managedDevices",
    entity: "microsoft.graph.managedDevice",
    default_top: 1000,
    max_top: 1000,
    kind: 1,
};

const USERS: Listing = Listing {
    path: "/v1.0/users",
    context: "users",
    entity: "microsoft.graph.user",
    default_top: 100,
    max_top: 999,
    kind: 2,
};

async fn devices(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    blocking(sim, move |sim| list(sim, &headers, q.as_deref(), &DEVICES)).await
}

async fn users(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    blocking(sim, move |sim| list(sim, &headers, q.as_deref(), &USERS)).await
}

fn list(sim: &Sim, headers: &HeaderMap, q: Option<&str>, l: &Listing) -> Response {
    if let Err(r) = authorize(sim, headers) {
        return r;
    }
    let pairs = parse_query(q);
    if qget(&pairs, "$skip").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "The query parameter '$skip' is not supported on this resource; follow @odata.nextLink.",
        );
    }
    for p in ["$filter", "$orderby", "$search", "$expand", "$count"] {
        if qget(&pairs, p).is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &format!("Query option '{p}' is not supported by corral-sim."),
            );
        }
    }
    let top = match qget(&pairs, "$top") {
        None => l.default_top,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=l.max_top).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!("Invalid page size specified: '{v}'. Must be between 1 and {} inclusive.", l.max_top),
                );
            }
        },
    };
    let select: Option<Vec<String>> =
        qget(&pairs, "$select").map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect());
    let key = crate::data::h3(sim.config.seed, 0x6D, sim.config.generation);
    let (position, page) = match qget(&pairs, "$skiptoken") {
        None => (0usize, 0usize),
        Some(tok) => match unseal(key, tok, 3) {
            Some(f) if f[1] == l.kind => (f[0] as usize, f[2] as usize),
            _ => return error(StatusCode::BAD_REQUEST, "Request_BadRequest", "Invalid $skiptoken value."),
        },
    };
    let size = sim.config.size;
    let end = (position + top).min(size);
    let mut values = Vec::with_capacity(end.saturating_sub(position));
    let data = sim.graph();
    for pos in position..end {
        let full = if l.kind == 1 { data.device(pos as u64) } else { data.user(pos as u64) };
        let record = match (&select, l.kind) {
            (Some(props), _) => {
                if let Some(bad) = props.iter().find(|p| full.get(p.as_str()).is_none()) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!("Could not find a property named '{bad}' on type '{}'.", l.entity),
                    );
                }
                let names: Vec<&str> = props.iter().map(String::as_str).collect();
                project(&full, &names)
            }
            (None, 2) => project(&full, &USER_DEFAULT_PROPERTIES),
            (None, _) => full,
        };
        values.push(record);
    }
    let context = match &select {
        Some(props) => format!("https://graph.microsoft.com/v1.0/$metadata#{}({})", l.context, props.join(",")),
        None => format!("https://graph.microsoft.com/v1.0/$metadata#{}", l.context),
    };
    let mut next_link = None;
    if end < size {
        let origin = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| sim.base_url.clone(), |h| format!("http://{h}"));
        let token = seal(key, &[end as u64, l.kind, page as u64 + 1]);
        let mut link = format!("{origin}{}?$top={top}&$skiptoken={token}", l.path);
        if let Some(props) = &select {
            link.push_str(&format!("&$select={}", props.join(",")));
        }
        next_link = Some(link);
    }
    // Written by hand: the field order is the point (a JSON map would sort the keys).
    let mut body = Vec::with_capacity(values.len() * 1024 + 512);
    let field = |body: &mut Vec<u8>, name: &str, value: &Value| {
        let _ = serde_json::to_writer(&mut *body, name);
        body.push(b':');
        let _ = serde_json::to_writer(&mut *body, value);
    };
    body.push(b'{');
    field(&mut body, "@odata.context", &Value::String(context));
    let after = sim.config.behavior.graph_next_link_after_value;
    if let Some(link) = next_link.as_ref().filter(|_| !after) {
        body.push(b',');
        field(&mut body, "@odata.nextLink", &Value::String(link.clone()));
    }
    body.push(b',');
    field(&mut body, "value", &Value::Array(values));
    if let Some(link) = next_link.as_ref().filter(|_| after) {
        body.push(b',');
        field(&mut body, "@odata.nextLink", &Value::String(link.clone()));
    }
    body.push(b'}');
    let mut resp = json_bytes(StatusCode::OK, body);
    resp.extensions_mut().insert(PageIndex(page));
    resp
}
