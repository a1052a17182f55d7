//! corral adapter `crowdstrike`: CrowdStrike Falcon hosts.
//!
//! ```toml
//! [[connection]]
//! name = "falcon-eu"
//! adapter = "crowdstrike"
//! [connection.config]
//! base_url = "https://api.eu-1.crowdstrike.com"
//! client_id = "${CS_CLIENT_ID}"
//! client_secret = "${CS_CLIENT_SECRET}"
//! ```
//!
//! One stream, `hosts` (devices keyed by `device_id`), fetched in two steps:
//! 1. host ids from `GET /devices/queries/devices-scroll/v1` (the scroll
//!    endpoint: offset paging stops at 10,000 hosts), following the opaque
//!    `meta.pagination.offset` of each page;
//! 2. host details from `POST /devices/entities/devices/v2 {"ids":[..]}` in
//!    batches of up to 5,000 ids, several calls at once.
//!
//! The steps overlap (see [`fetch`]). Details answers go to the pipeline
//! undecoded; [`Adapter::normalize`] maps each host with the shared field
//! normalizers. Authentication is OAuth2 client credentials at
//! `/oauth2/token` (token cached, refreshed before expiry and once on a 401);
//! token requests are paced under the token endpoint's own 300/min.
//!
//! Rate limit, as the vendor runs it: 6,000 requests per minute per customer,
//! over a sliding minute, shared by every API client of the tenant (other
//! integrations spend the same budget). Every answer carries
//! `X-Ratelimit-Limit` and `X-Ratelimit-Remaining`, never when the window
//! frees; a refused request (429) carries `X-Ratelimit-Retryafter`, an epoch
//! instant in seconds. The client paces at 95 % of `requests_per_minute`,
//! learns a smaller limit or shorter window from those headers without a 429
//! (corral-http's sliding-window model), keeps room for what other clients
//! are seen to spend and, when they spent it all, waits for the window to
//! free (a warning says so; the wait is counted as limiter wait).
//!
//! `check` asks for a token and one id within `corral check --timeout` (15 s
//! by default), retrying 5xx, timeouts and connect errors meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, AssetKind, AttrType, CheckOutcome, ConfigError, FetchContext,
    FetchError, NormalizedPage, RawPage, StreamInfo,
};
use corral_http::{Auth, HttpClient, HttpConfig, OAuth2Config, Quota, RateConfig, RetryConfig, Timeouts};

pub mod config;
mod fetch;
pub mod normalize;

pub use config::{CrowdStrikeConfig, Settings};

/// The only stream.
pub const HOSTS: &str = "hosts";
/// Fraction of `requests_per_minute` the client paces at, so network jitter
/// never pushes a request over the vendor's sliding window.
const RATE_HEADROOM: f64 = 0.95;
/// The token endpoint's own limit: 300 requests per minute per IP.
pub const TOKEN_REQUESTS_PER_MINUTE: u32 = 300;

/// Builds `crowdstrike` adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrowdStrikeFactory;

/// The `hosts` stream: what it fills and the attributes it declares.
pub fn hosts_stream() -> StreamInfo {
    StreamInfo::new(
        HOSTS,
        AssetKind::Device,
        "device_id",
        "Falcon sensor hosts (GET devices-scroll ids, POST entities details)",
    )
    .fills("hostname", "`hostname` (`fields::hostname_with_domain`)")
    .fills("domain", "`machine_domain`, or the FQDN's domain")
    .fills("ip_addresses", "`local_ip`, `external_ip`")
    .fills("mac_addresses", "`mac_address`")
    .fills("serial_number", "`serial_number`")
    .fills("os.family", "from `platform_name` and `os_version`")
    .fills("os.name", "`platform_name`")
    .fills("os.version", "`os_version`")
    .fills("manufacturer", "`system_manufacturer`")
    .fills("model", "`system_product_name` (firmware defaults dropped)")
    .fills("first_seen", "`first_seen`")
    .fills("last_seen", "`last_seen`")
    .fills("owner", "`last_login_user`")
    .fills("cloud_instance_id", "`instance_id` (cloud hosts)")
    .fills("tags", "`tags`")
    .attribute("agent_version", AttrType::String, "Falcon sensor version (`agent_version`).")
    .attribute("status", AttrType::String, "Containment status (`status`: normal, contained, ...).")
    .attribute("cid", AttrType::String, "The customer id (tenant) the host reports to (`cid`), lowercase.")
    .attribute("platform", AttrType::String, "`platform_name` as sent (Windows, Mac, Linux).")
    .attribute("product_type", AttrType::String, "`product_type_desc` (Workstation, Server, Domain Controller).")
    .attribute("groups", AttrType::StringList, "Host group ids (`groups`).")
}

/// Registers this adapter: what the `corral` binary's build script calls for
/// every adapter crate it includes.
pub fn register(registry: &mut corral_core::Registry) {
    registry.register(CrowdStrikeFactory);
}

impl AdapterFactory for CrowdStrikeFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "crowdstrike".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "CrowdStrike Falcon hosts (devices with a Falcon sensor)".into(),
            streams: vec![hosts_stream()],
            config: config::fields(),
            notes: AdapterNotes {
                auth: "OAuth2 client credentials at `/oauth2/token` of the tenant's cloud; the token (30 \
                       minutes) is cached, renewed before it expires and once after a 401."
                    .into(),
                permissions: vec!["An API client with the scope Hosts: Read.".into()],
                rate_limits: "6,000 requests per minute per customer over a sliding minute, shared by every \
                              API client of the tenant; answers carry `X-Ratelimit-Limit` and \
                              `X-Ratelimit-Remaining`, a 429 carries `X-Ratelimit-Retryafter` (an epoch \
                              second). The token endpoint has its own 300 per minute. corral paces at 95 % of \
                              `requests_per_minute` and leaves room for what other clients spend."
                    .into(),
            },
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(CrowdStrike::from_config(connection, config)?))
    }
}

/// A configured `crowdstrike` connection.
#[derive(Debug)]
pub struct CrowdStrike {
    connection: String,
    settings: Settings,
    info: AdapterInfo,
    http: HttpClient,
    /// Id batches that went through the temporary file, over every fetch.
    spilled_batches: AtomicUsize,
}

impl CrowdStrike {
    /// Parse and validate `config` and build the HTTP client. Sends nothing.
    pub fn from_config(connection: &str, config: serde_json::Value) -> Result<Self, ConfigError> {
        Self::new(connection, config::parse(config)?)
    }

    pub fn new(connection: &str, settings: Settings) -> Result<Self, ConfigError> {
        let token_period = Duration::from_secs_f64(60.0 / (f64::from(TOKEN_REQUESTS_PER_MINUTE) * RATE_HEADROOM));
        let mut oauth =
            OAuth2Config::new(fetch::TOKEN_PATH, settings.client_id.clone(), settings.client_secret.clone());
        if let Some(q) = Quota::with_period(token_period) {
            oauth = oauth.token_quota(q);
        }
        let rps = f64::from(settings.requests_per_minute) * RATE_HEADROOM / 60.0;
        let mut rate = RateConfig::from_rps(rps).with_max_in_flight(settings.details_concurrency + 1);
        rate.default_window = settings.rate_window;
        let http_config = HttpConfig::new(settings.base_url.clone())
            .with_connection(connection)
            .with_auth(Auth::OAuth2ClientCredentials(oauth))
            .with_rate(rate)
            .with_timeouts(Timeouts { total: settings.timeout, ..Timeouts::default() })
            .with_header("Accept", "application/json");
        let http =
            HttpClient::new(http_config, Arc::default()).map_err(|e| ConfigError::field("base_url", e.to_string()))?;
        Ok(CrowdStrike {
            connection: connection.into(),
            settings,
            info: CrowdStrikeFactory.info(),
            http,
            spilled_batches: AtomicUsize::new(0),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Id batches that did not fit in `ids_in_memory` and waited in the
    /// temporary file, over every fetch of this adapter so far.
    pub fn spilled_batches(&self) -> usize {
        self.spilled_batches.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Adapter for CrowdStrike {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// A token, then one id from the offset query (with the configured filter,
    /// so a bad FQL shows up here too), within [`corral_http::CHECK_TIMEOUT`].
    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    /// [`Adapter::check`] within `limit`: transient failures of the token
    /// endpoint and of the query are retried while time is left.
    async fn check_within(&self, limit: Duration) -> CheckOutcome {
        let mut query: Vec<(&str, &str)> = vec![("limit", "1")];
        if let Some(f) = &self.settings.filter {
            query.push(("filter", f));
        }
        let result =
            self.http.get(fetch::QUERY_PATH).query(&query).retry(RetryConfig::within(limit)).send_bytes().await;
        match result {
            Ok(r) => {
                let total =
                    corral_http::extract_json_string_offloaded(r.body.clone(), &["meta", "pagination", "total"]).await;
                let hosts = total.map(|t| format!("; {t} host(s) visible")).unwrap_or_default();
                CheckOutcome::Ok {
                    detail: format!("token accepted; {} answered HTTP {}{hosts}", r.endpoint(), r.status.as_u16()),
                }
            }
            Err(e) => {
                tracing::debug!(connection = %self.connection, error = %e, "crowdstrike check failed");
                e.to_check_outcome()
            }
        }
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        if ctx.stream.name != HOSTS {
            return Err(FetchError::UnknownStream(ctx.stream.name.clone()));
        }
        let client = self.http.with_metrics(ctx.requests.clone()).with_stream(&ctx.stream.name);
        let stats = fetch::hosts(&client, &self.settings, &ctx).await?;
        self.spilled_batches.fetch_add(stats.spilled_batches, Ordering::Relaxed);
        Ok(())
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        normalize::page(page, self.settings.keep_raw)
    }

    /// The details calls in flight, the scroll (ids) call beside them, and
    /// the token endpoint; the spill file of listed ids is anonymous and
    /// opened only when the ids outrun the details, so it is counted with them
    /// (the scroll's connection is idle while it is written); and one more
    /// while a finished call's connection returns to the pool
    /// ([`Adapter::max_open_files`]).
    fn max_open_files(&self) -> usize {
        self.settings.details_concurrency + 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_declares_the_hosts_stream_and_every_field() {
        let info = CrowdStrikeFactory.info();
        assert_eq!(info.name, "crowdstrike");
        let s = info.stream(HOSTS).expect("hosts stream");
        assert_eq!(s.kind, AssetKind::Device);
        assert_eq!(s.key, "device_id");
        let names: Vec<&str> = info.config.iter().map(|f| f.name.as_str()).collect();
        for f in [
            "base_url",
            "client_id",
            "client_secret",
            "filter",
            "ids_page_size",
            "details_batch",
            "details_concurrency",
            "requests_per_minute",
            "rate_window_secs",
            "keep_raw",
        ] {
            assert!(names.contains(&f), "{f} not documented");
        }
        assert!(info.config.iter().any(|f| f.name == "client_secret" && f.secret));
    }

    #[test]
    fn open_files_are_the_details_calls_the_ids_call_the_token_endpoint_and_one_returning() {
        let build = |extra: serde_json::Value| {
            let mut cfg = serde_json::json!({"client_id": "cid", "client_secret": "hunter2-secret"});
            if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            CrowdStrike::from_config("c", cfg).expect("builds").max_open_files()
        };
        assert_eq!(build(serde_json::json!({})), 4 + 1 + 1 + 1);
        assert_eq!(build(serde_json::json!({"details_concurrency": 16})), 16 + 1 + 1 + 1);
        assert_eq!(build(serde_json::json!({"details_concurrency": 1})), 4);
    }

    #[test]
    fn build_validates_without_network_and_hides_the_secret() {
        let cfg = serde_json::json!({"client_id": "cid", "client_secret": "hunter2-secret"});
        let a = CrowdStrike::from_config("c", cfg).expect("builds");
        assert!(!format!("{a:?}").contains("hunter2"));
        let bad = serde_json::json!({"client_id": "cid", "client_secret": "hunter2-secret", "base_url": "ftp://x"});
        let e = CrowdStrikeFactory.build("c", bad).err().expect("bad url");
        assert!(e.to_string().contains("`base_url`"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }
}
