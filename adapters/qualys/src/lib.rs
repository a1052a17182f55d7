//! corral adapter `qualys`: Qualys VMDR hosts and their vulnerability
//! detections, from the Host List and Host List Detection APIs (XML).
//!
//! ```toml
//! [[connection]]
//! name = "qualys"
//! adapter = "qualys"
//! [connection.config]
//! base_url = "https://qualysapi.qualys.eu"
//! username = "corral_api"
//! password = "${QUALYS_PASSWORD}"
//! ```
//!
//! # What Qualys's API does (and what this adapter relies on)
//!
//! - **Auth**: HTTP Basic with a Qualys user's login and password on every
//!   call, and an `X-Requested-With` header (any value) that Qualys requires
//!   of every API v2 call. There are no tokens or sessions to manage.
//! - **Host List Detection** (`/api/2.0/fo/asset/host/vm/detection/`,
//!   `action=list`, GET with query parameters or POST with the same as a form
//!   body): XML `HOST_LIST_VM_DETECTION_OUTPUT/RESPONSE/HOST_LIST/HOST`, each
//!   host with `ID`, `IP`, `TRACKING_METHOD`, `OS`, `DNS`, `NETBIOS`,
//!   `LAST_SCAN_DATETIME` and a `DETECTION_LIST` of `DETECTION`s (`QID`,
//!   `TYPE` Confirmed/Potential/Info, `SEVERITY` 1..5, `PORT`, `PROTOCOL`,
//!   `STATUS` New/Active/Fixed/Re-Opened, `FIRST_FOUND_DATETIME`,
//!   `LAST_FOUND_DATETIME`, `RESULTS` unless `show_results=0`). Only hosts
//!   that have a detection are listed. Text comes in CDATA sections, so a
//!   result may contain anything, markup included.
//! - **Host List** (`/api/2.0/fo/asset/host/`, `action=list`): XML
//!   `HOST_LIST_OUTPUT` with every host, detections or not.
//! - **Truncation**: an answer holds at most `truncation_limit` hosts (1000
//!   by default). When more remain it ends with `WARNING` code 1980 whose
//!   `URL` repeats the request with `id_min` set to the next host ID; hosts
//!   are listed in ascending ID, so `id_min` is also a resume position.
//! - **Limits**: every answer carries `X-RateLimit-Limit`,
//!   `X-RateLimit-Window-Sec`, `X-RateLimit-Remaining`,
//!   `X-RateLimit-ToWait-Sec`, `X-Concurrency-Limit-Limit` and
//!   `X-Concurrency-Limit-Running`. Over the rate limit Qualys answers
//!   **409** (not 429) with code 1965 and the seconds to wait in
//!   `X-RateLimit-ToWait-Sec`; over the concurrency limit, 409 with code 1960.
//!   A bad login is a 401.
//! - **Size**: a detection answer of 1000 hosts with results can be hundreds
//!   of megabytes.
//!
//! # Streams
//!
//! - `hosts`: devices keyed by the Qualys host ID, from the Host List API.
//! - `detections`: vulnerability records keyed `<host ID>|<QID>` (plus
//!   `|<port>/<protocol>` when the detection names either, as Qualys reports
//!   a QID once per port), each referencing its host's device (same
//!   connection, kind device, source id the host ID).
//!
//! **Two listings, not one pass.** The detection listing does carry each
//! host's identity with its detections, but only for hosts that have a
//! detection: a host scanned clean, or only just added, would be missing from
//! a `hosts` stream built from it, and would go stale when its last detection
//! was fixed and purged. The Host List API lists every host and is cheap (no
//! detections), so `hosts` reads it and `detections` reads the detection
//! listing; each stream is complete on its own, so the engine's per-stream
//! stale handling stays exact. Both run at once and share the subscription's
//! concurrency limit (see below).
//!
//! # Memory: an answer is in memory once
//!
//! Fetch never decodes XML. Each answer is read whole by corral-http (so a
//! connection cut mid-body is retried like any transient failure), then, on
//! the blocking pool, a byte-level scan ([`frame`]) finds where each `<HOST>`
//! element ends (skipping CDATA and comments, so markup inside RESULTS never
//! cuts a host) and reads the small tail after `</HOST_LIST>` for the
//! WARNING. The answer goes to the pipeline as pages of `hosts_per_page`
//! whole hosts that are **slices of the answer's buffer** ([`bytes::Bytes`]),
//! not copies: a 100 MB answer occupies 100 MB until its last page is
//! normalized, never twice, and no document tree of it is ever built. On the
//! normalize pool ([`normalize`]) each host is read with quick-xml's
//! streaming reader, one host at a time, borrowing from the page. The next
//! answer is requested once the pipeline accepted every page of this one.
//! A page keeps its whole answer's buffer alive until it is normalized, so a
//! stream holds the answer being read plus the answers that still have pages
//! in the engine's bounded channels: about `pages in flight / pages per
//! answer + 1` answers (with the defaults, ten pages an answer, one or two),
//! each at most `truncation_limit` hosts. (corral-http reads a body of
//! unknown length into a growing buffer; while it grows, the allocator may
//! briefly hold the old and the new buffer: lower `truncation_limit` when
//! answers are very large.)
//!
//! An answer that ends before its document does (its root element never
//! closes) is asked for again, up to three times, then fails the stream;
//! nothing of it is sent before it is known whole.
//!
//! # Truncation, checkpoints
//!
//! The WARNING URL is followed as sent, on the base URL's origin only, never
//! twice ([`corral_http::NextLinks`]). The last page of each answer carries
//! the checkpoint `{"id_min": N}` of the next one: an interrupted run resumes
//! there (and, having resumed, is not stale-handled); a completed stream
//! clears it.
//!
//! # Rate and concurrency limits
//!
//! Both streams share one HTTP client and one concurrency gate
//! ([`fetch::Gate`]): one call at a time until the first answer announces the
//! subscription's limit (`X-Concurrency-Limit-Limit`), then the lower of that
//! and `concurrency` (default 2, the limit of most subscriptions), followed
//! as later answers announce it. So the adapter stays under the limit rather
//! than learning it from 409s (code 1960).
//! corral-http paces from `X-RateLimit-Limit` / `X-RateLimit-Remaining` over
//! the window `rate_window_secs` (Qualys's `X-RateLimit-Window-Sec`), and a
//! 409 carrying `X-RateLimit-ToWait-Sec` is waited out as announced, then
//! retried; `requests_per_hour` adds a fixed pace.
//!
//! # Malformed XML
//!
//! A host whose XML is broken is a reject naming the stream, the answer, the
//! host's position and its ID where readable (the engine adds the
//! connection); the page's other hosts are stored and the run goes on
//! (partial). See [`normalize`] for when the page is also marked failed so
//! the stream is not stale-handled.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, AssetKind, AttrType, CheckOutcome, ConfigError, FetchContext,
    FetchError, NormalizedPage, RawPage, StreamInfo,
};
use corral_http::{Auth, HttpClient, HttpConfig, RateConfig, RetryConfig, Timeouts};

pub mod config;
pub mod fetch;
pub mod frame;
pub mod normalize;

pub use config::{QualysConfig, Settings};
pub use fetch::Api;

pub const HOSTS: &str = "hosts";
pub const DETECTIONS: &str = "detections";
pub const DETECTION_PATH: &str = "/api/2.0/fo/asset/host/vm/detection/";
pub const HOST_PATH: &str = "/api/2.0/fo/asset/host/";

/// Builds `qualys` adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct QualysFactory;

/// Registers this adapter: what the `corral` binary's build script calls.
pub fn register(registry: &mut corral_core::Registry) {
    registry.register(QualysFactory);
}

pub fn hosts_stream() -> StreamInfo {
    StreamInfo::new(HOSTS, AssetKind::Device, "ID", "Every host of the Host List API (GET /api/2.0/fo/asset/host/)")
        .fills("hostname", "`DNS_DATA/HOSTNAME`, else the host label of `DNS`, else `NETBIOS`")
        .fills("domain", "`DNS_DATA/DOMAIN`, else the domain of `DNS`")
        .fills("ip_addresses", "`IP`, `IPV6`")
        .fills("os.family", "from `OS`")
        .fills("os.name", "`OS`")
        .fills("last_seen", "`LAST_VULN_SCAN_DATETIME` (else `LAST_SCAN_DATETIME`, `LAST_VM_SCANNED_DATE`)")
        .attribute(
            "asset_id",
            AttrType::Integer,
            "The asset id of the host (`ASSET_ID`, asked with `show_asset_id=1`).",
        )
        .attribute(
            "tracking_method",
            AttrType::String,
            "How Qualys tracks the host (`TRACKING_METHOD`: IP, DNS, NETBIOS, QAGENT, ...).",
        )
        .attribute("dns", AttrType::String, "The DNS name as Qualys reports it (`DNS`).")
        .attribute("netbios", AttrType::String, "The NetBIOS name (`NETBIOS`).")
        .attribute("qg_hostid", AttrType::String, "The Qualys agent's host id (`QG_HOSTID`), for agent-tracked hosts.")
        .attribute(
            "last_vm_scanned",
            AttrType::Timestamp,
            "Last VM scan of the host (`LAST_VM_SCANNED_DATE`, else `LAST_SCAN_DATETIME`).",
        )
        .attribute("last_activity", AttrType::Timestamp, "Last agent activity (`LAST_ACTIVITY`).")
}

pub fn detections_stream() -> StreamInfo {
    StreamInfo::new(
        DETECTIONS,
        AssetKind::Vulnerability,
        "ID|QID[|PORT/PROTOCOL]",
        "Detections of the Host List Detection API (GET /api/2.0/fo/asset/host/vm/detection/)",
    )
    .fills("asset", "the host's `ID` (a device of the `hosts` stream)")
    .fills("plugin_id", "`QID`")
    .fills("severity", "`SEVERITY` (1 info .. 5 critical)")
    .fills("state", "`STATUS` (New and Active: open; Fixed; Re-Opened)")
    .fills("first_found", "`FIRST_FOUND_DATETIME`")
    .fills("last_found", "`LAST_FOUND_DATETIME`")
    .fills("port", "`PORT`")
    .fills("protocol", "`PROTOCOL`")
    .attribute("detection_type", AttrType::String, "`TYPE`: Confirmed, Potential or Info.")
    .attribute("status", AttrType::String, "`STATUS` as Qualys says it (New, Active, Fixed, Re-Opened).")
    .attribute("unique_vuln_id", AttrType::String, "Qualys's id of the detection (`UNIQUE_VULN_ID`), where sent.")
    .attribute("ssl", AttrType::Boolean, "Detected over SSL/TLS (`SSL`).")
    .attribute("times_found", AttrType::Integer, "Scans that found it (`TIMES_FOUND`).")
    .attribute("last_fixed", AttrType::Timestamp, "When it was last fixed (`LAST_FIXED_DATETIME`).")
    .attribute("is_disabled", AttrType::Boolean, "The QID is disabled in the subscription (`IS_DISABLED`).")
    .attribute("results", AttrType::String, "Scan `RESULTS`, cut to `results_max_chars` (only with `show_results`).")
    .attribute("results_truncated", AttrType::Boolean, "Whether `results` was cut.")
}

impl AdapterFactory for QualysFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "qualys".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Qualys VMDR: hosts and their vulnerability detections (Host List and Host List \
                          Detection APIs, XML)"
                .into(),
            streams: vec![hosts_stream(), detections_stream()],
            config: config::fields(),
            notes: AdapterNotes {
                auth: "HTTP Basic (username and password of a Qualys user) and the `X-Requested-With` header \
                       Qualys requires on every call; `check` lists one host \
                       (`GET /api/2.0/fo/asset/host/?action=list&truncation_limit=1`)."
                    .into(),
                permissions: vec![
                    "A user with API access (a Reader is enough) whose scope covers the asset groups to sync; \
                     the APIs return only the hosts the user may see."
                        .into(),
                    "Qualys accounts without activity are locked, and passwords expire: a dedicated API user \
                     with a non-expiring password is best."
                        .into(),
                ],
                rate_limits: "Qualys limits API calls per user per window (`X-RateLimit-Limit` per \
                              `X-RateLimit-Window-Sec`) and the calls running at once (`X-Concurrency-Limit-Limit`, \
                              2 on most subscriptions). corral makes one call at a time until Qualys's first answer \
                              announces its concurrency limit, then keeps to the lower of that and `concurrency` \
                              across both streams, paces from \
                              `X-RateLimit-Remaining`, and waits out a 409 for `X-RateLimit-ToWait-Sec` seconds \
                              before retrying. Listings are truncated at `truncation_limit` hosts per call and \
                              continued through the WARNING URL (`id_min`)."
                    .into(),
            },
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(Qualys::from_config(connection, config)?))
    }
}

/// A configured `qualys` connection.
#[derive(Debug)]
pub struct Qualys {
    connection: String,
    settings: Settings,
    info: AdapterInfo,
    http: HttpClient,
    gate: Arc<fetch::Gate>,
}

impl Qualys {
    /// Parse and validate `config` and build the HTTP client. Sends nothing.
    pub fn from_config(connection: &str, config: serde_json::Value) -> Result<Self, ConfigError> {
        Self::new(connection, config::parse(config)?)
    }

    pub fn new(connection: &str, settings: Settings) -> Result<Self, ConfigError> {
        let mut rate = match settings.requests_per_hour {
            Some(n) => RateConfig::every(n, Duration::from_secs(3600)),
            None => RateConfig::unlimited(),
        };
        rate = rate.with_max_in_flight(settings.concurrency);
        rate.default_window = settings.rate_window;
        let http_config = HttpConfig::new(settings.base_url.clone())
            .with_connection(connection)
            .with_auth(Auth::Basic { user: settings.username.clone(), password: settings.password.clone() })
            .with_rate(rate)
            .with_timeouts(Timeouts { total: settings.timeout, ..Timeouts::default() })
            .with_header("X-Requested-With", "corral")
            .with_header("Accept", "text/xml");
        let http =
            HttpClient::new(http_config, Arc::default()).map_err(|e| ConfigError::field("base_url", e.to_string()))?;
        let gate = Arc::new(fetch::Gate::new(settings.concurrency));
        Ok(Qualys { connection: connection.into(), settings, info: QualysFactory.info(), http, gate })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The concurrency limit followed now (lowered by the vendor's headers).
    pub fn concurrency_now(&self) -> usize {
        self.gate.capacity()
    }
}

#[async_trait]
impl Adapter for Qualys {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// One host of the host list within [`corral_http::CHECK_TIMEOUT`].
    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    async fn check_within(&self, limit: Duration) -> CheckOutcome {
        let path = format!("{HOST_PATH}?action=list&truncation_limit=1");
        let _slot = self.gate.acquire().await;
        match self.http.get(&path).retry(RetryConfig::within(limit)).send_bytes().await {
            Ok(r) => {
                if let Some(n) = r.header("x-concurrency-limit-limit").and_then(|v| v.trim().parse::<usize>().ok()) {
                    self.gate.learn(n);
                }
                CheckOutcome::Ok {
                    detail: format!("credentials accepted; {} answered HTTP {}", r.endpoint(), r.status.as_u16()),
                }
            }
            Err(e) => {
                tracing::debug!(connection = %self.connection, error = %e, "qualys check failed");
                e.to_check_outcome()
            }
        }
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        let client = self.http.with_metrics(ctx.requests.clone()).with_stream(&ctx.stream.name);
        let api = match ctx.stream.name.as_str() {
            HOSTS => Api::Hosts,
            DETECTIONS => Api::Detections,
            other => return Err(FetchError::UnknownStream(other.to_string())),
        };
        fetch::listing(&client, &self.settings, &self.gate, &ctx, api).await
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        let max = if self.settings.show_results { self.settings.results_max_chars } else { 0 };
        normalize::page(page, normalize::Options { results_max_chars: max })
    }

    /// The calls in flight (both streams share them) and one being replaced.
    fn max_open_files(&self) -> usize {
        self.settings.concurrency + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_declares_two_streams_without_problems() {
        let info = QualysFactory.info();
        assert_eq!(info.name, "qualys");
        assert!(info.problems().is_empty(), "{:?}", info.problems());
        let kinds: Vec<(String, AssetKind)> = info.streams.iter().map(|s| (s.name.clone(), s.kind)).collect();
        assert_eq!(kinds, [(HOSTS.to_string(), AssetKind::Device), (DETECTIONS.to_string(), AssetKind::Vulnerability)]);
        assert!(info.config.iter().filter(|f| f.secret).map(|f| f.name.as_str()).eq(["password"]));
        assert!(!info.notes.is_empty());
    }

    #[test]
    fn build_sends_nothing_and_debug_hides_the_password() {
        let cfg = json!({"username": "corral_api", "password": "pw-hunter2"});
        let a = Qualys::from_config("q", cfg).expect("builds");
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(a.max_open_files(), 3);
    }
}
