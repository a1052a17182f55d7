//! The rules, their names, and how they run.
//!
//! Each rule starts the environment it needs from the [`Vendor`], builds the
//! adapter from its config, syncs through the real engine into a fresh
//! [`MemoryStore`] and checks what came out. A rule collects every problem it
//! finds instead of stopping at the first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::testing::MemoryStore;
use corral_core::{Adapter, CheckOutcome, Connection, Engine, EngineConfig, RunStatus, RunSummary, StalePolicy, Store};
use serde_json::Value;

use crate::{CONNECTION, Dataset, Env, PLANTED, PLANTED_NUMBER, Report, RuleResult, SetupError, Vendor, Verdict};

pub const CONFIG_ERRORS: &str = "config errors name fields and never quote secrets";
pub const CHECK_OK: &str = "check passes with good credentials";
pub const CHECK_BAD_CREDENTIALS: &str = "check fails once, without retries, on bad credentials";
pub const FULL_SYNC: &str = "full sync loads exactly the dataset";
pub const RERUN_UNCHANGED: &str = "rerun is all unchanged";
pub const REMOVED_GO_STALE: &str = "records removed at the vendor go stale";
pub const BAD_PAGE: &str = "cut or malformed page gives rejects, partial, nothing stale";
pub const SERVER_ERRORS: &str = "5xx answers are retried";
pub const HUNG_REQUEST: &str = "hung request is cut and retried";
pub const RETRY_AFTER: &str = "429 with Retry-After is waited out";
pub const TOKEN_EXPIRY: &str = "token expiring mid-run is renewed";
pub const INTERRUPTED: &str = "interrupted run ends exact on rerun";
pub const RESUMES: &str = "rerun resumes from the checkpoint";
pub const NO_SECRETS: &str = "no secret in logs, summaries or rejects";
pub const OPEN_CONNECTIONS: &str = "open connections within max_open_files";

/// Every rule, in the order [`crate::check`] runs them.
pub const ALL: &[&str] = &[
    CONFIG_ERRORS,
    CHECK_OK,
    CHECK_BAD_CREDENTIALS,
    FULL_SYNC,
    RERUN_UNCHANGED,
    REMOVED_GO_STALE,
    OPEN_CONNECTIONS,
    BAD_PAGE,
    SERVER_ERRORS,
    HUNG_REQUEST,
    RETRY_AFTER,
    TOKEN_EXPIRY,
    INTERRUPTED,
    RESUMES,
    NO_SECRETS,
];

/// The longest one sync or check may take before the rule gives up on it.
pub const SYNC_LIMIT: Duration = Duration::from_secs(60);

/// What a rule reports: problems (none: passed), or not applicable.
#[derive(Default)]
struct Outcome {
    problems: Vec<String>,
    notes: Vec<String>,
    not_applicable: Option<String>,
}

impl Outcome {
    fn fail(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }
    fn expect(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }
    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
    /// Record a setup error: not applicable, or a failure.
    fn setup(&mut self, e: SetupError) {
        match e {
            SetupError::NotApplicable(why) => self.not_applicable = Some(why),
            SetupError::Failed(why) => self.problems.push(format!("setup failed: {why}")),
        }
    }
}

/// State carried between rules.
#[derive(Default)]
struct Ctx {
    /// Every secret value configured or planted so far.
    secrets: BTreeSet<String>,
    /// Text the adapter produced, by where it came from: summaries, rejects,
    /// check outcomes, config errors.
    artifacts: Vec<(String, String)>,
    /// The full sync's environment, store and adapter, for the rules that follow it.
    full: Option<Full>,
    /// Peak connections the full sync held open, and what the adapter declared.
    connections: Option<(Option<u64>, usize)>,
    /// What the interrupted-run rule saw, for the resume rule.
    resume: Option<Resume>,
}

struct Full {
    env: Box<dyn Env>,
    store: Arc<MemoryStore>,
    adapter: Arc<dyn Adapter>,
    /// The first sync succeeded and loaded the dataset.
    clean: bool,
}

impl Ctx {
    /// Remember the secret values of `config` (its fields declared secret).
    fn secrets_of(&mut self, vendor: &dyn Vendor, config: &Value) {
        for f in vendor.factory().info().config.iter().filter(|f| f.secret) {
            if let Some(s) = config.get(&f.name).and_then(Value::as_str)
                && s.len() >= 4
            {
                self.secrets.insert(s.to_string());
            }
        }
    }

    fn artifact(&mut self, rule: &str, what: &str, text: String) {
        self.artifacts.push((format!("{what} (rule `{rule}`)"), text));
    }

    /// Sync once through a fresh engine into `store`, bounded by [`SYNC_LIMIT`];
    /// the summary and the stored rejects are kept for the secrets rule.
    async fn sync(
        &mut self,
        rule: &str,
        adapter: Arc<dyn Adapter>,
        store: &Arc<MemoryStore>,
    ) -> Result<RunSummary, String> {
        let engine = Engine::new(engine_config(), store.clone()).map_err(|e| e.to_string())?;
        let run = engine.sync(connection(adapter));
        let summary = tokio::time::timeout(SYNC_LIMIT, run)
            .await
            .map_err(|_| format!("the sync did not end within {} s", SYNC_LIMIT.as_secs()))?;
        self.keep(rule, &summary, store).await;
        Ok(summary)
    }

    async fn keep(&mut self, rule: &str, summary: &RunSummary, store: &Arc<MemoryStore>) {
        let text = serde_json::to_string(summary).unwrap_or_else(|_| format!("{summary:?}"));
        self.artifact(rule, "a run summary", text);
        if let Ok(rejects) = store.rejects(&summary.sync_id, usize::MAX).await
            && !rejects.is_empty()
        {
            let text = serde_json::to_string(&rejects).unwrap_or_else(|_| format!("{rejects:?}"));
            self.artifact(rule, "the stored rejects", text);
        }
    }

    async fn check(&mut self, rule: &str, adapter: &dyn Adapter) -> Result<CheckOutcome, String> {
        let outcome = tokio::time::timeout(SYNC_LIMIT, adapter.check())
            .await
            .map_err(|_| format!("check did not answer within {} s", SYNC_LIMIT.as_secs()))?;
        self.artifact(rule, "a check outcome", format!("{outcome} {outcome:?}"));
        Ok(outcome)
    }
}

/// Small batches and channels: pages are acknowledged (and checkpoints
/// saved) one by one, and few are in flight, so a run can be cut mid-way.
fn engine_config() -> EngineConfig {
    EngineConfig {
        raw_channel_capacity: 1,
        normalized_channel_capacity: 1,
        normalize_in_flight: 1,
        normalize_threads: 2,
        batch_max_records: 10,
        batch_max_wait_ms: 50,
        batches_in_flight: 1,
        lag_warn_ms: 10_000,
        ..EngineConfig::default()
    }
}

fn connection(adapter: Arc<dyn Adapter>) -> Connection {
    Connection { name: CONNECTION.into(), adapter, streams: Vec::new(), stale: StalePolicy::default() }
}

/// Source ids in the store per stream: `live` ones (not stale), or stale ones.
fn stored(store: &MemoryStore, stale: bool) -> Dataset {
    let mut out = Dataset::new();
    for a in store.all_assets() {
        if a.stale_since.is_some() == stale {
            out.entry(a.stream).or_default().insert(a.source_id);
        }
    }
    out
}

fn count(d: &Dataset) -> usize {
    d.values().map(BTreeSet::len).sum()
}

/// How `got` differs from `want`, stream by stream (None: the same).
fn differences(what: &str, want: &Dataset, got: &Dataset) -> Option<String> {
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    let streams: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    for s in streams {
        let (w, g) = (want.get(s).unwrap_or(&empty), got.get(s).unwrap_or(&empty));
        let missing: Vec<&String> = w.difference(g).collect();
        let extra: Vec<&String> = g.difference(w).collect();
        if !missing.is_empty() || !extra.is_empty() {
            let eg = |v: &[&String]| v.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            out.push(format!(
                "stream `{s}`: {} missing (e.g. {}), {} unexpected (e.g. {}) of {} expected",
                missing.len(),
                eg(&missing),
                extra.len(),
                eg(&extra),
                w.len()
            ));
        }
    }
    (!out.is_empty()).then(|| format!("{what}: {}", out.join("; ")))
}

fn errors(s: &RunSummary) -> String {
    if s.errors.is_empty() { "no errors".into() } else { s.errors.join(" | ") }
}

/// A sync that must load everything: success, exactly `want`, no rejects.
fn expect_exact(out: &mut Outcome, summary: &RunSummary, store: &MemoryStore, want: &Dataset) {
    out.expect(summary.status == RunStatus::Success, || {
        format!("the sync ended {} (expected success): {}", summary.status, errors(summary))
    });
    if let Some(d) = differences("the store does not hold exactly the dataset", want, &stored(store, false)) {
        out.fail(d);
    }
    out.expect(summary.records_rejected == 0 && summary.pages_rejected == 0, || {
        format!(
            "{} record(s) and {} page(s) rejected: {:?}",
            summary.records_rejected,
            summary.pages_rejected,
            summary.rejects.keys().collect::<Vec<_>>()
        )
    });
}

/// Run every rule.
pub(crate) async fn run_all(vendor: &dyn Vendor) -> Report {
    let logs = crate::logs::install();
    let mut ctx = Ctx::default();
    let mut report = Report { adapter: vendor.factory().info().name, results: Vec::new() };
    for &rule in ALL {
        let started = Instant::now();
        let mut out = Outcome::default();
        match rule {
            CONFIG_ERRORS => config_errors(vendor, &mut ctx, &mut out).await,
            CHECK_OK => check_ok(vendor, &mut ctx, &mut out).await,
            CHECK_BAD_CREDENTIALS => check_bad_credentials(vendor, &mut ctx, &mut out).await,
            FULL_SYNC => full_sync(vendor, &mut ctx, &mut out).await,
            RERUN_UNCHANGED => rerun_unchanged(&mut ctx, &mut out).await,
            REMOVED_GO_STALE => removed_go_stale(&mut ctx, &mut out).await,
            OPEN_CONNECTIONS => open_connections(&mut ctx, &mut out).await,
            BAD_PAGE => bad_page(vendor, &mut ctx, &mut out).await,
            SERVER_ERRORS => server_errors(vendor, &mut ctx, &mut out).await,
            HUNG_REQUEST => hung_request(vendor, &mut ctx, &mut out).await,
            RETRY_AFTER => retry_after(vendor, &mut ctx, &mut out).await,
            TOKEN_EXPIRY => token_expiry(vendor, &mut ctx, &mut out).await,
            INTERRUPTED => interrupted(vendor, &mut ctx, &mut out).await,
            RESUMES => {}
            NO_SECRETS => no_secrets(vendor, &mut ctx, &mut out, logs).await,
            _ => out.fail("unknown rule"),
        }
        if rule == INTERRUPTED {
            // The resume rule is checked on the same runs; it reports separately.
            let resume = ctx_resume(&mut ctx);
            push(&mut report, rule, out, started);
            let started = Instant::now();
            push(&mut report, RESUMES, resume, started);
            continue;
        }
        if rule == RESUMES {
            continue;
        }
        push(&mut report, rule, out, started);
    }
    if let Some(full) = ctx.full.take() {
        full.env.shutdown().await;
    }
    report
}

fn push(report: &mut Report, rule: &'static str, out: Outcome, started: Instant) {
    let verdict = match (out.problems.is_empty(), out.not_applicable) {
        (false, _) => Verdict::Failed(out.problems),
        (true, Some(why)) => Verdict::NotApplicable(why),
        (true, None) => Verdict::Passed,
    };
    report.results.push(RuleResult { rule, verdict, notes: out.notes, took: started.elapsed() });
}

/// Start an environment, or record why not.
async fn start(
    out: &mut Outcome,
    ctx: &mut Ctx,
    vendor: &dyn Vendor,
    env: Result<Box<dyn Env>, SetupError>,
) -> Option<Box<dyn Env>> {
    match env {
        Ok(env) => {
            ctx.secrets_of(vendor, &env.config());
            Some(env)
        }
        Err(e) => {
            out.setup(e);
            None
        }
    }
}

fn build(out: &mut Outcome, vendor: &dyn Vendor, config: Value) -> Option<Arc<dyn Adapter>> {
    match crate::build(vendor, config) {
        Ok(a) => Some(a),
        Err(e) => {
            out.fail(format!("the environment's config was refused: {e}"));
            None
        }
    }
}

// ---------------------------------------------------------------------------

async fn config_errors(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let Some(env) = start(out, ctx, vendor, vendor.start().await).await else { return };
    let good = env.config();
    env.shutdown().await;
    let info = vendor.factory().info();
    let Some(obj) = good.as_object() else {
        out.fail("the environment's config is not a JSON object");
        return;
    };
    let planted_number = PLANTED_NUMBER.to_string();
    let mut cases = 0;
    for field in &info.config {
        let mut variants = Vec::new();
        if field.required {
            let mut cfg = obj.clone();
            cfg.remove(&field.name);
            variants.push((Value::Object(cfg), "left out".to_string(), true));
        }
        let (value, shape) = crate::wrong_type(field.ty);
        let mut cfg = obj.clone();
        cfg.insert(field.name.clone(), value);
        variants.push((Value::Object(cfg), format!("given {shape}"), true));
        if field.secret {
            let mut cfg = obj.clone();
            cfg.insert(field.name.clone(), Value::Array(vec![Value::String(format!("{PLANTED}-secret"))]));
            variants.push((Value::Object(cfg), "given a list".to_string(), true));
        }
        for (cfg, how, must_fail) in variants {
            cases += 1;
            match crate::build(vendor, cfg) {
                Ok(_) if must_fail => out.fail(format!(
                    "config field `{}` {how} was accepted (declared {:?}{})",
                    field.name,
                    field.ty,
                    if field.required { ", required" } else { "" }
                )),
                Ok(_) => {}
                Err(e) => {
                    let text = format!("{e} {e:?}");
                    ctx.artifact(CONFIG_ERRORS, "a config error", text.clone());
                    out.expect(e.to_string().contains(&field.name), || {
                        format!("config field `{}` {how}: the error does not name it: {e}", field.name)
                    });
                    out.expect(!text.contains(PLANTED) && !text.contains(&planted_number), || {
                        format!("config field `{}` {how}: the error quotes the value given", field.name)
                    });
                    for s in &ctx.secrets {
                        out.expect(!text.contains(s.as_str()), || {
                            format!("config field `{}` {how}: the error quotes a secret of the config", field.name)
                        });
                    }
                }
            }
        }
    }
    out.expect(cases > 0, || "the adapter declares no config field: nothing to check".into());
    out.note(format!("{cases} broken config(s) tried"));
}

async fn check_ok(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let Some(env) = start(out, ctx, vendor, vendor.start().await).await else { return };
    if let Some(adapter) = build(out, vendor, env.config()) {
        match ctx.check(CHECK_OK, &*adapter).await {
            Ok(o) => out.expect(o.is_ok(), || format!("check failed with good credentials: {o}")),
            Err(e) => out.fail(e),
        }
    }
    env.shutdown().await;
}

async fn check_bad_credentials(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let Some(env) = start(out, ctx, vendor, vendor.start().await).await else { return };
    let bad = match vendor.bad_credentials(&env.config()) {
        Ok(bad) => bad,
        Err(e) => {
            out.setup(e);
            env.shutdown().await;
            return;
        }
    };
    ctx.secrets_of(vendor, &bad);
    if let Some(adapter) = build(out, vendor, bad) {
        let before = env.counters();
        match ctx.check(CHECK_BAD_CREDENTIALS, &*adapter).await {
            Ok(CheckOutcome::AuthError { endpoint, .. }) => {
                out.expect(!endpoint.is_empty(), || "the auth error names no endpoint".into());
            }
            Ok(o) => out.fail(format!("check with bad credentials: expected an auth error, got: {o}")),
            Err(e) => out.fail(e),
        }
        let after = env.counters();
        let refused = after.refusals() - before.refusals();
        out.expect(refused == 1, || {
            format!(
                "check: the vendor refused the credentials {refused} time(s) ({} request(s) in all): expected exactly one \
                 refused request, never retried",
                after.requests - before.requests
            )
        });
        let store = Arc::new(MemoryStore::new());
        match ctx.sync(CHECK_BAD_CREDENTIALS, adapter.clone(), &store).await {
            Ok(summary) => {
                out.expect(summary.status == RunStatus::Failed, || {
                    format!("a sync with bad credentials ended {} (expected failed)", summary.status)
                });
                out.expect(store.asset_count() == 0, || format!("{} asset(s) stored", store.asset_count()));
                let last = env.counters();
                let streams = summary.streams.len().max(1) as u64;
                let refused = last.refusals() - after.refusals();
                out.expect((1..=streams).contains(&refused), || {
                    format!(
                        "sync: the vendor refused the credentials {refused} time(s) for {streams} stream(s): a refusal \
                         must not be retried"
                    )
                });
            }
            Err(e) => out.fail(e),
        }
    }
    env.shutdown().await;
}

async fn full_sync(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let Some(env) = start(out, ctx, vendor, vendor.start().await).await else { return };
    let Some(adapter) = build(out, vendor, env.config()) else {
        env.shutdown().await;
        return;
    };
    let want = env.expected();
    out.expect(count(&want) > 0, || "the environment's dataset is empty".into());
    let store = Arc::new(MemoryStore::new());
    match ctx.sync(FULL_SYNC, adapter.clone(), &store).await {
        Ok(summary) => {
            expect_exact(out, &summary, &store, &want);
            for stream in want.keys() {
                match summary.streams.get(stream) {
                    Some(s) => out.expect(s.fetch_completed && s.stale_handled, || {
                        format!(
                            "stream `{stream}`: fetch completed {}, stale handled {}",
                            s.fetch_completed, s.stale_handled
                        )
                    }),
                    None => out.fail(format!("stream `{stream}` is not in the summary")),
                }
            }
            out.expect(store.stale_count() == 0, || format!("{} asset(s) stale", store.stale_count()));
            out.note(format!("{} record(s) in {} page(s)", summary.records_fetched, summary.pages));
        }
        Err(e) => out.fail(e),
    }
    ctx.connections = Some((env.counters().max_open_connections, adapter.max_open_files()));
    let clean = out.problems.is_empty();
    ctx.full = Some(Full { env, store, adapter, clean });
}

/// The full sync's state, when it was clean; otherwise a problem naming it.
fn needs_full<'a>(ctx: &'a mut Ctx, out: &mut Outcome) -> Option<&'a mut Full> {
    match ctx.full.as_mut() {
        Some(full) if full.clean => Some(full),
        Some(_) => {
            out.fail(format!("not checked: it needs the clean first sync of rule `{FULL_SYNC}`, which failed"));
            None
        }
        None => {
            out.fail(format!("not checked: rule `{FULL_SYNC}` could not set up"));
            None
        }
    }
}

async fn rerun_unchanged(ctx: &mut Ctx, out: &mut Outcome) {
    let Some(full) = needs_full(ctx, out) else { return };
    let (adapter, store, want) = (full.adapter.clone(), full.store.clone(), full.env.expected());
    match ctx.sync(RERUN_UNCHANGED, adapter, &store).await {
        Ok(s) => {
            expect_exact(out, &s, &store, &want);
            let total = count(&want) as u64;
            out.expect(s.inserted == 0 && s.updated == 0 && s.unchanged == total, || {
                format!(
                    "inserted {}, updated {}, unchanged {} (expected 0, 0, {total})",
                    s.inserted, s.updated, s.unchanged
                )
            });
            out.expect(s.stale_marked == 0 && store.stale_count() == 0, || {
                format!("{} asset(s) marked stale by a rerun of the same dataset", store.stale_count())
            });
        }
        Err(e) => {
            out.fail(e);
            if let Some(full) = ctx.full.as_mut() {
                full.clean = false;
            }
        }
    }
}

async fn removed_go_stale(ctx: &mut Ctx, out: &mut Outcome) {
    let Some(full) = needs_full(ctx, out) else { return };
    let before = full.env.expected();
    if let Err(e) = full.env.remove_records().await {
        out.setup(e);
        return;
    }
    let after = full.env.expected();
    let mut removed = Dataset::new();
    for (stream, ids) in &before {
        let kept = after.get(stream).cloned().unwrap_or_default();
        let gone: BTreeSet<String> = ids.difference(&kept).cloned().collect();
        if !gone.is_empty() {
            removed.insert(stream.clone(), gone);
        }
    }
    if count(&removed) == 0 {
        out.fail("setup failed: Env::remove_records removed nothing from Env::expected");
        return;
    }
    let (adapter, store) = (full.adapter.clone(), full.store.clone());
    match ctx.sync(REMOVED_GO_STALE, adapter, &store).await {
        Ok(s) => {
            expect_exact(out, &s, &store, &after);
            if let Some(d) =
                differences("the stale assets are not the removed records", &removed, &stored(&store, true))
            {
                out.fail(d);
            }
            out.expect(s.stale_marked == count(&removed) as u64, || {
                format!("the summary counts {} marked stale, {} were removed", s.stale_marked, count(&removed))
            });
            out.note(format!("{} record(s) removed", count(&removed)));
        }
        Err(e) => out.fail(e),
    }
}

async fn open_connections(ctx: &mut Ctx, out: &mut Outcome) {
    match ctx.connections {
        None => out.fail(format!("not checked: rule `{FULL_SYNC}` could not set up")),
        Some((None, _)) => out.not_applicable = Some("the vendor does not count the connections it serves".into()),
        Some((Some(peak), declared)) => {
            out.expect(peak >= 1, || "the vendor counted no connection during the full sync".into());
            out.expect(peak <= declared as u64, || {
                format!("the full sync held {peak} connection(s) open at once; max_open_files declares {declared}")
            });
            out.note(format!("at most {peak} connection(s) open; max_open_files {declared}"));
        }
    }
}

async fn bad_page(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let env = match vendor.start_with_bad_page().await {
        Ok(env) => env,
        Err(e) => return out.setup(e),
    };
    ctx.secrets_of(vendor, &env.config());
    // First a clean sync of the same dataset: stale handling after the bad
    // run would then mark what the bad page held.
    let store = Arc::new(MemoryStore::new());
    if let Some(clean) = start(out, ctx, vendor, vendor.start().await).await {
        if let Some(adapter) = build(out, vendor, clean.config()) {
            match ctx.sync(BAD_PAGE, adapter, &store).await {
                Ok(s) if s.status == RunStatus::Success => {}
                Ok(s) => out.fail(format!("setup: the clean sync ended {}: {}", s.status, errors(&s))),
                Err(e) => out.fail(format!("setup: {e}")),
            }
        }
        clean.shutdown().await;
    }
    if !out.problems.is_empty() {
        env.shutdown().await;
        return;
    }
    if let Some(adapter) = build(out, vendor, env.config()) {
        match ctx.sync(BAD_PAGE, adapter, &store).await {
            Ok(s) => {
                let injected = env.counters().faults_injected();
                out.expect(injected > 0, || "setup: the vendor injected no fault: no page was bad".into());
                // Partial; or failed when no stream could go on past the bad
                // page (one stream whose next page is named only inside the
                // unreadable one): the engine calls a run in which every
                // stream's fetch failed a failure.
                let all_failed = !s.streams.is_empty() && s.streams.values().all(|st| st.fetch_error.is_some());
                let expected = if all_failed { RunStatus::Failed } else { RunStatus::Partial };
                out.expect(s.status == expected, || {
                    format!("the sync ended {} (expected {expected}): {}", s.status, errors(&s))
                });
                out.note(format!("the run ended {}", s.status));
                out.expect(s.records_rejected + s.pages_rejected > 0 && !s.rejects.is_empty(), || {
                    "no reject for the bad page".into()
                });
                for (name, st) in &s.streams {
                    let tainted = !st.page_errors.is_empty() || st.pages_rejected > 0;
                    out.expect(!(tainted && st.stale_handled), || {
                        format!("stream `{name}` had a bad page and was stale-handled anyway")
                    });
                }
                let stale = store.stale_count();
                out.expect(stale == 0, || {
                    format!("{stale} asset(s) marked stale after a run with a bad page: its records went unseen")
                });
            }
            Err(e) => out.fail(e),
        }
    }
    env.shutdown().await;
}

/// A faulted sync that must still load everything; returns the summary and counters.
async fn faulted_sync(
    rule: &str,
    vendor: &dyn Vendor,
    ctx: &mut Ctx,
    out: &mut Outcome,
    env: Result<Box<dyn Env>, SetupError>,
) -> Option<(RunSummary, crate::Counters)> {
    let env = start(out, ctx, vendor, env).await?;
    let mut result = None;
    if let Some(adapter) = build(out, vendor, env.config()) {
        let store = Arc::new(MemoryStore::new());
        match ctx.sync(rule, adapter, &store).await {
            Ok(s) => {
                expect_exact(out, &s, &store, &env.expected());
                result = Some((s, env.counters()));
            }
            Err(e) => out.fail(e),
        }
    }
    env.shutdown().await;
    result
}

async fn server_errors(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let env = vendor.start_with_server_errors().await;
    let Some((s, c)) = faulted_sync(SERVER_ERRORS, vendor, ctx, out, env).await else { return };
    let errors = c.server_errors();
    out.expect(errors > 0, || "setup: the vendor answered no 5xx".into());
    out.expect(s.requests.retries >= errors, || format!("{errors} 5xx answer(s) but {} retr(ies)", s.requests.retries));
    out.note(format!("{errors} 5xx answer(s), {} retr(ies)", s.requests.retries));
}

async fn hung_request(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let env = vendor.start_with_hung_request().await;
    let Some((s, c)) = faulted_sync(HUNG_REQUEST, vendor, ctx, out, env).await else { return };
    out.expect(c.fault("hang") > 0, || "setup: the vendor hung no request".into());
    out.expect(s.requests.retries >= 1, || "the hung request was not retried".into());
}

async fn retry_after(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let env = vendor.start_rate_limited().await;
    let Some((s, c)) = faulted_sync(RETRY_AFTER, vendor, ctx, out, env).await else { return };
    let slow_down = vendor.rate_limited_statuses();
    let refused = |e: &&crate::RequestEvent| slow_down.contains(&e.status);
    let Some(first) = c.events.iter().filter(refused).min_by_key(|e| e.finished).cloned() else {
        out.fail("setup: the vendor answered no 429");
        return;
    };
    // Requests already on their way when the first 429 was answered may be
    // refused too; one sent after it must not be.
    let again = c.events.iter().filter(refused).filter(|e| e.arrived > first.finished).count();
    out.expect(again == 0, || {
        format!("{again} more 429(s) after the first: the wait the vendor announced was not honoured")
    });
    out.expect(s.requests.rate_limited >= 1, || "the summary counts no rate-limited answer".into());
    let all: u64 = slow_down.iter().map(|st| c.status(*st)).sum();
    out.note(format!("{all} {slow_down:?} answer(s) in all, waited {} ms", s.requests.retry_wait_ms));
}

async fn token_expiry(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let env = vendor.start_with_expiring_token().await;
    let Some((_, c)) = faulted_sync(TOKEN_EXPIRY, vendor, ctx, out, env).await else { return };
    out.expect(c.fault("token_expired") > 0, || "setup: no token expired during the run".into());
    if let Some(issued) = c.tokens_issued {
        out.expect(issued >= 2, || format!("{issued} token(s) issued: the expired one was not renewed"));
    }
}

/// What the interrupted-run rule leaves for the resume rule.
struct Resume {
    checkpointed: bool,
    rerun_fetched: Option<u64>,
    total: u64,
    applies: Result<(), SetupError>,
    ran: bool,
}

async fn interrupted(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome) {
    let mut resume =
        Resume { checkpointed: false, rerun_fetched: None, total: 0, applies: vendor.checkpoints(), ran: false };
    interrupted_inner(vendor, ctx, out, &mut resume).await;
    ctx.resume = Some(resume);
}

async fn interrupted_inner(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome, resume: &mut Resume) {
    let Some(env) = start(out, ctx, vendor, vendor.start().await).await else { return };
    let Some(adapter) = build(out, vendor, env.config()) else {
        env.shutdown().await;
        return;
    };
    let want = env.expected();
    resume.total = count(&want) as u64;
    let streams: Vec<String> = adapter.info().streams.iter().map(|s| s.name.clone()).collect();
    let store = Arc::new(MemoryStore::new());
    // A slow store: the run is still going when the first batch is acknowledged.
    store.set_delay(Duration::from_millis(100), false);
    let engine = match Engine::new(engine_config(), store.clone()) {
        Ok(e) => e,
        Err(e) => {
            out.fail(e.to_string());
            env.shutdown().await;
            return;
        }
    };
    let running = tokio::spawn({
        let (engine, adapter) = (engine.clone(), adapter.clone());
        async move { engine.sync(connection(adapter)).await }
    });
    // Interrupt once the first batch is acknowledged; an adapter that
    // checkpoints is interrupted once its first checkpoint is saved as well.
    // Its checkpoints may be further apart than the engine's buffers (Qualys
    // can continue only where an answer of several pages ends): a page not
    // yet handed to the engine when the fetch is dropped is fetched again by
    // the rerun, so interrupting earlier would test timing, not resuming.
    let checkpointed = || streams.iter().any(|s| store.checkpoint(CONNECTION, s).is_some_and(|c| !c.0.is_null()));
    let wait_for_checkpoint = resume.applies.is_ok();
    let deadline = Instant::now() + SYNC_LIMIT;
    while (store.asset_count() == 0 || (wait_for_checkpoint && !checkpointed()))
        && !running.is_finished()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.cancel();
    let first = match tokio::time::timeout(SYNC_LIMIT, running).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            out.fail(format!("the interrupted run's task failed: {e}"));
            env.shutdown().await;
            return;
        }
        Err(_) => {
            out.fail(format!("the interrupted run did not end within {} s of the interruption", SYNC_LIMIT.as_secs()));
            env.shutdown().await;
            return;
        }
    };
    ctx.keep(INTERRUPTED, &first, &store).await;
    store.set_delay(Duration::ZERO, false);
    if first.status == RunStatus::Success {
        out.fail(if wait_for_checkpoint {
            "the run finished before it could be interrupted after its first checkpoint: the adapter saved no \
             checkpoint before its last page, or the environment has too few pages"
        } else {
            "setup: the run finished before it could be interrupted (give the environment more pages)"
        });
        env.shutdown().await;
        return;
    }
    resume.ran = true;
    out.expect(first.errors.iter().any(|e| e.contains("interrupted")), || {
        format!("the interrupted run does not say so: {}", errors(&first))
    });
    out.expect(store.stale_count() == 0, || {
        format!("{} asset(s) marked stale by the interrupted run", store.stale_count())
    });
    let loaded = store.asset_count();
    out.note(format!("interrupted after {loaded} of {} record(s) were stored", resume.total));
    resume.checkpointed = checkpointed();
    match ctx.sync(INTERRUPTED, adapter, &store).await {
        Ok(s) => {
            out.expect(s.status == RunStatus::Success, || {
                format!("the rerun ended {} (expected success): {}", s.status, errors(&s))
            });
            if let Some(d) = differences(
                "after the rerun the store does not hold exactly the dataset",
                &want,
                &stored(&store, false),
            ) {
                out.fail(d);
            }
            out.expect(store.stale_count() == 0, || format!("{} asset(s) stale after the rerun", store.stale_count()));
            resume.rerun_fetched = Some(s.records_fetched);
        }
        Err(e) => out.fail(e),
    }
    env.shutdown().await;
}

fn ctx_resume(ctx: &mut Ctx) -> Outcome {
    let mut out = Outcome::default();
    let Some(r) = ctx.resume.take() else {
        out.fail(format!("not checked: rule `{INTERRUPTED}` did not run"));
        return out;
    };
    if let Err(e) = r.applies {
        out.setup(e);
        return out;
    }
    if !r.ran {
        out.fail(format!("not checked: rule `{INTERRUPTED}` could not interrupt a run"));
        return out;
    }
    out.expect(r.checkpointed, || "the interrupted run saved no checkpoint".into());
    match r.rerun_fetched {
        Some(n) => {
            out.expect(n < r.total, || {
                format!("the rerun fetched {n} of {} record(s): it started over instead of resuming", r.total)
            });
            out.note(format!("the rerun fetched {n} of {} record(s)", r.total));
        }
        None => out.fail(format!("not checked: the rerun of rule `{INTERRUPTED}` failed")),
    }
    out
}

async fn no_secrets(vendor: &dyn Vendor, ctx: &mut Ctx, out: &mut Outcome, logs: bool) {
    // A vendor that quotes refused credentials back.
    match vendor.start_echoing_credentials().await {
        Ok(env) => {
            ctx.secrets_of(vendor, &env.config());
            match vendor.bad_credentials(&env.config()) {
                Ok(bad) => {
                    ctx.secrets_of(vendor, &bad);
                    if let Some(adapter) = build(out, vendor, bad) {
                        if let Err(e) = ctx.check(NO_SECRETS, &*adapter).await {
                            out.fail(e);
                        }
                        let store = Arc::new(MemoryStore::new());
                        if let Err(e) = ctx.sync(NO_SECRETS, adapter, &store).await {
                            out.fail(e);
                        }
                        let c = env.counters();
                        out.expect(c.refusals() > 0, || "setup: the echoing vendor refused nothing".into());
                    }
                }
                Err(e) => out.note(format!("echoed credentials not tried: {e}")),
            }
            env.shutdown().await;
        }
        Err(e) => out.note(format!("echoed credentials not tried: {e}")),
    }
    if ctx.secrets.is_empty() {
        out.not_applicable = Some("the adapter's configs hold no secret".into());
        return;
    }
    let mut forms = Vec::new();
    for s in &ctx.secrets {
        forms.push(s.clone());
        let encoded: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
        if encoded != *s {
            forms.push(encoded);
        }
    }
    let mut found = BTreeSet::new();
    for (what, text) in &ctx.artifacts {
        if forms.iter().any(|f| text.contains(f.as_str())) {
            found.insert(what.clone());
        }
    }
    match crate::logs::text() {
        Some(log) if logs => {
            if forms.iter().any(|f| log.contains(f.as_str())) {
                found.insert("the logs".to_string());
            }
            out.note(format!("{} KiB of logs searched", log.len() / 1024));
        }
        _ => out.note("logs not searched: another global tracing subscriber was installed first"),
    }
    for what in found {
        out.fail(format!("a secret appears in {what}"));
    }
    out.note(format!("{} secret value(s) looked for in {} artifact(s)", ctx.secrets.len(), ctx.artifacts.len()));
}
