//! [`SimEnv`]: an [`Env`] over a running `corral-sim` simulator.

use std::sync::Arc;

use async_trait::async_trait;
use corral_sim::{SimConfig, SimHandle};
use serde_json::Value;

use crate::{Counters, Dataset, Env, RequestEvent, SetupError};

/// The dataset a simulator serves at a generation.
pub type ExpectedFn = dyn Fn(&SimConfig, u64) -> Dataset + Send + Sync;

/// A `corral-sim` simulator as an [`Env`]: its counters, its dataset at the
/// generation served now, and [`Env::remove_records`] by moving to the next
/// generation that replaces records (their old ids disappear).
pub struct SimEnv {
    handle: SimHandle,
    config: Value,
    expected: Arc<ExpectedFn>,
}

impl SimEnv {
    /// Start a simulator of `vendor` with `sim`; `config` makes the adapter
    /// config for it, `expected` the dataset of a generation.
    pub async fn start(
        vendor: corral_sim::Vendor,
        sim: SimConfig,
        config: impl FnOnce(&SimHandle) -> Value,
        expected: Arc<ExpectedFn>,
    ) -> Result<SimEnv, SetupError> {
        let handle = corral_sim::start(vendor, sim)
            .await
            .map_err(|e| SetupError::failed(format!("the {} simulator did not start: {e}", vendor.name())))?;
        let config = config(&handle);
        Ok(SimEnv { handle, config, expected })
    }

    /// Start a kit simulator of `spec` (see `corral_sim::kit`) with `sim`,
    /// serving stream `stream`: the dataset of a generation is the spec's
    /// ids ([`corral_sim::kit::KitSpec::ids`]); `config` makes the adapter
    /// config for it.
    ///
    /// ```ignore
    /// let spec = KitSpec::new("/api/devices", kit::devices(7)).auth(KitAuth::header("Authorization", "ApiToken "));
    /// let env = SimEnv::start_kit("devices", spec, SimConfig::new(7, 120), |sim| json!({
    ///     "base_url": sim.base_url, "api_token": sim.config.credentials.token,
    /// })).await?;
    /// ```
    pub async fn start_kit(
        stream: &str,
        spec: corral_sim::kit::KitSpec,
        sim: SimConfig,
        config: impl FnOnce(&SimHandle) -> Value,
    ) -> Result<SimEnv, SetupError> {
        let expected = kit_expected(stream, spec.clone());
        let handle = corral_sim::kit::start(spec, sim)
            .await
            .map_err(|e| SetupError::failed(format!("the kit simulator did not start: {e}")))?;
        let config = config(&handle);
        Ok(SimEnv { handle, config, expected })
    }

    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }

    /// As a boxed [`Env`].
    pub fn boxed(self) -> Box<dyn Env> {
        Box::new(self)
    }
}

/// The dataset a kit simulator of `spec` serves as stream `stream`.
pub fn kit_expected(stream: &str, spec: corral_sim::kit::KitSpec) -> Arc<ExpectedFn> {
    let stream = stream.to_string();
    Arc::new(move |c: &SimConfig, generation| {
        Dataset::from([(stream.clone(), spec.ids(c.size, generation).into_iter().collect())])
    })
}

#[async_trait]
impl Env for SimEnv {
    fn config(&self) -> Value {
        self.config.clone()
    }

    fn expected(&self) -> Dataset {
        (self.expected)(&self.handle.config, self.handle.generation())
    }

    async fn remove_records(&self) -> Result<(), SetupError> {
        let now = self.handle.generation();
        let before = (self.expected)(&self.handle.config, now);
        for next in now + 1..=now + 8 {
            let after = (self.expected)(&self.handle.config, next);
            let removed = before.iter().any(|(stream, ids)| {
                let kept = after.get(stream);
                ids.iter().any(|id| kept.is_none_or(|k| !k.contains(id)))
            });
            if removed {
                self.handle.set_generation(next);
                return Ok(());
            }
        }
        Err(SetupError::failed(format!(
            "no generation from {} to {} removes a record: use a larger dataset",
            now + 1,
            now + 8
        )))
    }

    fn counters(&self) -> Counters {
        let c = self.handle.counters.snapshot();
        Counters {
            requests: c.requests,
            by_status: c.by_status.clone(),
            faults: c.faults.clone(),
            tokens_issued: Some(c.tokens_issued),
            max_open_connections: Some(c.max_connections_open),
            events: self
                .handle
                .counters
                .events()
                .into_iter()
                .map(|e| RequestEvent { arrived: e.arrived, finished: e.finished, status: e.status })
                .collect(),
        }
    }

    async fn shutdown(self: Box<Self>) {
        self.handle.shutdown().await;
    }
}
