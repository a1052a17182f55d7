//! Integration tests of the simulators over real HTTP on loopback.

mod common;
mod crowdstrike;
mod data;
mod general;
mod msgraph;
mod okta;
