//! The shipped `sentinelone` spec passes the conformance suite against a kit
//! simulator serving SentinelOne-shaped agents (`Authorization: ApiToken`,
//! agents in `data`, `pagination.nextCursor` sent back as `?cursor=`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_rest::RestFactory;
use corral_core::testing::{MemoryStore, sync_once};
use corral_core::{AdapterFactory, RunStatus};
use corral_sim::kit::{self, KitAuth, KitSpec, Pagination};
use corral_sim::{Faults, SimConfig};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 31;
const SIZE: usize = 120;
const AGENTS_PATH: &str = "/web/api/v2.1/agents";

fn factory() -> RestFactory {
    corral_adapter_rest::shipped()
        .into_iter()
        .find(|f| f.info().name == "sentinelone")
        .expect("the sentinelone spec is shipped and loads")
}

/// Agent `index` of `generation`, shaped like SentinelOne's.
fn agent(seed: u64) -> impl Fn(u64, u64) -> Value + Send + Sync + 'static {
    move |index, generation| {
        let epoch = kit::changes(seed, index, generation) as i64;
        let last = chrono::DateTime::from_timestamp(1_714_000_000 + epoch * 86_400 + index as i64, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let os = [("Windows 11 Pro", "windows", "22631"), ("macOS", "macos", "14.5"), ("Ubuntu", "linux", "22.04")]
            [(index % 3) as usize];
        json!({
            "id": kit::record_id(seed, index, generation),
            "uuid": format!("{:032x}", index.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            "computerName": format!("HOST-{index:05}"),
            "domain": if index % 2 == 0 { "corp.example" } else { "WORKGROUP" },
            "networkInterfaces": [
                {"inet": [format!("10.0.{}.{}", index / 250, index % 250 + 1)], "inet6": ["fe80::1"],
                 "physical": format!("AA-BB-CC-00-{:02X}-{:02X}", (index >> 8) & 0xff, index & 0xff)},
                {"inet": [], "inet6": [], "physical": "00:00:00:00:00:00"}
            ],
            "externalIp": "203.0.113.7",
            "osName": os.0, "osType": os.1, "osRevision": os.2,
            "lastActiveDate": last,
            "lastLoggedInUserName": if index % 5 == 0 { Value::Null } else { json!(format!("user{index}")) },
            "serialNumber": format!("SN{index:08}"),
            "isActive": index % 7 != 0,
        })
    }
}

fn spec() -> KitSpec {
    KitSpec::new(AGENTS_PATH, agent(SEED))
        .name("sentinelone")
        .auth(KitAuth::header("Authorization", "ApiToken "))
        .records_at(&["data"])
        .pagination(Pagination::body_cursor(&["pagination", "nextCursor"], "cursor"))
        .total_at(&["pagination", "totalItems"])
        .page_size(10, 1000)
}

async fn start(sim: SimConfig) -> Result<SimEnv, SetupError> {
    SimEnv::start_kit("agents", spec(), sim, |h| {
        json!({"base_url": h.base_url, "api_token": h.config.credentials.token, "page_size": 10,
               "timeout_secs": 1, "requests_per_minute": 0})
    })
    .await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

struct SentinelOne;

#[async_trait]
impl Vendor for SentinelOne {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(factory())
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base()).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
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
        Err(SetupError::not_applicable("a SentinelOne API token has no lifetime to renew"))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { echo_credentials: true, ..Faults::default() })).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinelone_spec_passes_the_testkit() {
    corral_testkit::run(&SentinelOne).await;
}

/// What the spec makes of one agent: every mapped field, normalized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_mapped_field_by_field() {
    let env = start(SimConfig::new(SEED, 12)).await.expect("simulator");
    let adapter = factory().build("s1", env.config()).expect("valid config");
    let store = Arc::new(MemoryStore::new());
    let summary = sync_once(&store, "s1", adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    let assets = store.all_assets();
    assert_eq!(assets.len(), 12);
    let first_id = kit::record_id(SEED, 0, 0);
    let a = assets.iter().find(|a| a.source_id == first_id).expect("agent 0");
    let f = &a.fields;
    assert_eq!(f["hostname"], "host-00000");
    assert_eq!(f["domain"], "corp.example");
    assert_eq!(f["ip_addresses"], json!(["10.0.0.1"]));
    assert_eq!(f["mac_addresses"], json!(["aa:bb:cc:00:00:00"]), "the all-zero placeholder is dropped");
    assert_eq!(f["serial_number"], "SN00000000");
    assert_eq!(f["os"], json!({"family": "windows", "name": "Windows 11 Pro", "version": "22631"}));
    assert_eq!(f["last_seen"], "2024-04-24T23:06:40Z");
    assert!(f.get("owner").is_none(), "a null user is no owner");
    assert_eq!(f["attributes"]["os_type"], "windows");
    assert_eq!(f["attributes"]["is_active"], false, "agent 0: index % 7 == 0");
    assert_eq!(f["attributes"]["external_ip"], "203.0.113.7");
    assert_eq!(f["attributes"]["ipv6_addresses"], json!(["fe80::1"]));
    let b = assets.iter().find(|a| a.source_id == kit::record_id(SEED, 1, 0)).expect("agent 1");
    assert!(b.fields.get("domain").is_none(), "WORKGROUP is no domain");
    assert_eq!(b.fields["owner"], "user1");
    env.boxed().shutdown().await;
}

/// A page whose records path is missing is a page reject naming where the
/// page starts; the run is partial and nothing is marked stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_the_records_path_is_a_reject_and_the_run_is_partial() {
    let (_, text) = corral_adapter_rest::SHIPPED.iter().find(|(f, _)| *f == "sentinelone.toml").expect("shipped");
    let text = text.replacen("records = \"data\"", "records = \"agents\"", 1);
    let text = text.split("example = '''").next().map(str::to_string).unwrap_or_default()
        + &text.split("'''\n").nth(2).map(str::to_string).unwrap_or_default();
    let plan = corral_adapter_rest::load_str(&text, "sentinelone.toml", Some("sentinelone")).expect("loads");
    let env = start(SimConfig::new(SEED, 25)).await.expect("simulator");
    let adapter = RestFactory::new(plan).build("s1", env.config()).expect("valid config");
    let store = Arc::new(MemoryStore::new());
    let summary = sync_once(&store, "s1", adapter).await;
    assert_eq!(summary.status, RunStatus::Partial, "{:?}", summary.errors);
    let group = summary.rejects.get("malformed_page").expect("page rejects");
    assert_eq!(group.count, 3, "25 agents in pages of 10");
    let sample = &group.samples[0];
    assert!(sample.record.starts_with("page 1 ("), "{}", sample.record);
    assert!(sample.detail.contains("the records path `agents` is missing"), "{}", sample.detail);
    assert!(!summary.streams["agents"].stale_handled);
    assert_eq!(store.asset_count(), 0);
    env.boxed().shutdown().await;
}
