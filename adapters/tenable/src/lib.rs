//! corral adapter `tenable`: Tenable Vulnerability Management (assets,
//! installed software and vulnerability findings, by export jobs).
//!
//! ```toml
//! [[connection]]
//! name = "tenable"
//! adapter = "tenable"
//! [connection.config]
//! access_key = "${TENABLE_ACCESS_KEY}"
//! secret_key = "${TENABLE_SECRET_KEY}"
//! ```
//!
//! # What Tenable's API does (and what this adapter relies on)
//!
//! - **Auth**: every request carries `X-ApiKeys: accessKey=<a>;secretKey=<s>`
//!   (an API key pair of a user; no tokens). `GET /session` is a cheap check.
//! - **Asset export**: `POST /assets/export {"chunk_size": 100..=10000}`
//!   answers `{"export_uuid"}`; `GET /assets/export/{uuid}/status` says
//!   `QUEUED`, `PROCESSING`, `FINISHED`, `CANCELLED` or `ERROR` and lists
//!   `chunks_available`; `GET /assets/export/{uuid}/chunks/{n}` is a JSON
//!   array of assets. Nearly every identifier of an asset is an array
//!   (`hostnames`, `fqdns`, `ipv4s`, `ipv6s`, `mac_addresses`,
//!   `operating_systems`, `netbios_names`); `installed_software` lists CPE
//!   names. At most two asset exports run at once per container.
//! - **Vulnerability export**: `POST /vulns/export {"num_assets": 50..=5000,
//!   "filters": {"since", "state", "severity"}}`, the same status and chunk
//!   routes under `/vulns/export`, plus `POST .../{uuid}/cancel`. A chunk holds
//!   the findings of `num_assets` assets. Without a `state` filter only OPEN
//!   and REOPENED findings are exported: this adapter always asks for OPEN,
//!   REOPENED and FIXED, so a fixed finding is stored as fixed rather than
//!   silently left open. `since` (epoch seconds) keeps the findings that
//!   changed at or after it. The status carries `created` (epoch ms, the
//!   vendor's clock).
//! - **Chunks** become available while the job is still PROCESSING, out of
//!   order (`[2, 5, 6]`), and can be downloaded in any order; a chunk expires
//!   24 hours after it was produced (then 404).
//! - **409**: a new export while too many of its kind run, or one identical to
//!   a running export (a duplicate), is refused with 409.
//! - **429** carries `Retry-After` in seconds and an HTML body (not JSON).
//! - Large tenants export tens of millions of findings: chunks are the unit
//!   of memory.
//!
//! # Streams
//!
//! - `assets`: devices keyed by the asset uuid (asset export).
//! - `software`: one record per distinct CPE of each asset's
//!   `installed_software`, keyed `<asset uuid>|<CPE 2.3 name>`, referencing the
//!   device (same connection, kind device, source id the asset uuid). It runs
//!   its own asset export; when Tenable refuses it as a duplicate of the
//!   `assets` stream's running export (409), it waits for that one to finish.
//! - `vulnerabilities`: findings keyed by Tenable's `finding_id` (or asset
//!   uuid, plugin id, port and protocol when a finding has none), referencing
//!   the device of the asset they were found on.
//!
//! # Export jobs ([`export`])
//!
//! Each stream creates an export, polls its status (from `poll_interval_ms`,
//! doubled while nothing new appears, up to `max_poll_interval_ms`) and
//! downloads every listed chunk as soon as it appears, `chunk_concurrency` at
//! a time, while polling goes on; each chunk goes to the pipeline as one raw
//! page, undecoded (decoding happens on the normalize pool). At most
//! `chunk_concurrency` chunks per stream are downloaded or waiting for the
//! pipeline at once, so memory does not grow with the tenant. A 409 on create
//! is retried with backoff for up to `conflict_wait_secs`; 429s wait out
//! `Retry-After` (corral-http); a job that ends CANCELLED or ERROR fails its
//! stream with an error naming the job; a chunk that expired (404) restarts
//! the export once (the data of the first job is gone; what it delivered is
//! stored again, idempotently), a second expiry fails the stream. A failed
//! stream is never stale-handled, so a partial export marks nothing stale.
//! A fetch dropped mid-export (the run interrupted) cancels its job at
//! Tenable, so the next run's identical export is not refused as a duplicate.
//!
//! # Incremental vulnerabilities
//!
//! After a complete vulnerabilities export, the stream's checkpoint holds
//! `since`: the `created` time of that export as Tenable reported it (the
//! vendor's clock, never corral's), sent as a last, empty page, so the
//! engine saves it only once every chunk before it was stored. The next run
//! asks only for findings changed since then (every state, so fixes arrive)
//! and gets no stale handling (it did not see every finding). Every
//! `full_resync_every`-th run (and the first, and any run after a checkpoint
//! that cannot be read) exports everything and is stale-handled, which is how
//! findings of deleted assets go stale. Set it to 1 for full exports only.
//! The `assets` and `software` streams always export everything.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, AssetKind, AttrType, CheckOutcome, ConfigError, FetchContext,
    FetchError, NormalizedPage, RawPage, StreamInfo,
};
use corral_http::{Auth, HttpClient, HttpConfig, RateConfig, RetryConfig, Timeouts};
use serde_json::json;

pub mod config;
pub mod export;
pub mod normalize;

pub use config::{Settings, TenableConfig};

pub const ASSETS: &str = "assets";
pub const SOFTWARE: &str = "software";
pub const VULNERABILITIES: &str = "vulnerabilities";
/// The credentials check.
pub const SESSION_PATH: &str = "/session";

/// Builds `tenable` adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenableFactory;

/// Registers this adapter: what the `corral` binary's build script calls.
pub fn register(registry: &mut corral_core::Registry) {
    registry.register(TenableFactory);
}

pub fn assets_stream() -> StreamInfo {
    StreamInfo::new(ASSETS, AssetKind::Device, "id", "Assets of the asset export (POST /assets/export, chunks)")
        .fills("hostname", "first of `hostnames`, else the host label of `fqdns`, else `netbios_names`")
        .fills("domain", "the domain of the first FQDN")
        .fills("ip_addresses", "`ipv4s`, `ipv6s`")
        .fills("mac_addresses", "`mac_addresses`")
        .fills("serial_number", "`serial_number`, where given")
        .fills("os.family", "from the first of `operating_systems`")
        .fills("os.name", "the first of `operating_systems`")
        .fills("first_seen", "`first_seen`")
        .fills("last_seen", "`last_seen`")
        .fills("cloud_instance_id", "`aws_ec2_instance_id`, else `azure_vm_id`")
        .fills("tags", "`tags` as `key:value`")
        .attribute("agent_uuid", AttrType::String, "Nessus Agent uuid (`agent_uuid`).")
        .attribute("has_agent", AttrType::Boolean, "Whether a Nessus Agent reports the asset (`has_agent`).")
        .attribute("fqdns", AttrType::StringList, "Every FQDN (`fqdns`).")
        .attribute("netbios_names", AttrType::StringList, "NetBIOS names (`netbios_names`).")
        .attribute("system_types", AttrType::StringList, "`system_types` (general-purpose, workstation, ...).")
        .attribute("sources", AttrType::StringList, "What discovered the asset (`sources[].name`: NESSUS_AGENT, ...).")
        .attribute("azure_vm_id", AttrType::String, "`azure_vm_id`, for Azure VMs.")
        .attribute("updated_at", AttrType::Timestamp, "When Tenable last updated the asset (`updated_at`).")
        .attribute("terminated_at", AttrType::Timestamp, "When the (cloud) asset was terminated (`terminated_at`).")
}

pub fn software_stream() -> StreamInfo {
    StreamInfo::new(
        SOFTWARE,
        AssetKind::Software,
        "id|cpe",
        "Installed software of each exported asset (`installed_software` CPE names)",
    )
    .fills("device", "the asset's `id` (a device of the `assets` stream)")
    .fills("vendor", "the CPE's vendor (`fields::cpe`)")
    .fills("name", "the CPE's product")
    .fills("version", "the CPE's version")
    .fills("cpe", "the CPE as a CPE 2.3 formatted string")
    .fills("last_seen", "the asset's `last_seen`")
}

pub fn vulnerabilities_stream() -> StreamInfo {
    StreamInfo::new(
        VULNERABILITIES,
        AssetKind::Vulnerability,
        "finding_id",
        "Findings of the vulnerability export (POST /vulns/export; incremental with `since`)",
    )
    .fills("asset", "`asset.uuid` (a device of the `assets` stream)")
    .fills("cves", "`plugin.cve`")
    .fills("plugin_id", "`plugin.id`")
    .fills("title", "`plugin.name`")
    .fills("severity", "`severity_id` (0 info .. 4 critical), else `severity`")
    .fills("cvss3_score", "`plugin.cvss3_base_score`")
    .fills("vendor_score", "`plugin.vpr.score` (VPR)")
    .fills("state", "`state` (OPEN, REOPENED, FIXED)")
    .fills("first_found", "`first_found`")
    .fills("last_found", "`last_found`")
    .fills("port", "`port.port`")
    .fills("protocol", "`port.protocol`")
    .fills("solution", "`plugin.solution`")
    .attribute("plugin_family", AttrType::String, "The plugin's family (`plugin.family`).")
    .attribute("cvss2_base_score", AttrType::Float, "CVSS v2 base score (`plugin.cvss_base_score`).")
    .attribute("service", AttrType::String, "The service on the port (`port.service`).")
    .attribute("last_fixed", AttrType::Timestamp, "When the finding was last fixed (`last_fixed`).")
}

impl AdapterFactory for TenableFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "tenable".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Tenable Vulnerability Management: assets, installed software and vulnerability findings \
                          (export jobs)"
                .into(),
            streams: vec![assets_stream(), software_stream(), vulnerabilities_stream()],
            config: config::fields(),
            notes: AdapterNotes {
                auth: "An API key pair sent as `X-ApiKeys: accessKey=..;secretKey=..` on every request; \
                       `check` calls `GET /session`."
                    .into(),
                permissions: vec![
                    "A user (a dedicated service account is best) with at least the Basic role and Can View \
                     access to the assets to sync; exports return only what the user may see."
                        .into(),
                    "Exports count against the container's limits: at most two asset exports run at once, \
                     and Tenable refuses (409) an export identical to a running one."
                        .into(),
                ],
                rate_limits: "Tenable answers 429 with `Retry-After` (seconds; the body is an HTML page) when \
                              requests come too fast; corral waits as told, and paces at `requests_per_minute` \
                              when it is set. Exports are the expensive part: each stream runs one export job, \
                              polls its status with backoff (`poll_interval_ms` up to `max_poll_interval_ms`) \
                              and downloads `chunk_concurrency` chunks at a time as they appear. A 409 on \
                              create (too many exports running, or a duplicate) is retried with backoff for \
                              `conflict_wait_secs`. Chunks expire 24 hours after they were produced: an expired \
                              chunk restarts the export once. After a complete vulnerability export the next \
                              run asks only for findings changed since it started (`since`), with a full export \
                              every `full_resync_every` runs."
                    .into(),
            },
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(Tenable::from_config(connection, config)?))
    }
}

/// A configured `tenable` connection.
#[derive(Debug)]
pub struct Tenable {
    connection: String,
    settings: Settings,
    info: AdapterInfo,
    http: HttpClient,
}

impl Tenable {
    /// Parse and validate `config` and build the HTTP client. Sends nothing.
    pub fn from_config(connection: &str, config: serde_json::Value) -> Result<Self, ConfigError> {
        Self::new(connection, config::parse(config)?)
    }

    pub fn new(connection: &str, settings: Settings) -> Result<Self, ConfigError> {
        let mut rate = match settings.requests_per_minute {
            Some(rpm) => RateConfig::per_minute(rpm),
            None => RateConfig::unlimited(),
        };
        // Per stream: the status poll beside the chunk downloads.
        rate = rate.with_max_in_flight(3 * (settings.chunk_concurrency + 1));
        let http_config = HttpConfig::new(settings.base_url.clone())
            .with_connection(connection)
            .with_auth(Auth::tenable(&settings.access_key, &settings.secret_key))
            .with_rate(rate)
            .with_timeouts(Timeouts { total: settings.timeout, ..Timeouts::default() })
            .with_header("Accept", "application/json");
        let http =
            HttpClient::new(http_config, Arc::default()).map_err(|e| ConfigError::field("base_url", e.to_string()))?;
        Ok(Tenable { connection: connection.into(), settings, info: TenableFactory.info(), http })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

#[async_trait]
impl Adapter for Tenable {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// `GET /session` within [`corral_http::CHECK_TIMEOUT`].
    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    async fn check_within(&self, limit: Duration) -> CheckOutcome {
        match self.http.get(SESSION_PATH).retry(RetryConfig::within(limit)).send_bytes().await {
            Ok(r) => CheckOutcome::Ok {
                detail: format!("API keys accepted; {} answered HTTP {}", r.endpoint(), r.status.as_u16()),
            },
            Err(e) => {
                tracing::debug!(connection = %self.connection, error = %e, "tenable check failed");
                e.to_check_outcome()
            }
        }
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        let client = self.http.with_metrics(ctx.requests.clone()).with_stream(&ctx.stream.name);
        match ctx.stream.name.as_str() {
            ASSETS | SOFTWARE => {
                let body = json!({"chunk_size": self.settings.assets_chunk_size});
                export::run(&client, &self.settings, &ctx, export::ExportKind::Assets, body).await?;
                Ok(())
            }
            VULNERABILITIES => export::vulnerabilities(&client, &self.settings, &ctx).await,
            other => Err(FetchError::UnknownStream(other.to_string())),
        }
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        normalize::page(page, self.settings.keep_raw)
    }

    /// Per stream (three may run at once): the chunk downloads and the
    /// status poll beside them.
    fn max_open_files(&self) -> usize {
        3 * (self.settings.chunk_concurrency + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_declares_three_streams_without_problems() {
        let info = TenableFactory.info();
        assert_eq!(info.name, "tenable");
        assert!(info.problems().is_empty(), "{:?}", info.problems());
        let kinds: Vec<(String, AssetKind)> = info.streams.iter().map(|s| (s.name.clone(), s.kind)).collect();
        assert_eq!(
            kinds,
            [
                (ASSETS.to_string(), AssetKind::Device),
                (SOFTWARE.to_string(), AssetKind::Software),
                (VULNERABILITIES.to_string(), AssetKind::Vulnerability)
            ]
        );
        assert!(info.config.iter().filter(|f| f.secret).map(|f| f.name.as_str()).eq(["access_key", "secret_key"]));
        assert!(!info.notes.is_empty());
    }

    #[test]
    fn build_sends_nothing_and_debug_hides_the_keys() {
        let cfg = json!({"access_key": "ak-hunter2", "secret_key": "sk-hunter2"});
        let a = Tenable::from_config("t", cfg).expect("builds");
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(a.max_open_files(), 9);
    }
}
