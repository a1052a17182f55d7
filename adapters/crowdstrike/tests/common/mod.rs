//! Helpers shared by the integration tests: a simulator, an adapter pointed
//! at it, and one sync through the real engine into a memory store.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_adapter_crowdstrike::CrowdStrikeFactory;
use corral_core::testing::MemoryStore;
use corral_core::{Adapter, AdapterFactory, Connection, Engine, EngineConfig, RunSummary, StalePolicy};
use corral_sim::{SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

pub async fn sim(config: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::CrowdStrike, config).await.expect("simulator starts")
}

/// The adapter config for `sim` (its credentials), with `extra` fields on top.
pub fn config(sim: &SimHandle, extra: Value) -> Value {
    let creds = &sim.config.credentials;
    let mut cfg = json!({
        "base_url": sim.base_url,
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
    });
    if let (Some(obj), Value::Object(extra)) = (cfg.as_object_mut(), extra) {
        obj.extend(extra);
    }
    cfg
}

pub fn adapter(sim: &SimHandle, extra: Value) -> Arc<dyn Adapter> {
    CrowdStrikeFactory.build("falcon", config(sim, extra)).expect("valid config")
}

/// One sync of `adapter` through the engine into a fresh memory store.
pub async fn sync(adapter: Arc<dyn Adapter>) -> (RunSummary, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig::default(), store.clone()).expect("engine");
    let summary = engine
        .sync(Connection { name: "falcon".into(), adapter, streams: Vec::new(), stale: StalePolicy::default() })
        .await;
    (summary, store)
}

/// The source ids in the store.
pub fn stored_ids(store: &MemoryStore) -> BTreeSet<String> {
    store.all_assets().into_iter().map(|a| a.source_id).collect()
}

/// The simulator's dataset ids (deduplicated).
pub fn expected_ids(sim: &SimHandle) -> BTreeSet<String> {
    let c = &sim.config;
    corral_sim::crowdstrike_device_ids(c.seed, c.size, c.generation).into_iter().collect()
}

/// Requests the simulator saw on data endpoints (everything but the token endpoint).
pub fn data_requests(sim: &SimHandle) -> u64 {
    let s = sim.counters.snapshot();
    s.requests - s.endpoint("cs.token")
}
