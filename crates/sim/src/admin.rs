//! Admin endpoints under `/_sim/`: not part of any vendor's API, never
//! counted, rate limited or faulted.
//!
//! - `GET /_sim/generation` -> `{"generation": N}`;
//! - `POST /_sim/generation` (body empty: the next one; `{"generation": N}`: that one)
//!   -> `{"generation": N}`: records change from the next request on;
//! - `POST /_sim/spend` `{"requests": N}` -> `{"spent": M}`: another client of
//!   the tenant spends N requests of the rate limit now (M: what the limit
//!   admitted; 0 without a rate limit);
//! - `POST /_sim/revoke` -> 204: the Okta API token and every OAuth token
//!   issued so far stop working (401), as when an admin revokes them;
//! - `GET /_sim/counters` -> the counters snapshot as JSON.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use crate::server::Sim;
use crate::util::json as json_resp;

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/generation", get(generation).post(set_generation))
        .route("/_sim/revoke", post(revoke))
        .route("/_sim/spend", post(spend))
        .route("/_sim/counters", get(counters))
}

async fn generation(State(sim): State<Arc<Sim>>) -> Response {
    json_resp(StatusCode::OK, &json!({ "generation": sim.generation() }))
}

async fn set_generation(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let wanted = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v.get("generation")?.as_u64()) {
            Some(g) => Some(g),
            None => {
                return json_resp(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "body must be empty or {\"generation\": <non-negative integer>}"}),
                );
            }
        }
    };
    let now = match wanted {
        Some(g) => {
            sim.generation_cell().store(g, Ordering::Relaxed);
            g
        }
        None => sim.generation_cell().fetch_add(1, Ordering::Relaxed) + 1,
    };
    tracing::info!(generation = now, "corral-sim: dataset generation changed");
    json_resp(StatusCode::OK, &json!({ "generation": now }))
}

async fn spend(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let n = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("requests")?.as_u64())
        .and_then(|n| u32::try_from(n).ok());
    let Some(n) = n else {
        return json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": "body must be {\"requests\": <non-negative integer>}"}),
        );
    };
    json_resp(StatusCode::OK, &json!({ "spent": sim.spend(n) }))
}

async fn revoke(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.revoke_tokens();
    StatusCode::NO_CONTENT
}

async fn counters(State(sim): State<Arc<Sim>>) -> Response {
    json_resp(StatusCode::OK, &sim.counters.snapshot())
}
