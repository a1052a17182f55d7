//! The corral-testkit conformance suite against the Qualys simulator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_qualys::QualysFactory;
use corral_core::AdapterFactory;
use corral_sim::{Faults, SimConfig};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 71;
/// 150 hosts: four host-list answers of 40 (the detection listing, which
/// skips hosts without detections, about as many), pages of 10 hosts.
const SIZE: usize = 150;

struct Qualys;

async fn start(sim: SimConfig, extra: Value) -> Result<SimEnv, SetupError> {
    SimEnv::start(corral_sim::Vendor::Qualys, sim, |h| common::config(h, extra), common::expected()).await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

#[async_trait]
impl Vendor for Qualys {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(QualysFactory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base(), json!({})).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        // The second answer of each listing renders its first host broken.
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
        // Qualys answers 409 with X-RateLimit-ToWait-Sec rather than 429.
        let env = start(base().rate_limit(40, Duration::from_secs(1)).latency_ms(30), json!({})).await?;
        env.handle().spend(40);
        Ok(env.boxed())
    }
    fn rate_limited_statuses(&self) -> &'static [u16] {
        &[409, 429]
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("Qualys takes HTTP Basic credentials on every call; there is no token"))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { echo_credentials: true, ..Faults::default() };
        Ok(start(base().faults(faults), json!({})).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        // The last page of each answer carries the next answer's `id_min`.
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualys_passes_the_testkit() {
    corral_testkit::run(&Qualys).await;
}
