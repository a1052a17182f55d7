//! `corral serve`: the service (crates/serve) with this binary's config,
//! adapters and signals.
//!
//! Signals: SIGHUP reloads corral.toml (a file that does not load is
//! refused, the one in force kept). SIGTERM or Ctrl-C stops scheduling and
//! lets running syncs finish within `[serve] grace_period`, then interrupts
//! them as `corral sync` does on Ctrl-C; a second one interrupts them at
//! once; a third exits at once (130).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use corral_serve::{Plan, PlanSource, Planned, Schedule, Service};

use crate::EXIT_INTERRUPTED;
use crate::commands::{build_connections, open_store, registry_for};
use crate::config::{Config, Redactor};

/// Reads corral.toml into a [`Plan`]: settings, engine limits, connections
/// built (adapters validated, secrets resolved) with their schedules.
struct FilePlan {
    path: PathBuf,
    listen: Option<String>,
    redactor: Redactor,
}

impl FilePlan {
    fn plan(&self) -> Result<Plan> {
        let config = Config::load(&self.path, &self.redactor)?;
        let env = |name: &str| std::env::var(name).ok();
        let settings = config.serve_settings(self.listen.as_deref(), &self.redactor, &env)?;
        let connections = build_connections(&registry_for(&config)?, &config.connections, &[], &self.redactor)?;
        let mut planned = Vec::new();
        let mut errors = Vec::new();
        for (connection, c) in connections.into_iter().zip(&config.connections) {
            let spec = c.schedule.as_ref().or(settings.default_schedule.as_ref());
            let schedule = match spec {
                None => None,
                Some(spec) => match Schedule::parse(spec, &settings.defaults, &c.name) {
                    Ok(s) => s,
                    Err(e) => {
                        errors.push(format!("connection `{}`: schedule: {e}", c.name));
                        continue;
                    }
                },
            };
            planned.push(Planned { connection, schedule });
        }
        if !errors.is_empty() {
            anyhow::bail!("invalid configuration:\n  {}", errors.join("\n  "));
        }
        let conns: Vec<_> = planned.iter().map(|p| p.connection.clone()).collect();
        let engine = crate::limits::fit_open_files(config.engine, &conns);
        Ok(Plan { settings, engine, connections: planned, store_fingerprint: config.store_fingerprint })
    }
}

impl PlanSource for FilePlan {
    fn load(&self) -> Result<Plan, String> {
        self.plan().map_err(|e| self.redactor.redact(&format!("{}: {e:#}", self.path.display())))
    }
}

pub async fn run(config_path: PathBuf, listen: Option<String>, redactor: Redactor) -> Result<u8> {
    let source = FilePlan { path: config_path.clone(), listen, redactor: redactor.clone() };
    let plan = source.plan()?;
    let config = Config::load(&config_path, &redactor)?;
    let store = open_store(&config.store).await?;
    let addr = plan.settings.listen;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr} (serve.listen)"))?;
    let local = listener.local_addr().context("reading the address listened on")?;
    let scheduled = plan.connections.iter().filter(|p| p.schedule.is_some()).count();
    let total = plan.connections.len();
    let auth = plan.settings.token.is_some();
    let service = Service::new(store, redactor, Arc::new(source), plan).await.context("starting the service")?;
    tracing::info!(%local, connections = total, scheduled, auth, "corral serve is listening");
    println!("corral serve: listening on http://{local} ({total} connections, {scheduled} on a schedule)");
    let signals = tokio::spawn(handle_signals(service.clone()));
    let result = service.run(listener).await;
    signals.abort();
    result.context("corral serve")?;
    tracing::info!("corral serve stopped");
    Ok(0)
}

async fn handle_signals(service: Service) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("could not install the signal handlers");
            return;
        };
        let mut stops = 0;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // Refusals are logged and shown in /api/status by the service.
                    let _ = service.reload().await;
                    continue;
                }
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stops += 1;
            match stops {
                1 => service.shutdown(),
                2 => {
                    tracing::warn!("second stop signal: interrupting running syncs now; a third exits at once");
                    service.interrupt();
                }
                _ => {
                    tracing::error!("third stop signal: exiting without waiting");
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            service.shutdown();
        }
    }
}
