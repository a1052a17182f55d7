//! The corral-testkit conformance suite against the AWS simulator: an
//! assumed role in the simulator's second account, three regions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::Accounts;
use corral_adapter_aws::AwsFactory;
use corral_core::AdapterFactory;
use corral_sim::{Faults, SimConfig};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 81;
/// 20 to 60 instances per region, three regions, pages of 10.
const SIZE: usize = 40;

struct Aws;

async fn start(sim: SimConfig, extra: Value) -> Result<SimEnv, SetupError> {
    SimEnv::start(
        corral_sim::Vendor::Aws,
        sim,
        |h| common::config(h, Accounts::Role, extra),
        common::expected(Accounts::Role),
    )
    .await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

#[async_trait]
impl Vendor for Aws {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(AwsFactory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base(), json!({"requests_per_second": 100})).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        // The second answer of every region's listing has a broken instance.
        Ok(start(base().malformed_pages([1]), json!({"requests_per_second": 100})).await?.boxed())
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().error_rate(0.2), json!({"requests_per_second": 100})).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { hang_requests: vec![2], ..Faults::default() };
        Ok(start(base().faults(faults), json!({"timeout_secs": 1, "requests_per_second": 100})).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        // Buckets of 20 refilled 5 a second, all emptied by another client:
        // EC2 answers 503 RequestLimitExceeded, without a Retry-After; the
        // adapter backs off, then keeps under the refill (4 a second).
        let env =
            start(base().rate_limit(20, Duration::from_secs(4)).latency_ms(20), json!({"requests_per_second": 4}))
                .await?;
        env.handle().spend(20);
        Ok(env.boxed())
    }
    fn rate_limited_statuses(&self) -> &'static [u16] {
        &[503]
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        // Sessions announced for an hour die after two seconds: EC2 refuses
        // them (RequestExpired) and the adapter assumes the role again, once
        // per refused request. The run lasts about four seconds, so sessions
        // die during it. Not one second: at 5 requests/s a retry can wait
        // most of a second for its turn, and on a loaded machine the session
        // another region had just renewed was dead again by then (the real
        // minimum is 15 minutes, so one renewal per request is enough there).
        let faults = Faults { token_ttl: Some(Duration::from_secs(2)), token_ttl_hidden: true, ..Faults::default() };
        Ok(start(base().faults(faults).latency_ms(30), json!({"requests_per_second": 5})).await?.boxed())
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        let faults = Faults { echo_credentials: true, ..Faults::default() };
        Ok(start(base().faults(faults), json!({})).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Err(SetupError::not_applicable(
            "a NextToken belongs to one account and region and is not meant to outlive its listing: an interrupted \
             run reads again from the start",
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_passes_the_testkit() {
    corral_testkit::run(&Aws).await;
}
