//! The subcommands.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use corral_core::store::{AssetFilter, AssetKey};
use corral_core::summary::{overall_status, render_table};
use corral_core::{Connection, Engine, EngineConfig, Registry, Store};

use crate::config::{Config, ConnectionConfig, Redactor, StoreConfig};
use crate::logging::LogSink;
use crate::{Cli, Command, EXIT_FAILED, EXIT_INTERRUPTED, exit_code};

/// Every adapter this binary ships.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(corral_adapter_file::FileAdapterFactory);
    r.register(corral_adapter_crowdstrike::CrowdStrikeFactory);
    r.register(corral_adapter_okta::OktaFactory);
    r.register(corral_adapter_msgraph::MsGraphFactory);
    r
}

/// How a sync reports: `--json`, progress bars on a terminal, where logs go.
#[derive(Clone)]
pub struct Output {
    pub json: bool,
    pub interactive: bool,
    pub logs: LogSink,
}

pub async fn run(cli: Cli, redactor: Redactor, interactive: bool, logs: LogSink) -> Result<u8> {
    match cli.command {
        Command::Adapters { json } => {
            adapters(json);
            Ok(0)
        }
        Command::Demo { store, devices, users, vendor_size, dir, json } => {
            let out = Output { json, interactive, logs };
            crate::demo::run(&store, devices, users, vendor_size, &dir, &out, &redactor).await
        }
        Command::Sync { connections, json, wait } => {
            let config = Config::load(&cli.config, &redactor)?;
            // Every connection is validated before the store is touched.
            let conns = build_connections(&registry(), &config.connections, &connections, &redactor)?;
            let store = open_store(&config.store).await?;
            let engine = EngineConfig { wait_for_lease: wait || config.engine.wait_for_lease, ..config.engine };
            sync(store, engine, conns, &Output { json, interactive, logs }, &redactor).await
        }
        Command::Check { connections, json, timeout } => {
            let config = Config::load(&cli.config, &redactor)?;
            let conns = build_connections(&registry(), &config.connections, &connections, &redactor)?;
            check(conns, json, timeout, &redactor).await
        }
        Command::Serve { listen } => crate::serve::run(cli.config, listen, redactor).await,
        Command::Runs { limit, rejects, json } => {
            let config = Config::load_or_default(&cli.config, &redactor)?;
            let store = open_store_read_only(&config.store).await?;
            runs(&*store, limit, rejects, json).await
        }
        Command::Assets { connection, kind, wheres, points_at, list, limit, include_stale, json } => {
            let config = Config::load_or_default(&cli.config, &redactor)?;
            // `--where` is checked before the store is opened: a typo is a usage error.
            let declared = declared_attributes(&registry(), &config.connections);
            let mut conditions = Vec::new();
            for text in &wheres {
                match corral_core::schema::parse_where(text, kind, &declared) {
                    Ok(c) => conditions.push(c),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(crate::EXIT_USAGE);
                    }
                }
            }
            let points_at = match points_at.as_slice() {
                [] => None,
                [connection, kind, source_id] => match kind.parse::<corral_core::AssetKind>() {
                    Ok(kind) => Some(AssetKey { connection: connection.clone(), kind, source_id: source_id.clone() }),
                    Err(e) => {
                        eprintln!("error: --points-at {connection} {kind} {source_id}: {e}");
                        return Ok(crate::EXIT_USAGE);
                    }
                },
                _ => {
                    eprintln!("error: --points-at takes CONNECTION KIND SOURCE_ID");
                    return Ok(crate::EXIT_USAGE);
                }
            };
            let store = open_store_read_only(&config.store).await?;
            let filter = AssetFilter { connection, kind, include_stale, conditions, points_at };
            assets(&*store, &filter, list, limit, json).await
        }
    }
}

/// The attributes `--where attributes.NAME=VALUE` may name: those every
/// adapter of this build declares, and those the configured connections
/// declare through their config (the file adapter's `attributes`), read
/// without resolving any secret.
pub fn declared_attributes(
    registry: &Registry,
    connections: &[ConnectionConfig],
) -> Vec<corral_core::schema::DeclaredAttribute> {
    let mut infos = registry.infos();
    for c in connections {
        if let Some(factory) = registry.get(&c.adapter)
            && let Ok(config) = serde_json::to_value(&c.config)
        {
            infos.push(factory.info_for(&config));
        }
    }
    corral_core::schema::declared_attributes(&infos)
}

pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    match config {
        StoreConfig::Sqlite { path } => {
            // Opening may wait on another process's lock: off the runtime.
            let p = path.clone();
            let store = tokio::task::spawn_blocking(move || corral_store::sqlite::SqliteStore::open(&p))
                .await
                .context("opening the SQLite store")?
                .with_context(|| format!("opening the SQLite store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreConfig::Mongodb(mongo) => {
            let store = mongo
                .connect()
                .await
                .with_context(|| format!("connecting to the MongoDB store (database {})", mongo.database))?;
            Ok(Arc::new(store))
        }
    }
}

/// The store for a command that only reads it (`runs`, `assets`). SQLite is
/// opened read-only: no schema created, nothing written, so a database the
/// user may not write (or a copy on read-only media) can be read, and a
/// missing one is an error instead of a new empty file. MongoDB is connected
/// to as for a sync.
pub async fn open_store_read_only(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    match config {
        StoreConfig::Sqlite { path } => {
            let p = path.clone();
            let store = tokio::task::spawn_blocking(move || corral_store::sqlite::SqliteStore::open_read_only(&p))
                .await
                .context("opening the SQLite store")?
                .map_err(|e| match e {
                    // These name the file and say what to do.
                    corral_core::StoreError::Config(message) => anyhow::anyhow!(message),
                    other => anyhow::Error::new(other).context(format!("reading the SQLite store {}", path.display())),
                })?;
            Ok(Arc::new(store))
        }
        StoreConfig::Mongodb(_) => open_store(config).await,
    }
}

/// Build (and so validate) every selected connection before anything runs.
pub fn build_connections(
    registry: &Registry,
    all: &[ConnectionConfig],
    only: &[String],
    redactor: &Redactor,
) -> Result<Vec<Connection>> {
    for name in only {
        if !all.iter().any(|c| &c.name == name) {
            bail!("no connection named `{name}` in the config");
        }
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for c in all.iter().filter(|c| only.is_empty() || only.contains(&c.name)) {
        let config = match c.resolved_config(redactor, &|name| std::env::var(name).ok()) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("connection `{}`: {e:#}", c.name));
                continue;
            }
        };
        let stale = match c.stale.policy(&c.name) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        match registry.build(&c.adapter, &c.name, config) {
            Ok(adapter) => out.push(Connection { name: c.name.clone(), adapter, streams: c.streams.clone(), stale }),
            Err(e) => errors.push(format!("connection `{}` (adapter {}): {e}", c.name, c.adapter)),
        }
    }
    if !errors.is_empty() {
        bail!("invalid configuration:\n  {}", errors.join("\n  "));
    }
    if out.is_empty() {
        bail!("no connections configured: add [[connection]] entries to the config (see `corral adapters`)");
    }
    Ok(out)
}

pub async fn sync(
    store: Arc<dyn Store>,
    engine_config: EngineConfig,
    conns: Vec<Connection>,
    out: &Output,
    redactor: &Redactor,
) -> Result<u8> {
    let engine_config = crate::limits::fit_open_files(engine_config, &conns);
    // The engine scrubs resolved secrets from every summary and kept reject.
    let engine = Engine::with_redactor(engine_config, store, redactor.clone()).context("starting the engine")?;
    let interrupts = tokio::spawn(stop_on_signals(engine.clone()));
    let bars = out.interactive.then(|| {
        crate::progress::Bars::start(engine.clone(), conns.iter().map(|c| c.name.clone()).collect(), &out.logs)
    });
    let summaries = engine.run(conns).await;
    interrupts.abort();
    if let Some(bars) = bars {
        bars.finish().await;
    }
    if out.json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    } else {
        print!("{}", render_table(&summaries));
    }
    Ok(exit_code(overall_status(&summaries)))
}

/// Slack after `--timeout` before a check that ignores its limit is cut.
const CHECK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Check every connection at once, each within `limit` (the adapters fit
/// their retries and timeouts into it; one that does not is cut shortly after).
async fn check(conns: Vec<Connection>, json: bool, limit: std::time::Duration, redactor: &Redactor) -> Result<u8> {
    let checks = futures::future::join_all(conns.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(limit + CHECK_GRACE, c.adapter.check_within(limit)).await {
            Ok(outcome) => outcome,
            Err(_) => corral_core::CheckOutcome::Unreachable {
                endpoint: format!("adapter {}", c.adapter.info().name),
                detail: format!("no answer within {} (--timeout)", humantime::format_duration(limit)),
            },
        };
        (c.name.clone(), outcome)
    }))
    .await;
    let mut failed = false;
    let mut rows = Vec::new();
    for (name, outcome) in checks {
        failed |= !outcome.is_ok();
        let text = redactor.redact(&outcome.to_string());
        if json {
            let kind = serde_json::to_value(&outcome).ok().and_then(|v| v.get("outcome").cloned());
            rows.push(
                serde_json::json!({ "connection": name, "ok": outcome.is_ok(), "outcome": kind, "result": text }),
            );
        } else {
            println!("{:<24} {}", name, text);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(if failed { EXIT_FAILED } else { 0 })
}

fn adapters(json: bool) {
    let infos = registry().infos();
    if json {
        println!("{}", serde_json::to_string_pretty(&infos).unwrap_or_default());
        return;
    }
    for a in infos {
        println!("{} {} — {}", a.name, a.version, a.description);
        println!("  streams:");
        for s in &a.streams {
            println!("    {:<15} {:<14} key {:<12} {}", s.name, s.kind.as_str(), s.key, s.description);
            for at in &s.attributes {
                println!("      attribute {:<28} {:<11} {}", at.name, at.ty.as_str(), at.description);
            }
        }
        println!("  config:");
        for f in &a.config {
            let req = if f.required { "required" } else { "optional" };
            let secret = if f.secret { ", secret" } else { "" };
            println!("    {:<14} {:?} ({req}{secret}): {}", f.name, f.ty, f.description);
        }
        println!();
    }
}

async fn runs(store: &dyn Store, limit: usize, rejects: Option<String>, json: bool) -> Result<u8> {
    if let Some(sync_id) = rejects {
        let kept = store.rejects(&sync_id, limit).await?;
        if kept.is_empty() && store.run(&sync_id).await?.is_none() {
            bail!("no run with sync id {sync_id} in {}; `corral runs` lists the recent ones", store.describe());
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&kept)?);
        } else {
            for r in &kept {
                println!("{} {} {} [{}] {}", r.connection, r.stream, r.reject.record, r.reject.reason, r.reject.detail);
                if let Some(raw) = &r.reject.raw {
                    println!("    {}", raw.trim_end());
                }
            }
            if kept.is_empty() {
                println!("no rejected records kept for sync {sync_id}");
            }
        }
        return Ok(0);
    }
    let runs = store.runs(limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else if runs.is_empty() {
        println!("no runs yet in {}", store.describe());
    } else {
        println!("{:<38} {:<20} {:<20} STATUS", "SYNC ID", "STARTED", "CONNECTION");
        for r in &runs {
            println!(
                "{:<38} {:<20} {:<20} {}",
                r.sync_id,
                r.started_at.format("%Y-%m-%d %H:%M:%S"),
                r.connection,
                r.status
            );
        }
        println!();
        print!("{}", render_table(&runs));
    }
    Ok(0)
}

async fn assets(store: &dyn Store, filter: &AssetFilter, list: bool, limit: usize, json: bool) -> Result<u8> {
    if list {
        let rows = store.list_assets(filter, limit).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(0);
        }
        println!("{:<18} {:<14} {:<24} {:<28} {:<20} STALE", "CONNECTION", "KIND", "SOURCE ID", "NAME", "LAST SEEN");
        for a in rows {
            let name = ["hostname", "username", "title", "name"]
                .iter()
                .find_map(|f| a.fields.get(*f).and_then(|v| v.as_str()))
                .unwrap_or("-");
            println!(
                "{:<18} {:<14} {:<24} {:<28} {:<20} {}",
                a.connection,
                a.kind.as_str(),
                a.source_id,
                name,
                a.last_seen.format("%Y-%m-%d %H:%M:%S"),
                a.stale_since.map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
            );
        }
        return Ok(0);
    }
    let counts = store.count_assets(filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&counts)?);
        return Ok(0);
    }
    // Without --include-stale ASSETS counts live assets; STALE always says how many are stale.
    println!("{:<24} {:<14} {:>10} {:>8}", "CONNECTION", "KIND", "ASSETS", "STALE");
    for c in &counts {
        println!("{:<24} {:<14} {:>10} {:>8}", c.connection, c.kind.as_str(), c.count, c.stale);
    }
    if counts.is_empty() {
        println!("(no assets in {})", store.describe());
    }
    Ok(0)
}

/// Ctrl-C or SIGTERM (a scheduler stopping the job) stops the run gracefully:
/// fetching stops, what was fetched is loaded and checkpointed, nothing is
/// marked stale, and every affected run is reported failed. A second signal
/// exits at once; checkpoints still cover only data the store acknowledged.
async fn stop_on_signals(engine: Engine) {
    if shutdown_signal().await.is_err() {
        return;
    }
    tracing::warn!("interrupted: fetching stops, what was fetched is being loaded; interrupt again to exit now");
    engine.cancel();
    if shutdown_signal().await.is_ok() {
        tracing::error!("interrupted again: exiting without waiting for in-flight batches");
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
