//! The corral-testkit conformance suite against the Tenable simulator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_tenable::TenableFactory;
use corral_core::AdapterFactory;
use corral_sim::{Faults, SimConfig};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 61;
/// 120 assets: two asset chunks of 100, three vulnerability chunks of 50 assets.
const SIZE: usize = 120;

struct Tenable;

async fn start(sim: SimConfig, extra: Value) -> Result<SimEnv, SetupError> {
    SimEnv::start(corral_sim::Vendor::Tenable, sim, |h| common::config(h, extra), common::expected()).await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

#[async_trait]
impl Vendor for Tenable {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(TenableFactory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base(), json!({})).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        // Chunk 2 of every export is not JSON.
        Ok(start(base().malformed_pages([1]), json!({})).await?.boxed())
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().error_rate(0.2), json!({})).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { hang_requests: vec![2], ..Faults::default() };
        Ok(start(base().faults(faults), json!({"timeout_secs": 1})).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        // The three streams create their exports at once: with some latency they
        // are all on their way before the first 429 is answered, as on a real network.
        let env = start(base().rate_limit(60, Duration::from_secs(1)).latency_ms(30), json!({})).await?;
        env.handle().spend(60);
        Ok(env.boxed())
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("Tenable API keys are sent on every request; there is no token to expire"))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { echo_credentials: true, ..Faults::default() };
        Ok(start(base().faults(faults), json!({})).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Err(SetupError::not_applicable(
            "an export cannot be resumed (an interrupted run starts a new export); the vulnerabilities \
             checkpoint is a `since` watermark saved after a complete export (tests/sync.rs)",
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenable_passes_the_testkit() {
    corral_testkit::run(&Tenable).await;
}
