//! Shared by the AWS adapter's tests: the simulator's expected dataset and configs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_adapter_aws::normalize::arn;
use corral_sim::data::aws::{AwsData, ROLE_NAME, accounts};
use corral_sim::{SimConfig, SimHandle, Vendor};
use corral_testkit::Dataset;
use corral_testkit::sim::ExpectedFn;
use serde_json::{Value, json};

pub const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];

/// Which of the simulator's accounts a config reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accounts {
    /// The access key's own account only.
    Own,
    /// A role assumed in the second account only.
    Role,
    /// Both.
    Both,
}

pub fn account_ids(c: &SimConfig, which: Accounts) -> Vec<String> {
    let a = accounts(c.seed);
    match which {
        Accounts::Own => vec![a[0].clone()],
        Accounts::Role => vec![a[1].clone()],
        Accounts::Both => vec![a[0].clone(), a[1].clone()],
    }
}

/// Every instance ARN of these accounts and regions.
pub fn arns(c: &SimConfig, generation: u64, which: Accounts, regions: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for account in account_ids(c, which) {
        for region in regions {
            let d = AwsData::new(c.seed, c.size, generation, &account, region);
            out.extend(d.instance_ids().map(|id| arn(region, &account, &id)));
        }
    }
    out
}

pub fn dataset(c: &SimConfig, generation: u64, which: Accounts, regions: &[&str]) -> Dataset {
    let ids = arns(c, generation, which, regions);
    Dataset::from([("instances".to_string(), ids.clone()), ("devices".to_string(), ids)])
}

pub fn expected(which: Accounts) -> Arc<ExpectedFn> {
    Arc::new(move |c: &SimConfig, generation| dataset(c, generation, which, &REGIONS))
}

/// Small pages, the simulator's endpoints (`extra` overrides).
pub fn config(sim: &SimHandle, which: Accounts, extra: Value) -> Value {
    let c = &sim.config.credentials;
    let role = format!("arn:aws:iam::{}:role/{ROLE_NAME}", accounts(sim.config.seed)[1]);
    let accts = match which {
        Accounts::Own => json!([{}]),
        Accounts::Role => json!([{"role_arn": role}]),
        Accounts::Both => json!([{}, {"role_arn": role}]),
    };
    let mut cfg = json!({
        "access_key_id": c.client_id,
        "secret_access_key": c.client_secret,
        "regions": REGIONS,
        "accounts": accts,
        "endpoint": format!("{}/{{region}}", sim.base_url),
        "sts_endpoint": format!("{}/sts", sim.base_url),
        "page_size": 10,
        "timeout_secs": 5,
    });
    if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    cfg
}

pub async fn start(sim: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::Aws, sim).await.expect("the AWS simulator starts")
}
