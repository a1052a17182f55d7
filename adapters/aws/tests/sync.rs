//! The AWS adapter against its simulator: NextToken pagination across
//! regions to the exact instance set, RequestLimitExceeded retried and
//! counted, assumed-role sessions used and renewed, a failed region making
//! the run partial without losing the others or marking anything stale.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Accounts, REGIONS};
use corral_adapter_aws::{Aws, DEVICES, INSTANCES};
use corral_core::testing::MemoryStore;
use corral_core::{AssetKind, Connection, Engine, EngineConfig, RunStatus, RunSummary, Store};
use corral_sim::data::aws::{AwsData, accounts};
use corral_sim::{Behavior, Faults, SimConfig, SimHandle};
use serde_json::{Value, json};

const SEED: u64 = 82;

fn adapter(sim: &SimHandle, which: Accounts, extra: Value) -> Arc<Aws> {
    Arc::new(Aws::from_config("aws", common::config(sim, which, extra)).expect("valid config"))
}

async fn sync(store: &Arc<MemoryStore>, adapter: Arc<Aws>) -> RunSummary {
    let engine = Engine::new(EngineConfig::default(), store.clone() as Arc<dyn Store>).expect("engine");
    let conn = Connection { name: "aws".into(), adapter, streams: Vec::new(), stale: Default::default() };
    tokio::time::timeout(Duration::from_secs(120), engine.sync(conn)).await.expect("the sync ends in time")
}

/// Live (not stale) source ids per stream.
fn live(store: &MemoryStore) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in store.all_assets().into_iter().filter(|a| a.stale_since.is_none()) {
        out.entry(a.stream.clone()).or_default().insert(a.source_id.clone());
    }
    out
}

fn ec2_answers(sim: &SimHandle, status: u16) -> usize {
    sim.counters.events().iter().filter(|e| e.endpoint == "aws.ec2" && e.status == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_tokens_are_followed_in_three_regions_to_the_exact_instance_set() {
    let sim = common::start(SimConfig::new(SEED, 60)).await;
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, Accounts::Own, json!({"page_size": 7, "requests_per_second": 200}))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    let expected = common::dataset(&sim.config, 0, Accounts::Own, &REGIONS);
    assert_eq!(live(&store), expected, "every instance of the three regions, nothing else");
    // Each region's listing in pages of 7, once per stream; nothing fetched twice.
    let account = &accounts(SEED)[0];
    let counts: Vec<u64> = REGIONS.iter().map(|r| AwsData::new(SEED, 60, 0, account, r).count()).collect();
    let pages: u64 = counts.iter().map(|n| n.div_ceil(7).max(1)).sum();
    assert_eq!(ec2_answers(&sim, 200) as u64, 2 * pages, "{counts:?}");
    for stream in [INSTANCES, DEVICES] {
        let st = &s.streams[stream];
        assert_eq!(st.records_fetched, counts.iter().sum::<u64>(), "{stream}");
        assert!(st.fetch_completed && st.stale_handled, "{stream}");
    }
    assert!(expected[INSTANCES].len() > 90, "a real dataset: {}", expected[INSTANCES].len());
    // Both views of an instance share its id as a correlation key.
    let all = store.all_assets();
    let one = expected[INSTANCES].iter().next().expect("an instance");
    let keys = |kind: AssetKind| {
        let a = all.iter().find(|a| a.kind == kind && &a.source_id == one).expect("stored").asset().expect("reads");
        a.correlation_keys().into_iter().map(|(_, v)| v).collect::<BTreeSet<String>>()
    };
    let id = one.rsplit('/').next().expect("an id").to_string();
    assert!(keys(AssetKind::CloudResource).contains(&id) && keys(AssetKind::Device).contains(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limit_exceeded_is_backed_off_retried_and_counted() {
    let faults = Faults { aws_throttles: 3, ..Faults::default() };
    let sim = common::start(SimConfig::new(SEED, 30).faults(faults)).await;
    let store = Arc::new(MemoryStore::new());
    let s = sync(&store, adapter(&sim, Accounts::Own, json!({"requests_per_second": 200}))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(live(&store), common::dataset(&sim.config, 0, Accounts::Own, &REGIONS));
    let c = sim.counters.snapshot();
    assert_eq!(c.fault("request_limit_exceeded"), 3);
    assert_eq!(ec2_answers(&sim, 503), 3);
    assert_eq!(s.requests.rate_limited, 3, "each 503 RequestLimitExceeded counted as rate limited");
    assert!(s.requests.retries >= 3, "{} retries", s.requests.retries);
    assert_eq!(s.requests.by_status.get(&503).copied(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assumed_role_is_used_and_its_sessions_renewed_before_they_end() {
    // Sessions of two seconds, announced as such: the adapter must renew each
    // before it ends, never sending an expired one.
    let sim = common::start(SimConfig::new(SEED, 40).token_ttl(Duration::from_secs(2)).latency_ms(20)).await;
    let store = Arc::new(MemoryStore::new());
    let a = adapter(&sim, Accounts::Both, json!({"page_size": 5, "requests_per_second": 5}));
    let s = sync(&store, a.clone()).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    // Both accounts: the key's own, and the role's, which only a session reaches.
    assert_eq!(live(&store), common::dataset(&sim.config, 0, Accounts::Both, &REGIONS));
    let role_account = &accounts(SEED)[1];
    assert!(live(&store)[INSTANCES].iter().any(|arn| arn.contains(role_account)));
    let c = sim.counters.snapshot();
    assert!(c.tokens_issued >= 2, "{} session(s): none renewed", c.tokens_issued);
    assert_eq!(c.tokens_issued, a.sessions_issued());
    assert_eq!(c.fault("token_expired"), 0, "an expired session was sent");
    assert_eq!(c.fault("signature_mismatch"), 0);
    assert_eq!(c.endpoint("aws.sts"), c.tokens_issued, "one STS call per session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_region_makes_the_run_partial_keeps_the_others_and_marks_nothing_stale() {
    let config = SimConfig::new(SEED, 80);
    let store = Arc::new(MemoryStore::new());
    // A first, complete run.
    let sim = common::start(config.clone()).await;
    let s = sync(&store, adapter(&sim, Accounts::Own, json!({"requests_per_second": 200}))).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    let before = live(&store);
    sim.shutdown().await;
    // The same accounts, a generation later that replaced instances of the
    // healthy regions, with eu-west-1 failing (not enabled: 401 AuthFailure).
    let healthy_regions = ["us-east-1", "ap-southeast-2"];
    let generation = (1..=32)
        .find(|g| {
            common::arns(&config, *g, Accounts::Own, &healthy_regions)
                != common::arns(&config, 0, Accounts::Own, &healthy_regions)
        })
        .expect("a generation replaces an instance");
    let behavior = Behavior { aws_disabled_regions: vec!["eu-west-1".into()], ..Behavior::default() };
    let sim = common::start(config.clone().generation(generation).behavior(behavior)).await;
    let s = sync(&store, adapter(&sim, Accounts::Own, json!({"requests_per_second": 200}))).await;
    assert_eq!(s.status, RunStatus::Partial, "{:?}", s.errors);
    for stream in [INSTANCES, DEVICES] {
        let st = &s.streams[stream];
        assert!(st.fetch_error.is_none(), "{stream}: {:?}", st.fetch_error);
        assert!(st.incomplete.as_deref().is_some_and(|e| e.contains("eu-west-1")), "{stream}: {:?}", st.incomplete);
        assert!(!st.fetch_completed && !st.stale_handled, "{stream}");
    }
    assert!(s.errors.iter().any(|e| e.contains("eu-west-1")), "{:?}", s.errors);
    assert_eq!(s.stale_marked, 0);
    // The healthy regions' instances of this generation are all stored...
    let now = live(&store);
    let healthy = common::dataset(&sim.config, generation, Accounts::Own, &healthy_regions);
    for stream in [INSTANCES, DEVICES] {
        assert!(healthy[stream].is_subset(&now[stream]), "{stream}");
    }
    // ...and nothing of the failed region (or anything else) went stale.
    let failed_region: BTreeSet<String> =
        before[INSTANCES].iter().filter(|a| a.contains(":eu-west-1:")).cloned().collect();
    assert!(!failed_region.is_empty());
    assert!(failed_region.is_subset(&now[INSTANCES]));
    assert!(store.all_assets().iter().all(|a| a.stale_since.is_none()));
    let replaced = healthy[INSTANCES].difference(&before[INSTANCES]).count();
    assert!(replaced > 0, "generation {generation} replaced instances of the healthy regions");
    // Exactly one refused call per stream in eu-west-1 (not retried).
    assert_eq!(ec2_answers(&sim, 401), 2);
}
