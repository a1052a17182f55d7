//! corral-serve: corral as a long-running service.
//!
//! - [`schedule`]: per-connection schedules (`every = "4h"`, cron in a time
//!   zone) with a stable per-connection offset, so hundreds of connections
//!   on one schedule spread out; missed ticks run once after a restart.
//! - [`service`]: the scheduler, runs in progress (one per connection in
//!   this process; the engine's lease across processes), reloads, shutdown
//!   with a grace period.
//! - [`api`]: the HTTP API (axum, JSON), `/metrics` ([`metrics`],
//!   Prometheus text format) and the web page (static files compiled in).
//! - [`config`]: the `[serve]` table of corral.toml.
//!
//! The binary (`corral serve`) reads corral.toml, builds the connections
//! and hands them over as a [`Plan`]; a [`PlanSource`] reads it again on a
//! reload.

pub mod api;
pub mod config;
pub mod metrics;
pub mod schedule;
pub mod service;

pub use config::{ServeConfig, Settings};
pub use schedule::{Schedule, ScheduleDefaults, ScheduleError, ScheduleSpec};
pub use service::{Plan, PlanSource, Planned, ReloadStatus, ServeError, Service, SyncRefused, Totals, Trigger};
