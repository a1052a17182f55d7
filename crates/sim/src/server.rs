//! Shared simulator state, the request layer (counting, latency, rate limit, faults) and
//! the handle returned by [`start`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::{SimConfig, Truncation, Vendor};
use crate::counters::{Counters, RequestEvent};
use crate::data::crowdstrike::CsData;
use crate::data::msgraph::GraphData;
use crate::data::okta::OktaData;
use crate::faults::{self, FaultRng};
use crate::ratelimit::{Decision, Limiter, Window};
use crate::util::PageIndex;
use crate::{aws, crowdstrike, kit, msgraph, okta, qualys, tenable};

/// What an endpoint is, for deciding which layers apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Token endpoints: exempt from the rate limit; faults only with `include_auth`.
    Auth,
    /// Listings and details: rate limited and faulted.
    Data,
    /// Everything else (checks, 404s): rate limited, never faulted.
    Other,
}

/// Result of checking a bearer/SSWS token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenState {
    Valid,
    Missing,
    Unknown,
    Expired,
}

/// A filter's matching listing positions, keyed by (generation, filter).
pub(crate) type FilterHits = ((u64, String), Arc<Vec<u64>>);

pub(crate) struct Sim {
    pub vendor: Vendor,
    pub config: SimConfig,
    pub counters: Arc<Counters>,
    pub base_url: String,
    pub started: Instant,
    started_wall: SystemTime,
    pub cancel: CancellationToken,
    limiter: Option<Limiter>,
    /// The token endpoint's own limit (CrowdStrike: 300/min).
    token_limiter: Option<Limiter>,
    rng: Mutex<FaultRng>,
    tokens: Mutex<HashMap<String, Instant>>,
    token_seq: AtomicU64,
    malformed_served: Mutex<HashSet<(&'static str, usize)>>,
    /// The dataset generation served now (`POST /_sim/generation` moves it).
    generation: Arc<AtomicU64>,
    /// Faultable requests so far (numbers `Faults::truncate_requests` / `hang_requests`).
    data_requests: AtomicU64,
    /// Static credentials (Okta, kit): requests they authorized, and whether they were revoked.
    okta_authorized: AtomicU64,
    okta_revoked: AtomicBool,
    /// CrowdStrike FQL filter results by (generation, filter), most recent last.
    pub filter_cache: Mutex<Vec<FilterHits>>,
    /// A kit simulator's spec and state (`Vendor::Kit` only).
    pub kit: Option<Arc<kit::Runtime>>,
    /// Tenable's export jobs.
    pub(crate) jobs: tenable::Jobs,
    /// AWS's sessions and token buckets.
    pub(crate) aws: aws::AwsState,
}

impl Sim {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
    pub(crate) fn generation_cell(&self) -> &AtomicU64 {
        &self.generation
    }
    /// The CrowdStrike dataset of the current generation.
    pub(crate) fn cs(&self) -> CsData {
        CsData::new(self.config.seed, self.config.size, self.generation())
    }
    pub(crate) fn okta(&self) -> OktaData {
        OktaData::new(self.config.seed, self.config.size, self.generation())
    }
    pub(crate) fn graph(&self) -> GraphData {
        GraphData::new(self.config.seed, self.config.size, self.generation())
    }

    /// Whether page `page` of the listing `label` is served malformed
    /// (`Faults::malformed_pages`, once each with `malformed_pages_once`);
    /// counted as the fault `malformed_page` when it is. For simulators that
    /// corrupt a page as they render it (Qualys's streamed XML).
    pub(crate) fn serve_malformed_page(&self, label: &'static str, page: usize) -> bool {
        let f = &self.config.faults;
        let yes = f.malformed_pages.contains(&page)
            && (!f.malformed_pages_once
                || self.malformed_served.lock().unwrap_or_else(|e| e.into_inner()).insert((label, page)));
        if yes {
            self.counters.fault("malformed_page");
        }
        yes
    }

    /// Static credentials (Okta's API token, a kit simulator's token or
    /// Basic password): whether they still work; counts the request if so.
    pub(crate) fn static_token_works(&self) -> bool {
        if self.okta_revoked.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.okta_authorized.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.faults.token_revoked_after.is_some_and(|max| n > max) {
            self.okta_revoked.store(true, Ordering::Relaxed);
            self.counters.fault("token_revoked");
            return false;
        }
        true
    }

    /// Revoke every credential: the Okta API token and each OAuth token issued so far.
    pub(crate) fn revoke_tokens(&self) {
        self.okta_revoked.store(true, Ordering::Relaxed);
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.counters.fault("token_revoked");
    }
    /// Wall-clock epoch seconds (rounded up) of an instant.
    pub(crate) fn epoch_secs(&self, at: Instant) -> u64 {
        let wall = if at >= self.started {
            self.started_wall + (at - self.started)
        } else {
            self.started_wall - (self.started - at)
        };
        let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }

    /// Issue a token; returns it and the `expires_in` to announce.
    pub(crate) fn issue_token(&self, nominal: Duration) -> (String, u64) {
        let seq = self.token_seq.fetch_add(1, Ordering::Relaxed);
        let seed = self.config.seed;
        let token = format!(
            "{}{:016x}{:016x}",
            self.vendor.name().get(..2).unwrap_or("tk"),
            crate::data::h3(seed, 0x70C, seq),
            crate::data::h3(seed, 0x70D, seq)
        );
        let f = &self.config.faults;
        let ttl = f.token_ttl.unwrap_or(nominal);
        let announced = if f.token_ttl_hidden { nominal } else { ttl };
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), Instant::now() + ttl);
        self.counters.token_issued();
        (token, announced.as_secs_f64().ceil() as u64)
    }

    /// An issued token stops working (Jamf's keep-alive and invalidate-token).
    pub(crate) fn invalidate_token(&self, token: &str) {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// Check an OAuth access token.
    pub(crate) fn check_token(&self, token: Option<&str>) -> TokenState {
        let Some(token) = token else {
            return TokenState::Missing;
        };
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token) {
            None => TokenState::Unknown,
            Some(exp) if Instant::now() >= *exp => {
                self.counters.fault("token_expired");
                TokenState::Expired
            }
            Some(_) => TokenState::Valid,
        }
    }

    /// Another client spends `n` requests of the data limit now.
    pub(crate) fn spend(&self, n: u32) -> u32 {
        if self.vendor == Vendor::Aws {
            return self.aws.spend(self, n);
        }
        self.limiter.as_ref().map_or(0, |l| l.spend(Instant::now(), n))
    }

    fn nominal_decision(&self, now: Instant) -> Decision {
        let limit = match self.vendor {
            Vendor::CrowdStrike => 6000,
            Vendor::Okta => 600,
            Vendor::MsGraph => 2000,
            Vendor::Kit | Vendor::Tenable => self.config.rate_limit.map_or(1000, |l| l.requests),
            Vendor::Qualys => self.config.rate_limit.map_or(300, |l| l.requests),
            Vendor::Aws => self.config.rate_limit.map_or(100, |l| l.requests),
        };
        Decision {
            allowed: true,
            limit,
            remaining: limit,
            reset_at: now + Duration::from_secs(60),
            attempts_in_window: 0,
        }
    }
}

/// A running simulator. Dropping it stops the server (without waiting).
pub struct SimHandle {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub base_url: String,
    pub addr: SocketAddr,
    pub vendor: Vendor,
    pub counters: Arc<Counters>,
    pub config: SimConfig,
    cancel: CancellationToken,
    done: Option<oneshot::Receiver<()>>,
    generation: Arc<AtomicU64>,
    sim: Arc<Sim>,
}

impl SimHandle {
    /// The dataset generation served now (starts at `config.generation`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Serve generation `generation` from now on (as `POST /_sim/generation` does):
    /// the next run of a client sees some records changed and a few replaced.
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// Move to the next generation; returns it.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Another client of the tenant spends `n` requests of the data rate
    /// limit now (what `POST /_sim/spend` does): they count against the
    /// limit for a window like any request, as on a real tenant whose budget
    /// other integrations share. Returns how many the limit admitted (0
    /// without a rate limit).
    pub fn spend(&self, n: u32) -> u32 {
        self.sim.spend(n)
    }

    /// Stop serving and wait (at most a few seconds) for the server to finish; hung
    /// requests are answered 503.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
    }

    /// Cancelled when the simulator stops.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .field("vendor", &self.vendor)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Start a simulator of `vendor` on 127.0.0.1 with a free port.
pub async fn start(vendor: Vendor, config: SimConfig) -> std::io::Result<SimHandle> {
    start_on(vendor, config, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Start a simulator of `vendor` on a given address.
///
/// With `config.threads > 0` the simulator runs on its own tokio runtime in a dedicated
/// OS thread (with that many workers), so its CPU work never shows up as lag in the
/// caller's runtime; with `threads == 0` it is spawned on the caller's runtime.
pub async fn start_on(vendor: Vendor, config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    if vendor == Vendor::Kit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a kit simulator needs its spec: start it with corral_sim::kit::start",
        ));
    }
    launch(vendor, config, addr, None).await
}

/// Start a simulator (`kit`: the spec of a `Vendor::Kit` one).
pub(crate) async fn launch(
    vendor: Vendor,
    config: SimConfig,
    addr: SocketAddr,
    kit: Option<Arc<kit::Runtime>>,
) -> std::io::Result<SimHandle> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let base_url = format!("http://{host}");
    let counters = Arc::new(Counters::default());
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (seed, generation) = (config.seed, config.generation);
    let window = match vendor {
        Vendor::Okta => Window::Fixed,
        Vendor::Kit if !kit.as_ref().is_some_and(|k| k.spec.sliding_window) => Window::Fixed,
        _ => Window::Sliding,
    };
    let generation_cell = Arc::new(AtomicU64::new(generation));
    let sim = Arc::new(Sim {
        vendor,
        counters: counters.clone(),
        base_url: base_url.clone(),
        started,
        started_wall: SystemTime::now(),
        cancel: cancel.clone(),
        limiter: config.rate_limit.map(|rl| Limiter::new(rl, window, started)),
        token_limiter: config
            .behavior
            .token_rate_limit
            .for_vendor(vendor)
            .map(|rl| Limiter::new(rl, Window::Sliding, started)),
        rng: Mutex::new(FaultRng::new(seed)),
        tokens: Mutex::new(HashMap::new()),
        token_seq: AtomicU64::new(0),
        malformed_served: Mutex::new(HashSet::new()),
        generation: generation_cell.clone(),
        data_requests: AtomicU64::new(0),
        okta_authorized: AtomicU64::new(0),
        okta_revoked: AtomicBool::new(false),
        filter_cache: Mutex::new(Vec::new()),
        kit,
        jobs: tenable::Jobs::default(),
        aws: aws::AwsState::default(),
        config: config.clone(),
    });
    let handle_sim = sim.clone();
    let (done_tx, done_rx) = oneshot::channel();
    let stop = cancel.clone();
    let task = async move {
        let result = serve(sim, listener, stop).await;
        let _ = done_tx.send(());
        result
    };
    if config.threads == 0 {
        tokio::spawn(task);
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .max_blocking_threads(config.threads.max(2))
            .thread_name(format!("corral-sim-{}", vendor.name()))
            .enable_all()
            .build()?;
        std::thread::Builder::new().name(format!("corral-sim-{}", vendor.name())).spawn(move || {
            let _ = runtime.block_on(task);
            // Dropping the runtime here ends any connection task still running.
        })?;
    }
    Ok(SimHandle {
        base_url,
        addr,
        vendor,
        counters,
        config,
        cancel,
        done: Some(done_rx),
        generation: generation_cell,
        sim: handle_sim,
    })
}

async fn serve(sim: Arc<Sim>, listener: std::net::TcpListener, stop: CancellationToken) -> std::io::Result<()> {
    let listener = CountingListener { inner: TcpListener::from_std(listener)?, counters: sim.counters.clone() };
    let routes = match sim.vendor {
        Vendor::CrowdStrike => crowdstrike::router(),
        Vendor::Okta => okta::router(),
        Vendor::MsGraph => msgraph::router(),
        Vendor::Kit => kit::router(&sim),
        Vendor::Tenable => tenable::router(),
        Vendor::Qualys => qualys::router(),
        Vendor::Aws => aws::router(),
    };
    // Admin routes are merged after the layer: never counted, limited or faulted.
    let app: Router = routes
        .layer(middleware::from_fn_with_state(sim.clone(), sim_layer))
        .merge(crate::admin::router())
        .with_state(sim);
    let graceful = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move { graceful.cancelled().await });
    tokio::select! {
        r = server => r,
        // Do not wait forever for clients that keep connections busy.
        _ = async { stop.cancelled().await; tokio::time::sleep(Duration::from_secs(2)).await } => Ok(()),
    }
}

/// The TCP listener, counting the connections clients hold open (see
/// [`Counters::connection_opened`]).
struct CountingListener {
    inner: TcpListener,
    counters: Arc<Counters>,
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        self.counters.connection_opened();
        (CountedStream { inner: io, counters: self.counters.clone() }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A client's connection; counted closed when the server drops it.
struct CountedStream {
    inner: tokio::net::TcpStream,
    counters: Arc<Counters>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.counters.connection_closed();
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Build a response on the blocking pool: record generation must not stall the
/// runtime's workers (which may be the caller's, with `threads == 0`).
pub(crate) async fn blocking(sim: Arc<Sim>, f: impl FnOnce(&Sim) -> Response + Send + 'static) -> Response {
    let on_panic = sim.clone();
    match tokio::task::spawn_blocking(move || f(&sim)).await {
        Ok(resp) => resp,
        Err(_) => server_error(&on_panic, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn classify(sim: &Sim, method: &Method, path: &str) -> (&'static str, Kind) {
    match sim.vendor {
        Vendor::CrowdStrike => crowdstrike::classify(method, path),
        Vendor::Okta => okta::classify(method, path),
        Vendor::MsGraph => msgraph::classify(method, path),
        Vendor::Kit => kit::classify(sim, method, path),
        Vendor::Tenable => tenable::classify(method, path),
        Vendor::Qualys => qualys::classify(method, path),
        Vendor::Aws => aws::classify(method, path),
    }
}

struct InFlight(Arc<Counters>, &'static str);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// Sleep, unless the simulator is shutting down; `false` if interrupted.
async fn pause(sim: &Sim, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = sim.cancel.cancelled() => false,
    }
}

async fn sim_layer(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let arrived = sim.started.elapsed();
    let (label, kind) = classify(&sim, req.method(), req.uri().path());
    let in_flight = sim.counters.request(label);
    let _guard = InFlight(sim.counters.clone(), label);
    let mut draws = sim.rng.lock().unwrap_or_else(|e| e.into_inner()).draw(&sim.config);
    let faultable = kind == Kind::Data || (kind == Kind::Auth && sim.config.faults.include_auth);
    if faultable {
        let nth = sim.data_requests.fetch_add(1, Ordering::Relaxed) + 1;
        let f = &sim.config.faults;
        draws.hang |= f.hang_requests.contains(&nth);
        if f.truncate_requests.contains(&nth) {
            draws.truncate = Some(0.5);
        }
    }

    let mut resp = handle(&sim, req, next, kind, faultable, draws, in_flight).await;

    // Rate-limit headers on every response (the vendor decides which).
    let headers_decision = resp.extensions_mut().remove::<Decision>();
    let decision = headers_decision.unwrap_or_else(|| match &sim.limiter {
        Some(l) => l.check(Instant::now(), false),
        None => sim.nominal_decision(Instant::now()),
    });
    rate_headers(&sim, resp.headers_mut(), &decision);

    let status = resp.status();
    if resp.extensions().get::<qualys::Streamed>().is_some() {
        return streamed(&sim, resp, faultable, draws, arrived, label);
    }
    let page = resp.extensions().get::<PageIndex>().copied();
    let (mut parts, body) = resp.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut bytes = bytes.to_vec();
    let mut cut_connection_at = None;
    if faultable && status == StatusCode::OK {
        let page_fault = page.is_some_and(|PageIndex(p)| {
            sim.config.faults.malformed_pages.contains(&p)
                && (!sim.config.faults.malformed_pages_once
                    || sim.malformed_served.lock().unwrap_or_else(|e| e.into_inner()).insert((label, p)))
        });
        if page_fault {
            let variant = page.map_or(0, |PageIndex(p)| (p % 3) as u8);
            bytes = faults::malformed(&bytes, variant);
            sim.counters.fault("malformed_page");
        } else if let Some(v) = draws.malformed {
            bytes = faults::malformed(&bytes, v);
            sim.counters.fault("malformed");
        } else if let Some(keep) = draws.truncate {
            match sim.config.faults.truncation {
                Truncation::Json => bytes = faults::truncate(&bytes, keep),
                Truncation::Connection => cut_connection_at = Some(faults::truncate(&bytes, keep).len()),
            }
            sim.counters.fault("truncate");
        }
    }
    let finished = sim.started.elapsed();
    let retry_after = refused_for_limits(&sim, status).then(|| announced_wait(&sim, &parts.headers)).flatten();
    sim.counters.event(RequestEvent {
        arrived,
        finished,
        endpoint: label.to_string(),
        status: status.as_u16(),
        retry_after,
    });
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let Some(cut) = cut_connection_at else {
        sim.counters.done(status.as_u16(), bytes.len() as u64);
        return Response::from_parts(parts, Body::from(bytes));
    };
    // Announce the whole body, send part of it, then fail the body stream:
    // hyper closes the connection mid-body, as a dropped connection would.
    sim.counters.done(status.as_u16(), cut as u64);
    if let Ok(v) = axum::http::HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(axum::http::header::CONTENT_LENGTH, v);
    }
    bytes.truncate(cut);
    use futures::StreamExt;
    let part = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    // A pause first, so the part already written is flushed to the client before the cut.
    let cut = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::other("corral-sim: connection cut mid-body"))
    });
    Response::from_parts(parts, Body::from_stream(part.chain(cut)))
}

/// A 429, or one of Qualys's limit 409s.
fn refused_for_limits(sim: &Sim, status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || (sim.vendor == Vendor::Qualys && status == StatusCode::CONFLICT)
}

/// Pass a streamed body on without buffering it: its bytes are counted as
/// they go; a truncation fault ends it (or cuts the connection) after part of it.
fn streamed(
    sim: &Arc<Sim>,
    resp: Response,
    faultable: bool,
    draws: faults::Draws,
    arrived: Duration,
    label: &'static str,
) -> Response {
    use futures::StreamExt;
    let status = resp.status();
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    sim.counters.event(RequestEvent {
        arrived,
        finished: sim.started.elapsed(),
        endpoint: label.to_string(),
        status: status.as_u16(),
        retry_after: None,
    });
    sim.counters.done(status.as_u16(), 0);
    // A truncated answer keeps its first piece (the document's head) and
    // `keep` of the second, then ends (or, with `Truncation::Connection`, fails).
    let keep = match draws.truncate {
        Some(keep) if faultable && status == StatusCode::OK => {
            sim.counters.fault("truncate");
            Some(keep)
        }
        _ => None,
    };
    let cut_connection = sim.config.faults.truncation == Truncation::Connection;
    let counters = sim.counters.clone();
    let mut piece_no = 0usize;
    let stream = body.into_data_stream().map(move |piece| {
        let piece = piece.map_err(std::io::Error::other)?;
        piece_no += 1;
        let piece = match keep {
            Some(_) if piece_no > 2 => return Err(std::io::Error::other("corral-sim: stream cut")),
            Some(keep) if piece_no == 2 => {
                let n = ((piece.len() as f64 * keep) as usize).min(piece.len().saturating_sub(1));
                piece.slice(..n)
            }
            _ => piece,
        };
        counters.add_bytes(piece.len() as u64);
        Ok::<_, std::io::Error>(piece)
    });
    let mut ended = false;
    let stream = stream.take_while(move |r| {
        // After the cut piece: end quietly, or fail the body so the connection drops.
        let go = !ended && (r.is_ok() || cut_connection);
        ended |= r.is_err();
        futures::future::ready(go)
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The wait a 429 announced, from now: Retry-After seconds, or an epoch
/// instant (CrowdStrike's X-Ratelimit-Retryafter, Okta's X-Rate-Limit-Reset).
fn announced_wait(sim: &Sim, headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(secs) = get("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    if sim.vendor == Vendor::Kit {
        return kit::announced_wait(sim, headers);
    }
    if let Some(secs) = get("x-ratelimit-towait-sec") {
        return Some(Duration::from_secs(secs));
    }
    let epoch = get("x-ratelimit-retryafter").or_else(|| match sim.vendor {
        Vendor::Okta => get("x-rate-limit-reset"),
        _ => None,
    })?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Some(Duration::from_secs(epoch).saturating_sub(now))
}

async fn handle(
    sim: &Arc<Sim>,
    req: Request,
    next: Next,
    kind: Kind,
    faultable: bool,
    draws: faults::Draws,
    in_flight: u64,
) -> Response {
    if let Some(limit) = sim.kit.as_ref().and_then(|k| k.spec.concurrency)
        && in_flight > limit.max as u64
    {
        sim.counters.fault("over_concurrency");
        match limit.over {
            kit::OverLimit::Refuse(code) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return kit::server_error(sim, status);
            }
            kit::OverLimit::Slow(extra) => {
                if !pause(sim, extra).await {
                    return shutting_down(sim);
                }
            }
        }
    }
    if sim.vendor == Vendor::Qualys && kind != Kind::Other && in_flight > sim.config.behavior.qualys_concurrency as u64
    {
        return qualys::too_many_running(sim, in_flight);
    }
    if !pause(sim, draws.latency).await {
        return shutting_down(sim);
    }
    if sim.config.behavior.max_concurrent.is_some_and(|m| in_flight > m as u64) {
        let mut d = sim.nominal_decision(Instant::now());
        d.reset_at = Instant::now() + Duration::from_secs(1);
        d.allowed = false;
        return too_many(sim, d);
    }
    let mut decision = None;
    if kind == Kind::Auth
        && let Some(l) = &sim.token_limiter
    {
        let d = l.check(Instant::now(), true);
        if !d.allowed {
            return too_many_token(sim, d);
        }
        decision = Some(d);
    }
    // AWS throttles per account and region, which only its handler knows (aws.rs).
    if kind != Kind::Auth
        && sim.vendor != Vendor::Aws
        && let Some(l) = &sim.limiter
    {
        let d = l.check(Instant::now(), true);
        sim.counters.observe_window(d.attempts_in_window);
        if !d.allowed {
            return too_many(sim, d);
        }
        decision = Some(d);
    }
    if faultable && draws.hang {
        sim.counters.fault("hang");
        if !pause(sim, sim.config.faults.hang).await {
            return shutting_down(sim);
        }
    }
    if faultable && let Some(code) = draws.error_5xx {
        sim.counters.fault("5xx");
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return with_decision(server_error(sim, status), decision);
    }
    if faultable && draws.slow {
        sim.counters.fault("slow");
        if !pause(sim, sim.config.faults.slow).await {
            return shutting_down(sim);
        }
    }
    with_decision(next.run(req).await, decision)
}

fn with_decision(mut resp: Response, decision: Option<Decision>) -> Response {
    if let Some(d) = decision {
        resp.extensions_mut().insert(d);
    }
    resp
}

fn too_many(sim: &Sim, d: Decision) -> Response {
    let mut resp = match sim.vendor {
        Vendor::CrowdStrike => crowdstrike::too_many(sim, &d),
        Vendor::Okta => okta::too_many(sim, &d),
        Vendor::MsGraph => msgraph::too_many(sim, &d),
        Vendor::Kit => kit::too_many(sim, &d),
        Vendor::Tenable => tenable::too_many(sim, &d),
        Vendor::Qualys => qualys::too_many(sim, &d),
        Vendor::Aws => aws::throttled(sim),
    };
    resp.extensions_mut().insert(d);
    resp
}

fn too_many_token(sim: &Sim, d: Decision) -> Response {
    let mut resp = match sim.vendor {
        Vendor::MsGraph => msgraph::token_too_many(sim, &d),
        Vendor::Kit => kit::too_many(sim, &d),
        _ => crowdstrike::too_many(sim, &d),
    };
    resp.extensions_mut().insert(d);
    resp
}

fn server_error(sim: &Sim, status: StatusCode) -> Response {
    if status == StatusCode::BAD_GATEWAY {
        let mut resp = Response::new(Body::from(
            "<html><head><title>502 Bad Gateway</title></head><body><center>\
<h1>502 Bad Gateway</h1></center></body></html>",
        ));
        *resp.status_mut() = status;
        resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/html"));
        return resp;
    }
    match sim.vendor {
        Vendor::CrowdStrike => crowdstrike::server_error(status),
        Vendor::Okta => okta::server_error(status),
        Vendor::MsGraph => msgraph::server_error(status),
        Vendor::Kit => kit::server_error(sim, status),
        Vendor::Tenable => tenable::server_error(status),
        Vendor::Qualys => qualys::server_error(status),
        Vendor::Aws => aws::server_error(sim, status),
    }
}

fn shutting_down(sim: &Sim) -> Response {
    server_error(sim, StatusCode::SERVICE_UNAVAILABLE)
}

fn rate_headers(sim: &Sim, headers: &mut HeaderMap, d: &Decision) {
    match sim.vendor {
        Vendor::CrowdStrike => crowdstrike::rate_headers(headers, d),
        Vendor::Okta => okta::rate_headers(sim, headers, d),
        Vendor::MsGraph | Vendor::Tenable | Vendor::Aws => {}
        Vendor::Kit => kit::rate_headers(sim, headers, d),
        Vendor::Qualys => qualys::rate_headers(sim, headers, d),
    }
}
