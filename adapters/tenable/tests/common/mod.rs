//! Shared by the Tenable adapter's tests: the simulator's expected dataset and configs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_core::fields;
use corral_sim::data::tenable::{TenableData, VulnFilter};
use corral_sim::{SimConfig, SimHandle, Vendor};
use corral_testkit::Dataset;
use corral_testkit::sim::ExpectedFn;
use serde_json::{Value, json};

pub const FINDINGS_PER_ASSET: u32 = 4;

pub fn data(c: &SimConfig, generation: u64) -> TenableData {
    TenableData::new(c.seed, c.size, generation, c.behavior.findings_per_asset)
}

/// `<asset uuid>|<CPE 2.3>` for every distinct CPE of every asset.
pub fn software_ids(d: &TenableData) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for i in 0..d.size as u64 {
        let a = d.asset(i);
        let id = a["id"].as_str().unwrap_or_default().to_string();
        for cpe in a["installed_software"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if let Some(c) = fields::cpe(cpe) {
                out.insert(format!("{id}|{}", c.formatted));
            }
        }
    }
    out
}

/// What a full sync loads: every asset, its software, every finding (all states).
pub fn dataset(c: &SimConfig, generation: u64) -> Dataset {
    let d = data(c, generation);
    Dataset::from([
        ("assets".to_string(), d.asset_ids().collect()),
        ("software".to_string(), software_ids(&d)),
        ("vulnerabilities".to_string(), d.finding_ids(&VulnFilter::all()).collect()),
    ])
}

pub fn expected() -> Arc<ExpectedFn> {
    Arc::new(|c: &SimConfig, generation| dataset(c, generation))
}

/// Small chunks, fast polls, full exports (`extra` overrides).
pub fn config(sim: &SimHandle, extra: Value) -> Value {
    let c = &sim.config.credentials;
    let mut cfg = json!({
        "base_url": sim.base_url,
        "access_key": c.client_id,
        "secret_key": c.client_secret,
        "assets_chunk_size": 100,
        "vulns_num_assets": 50,
        "poll_interval_ms": 20,
        "max_poll_interval_ms": 200,
        "full_resync_every": 1,
        "timeout_secs": 5,
    });
    if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    cfg
}

pub async fn start(sim: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::Tenable, sim).await.expect("the Tenable simulator starts")
}
