//! The corral-testkit conformance suite against the Okta simulator.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_okta::OktaFactory;
use corral_core::AdapterFactory;
use corral_sim::{Faults, SimConfig, SimHandle};
use corral_testkit::sim::{ExpectedFn, SimEnv};
use corral_testkit::{Dataset, Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 31;
const SIZE: usize = 120;

struct Okta;

fn expected() -> Arc<ExpectedFn> {
    Arc::new(|c: &SimConfig, generation| {
        let ids = corral_sim::okta_users(c.seed, c.size, generation)
            .iter()
            .filter_map(|u| u["id"].as_str().map(str::to_string))
            .collect();
        Dataset::from([("users".to_string(), ids)])
    })
}

fn config(sim: &SimHandle) -> Value {
    json!({
        "base_url": sim.base_url,
        "token": sim.config.credentials.token,
        "page_size": 10,
        "requests_per_minute": 0,
        "timeout_secs": 1,
    })
}

async fn start(sim: SimConfig) -> Result<SimEnv, SetupError> {
    SimEnv::start(corral_sim::Vendor::Okta, sim, config, expected()).await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

#[async_trait]
impl Vendor for Okta {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(OktaFactory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base()).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().malformed_pages([3])).await?.boxed())
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().error_rate(0.2)).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { hang_requests: vec![2], ..Faults::default() };
        Ok(start(base().faults(faults)).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        let env = start(base().rate_limit(40, Duration::from_secs(1))).await?;
        env.handle().spend(40);
        Ok(env.boxed())
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable(
            "an Okta API token (SSWS) has no lifetime to renew; a revoked one fails the stream (tests/sync.rs)",
        ))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { echo_credentials: true, ..Faults::default() };
        Ok(start(base().faults(faults)).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_passes_the_testkit() {
    corral_testkit::run(&Okta).await;
}
