//! End-to-end: the msgraph adapter driven by the real engine against the Graph
//! simulator (crates/sim), with and without faults.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod faults;
mod full;
mod token;
