//! Helpers shared by the integration tests: a simulator, an adapter pointed
//! at it, and one sync through the real engine into a memory store.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_adapter_okta::OktaFactory;
use corral_core::testing::MemoryStore;
use corral_core::{Adapter, AdapterFactory, Connection, Engine, EngineConfig, RunSummary, StalePolicy};
use corral_sim::{SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

pub async fn sim(config: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::Okta, config).await.expect("start the Okta simulator")
}

/// Config for a connection to `sim`, with `extra` fields merged in.
pub fn config(sim: &SimHandle, extra: Value) -> Value {
    let mut cfg = json!({ "base_url": sim.base_url, "token": sim.config.credentials.token });
    if let (Some(cfg), Some(extra)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            cfg.insert(k.clone(), v.clone());
        }
    }
    cfg
}

pub fn adapter(sim: &SimHandle, extra: Value) -> Arc<dyn Adapter> {
    OktaFactory.build("okta-test", config(sim, extra)).expect("valid config")
}

/// One sync of `adapter` through the engine into `store`.
pub async fn sync_into(store: &Arc<MemoryStore>, adapter: Arc<dyn Adapter>) -> RunSummary {
    let engine = Engine::new(EngineConfig::default(), store.clone()).expect("engine");
    engine
        .sync(Connection { name: "okta-test".into(), adapter, streams: Vec::new(), stale: StalePolicy::default() })
        .await
}

pub async fn sync(adapter: Arc<dyn Adapter>) -> (RunSummary, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let summary = sync_into(&store, adapter).await;
    (summary, store)
}

/// Ids of the simulator's dataset, in listing order.
pub fn expected_ids(seed: u64, size: usize) -> Vec<String> {
    corral_sim::okta_users(seed, size, 0)
        .iter()
        .map(|u| u["id"].as_str().expect("sim users have ids").to_string())
        .collect()
}

pub fn stored_ids(store: &MemoryStore) -> BTreeSet<String> {
    store.all_assets().into_iter().map(|a| a.source_id).collect()
}

/// Start the simulator just before a whole wall-clock second.
///
/// Real Okta's rate-limit windows end on whole epoch seconds, so
/// `X-Rate-Limit-Reset` is exact; the simulator's fixed windows start when it
/// does and their reset is rounded up to the next second. Starting it at
/// `x.95 s` keeps that rounding under 50 ms, as with the real API.
pub async fn sim_on_second_boundary(config: SimConfig) -> SimHandle {
    let frac =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_millis()).unwrap_or(0);
    let wait = if frac < 950 { 950 - frac } else { 1950 - frac };
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(wait))).await;
    sim(config).await
}
