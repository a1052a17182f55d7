//! The shipped `servicenow` spec passes the conformance suite against the
//! kit's ServiceNow Table API simulator (`corral_sim::kit::servicenow`:
//! Basic or OAuth, `sysparm_offset`/`sysparm_limit` with a comma-joined
//! `Link` header and `X-Total-Count`, display values), maps values and
//! display values where the spec says, and syncs with OAuth instead of
//! Basic when its `[auth]` is swapped as its comments describe.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_rest::RestFactory;
use corral_core::testing::{MemoryStore, sync_once};
use corral_core::{AdapterFactory, RunStatus};
use corral_sim::kit::servicenow::{self, Auth};
use corral_sim::{Faults, SimConfig};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Env, SetupError, Vendor};
use serde_json::json;

const SEED: u64 = 43;
const SIZE: usize = 120;

fn factory() -> RestFactory {
    corral_adapter_rest::shipped()
        .into_iter()
        .find(|f| f.info().name == "servicenow")
        .expect("the servicenow spec is shipped and loads")
}

async fn start(sim: SimConfig) -> Result<SimEnv, SetupError> {
    SimEnv::start_kit("computers", servicenow::spec(SEED, Auth::Basic), sim, |h| {
        json!({"base_url": h.base_url, "username": h.config.credentials.client_id,
               "password": h.config.credentials.client_secret, "page_size": 10, "timeout_secs": 1})
    })
    .await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

struct ServiceNow;

#[async_trait]
impl Vendor for ServiceNow {
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
        Err(SetupError::not_applicable("the shipped spec uses HTTP Basic: no token to expire"))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { echo_credentials: true, ..Faults::default() })).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servicenow_spec_passes_the_testkit() {
    corral_testkit::run(&ServiceNow).await;
}

fn ids(store: &MemoryStore) -> BTreeSet<String> {
    store.all_assets().iter().map(|a| a.source_id.clone()).collect()
}

/// Values where a value is right (keys, addresses, codes, UTC dates),
/// display values for references' names and choice labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computers_are_mapped_from_values_and_display_values() {
    let env = start(SimConfig::new(SEED, 40)).await.expect("simulator");
    let adapter = factory().build("snow", env.config()).expect("valid config");
    let store = Arc::new(MemoryStore::new());
    let summary = sync_once(&store, "snow", adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(ids(&store), servicenow::ids(SEED, 40, 0).into_iter().collect::<BTreeSet<_>>());
    assert_eq!(store.asset_count(), 40, "no duplicates");
    let spec = servicenow::spec(SEED, Auth::Basic);
    let mut placeholder_serials = 0;
    for index in 0..40u64 {
        let rec = spec.record(index, 0);
        let a = store
            .all_assets()
            .into_iter()
            .find(|a| Some(a.source_id.as_str()) == rec["sys_id"].as_str())
            .expect("stored");
        let f = &a.fields;
        let name = rec["name"].as_str().expect("name");
        assert_eq!(f["hostname"], json!(name.to_ascii_lowercase()), "computer {index}");
        assert_eq!(f["domain"], "corp.example.com");
        assert_eq!(f["ip_addresses"], json!([rec["ip_address"]]));
        assert_eq!(f["os"]["name"], rec["os"]);
        assert_eq!(f["os"]["version"], rec["os_version"]);
        assert_eq!(f["manufacturer"], rec["manufacturer"]["display_value"], "a name, not a sys_id");
        match rec["assigned_to"]["display_value"].as_str() {
            Some("") => assert!(f.get("owner").is_none(), "an empty reference is no owner"),
            name => assert_eq!(f["owner"].as_str(), name),
        }
        let attrs = &f["attributes"];
        assert_eq!(attrs["company"], rec["company"]["display_value"]);
        assert_eq!(attrs["install_status"], rec["install_status"]["display_value"]);
        let code: i64 = rec["install_status"]["value"].as_str().and_then(|s| s.parse().ok()).expect("code");
        assert_eq!(attrs["install_status_code"], json!(code));
        assert_eq!(attrs["virtual"], json!(rec["virtual"] == "true"));
        // The value is UTC; the display value is 7 hours behind and must not be used.
        let updated = rec["sys_updated_on"]["value"].as_str().expect("date").replace(' ', "T") + "Z";
        assert_eq!(attrs["updated"], json!(updated), "computer {index}");
        match f.get("serial_number") {
            Some(s) => assert_eq!(s, &rec["serial_number"]),
            None => placeholder_serials += 1,
        }
        assert_eq!(f["mac_addresses"].as_array().map(Vec::len), Some(1), "computer {index}: {}", rec["mac_address"]);
    }
    assert!(placeholder_serials < 40);
    env.boxed().shutdown().await;
}

/// The spec with `[auth]` swapped for OAuth client credentials, as its
/// comments describe, syncs the same dataset from a simulator taking only OAuth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth_variant_syncs_the_same_dataset() {
    let (_, text) = corral_adapter_rest::SHIPPED.iter().find(|(f, _)| *f == "servicenow.toml").expect("shipped");
    let basic_config = "[[config]]\nname = \"username\"";
    let (head, rest) = text.split_once(basic_config).expect("the username field");
    let (_, rest) = rest.split_once("[[config]]\nname = \"page_size\"").expect("the page_size field");
    let oauth_config = "[[config]]\nname = \"client_id\"\ntype = \"string\"\nrequired = true\ndescription = \"An OAuth client id.\"\n\n\
                        [[config]]\nname = \"client_secret\"\ntype = \"string\"\nrequired = true\nsecret = true\ndescription = \"Its secret.\"\n\n";
    let text = format!("{head}{oauth_config}[[config]]\nname = \"page_size\"{rest}").replacen(
        "[auth]\ntype = \"basic\"\nusername = \"{config.username}\"\npassword = \"{config.password}\"",
        "[auth]\ntype = \"oauth2\"\ntoken_url = \"/oauth_token.do\"\nclient_id = \"{config.client_id}\"\nclient_secret = \"{config.client_secret}\"",
        1,
    );
    let text = text.replace("name = \"servicenow\"", "name = \"servicenow-oauth\"");
    let plan = corral_adapter_rest::load_str(&text, "servicenow-oauth.toml", Some("servicenow-oauth")).expect("loads");
    let sim = corral_sim::kit::start(servicenow::spec(SEED, Auth::OAuth), SimConfig::new(SEED, 35)).await.expect("sim");
    let cfg = json!({"base_url": sim.base_url, "client_id": sim.config.credentials.client_id,
                     "client_secret": sim.config.credentials.client_secret, "page_size": 10});
    let adapter = RestFactory::new(plan).build("snow", cfg).expect("valid config");
    let store = Arc::new(MemoryStore::new());
    let summary = sync_once(&store, "snow", adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(ids(&store), servicenow::ids(SEED, 35, 0).into_iter().collect::<BTreeSet<_>>());
    let c = sim.counters.snapshot();
    assert_eq!(c.tokens_issued, 1);
    assert_eq!(c.status(401), 0, "Basic was never tried");
    sim.shutdown().await;
}
