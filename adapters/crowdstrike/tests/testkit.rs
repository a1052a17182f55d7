//! The corral-testkit conformance suite against the CrowdStrike simulator.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_crowdstrike::CrowdStrikeFactory;
use corral_core::AdapterFactory;
use corral_sim::{Faults, SimConfig, SimHandle};
use corral_testkit::sim::{ExpectedFn, SimEnv};
use corral_testkit::{Dataset, Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 41;
const SIZE: usize = 150;

struct CrowdStrike;

fn expected() -> Arc<ExpectedFn> {
    Arc::new(|c: &SimConfig, generation| {
        let ids = corral_sim::crowdstrike_device_ids(c.seed, c.size, generation).into_iter().collect();
        Dataset::from([("hosts".to_string(), ids)])
    })
}

/// All ids in one scroll page (page indices 0 and the empty end 1); details
/// batches of 10 are pages 0..15, so a bad page 3 is a details batch.
fn config(sim: &SimHandle, extra: Value) -> Value {
    let c = &sim.config.credentials;
    let mut cfg = json!({
        "base_url": sim.base_url,
        "client_id": c.client_id,
        "client_secret": c.client_secret,
        "ids_page_size": 1000,
        "details_batch": 10,
    });
    if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    cfg
}

async fn start(sim: SimConfig, extra: Value) -> Result<SimEnv, SetupError> {
    SimEnv::start(corral_sim::Vendor::CrowdStrike, sim, |h| config(h, extra), expected()).await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

#[async_trait]
impl Vendor for CrowdStrike {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(CrowdStrikeFactory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base(), json!({})).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().malformed_pages([3]), json!({})).await?.boxed())
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().error_rate(0.2), json!({})).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { hang_requests: vec![2], ..Faults::default() };
        Ok(start(base().faults(faults), json!({"timeout_secs": 2})).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        let env = start(base().rate_limit(40, Duration::from_secs(1)), json!({"rate_window_secs": 1})).await?;
        env.handle().spend(40);
        Ok(env.boxed())
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults =
            Faults { token_ttl: Some(Duration::from_millis(600)), token_ttl_hidden: true, ..Faults::default() };
        let extra = json!({"details_concurrency": 2});
        Ok(start(base().latency_ms(80).faults(faults), extra).await?.boxed())
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { echo_credentials: true, ..Faults::default() };
        Ok(start(base().faults(faults), json!({})).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Err(SetupError::not_applicable(
            "the adapter keeps no checkpoint: the scroll cursor expires within minutes, so a rerun starts over",
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_passes_the_testkit() {
    corral_testkit::run(&CrowdStrike).await;
}
