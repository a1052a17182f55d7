//! Helpers shared by the end-to-end tests: a Graph simulator started in
//! process, the adapter pointed at it, and the real engine over a MemoryStore.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_adapter_msgraph::MsGraphFactory;
use corral_core::testing::MemoryStore;
use corral_core::{Adapter, AdapterFactory, AssetKind, Connection, Engine, EngineConfig, RunSummary, StalePolicy};
use corral_sim::{SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

pub const CONN: &str = "graph-test";

pub async fn start(config: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::MsGraph, config).await.expect("start the Graph simulator")
}

/// The adapter config for `sim` (its credentials, both base URLs on it), plus `extra`.
pub fn config(sim: &SimHandle, extra: Value) -> Value {
    let c = &sim.config.credentials;
    let mut cfg = json!({
        "tenant_id": c.tenant,
        "client_id": c.client_id,
        "client_secret": c.client_secret,
        "login_base_url": sim.base_url,
        "graph_base_url": sim.base_url,
    });
    if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    cfg
}

pub fn adapter(sim: &SimHandle, extra: Value) -> Arc<dyn Adapter> {
    MsGraphFactory.build(CONN, config(sim, extra)).expect("valid config")
}

/// Sync `streams` (empty: all) into a fresh MemoryStore through the real engine.
pub async fn sync(adapter: Arc<dyn Adapter>, streams: &[&str]) -> (RunSummary, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let summary = sync_into(store.clone(), adapter, streams).await;
    (summary, store)
}

pub async fn sync_into(store: Arc<MemoryStore>, adapter: Arc<dyn Adapter>, streams: &[&str]) -> RunSummary {
    let engine = Engine::new(EngineConfig::default(), store).expect("engine");
    engine
        .sync(Connection {
            name: CONN.into(),
            adapter,
            streams: streams.iter().map(|s| s.to_string()).collect(),
            stale: StalePolicy::default(),
        })
        .await
}

/// Source ids of the stored assets of `kind`.
pub fn stored_ids(store: &MemoryStore, kind: AssetKind) -> BTreeSet<String> {
    store.all_assets().into_iter().filter(|a| a.kind == kind).map(|a| a.source_id).collect()
}

/// The `id`s of simulator records (listing positions `positions`).
pub fn ids_of(records: &[Value], positions: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
    positions.into_iter().filter_map(|i| records.get(i)?["id"].as_str().map(str::to_string)).collect()
}

/// A compact description of a summary for assertion messages.
pub fn show(s: &RunSummary) -> String {
    serde_json::to_string_pretty(s).unwrap_or_else(|_| format!("{s:?}"))
}
