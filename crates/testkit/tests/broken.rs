//! The suite catches broken adapters: the Okta adapter wrapped so that it
//! swallows an undecodable page (fetch drops it and returns `Ok`), or retries
//! refused credentials in `check`. Each fails the suite, naming exactly the
//! rule it breaks; the honest wrapper passes.

use std::sync::Arc;

use async_trait::async_trait;
use corral_adapter_okta::OktaFactory;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, CheckOutcome, ConfigError, FetchContext, FetchError, NormalizedPage,
    PageSink, RawPage,
};
use corral_sim::{SimConfig, SimHandle};
use corral_testkit::sim::SimEnv;
use corral_testkit::{Dataset, Env, SetupError, Vendor, Verdict, rules};
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Breakage {
    None,
    /// Drops a page that does not decode and reports the stream complete.
    SwallowsBadPage,
    /// Asks again (twice) after the vendor refused the credentials.
    RetriesAuth,
}

struct Broken {
    inner: Arc<dyn Adapter>,
    breakage: Breakage,
}

#[async_trait]
impl Adapter for Broken {
    fn info(&self) -> &AdapterInfo {
        self.inner.info()
    }

    async fn check(&self) -> CheckOutcome {
        let first = self.inner.check().await;
        if self.breakage == Breakage::RetriesAuth && matches!(first, CheckOutcome::AuthError { .. }) {
            for _ in 0..2 {
                let again = self.inner.check().await;
                if again.is_ok() {
                    return again;
                }
            }
        }
        first
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        if self.breakage != Breakage::SwallowsBadPage {
            return self.inner.fetch(ctx).await;
        }
        let (sink, mut pages) = PageSink::channel(4);
        let fetch = self.inner.fetch(ctx.with_sink(sink));
        let forward = async {
            while let Some(page) = pages.recv().await {
                if self.inner.normalize(&page).page_error.is_none() {
                    ctx.sink.send(page).await?;
                }
            }
            Ok::<(), FetchError>(())
        };
        let (fetched, forwarded) = tokio::join!(fetch, forward);
        // The inner fetch's own errors (refused credentials) still count.
        fetched?;
        forwarded
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        self.inner.normalize(page)
    }

    fn max_open_files(&self) -> usize {
        self.inner.max_open_files()
    }
}

struct BrokenFactory(Breakage);

impl AdapterFactory for BrokenFactory {
    fn info(&self) -> AdapterInfo {
        OktaFactory.info()
    }
    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        let inner = OktaFactory.build(connection, config)?;
        Ok(Arc::new(Broken { inner, breakage: self.0 }))
    }
}

/// Only what the two breakages need: the other faults are not applicable,
/// which keeps these runs short.
struct Okta(Breakage);

fn config(sim: &SimHandle) -> serde_json::Value {
    json!({"base_url": sim.base_url, "token": sim.config.credentials.token, "page_size": 10, "requests_per_minute": 0})
}

async fn start(sim: SimConfig) -> Result<Box<dyn Env>, SetupError> {
    let expected = Arc::new(|c: &SimConfig, generation| {
        let ids = corral_sim::okta_users(c.seed, c.size, generation)
            .iter()
            .filter_map(|u| u["id"].as_str().map(str::to_string))
            .collect();
        Dataset::from([("users".to_string(), ids)])
    });
    Ok(SimEnv::start(corral_sim::Vendor::Okta, sim, config, expected).await?.boxed())
}

#[async_trait]
impl Vendor for Okta {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(BrokenFactory(self.0))
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        start(SimConfig::new(61, 120)).await
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        start(SimConfig::new(61, 120).malformed_pages([2])).await
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Ok(())
    }
}

fn failed_rules(report: &corral_testkit::Report) -> Vec<&'static str> {
    report.failed().iter().map(|r| r.rule).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_honest_wrapper_passes() {
    let report = corral_testkit::check(&Okta(Breakage::None)).await;
    assert!(report.is_ok(), "{report}");
    // What the vendor description leaves out is reported, by rule, not passed.
    let na: Vec<&str> = report.not_applicable().iter().map(|r| r.rule).collect();
    assert!(na.contains(&rules::SERVER_ERRORS) && na.contains(&rules::TOKEN_EXPIRY), "{report}");
    for r in report.not_applicable() {
        let Verdict::NotApplicable(why) = &r.verdict else { unreachable!() };
        assert!(why.contains("start_with_") || why.contains("Vendor::"), "{}: {why}", r.rule);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swallowing_a_bad_page_fails_the_bad_page_rule() {
    let report = corral_testkit::check(&Okta(Breakage::SwallowsBadPage)).await;
    assert_eq!(failed_rules(&report), vec![rules::BAD_PAGE], "{report}");
    let messages = report.failure_messages().join("\n");
    let named = format!("rule `{}`: ", rules::BAD_PAGE);
    assert!(messages.contains(&format!("{named}the sync ended success (expected partial)")), "{messages}");
    assert!(messages.contains("marked stale after a run with a bad page"), "{messages}");

    // assert_ok panics with the same report.
    let panic = std::panic::catch_unwind(|| report.assert_ok()).expect_err("a failed report panics");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains(&named), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_refused_credentials_fails_the_bad_credentials_rule() {
    let report = corral_testkit::check(&Okta(Breakage::RetriesAuth)).await;
    assert_eq!(failed_rules(&report), vec![rules::CHECK_BAD_CREDENTIALS], "{report}");
    let messages = report.failure_messages().join("\n");
    let expected =
        format!("rule `{}`: check: the vendor refused the credentials 3 time(s)", rules::CHECK_BAD_CREDENTIALS);
    assert!(messages.contains(&expected), "{messages}");
}
