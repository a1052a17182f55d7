//! corral-sim: simulators of vendor APIs (CrowdStrike Falcon hosts, Okta users,
//! Microsoft Graph Intune devices and Entra users, Tenable VM exports, Qualys VMDR
//! detections, AWS EC2 instances and STS; Jamf Pro and ServiceNow as [`kit`] presets) for tests, demos and
//! benchmarks.
//!
//! Each simulator is an axum server on loopback that reproduces the vendor's paging,
//! auth, rate-limit headers and error shapes (each written down in its module's docs:
//! `src/crowdstrike.rs`, `src/okta.rs`, `src/msgraph.rs`, `src/tenable.rs`,
//! `src/qualys.rs`, `src/aws.rs`, `src/kit/jamf.rs`, `src/kit/servicenow.rs`), serves a dataset
//! that is a pure function of `(seed, size, generation)`, and injects seeded faults.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use corral_sim::{SimConfig, Vendor, start};
//! let sim = start(Vendor::CrowdStrike, SimConfig::new(7, 20_000).latency_ms(50)).await?;
//! println!("serving at {}", sim.base_url);
//! let expected = corral_sim::crowdstrike_device_ids(7, 20_000, 0);
//! # let _ = expected;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![recursion_limit = "256"]
// Handlers return ready-made error responses from helpers.
#![allow(clippy::result_large_err)]

mod admin;
mod aws;
mod config;
mod counters;
mod crowdstrike;
pub mod data;
mod faults;
mod fql;
pub mod kit;
mod msgraph;
mod okta;
mod qualys;
mod ratelimit;
mod server;
mod tenable;
mod util;

pub use config::{Behavior, Credentials, Faults, Latency, RateLimit, SimConfig, TokenRateLimit, Truncation, Vendor};
pub use counters::{Counters, CountersSnapshot, RequestEvent};
pub use data::crowdstrike::{crowdstrike_device_ids, crowdstrike_hosts};
pub use data::msgraph::{
    NULL_DATE, USER_DEFAULT_PROPERTIES, msgraph_asset_count, msgraph_devices, msgraph_users, project as msgraph_project,
};
pub use data::okta::okta_users;
pub use server::{SimHandle, start, start_on};
