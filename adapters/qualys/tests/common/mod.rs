//! Shared by the Qualys adapter's tests: the simulator's expected dataset and configs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_adapter_qualys::normalize::detection_key;
use corral_sim::data::qualys::{QualysData, STATUSES};
use corral_sim::{SimConfig, SimHandle, Vendor};
use corral_testkit::Dataset;
use corral_testkit::sim::ExpectedFn;
use serde_json::{Value, json};

pub fn data(c: &SimConfig, generation: u64) -> QualysData {
    QualysData::new(c.seed, c.size, generation, c.behavior.findings_per_asset)
}

/// Every detection's key (every status: the adapter asks for all four).
pub fn detection_ids(d: &QualysData) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for i in 0..d.size as u64 {
        let host = d.host_id(i).to_string();
        for det in d.detections(i).into_iter().filter(|x| STATUSES.contains(&x.status)) {
            let (qid, _, _, _, _, port, protocol) = *det.qid;
            let port = port.map(|p| p.to_string());
            out.insert(detection_key(&host, &qid.to_string(), port.as_deref(), protocol));
        }
    }
    out
}

/// What a full sync loads: every host, every detection.
pub fn dataset(c: &SimConfig, generation: u64) -> Dataset {
    let d = data(c, generation);
    Dataset::from([
        ("hosts".to_string(), d.host_ids().map(|id| id.to_string()).collect()),
        ("detections".to_string(), detection_ids(&d)),
    ])
}

pub fn expected() -> Arc<ExpectedFn> {
    Arc::new(|c: &SimConfig, generation| dataset(c, generation))
}

/// Small answers and pages, window as the simulator's (`extra` overrides).
pub fn config(sim: &SimHandle, extra: Value) -> Value {
    let c = &sim.config.credentials;
    let window = sim.config.rate_limit.map_or(3600, |l| l.per.as_secs().max(1));
    let mut cfg = json!({
        "base_url": sim.base_url,
        "username": c.client_id,
        "password": c.client_secret,
        "truncation_limit": 40,
        "hosts_per_page": 10,
        "rate_window_secs": window,
        "timeout_secs": 5,
    });
    if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    cfg
}

pub async fn start(sim: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::Qualys, sim).await.expect("the Qualys simulator starts")
}
