//! corral-testkit: the adapter conformance suite.
//!
//! Every adapter runs it with one call against its simulator:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn conformance() {
//!     corral_testkit::run(&MyVendor).await; // panics naming every rule that failed
//! }
//! ```
//!
//! The author describes how to reach their vendor by implementing [`Vendor`]:
//! the adapter's factory, a fresh simulator serving a known dataset
//! ([`Vendor::start`], returning an [`Env`]: the adapter config pointing at
//! it, the source ids expected per stream, counters), and, for each fault the
//! suite plants, a simulator with that fault (`start_with_*`). A fault a
//! simulator cannot produce, or that does not apply to the adapter (a file
//! has no HTTP, a static API token never expires), is answered with
//! [`SetupError::NotApplicable`] and a reason: the rule is then reported as
//! not applicable, by name and reason, never silently passed.
//! [`sim::SimEnv`] does most of the work for a simulator of `corral-sim`.
//!
//! [`check`] runs every rule, each against a fresh simulator and a fresh
//! [`MemoryStore`](corral_core::testing::MemoryStore), through the real
//! engine, and returns a [`Report`]; [`run`] panics with the report when a
//! rule failed. The rules (see [`rules`] and docs/ADAPTERS.md, "Testing your
//! adapter with corral-testkit"):
//!
//! | rule | asserts |
//! |---|---|
//! | [`rules::CONFIG_ERRORS`] | a missing or mistyped config field is refused, naming the field, never quoting a value or secret |
//! | [`rules::CHECK_OK`] | `check` passes with good credentials |
//! | [`rules::CHECK_BAD_CREDENTIALS`] | with bad credentials `check` is an auth error after one refused request; a sync fails without retrying the refusal |
//! | [`rules::FULL_SYNC`] | a full sync loads exactly the simulator's dataset, per stream, without rejects |
//! | [`rules::RERUN_UNCHANGED`] | a second sync changes nothing: all unchanged, nothing stale |
//! | [`rules::REMOVED_GO_STALE`] | records removed at the vendor are marked stale, and only they |
//! | [`rules::BAD_PAGE`] | a malformed or cut page gives rejects, status partial (failed when no stream could go on past it), no stale handling for its stream |
//! | [`rules::SERVER_ERRORS`] | 5xx answers are retried and the sync completes exactly |
//! | [`rules::HUNG_REQUEST`] | a request the vendor never answers is cut and retried |
//! | [`rules::RETRY_AFTER`] | a 429 (or the vendor's equivalent, [`Vendor::rate_limited_statuses`]) is waited out: no second one follows it |
//! | [`rules::TOKEN_EXPIRY`] | a token that dies mid-run is renewed |
//! | [`rules::INTERRUPTED`] | an interrupted run marks nothing stale and the rerun ends exact |
//! | [`rules::RESUMES`] | the rerun resumes from the interrupted run's checkpoint |
//! | [`rules::NO_SECRETS`] | no secret (good or bad, echoed back by the vendor) appears in logs, summaries, rejects, check outcomes or config errors |
//! | [`rules::OPEN_CONNECTIONS`] | the connections held open never exceed `max_open_files` |
//!
//! Logs are captured by installing a global `tracing` subscriber (debug
//! level) the first time the suite runs in a process; when another one was
//! installed first, the log part of [`rules::NO_SECRETS`] says so in its notes.
//! Runs use no [`Redactor`](corral_core::Redactor): the adapter itself must
//! keep its secrets out of what it reports.

mod logs;
pub mod replay;
pub mod rules;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_core::{Adapter, AdapterFactory, ConfigError, FieldType};
use serde_json::Value;

/// Source ids per stream name.
pub type Dataset = BTreeMap<String, BTreeSet<String>>;

/// Why an environment for a rule could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The rule does not apply to this adapter or simulator; the reason is reported.
    #[error("not applicable: {0}")]
    NotApplicable(String),
    /// Setting up failed (a simulator that would not start): the rule fails.
    #[error("setup failed: {0}")]
    Failed(String),
}

impl SetupError {
    pub fn not_applicable(reason: impl Into<String>) -> Self {
        SetupError::NotApplicable(reason.into())
    }
    pub fn failed(reason: impl Into<String>) -> Self {
        SetupError::Failed(reason.into())
    }
}

fn not_implemented(method: &str) -> SetupError {
    SetupError::NotApplicable(format!("the vendor description does not implement `Vendor::{method}`"))
}

/// One request as the vendor saw it (times since the simulator started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEvent {
    pub arrived: Duration,
    pub finished: Duration,
    pub status: u16,
}

/// What the vendor's simulator counted. Fields a simulator cannot count are
/// `None`; the rules that need them are then not applicable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every request received.
    pub requests: u64,
    /// Responses per HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Faults the simulator injected, by kind (`5xx`, `hang`, `malformed_page`,
    /// `truncate`, `token_expired`, ...): a rule checks its fault happened.
    pub faults: BTreeMap<String, u64>,
    /// Access tokens issued.
    pub tokens_issued: Option<u64>,
    /// Most TCP connections the client held open at once.
    pub max_open_connections: Option<u64>,
    /// Every request, in the order they finished.
    pub events: Vec<RequestEvent>,
}

impl Counters {
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
    /// Requests refused for their credentials (400, 401 and 403).
    pub fn refusals(&self) -> u64 {
        self.status(400) + self.status(401) + self.status(403)
    }
    pub fn server_errors(&self) -> u64 {
        self.by_status.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum()
    }
    pub fn fault(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }
    pub fn faults_injected(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// One running vendor (simulator, or files in a temporary directory) for one rule.
#[async_trait]
pub trait Env: Send + Sync {
    /// The adapter config (JSON, as a connection's config table) that
    /// reaches this environment with good credentials.
    fn config(&self) -> Value;

    /// The source ids a complete sync must load now, per stream. Every
    /// environment a [`Vendor`] starts serves the same dataset, faults aside.
    fn expected(&self) -> Dataset;

    /// Remove some records at the vendor (at least one): [`Env::expected`]
    /// no longer lists them afterwards.
    async fn remove_records(&self) -> Result<(), SetupError> {
        Err(not_implemented("Env::remove_records"))
    }

    /// What the vendor counted so far.
    fn counters(&self) -> Counters {
        Counters::default()
    }

    /// Stop the simulator (or remove the files).
    async fn shutdown(self: Box<Self>) {}
}

/// How the suite reaches a vendor: implemented once per adapter, in its tests.
///
/// The `start_with_*` methods have defaults that answer "not applicable";
/// override each one the simulator supports. Every environment serves the
/// same dataset as [`Vendor::start`] (same seed and size).
#[async_trait]
pub trait Vendor: Send + Sync {
    /// The adapter's factory: it builds the adapter from [`Env::config`], and
    /// its info lists the config fields (which are required, which secret).
    fn factory(&self) -> Arc<dyn AdapterFactory>;

    /// A fresh vendor serving the dataset, nothing planted. Keep it small
    /// (a few hundred records) in pages of about ten: the interrupted-run
    /// rule needs more pages than the engine holds in flight.
    async fn start(&self) -> Result<Box<dyn Env>, SetupError>;

    /// One page (or a few) of the listing served undecodable (malformed
    /// JSON, or cut short in a 200 answer) on every attempt.
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(not_implemented("start_with_bad_page"))
    }

    /// A burst of 5xx answers on data requests.
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(not_implemented("start_with_server_errors"))
    }

    /// One data request never answered (or only after a long time); the
    /// config sets the adapter's request timeout short (about a second).
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(not_implemented("start_with_hung_request"))
    }

    /// The rate limit already spent (by another client of the tenant): the
    /// first data request is answered 429 with a short wait (about a second
    /// or two, Retry-After or the vendor's equivalent), and the rest of the
    /// sync fits in the next window.
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(not_implemented("start_rate_limited"))
    }

    /// The statuses with which the vendor says "slow down" in the
    /// [`Vendor::start_rate_limited`] environment: 429 for most; Qualys
    /// answers 409 (with `X-RateLimit-ToWait-Sec`). The rate-limit rule looks
    /// for these.
    fn rate_limited_statuses(&self) -> &'static [u16] {
        &[429]
    }

    /// Tokens that stop working mid-run (the vendor refuses them with 401
    /// while their announced lifetime is not over).
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(not_implemented("start_with_expiring_token"))
    }

    /// A vendor that quotes refused credentials back in its error body.
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(not_implemented("start_echoing_credentials"))
    }

    /// `config` with wrong credentials. The default replaces every secret
    /// config field (as the factory's info declares them) with a wrong value.
    fn bad_credentials(&self, config: &Value) -> Result<Value, SetupError> {
        let info = self.factory().info();
        let secrets: Vec<&str> = info.config.iter().filter(|f| f.secret).map(|f| f.name.as_str()).collect();
        if secrets.is_empty() {
            return Err(SetupError::not_applicable(format!(
                "adapter `{}` has no secret config field: there are no credentials to get wrong",
                info.name
            )));
        }
        let mut bad = config.clone();
        let Some(obj) = bad.as_object_mut() else {
            return Err(SetupError::failed("the environment's config is not a JSON object"));
        };
        for name in secrets {
            obj.insert(name.to_string(), Value::String(format!("{PLANTED}-wrong-{name}")));
        }
        Ok(bad)
    }

    /// Whether the adapter saves checkpoints and resumes from them
    /// (`Ok(())`), or why not.
    fn checkpoints(&self) -> Result<(), SetupError> {
        Err(not_implemented("checkpoints"))
    }
}

/// The prefix of every value the suite plants (wrong credentials, mistyped
/// config values): never expected in anything the adapter reports.
pub const PLANTED: &str = "corral-testkit-planted-Zq7x";

/// The name of the connection every rule syncs.
pub const CONNECTION: &str = "testkit";

/// How one rule ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(Vec<String>),
    NotApplicable(String),
}

/// One rule's result.
#[derive(Debug, Clone)]
pub struct RuleResult {
    pub rule: &'static str,
    pub verdict: Verdict,
    /// What the rule observed or could not check, for the report.
    pub notes: Vec<String>,
    pub took: Duration,
}

/// What [`check`] found: one result per rule, in the order they ran.
#[derive(Debug, Clone)]
pub struct Report {
    pub adapter: String,
    pub results: Vec<RuleResult>,
}

impl Report {
    pub fn result(&self, rule: &str) -> Option<&RuleResult> {
        self.results.iter().find(|r| r.rule == rule)
    }
    pub fn failed(&self) -> Vec<&RuleResult> {
        self.results.iter().filter(|r| matches!(r.verdict, Verdict::Failed(_))).collect()
    }
    pub fn not_applicable(&self) -> Vec<&RuleResult> {
        self.results.iter().filter(|r| matches!(r.verdict, Verdict::NotApplicable(_))).collect()
    }
    pub fn is_ok(&self) -> bool {
        self.failed().is_empty()
    }
    /// One line per problem of each failed rule: "rule `NAME`: problem".
    pub fn failure_messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.failed() {
            if let Verdict::Failed(problems) = &r.verdict {
                out.extend(problems.iter().map(|p| format!("rule `{}`: {p}", r.rule)));
            }
        }
        out
    }
    /// Panic with the report when a rule failed.
    pub fn assert_ok(&self) {
        if !self.is_ok() {
            panic!("corral-testkit: {} rule(s) failed\n{self}", self.failed().len());
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "corral-testkit report for adapter `{}`:", self.adapter)?;
        for r in &self.results {
            let ms = r.took.as_millis();
            match &r.verdict {
                Verdict::Passed => writeln!(f, "  passed          {} ({ms} ms)", r.rule)?,
                Verdict::NotApplicable(why) => writeln!(f, "  not applicable  {}: {why}", r.rule)?,
                Verdict::Failed(problems) => {
                    writeln!(f, "  FAILED          {} ({ms} ms)", r.rule)?;
                    for p in problems {
                        writeln!(f, "      rule `{}`: {p}", r.rule)?;
                    }
                }
            }
            for n in &r.notes {
                writeln!(f, "                    note: {n}")?;
            }
        }
        Ok(())
    }
}

/// Run every rule against `vendor` and return the report.
pub async fn check(vendor: &dyn Vendor) -> Report {
    rules::run_all(vendor).await
}

/// Run every rule against `vendor`; print the report and panic when a rule
/// failed, naming each failed rule and what went wrong.
pub async fn run(vendor: &dyn Vendor) -> Report {
    let report = check(vendor).await;
    eprintln!("{report}");
    report.assert_ok();
    report
}

/// Build the adapter for `config` with the vendor's factory.
pub(crate) fn build(vendor: &dyn Vendor, config: Value) -> Result<Arc<dyn Adapter>, ConfigError> {
    vendor.factory().build(CONNECTION, config)
}

/// A value of the wrong JSON type for a field of type `ty`, carrying a planted marker.
pub(crate) fn wrong_type(ty: FieldType) -> (Value, &'static str) {
    match ty {
        FieldType::String | FieldType::Url | FieldType::Path => (Value::from(PLANTED_NUMBER), "a number"),
        FieldType::Integer | FieldType::Boolean | FieldType::Table | FieldType::List => {
            (Value::String(format!("{PLANTED}-value")), "a string")
        }
    }
}

/// A planted number: its digits must never show in an error.
pub(crate) const PLANTED_NUMBER: u64 = 8_675_309_424_242;
