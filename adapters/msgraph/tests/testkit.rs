//! The corral-testkit conformance suite against the Microsoft Graph simulator.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_msgraph::MsGraphFactory;
use corral_core::AdapterFactory;
use corral_sim::{Faults, SimConfig, SimHandle};
use corral_testkit::sim::{ExpectedFn, SimEnv};
use corral_testkit::{Dataset, Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 51;
const SIZE: usize = 100;

struct MsGraph;

fn ids(records: &[Value]) -> std::collections::BTreeSet<String> {
    records.iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect()
}

fn expected() -> Arc<ExpectedFn> {
    Arc::new(|c: &SimConfig, generation| {
        Dataset::from([
            ("users".to_string(), ids(&corral_sim::msgraph_users(c.seed, c.size, generation))),
            ("managed_devices".to_string(), ids(&corral_sim::msgraph_devices(c.seed, c.size, generation))),
        ])
    })
}

fn config(sim: &SimHandle) -> Value {
    let c = &sim.config.credentials;
    json!({
        "tenant_id": c.tenant,
        "client_id": c.client_id,
        "client_secret": c.client_secret,
        "login_base_url": sim.base_url,
        "graph_base_url": sim.base_url,
        "page_size": 10,
        // A hung answer is cut after this (the hung-request rule).
        "timeout_secs": 3,
    })
}

async fn start(sim: SimConfig) -> Result<SimEnv, SetupError> {
    SimEnv::start(corral_sim::Vendor::MsGraph, sim, config, expected()).await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

#[async_trait]
impl Vendor for MsGraph {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(MsGraphFactory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base()).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        // Page 1 of each listing has garbage in its middle; its nextLink still reads.
        Ok(start(base().malformed_pages([1])).await?.boxed())
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().error_rate(0.1)).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { hang_requests: vec![2], ..Faults::default() };
        Ok(start(base().faults(faults)).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        let env = start(base().rate_limit(60, Duration::from_secs(1))).await?;
        env.handle().spend(60);
        Ok(env.boxed())
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults =
            Faults { token_ttl: Some(Duration::from_millis(300)), token_ttl_hidden: true, ..Faults::default() };
        Ok(start(base().latency_ms(40).faults(faults)).await?.boxed())
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { echo_credentials: true, ..Faults::default() };
        Ok(start(base().faults(faults)).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Err(SetupError::not_applicable("the adapter keeps no checkpoint: a rerun starts both listings over"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgraph_passes_the_testkit() {
    corral_testkit::run(&MsGraph).await;
}
