//! End to end: a small SentinelOne-like adapter (`Authorization: ApiToken <t>`,
//! agents in `data`, the cursor in `pagination.nextCursor` sent back as
//! `?cursor=`, walked with `corral_http::BodyCursor`) passes the conformance
//! suite against a kit simulator described in a few lines.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AssetKind, CheckOutcome, ConfigError, ConfigField, Device, FetchContext,
    FetchError, FieldType, NormalizedPage, RawPage, Reject, StreamInfo, fields,
};
use corral_http::{Auth, BodyCursor, CursorPage, HttpClient, HttpConfig, RateConfig, Timeouts, Url};
use corral_sim::kit::{self, KitAuth, KitSpec, Pagination};
use corral_sim::{Faults, SimConfig};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Env, SetupError, Vendor};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

const AGENTS: &str = "agents";
const AGENTS_PATH: &str = "/web/api/v2.1/agents";

// ---- the adapter ----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct S1Config {
    base_url: String,
    api_token: SecretString,
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
}

fn default_page_size() -> u32 {
    100
}
fn default_timeout() -> u64 {
    300
}

struct S1Factory;

impl AdapterFactory for S1Factory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "s1-like".into(),
            version: "0.0.0".into(),
            description: "SentinelOne-like agents (test adapter)".into(),
            streams: vec![
                StreamInfo::new(AGENTS, AssetKind::Device, "id", "Agents")
                    .fills("hostname", "`hostname`")
                    .fills("serial_number", "`serial_number`")
                    .fills("mac_addresses", "`mac_address`")
                    .fills("ip_addresses", "`ip_address`")
                    .fills("os.family", "from `os`")
                    .fills("os.name", "`os`")
                    .fills("last_seen", "`last_seen`"),
            ],
            config: vec![
                ConfigField::required("base_url", FieldType::Url, "The console URL"),
                ConfigField::required("api_token", FieldType::String, "An API token").secret(),
                ConfigField::optional("page_size", FieldType::Integer, "Agents per page (1..=1000)"),
                ConfigField::optional("timeout_secs", FieldType::Integer, "Whole-request timeout"),
            ],
            notes: Default::default(),
        }
    }

    fn build(&self, connection: &str, config: Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        let cfg: S1Config = corral_core::parse_config(config)?;
        let base = Url::parse(&cfg.base_url).map_err(|_| ConfigError::field("base_url", "is not a URL"))?;
        if !(1..=1000).contains(&cfg.page_size) {
            return Err(ConfigError::field("page_size", "must be 1..=1000"));
        }
        if !(1..=3600).contains(&cfg.timeout_secs) {
            return Err(ConfigError::field("timeout_secs", "must be 1..=3600"));
        }
        let http = HttpConfig::new(base.as_str())
            .with_connection(connection)
            .with_auth(Auth::sentinelone(&cfg.api_token))
            .with_rate(RateConfig::unlimited().with_max_in_flight(1).with_header_adaptation(true))
            .with_timeouts(Timeouts { total: Duration::from_secs(cfg.timeout_secs), ..Timeouts::default() });
        let http = HttpClient::new(http, Arc::default())
            .map_err(|_| ConfigError::field("api_token", "contains characters not allowed in an HTTP header"))?;
        Ok(Arc::new(S1 { info: self.info(), http, page_size: cfg.page_size }))
    }
}

struct S1 {
    info: AdapterInfo,
    http: HttpClient,
    page_size: u32,
}

#[async_trait]
impl Adapter for S1 {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    async fn check_within(&self, limit: Duration) -> CheckOutcome {
        self.http.check_within(&format!("{AGENTS_PATH}?limit=1"), limit).await
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        if ctx.stream.name != AGENTS {
            return Err(FetchError::UnknownStream(ctx.stream.name));
        }
        let client = self.http.with_metrics(ctx.requests.clone()).with_stream(AGENTS);
        let mut pages = BodyCursor::param(client.base_url(), &["pagination", "nextCursor"], "cursor");
        let mut url = Some(format!("{AGENTS_PATH}?limit={}", self.page_size));
        let mut page = 0;
        while let Some(u) = url.take() {
            page += 1;
            match pages.get(&client, &u).await? {
                CursorPage::Page { resp, next } => {
                    let locator = format!("page {page} ({})", resp.endpoint());
                    ctx.sink.send(RawPage::new(AGENTS, resp.body, locator)).await?;
                    url = next;
                }
                CursorPage::Unreadable { resp, attempts } => {
                    let endpoint = resp.endpoint();
                    ctx.sink.send(RawPage::new(AGENTS, resp.body, format!("page {page} ({endpoint})"))).await?;
                    return Err(FetchError::Protocol {
                        endpoint,
                        detail: format!("page {page} is not valid JSON after {attempts} attempts and has no cursor"),
                    });
                }
            }
        }
        Ok(())
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        let body: Value = match serde_json::from_slice(&page.body) {
            Ok(v) => v,
            Err(e) => return NormalizedPage::page_failed(format!("not valid JSON: {e}")),
        };
        let Some(records) = body.get("data").and_then(Value::as_array) else {
            return NormalizedPage::page_failed("no `data` array");
        };
        let mut out = NormalizedPage::default();
        for (i, r) in records.iter().enumerate() {
            let text = |k: &str| r.get(k).and_then(Value::as_str);
            let Some(id) = text("id").and_then(fields::text) else {
                out.rejects.push(Reject::new(format!("record {i} of {}", page.locator), "missing_key", "no id"));
                continue;
            };
            let host = fields::hostname(text("hostname").unwrap_or(""));
            out.assets.push(corral_core::Asset::device(
                &page.stream,
                Device {
                    source_id: id,
                    hostname: host.hostname,
                    domain: host.domain,
                    serial_number: text("serial_number").and_then(fields::serial),
                    mac_addresses: fields::macs(text("mac_address")),
                    ip_addresses: fields::ips(text("ip_address")),
                    os: fields::os(text("os"), None),
                    last_seen: text("last_seen").and_then(fields::timestamp),
                    ..Default::default()
                },
            ));
        }
        out
    }

    fn max_open_files(&self) -> usize {
        2
    }
}

// ---- the simulator: a few lines of kit spec --------------------------------

const SEED: u64 = 31;
const SIZE: usize = 120;

fn spec() -> KitSpec {
    KitSpec::new(AGENTS_PATH, kit::devices(SEED))
        .auth(KitAuth::header("Authorization", "ApiToken "))
        .records_at(&["data"])
        .pagination(Pagination::body_cursor(&["pagination", "nextCursor"], "cursor"))
        .total_at(&["pagination", "totalItems"])
        .page_size(10, 1000)
}

async fn start(sim: SimConfig) -> Result<SimEnv, SetupError> {
    SimEnv::start_kit(AGENTS, spec(), sim, |h| {
        json!({"base_url": h.base_url, "api_token": h.config.credentials.token, "page_size": 10, "timeout_secs": 1})
    })
    .await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

/// `cut_bad_page`: the bad page holds no readable cursor either, so the
/// walk cannot go on past it.
struct S1Like {
    cut_bad_page: bool,
}

#[async_trait]
impl Vendor for S1Like {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(S1Factory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base()).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        // Page 2 comes with a second, cut document after it (`Faults::malformed_pages`
        // variant 2): not JSON, but its cursor still reads, so the walk goes on.
        if self.cut_bad_page {
            // Page 3 is a proxy's HTML error page served with 200: no cursor to read.
            return Ok(start(base().malformed_pages([3])).await?.boxed());
        }
        Ok(start(base().malformed_pages([2])).await?.boxed())
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().error_rate(0.2)).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { hang_requests: vec![2], ..Faults::default() })).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        let env = start(base().rate_limit(40, Duration::from_secs(1))).await?;
        env.handle().spend(40);
        Ok(env.boxed())
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("a static API token has no lifetime to renew"))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { echo_credentials: true, ..Faults::default() })).await?.boxed())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinelone_like_adapter_passes_the_testkit_against_a_kit_simulator() {
    let report = corral_testkit::run(&S1Like { cut_bad_page: false }).await;
    for rule in [corral_testkit::rules::FULL_SYNC, corral_testkit::rules::BAD_PAGE, corral_testkit::rules::RETRY_AFTER]
    {
        let r = report.result(rule).expect("the rule ran");
        assert_eq!(r.verdict, corral_testkit::Verdict::Passed, "{rule}: {report}");
    }
}

/// One stream whose next page is named only inside the unreadable page:
/// the walk stops there, the stream's fetch fails, and with no other stream
/// the run is failed, not partial; the rule accepts that, and still wants the
/// reject and nothing stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_page_that_ends_the_only_stream_fails_the_run_and_the_rule_accepts_it() {
    let vendor = S1Like { cut_bad_page: true };
    let report = corral_testkit::check(&vendor).await;
    let r = report.result(corral_testkit::rules::BAD_PAGE).expect("the rule ran");
    assert_eq!(r.verdict, corral_testkit::Verdict::Passed, "{report}");
    assert!(r.notes.iter().any(|n| n == "the run ended failed"), "the cut page did not end the stream: {report}");
}
