//! The shipped `okta-spec` spec: the conformance suite against the
//! hand-written Okta simulator, and the same dataset synced with the Rust
//! `okta` adapter and with the spec stores the same assets, field by field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_adapter_okta::OktaFactory;
use corral_adapter_rest::RestFactory;
use corral_core::testing::{MemoryStore, sync_once};
use corral_core::{AdapterFactory, RunStatus};
use corral_sim::{Faults, SimConfig, SimHandle};
use corral_testkit::sim::{ExpectedFn, SimEnv};
use corral_testkit::{Dataset, Env, SetupError, Vendor};
use serde_json::{Value, json};

const SEED: u64 = 31;
const SIZE: usize = 120;

fn factory() -> RestFactory {
    corral_adapter_rest::shipped()
        .into_iter()
        .find(|f| f.info().name == "okta-spec")
        .expect("the okta-spec spec is shipped and loads")
}

fn expected() -> Arc<ExpectedFn> {
    Arc::new(|c: &SimConfig, generation| {
        let ids = corral_sim::okta_users(c.seed, c.size, generation)
            .iter()
            .filter_map(|u| u["id"].as_str().map(str::to_string))
            .collect();
        Dataset::from([("users".to_string(), ids)])
    })
}

fn config(sim: &SimHandle) -> Value {
    json!({"base_url": sim.base_url, "token": sim.config.credentials.token, "page_size": 10,
           "requests_per_minute": 0, "timeout_secs": 1})
}

async fn start(sim: SimConfig) -> Result<SimEnv, SetupError> {
    SimEnv::start(corral_sim::Vendor::Okta, sim, config, expected()).await
}

fn base() -> SimConfig {
    SimConfig::new(SEED, SIZE)
}

struct OktaSpec;

#[async_trait]
impl Vendor for OktaSpec {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(factory())
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base()).await?.boxed())
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().malformed_pages([3])).await?.boxed())
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().error_rate(0.2)).await?.boxed())
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { hang_requests: vec![2], ..Faults::default() })).await?.boxed())
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        let env = start(base().rate_limit(40, Duration::from_secs(1))).await?;
        env.handle().spend(40);
        Ok(env.boxed())
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("an Okta API token (SSWS) has no lifetime to renew"))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        Ok(start(base().faults(Faults { echo_credentials: true, ..Faults::default() })).await?.boxed())
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_okta_spec_passes_the_testkit() {
    corral_testkit::run(&OktaSpec).await;
}

/// Stored assets by source id: (kind, stream, fields with attributes, raw).
fn stored(store: &MemoryStore) -> BTreeMap<String, (String, String, Value, Option<Value>)> {
    store
        .all_assets()
        .into_iter()
        .map(|a| (a.source_id.clone(), (a.kind.to_string(), a.stream.clone(), a.fields.clone(), a.raw.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_stores_what_the_rust_adapter_stores_field_by_field() {
    for keep_raw in [false, true] {
        let sim = corral_sim::start(corral_sim::Vendor::Okta, SimConfig::new(77, 450)).await.expect("simulator");
        let cfg = json!({"base_url": sim.base_url, "token": sim.config.credentials.token, "page_size": 100,
                         "requests_per_minute": 0, "keep_raw": keep_raw});
        let rust = OktaFactory.build("okta", cfg.clone()).expect("okta config");
        let spec = factory().build("okta", cfg).expect("spec config");
        let (rust_store, spec_store) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let a = sync_once(&rust_store, "okta", rust).await;
        let b = sync_once(&spec_store, "okta", spec).await;
        assert_eq!(a.status, RunStatus::Success, "{:?}", a.errors);
        assert_eq!(b.status, RunStatus::Success, "{:?}", b.errors);
        assert_eq!((a.assets_normalized, a.records_rejected), (b.assets_normalized, b.records_rejected));
        let (want, got) = (stored(&rust_store), stored(&spec_store));
        assert_eq!(want.len(), 450);
        assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "the same keys");
        let mut fields_seen = std::collections::BTreeSet::new();
        for (id, w) in &want {
            let g = &got[id];
            if let Value::Object(m) = &w.2 {
                fields_seen.extend(m.keys().cloned());
                if let Some(Value::Object(attrs)) = m.get("attributes") {
                    fields_seen.extend(attrs.keys().map(|k| format!("attributes.{k}")));
                }
            }
            assert_eq!(w, g, "user {id} (keep_raw={keep_raw})");
        }
        // The comparison covered every field the Rust adapter fills.
        for f in [
            "username",
            "email",
            "display_name",
            "first_name",
            "last_name",
            "active",
            "status",
            "created",
            "last_login",
            "tags",
            "attributes.okta_status",
            "attributes.credentials_provider_type",
            "attributes.status_changed",
        ] {
            assert!(fields_seen.contains(f), "no stored user has `{f}`: {fields_seen:?}");
        }
        sim.shutdown().await;
    }
}
