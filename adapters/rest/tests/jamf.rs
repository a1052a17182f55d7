//! The shipped `jamf` spec passes the conformance suite against the kit's
//! Jamf Pro simulator (`corral_sim::kit::jamf`: a bearer token bought with
//! Basic at `/api/v1/auth/token`, zero-based `page`/`page-size` pages,
//! `section=` parameters, a sixth concurrent request refused with 503), and
//! maps a computer's sections into the canonical device fields.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_rest::RestFactory;
use corral_core::testing::{MemoryStore, sync_once};
use corral_core::{AdapterFactory, RunStatus};
use corral_sim::kit::jamf;
use corral_sim::{Faults, SimConfig};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 41;
const SIZE: usize = 120;

fn factory() -> RestFactory {
    corral_adapter_rest::shipped()
        .into_iter()
        .find(|f| f.info().name == "jamf")
        .expect("the jamf spec is shipped and loads")
}

async fn start(sim: SimConfig) -> Result<SimEnv, SetupError> {
    SimEnv::start_kit("computers", jamf::spec(SEED), sim, |h| {
        json!({"base_url": h.base_url, "username": h.config.credentials.client_id,
               "password": h.config.credentials.client_secret, "page_size": 10, "timeout_secs": 1})
    })
    .await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

struct Jamf;

#[async_trait]
impl Vendor for Jamf {
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
        Ok(start(base().error_rate(0.3)).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { hang_requests: vec![2], ..Faults::default() })).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("Jamf Pro has no request-rate limit (only a limit of concurrent connections)"))
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        // Tokens die after 300 ms while the answer still announces 20 minutes.
        let faults =
            Faults { token_ttl: Some(Duration::from_millis(300)), token_ttl_hidden: true, ..Faults::default() };
        Ok(start(base().latency_ms(40).faults(faults)).await?.boxed())
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { echo_credentials: true, ..Faults::default() })).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Err(SetupError::not_applicable("page-number streams start over: a rerun fetches every page again"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jamf_spec_passes_the_testkit() {
    corral_testkit::run(&Jamf).await;
}

/// What the spec makes of one computer: every mapped field, from the four
/// sections it asks for, normalized; and the requests it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computers_are_mapped_field_by_field() {
    let env = start(SimConfig::new(SEED, 25)).await.expect("simulator");
    let adapter = factory().build("jamf", env.config()).expect("valid config");
    let store = Arc::new(MemoryStore::new());
    let summary = sync_once(&store, "jamf", adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    let want: std::collections::BTreeSet<String> = jamf::ids(SEED, 25, 0).into_iter().collect();
    let got: std::collections::BTreeSet<String> = store.all_assets().iter().map(|a| a.source_id.clone()).collect();
    assert_eq!(got, want);
    assert_eq!(store.asset_count(), 25, "no duplicates");
    let spec = jamf::spec(SEED);
    for index in [0u64, 1, 7] {
        let rec = spec.record(index, 0);
        let id = rec["id"].as_str().expect("id").to_string();
        let a = store.all_assets().into_iter().find(|a| a.source_id == id).expect("stored");
        let f = &a.fields;
        let hw = &rec["hardware"];
        let mac = |v: &Value| v.as_str().map(str::to_ascii_lowercase);
        let mut macs: Vec<String> = [mac(&hw["macAddress"]), mac(&hw["altMacAddress"])].into_iter().flatten().collect();
        macs.dedup();
        assert_eq!(f["mac_addresses"], json!(macs), "computer {index}");
        assert_eq!(f["serial_number"], hw["serialNumber"], "computer {index}");
        assert_eq!(f["manufacturer"], "Apple");
        assert_eq!(f["model"], hw["model"]);
        assert_eq!(f["ip_addresses"], json!([rec["general"]["lastIpAddress"]]));
        assert_eq!(f["os"]["name"], "macOS");
        assert_eq!(f["os"]["family"], "macos");
        assert_eq!(f["os"]["version"], rec["operatingSystem"]["version"]);
        let name = rec["general"]["name"].as_str().expect("name");
        assert_eq!(f["hostname"], json!(name.to_ascii_lowercase()), "computer {index}");
        let owner = match rec["userAndLocation"]["email"].as_str() {
            Some(e) if !e.is_empty() => e.to_string(),
            _ => rec["userAndLocation"]["username"].as_str().expect("username").to_string(),
        };
        assert_eq!(f["owner"], json!(owner));
        assert!(f["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", f["last_seen"]);
        assert_eq!(f["attributes"]["udid"], rec["udid"]);
        assert_eq!(f["attributes"]["os_build"], rec["operatingSystem"]["build"]);
        assert_eq!(f["attributes"]["model_identifier"], hw["modelIdentifier"]);
    }
    let c = env.handle().counters.snapshot();
    assert_eq!(c.tokens_issued, 1, "one token for the whole run");
    assert_eq!(c.fault("over_concurrency"), 0, "never more than 5 requests at once");
    env.boxed().shutdown().await;
}
