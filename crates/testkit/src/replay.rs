//! Replaying a cassette (`corral record`) as a server: an adapter syncs
//! against what a real tenant returned, and the stored assets are compared
//! with those the recorded sync stored.
//!
//! Requests are matched by method, path and query, and request body (the
//! ids a details call asks for); each match serves the recorded answers in
//! the order they were recorded (a retried 503 then its 200), the last one
//! again once they run out. Credentials are not checked. A request the
//! cassette does not hold is answered 404 and counted as a miss.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use corral_core::AdapterFactory;
use corral_core::testing::{MemoryStore, sync_once};
use corral_core::{RunSummary, store::AssetFilter};
use corral_http::cassette::{Cassette, CassetteError, Entry, RecordedAsset};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Cassette(#[from] CassetteError),
    #[error("the replay server could not start: {0}")]
    Serve(#[from] std::io::Error),
    #[error("the cassette's config does not build the adapter: {0}")]
    Config(#[from] corral_core::ConfigError),
    #[error("the store: {0}")]
    Store(#[from] corral_core::StoreError),
}

type Key = (String, String, Option<String>);

struct Served {
    answers: HashMap<Key, VecDeque<Entry>>,
    misses: Vec<String>,
    origin: String,
}

/// A running replay of a cassette.
pub struct ReplayServer {
    pub base_url: String,
    state: Arc<Mutex<Served>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayServer {
    /// Serve `cassette` on a loopback port.
    pub async fn start(cassette: &Cassette) -> std::io::Result<ReplayServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let mut answers: HashMap<Key, VecDeque<Entry>> = HashMap::new();
        for e in &cassette.entries {
            let (_, target) = e.target();
            answers
                .entry((e.method.clone(), target.to_string(), e.request_body.clone()))
                .or_default()
                .push_back(e.clone());
        }
        let state = Arc::new(Mutex::new(Served { answers, misses: Vec::new(), origin: base_url.clone() }));
        let app = axum::Router::new().fallback(answer).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ReplayServer { base_url, state, task })
    }

    /// Requests the cassette did not hold (`METHOD /path?query`).
    pub fn misses(&self) -> Vec<String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).misses.clone()
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(state): State<Arc<Mutex<Served>>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let target = uri.path_and_query().map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
    let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let origin = s.origin.clone();
    // A request body that is not part of the key (a token request's form) still matches.
    let mut key = (method.to_string(), target.clone(), body);
    if !s.answers.contains_key(&key) {
        key.2 = None;
    }
    let entry = s
        .answers
        .get_mut(&key)
        .and_then(|queue| if queue.len() > 1 { queue.pop_front() } else { queue.front().cloned() });
    let Some(entry) = entry else {
        s.misses.push(format!("{method} {target}"));
        let msg = serde_json::json!({ "error": format!("not in the cassette: {method} {target}") });
        return (StatusCode::NOT_FOUND, msg.to_string()).into_response();
    };
    drop(s);
    let status = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, entry.body_for(&origin)).into_response();
    for (k, v) in entry.headers_for(&origin) {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// What a replayed sync gave.
#[derive(Debug)]
pub struct Replayed {
    pub summary: RunSummary,
    /// What the replayed sync stored, sorted.
    pub stored: Vec<RecordedAsset>,
    /// What the recorded sync stored, sorted (`None`: the cassette has no assets.ndjson).
    pub recorded: Option<Vec<RecordedAsset>>,
    /// The JSON fields the cassette gave stand-ins (their assets' contents differ from the recording's).
    pub redacted_fields: Vec<String>,
    pub misses: Vec<String>,
}

impl Replayed {
    /// Panics unless the replay stored what the recording stored: the same
    /// assets, and the same contents when no field was redacted; and every
    /// request was in the cassette.
    pub fn assert_same_assets(&self) {
        assert!(self.misses.is_empty(), "requests the cassette does not hold: {:?}", self.misses);
        let Some(recorded) = &self.recorded else { panic!("the cassette has no assets.ndjson to compare with") };
        let ids = |v: &[RecordedAsset]| v.iter().map(|a| (a.kind, a.source_id.clone())).collect::<Vec<_>>();
        assert_eq!(ids(&self.stored), ids(recorded), "the replay stored other assets than the recording");
        if self.redacted_fields.is_empty() {
            assert_eq!(&self.stored, recorded, "the replay stored other contents than the recording");
        }
    }
}

/// Load the cassette in `dir`, serve it, build the adapter from the
/// cassette's config pointed at the server, sync it once into a fresh
/// MemoryStore and list what was stored.
pub async fn replay(dir: &Path, factory: &dyn AdapterFactory) -> Result<Replayed, ReplayError> {
    let cassette = Cassette::load(dir)?;
    let server = ReplayServer::start(&cassette).await?;
    let config = cassette.meta.config_for(&server.base_url);
    let adapter = factory.build(&cassette.meta.connection, config)?;
    let store = Arc::new(MemoryStore::new());
    let summary = sync_once(&store, &cassette.meta.connection, adapter).await;
    let filter = AssetFilter { include_stale: true, ..Default::default() };
    let mut stored: Vec<RecordedAsset> =
        corral_core::Store::list_assets(&*store, &filter, usize::MAX).await?.iter().map(RecordedAsset::of).collect();
    stored.sort();
    let mut recorded = cassette.assets.clone();
    if let Some(r) = &mut recorded {
        r.sort();
    }
    Ok(Replayed {
        summary,
        stored,
        recorded,
        redacted_fields: cassette.meta.redacted_fields.clone(),
        misses: server.misses(),
    })
}
