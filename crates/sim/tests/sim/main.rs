//! Integration tests of the simulators over real HTTP on loopback.

mod binary;
mod common;
mod crowdstrike;
mod data;
mod general;
mod jamf;
mod kit;
mod knobs;
mod msgraph;
mod okta;
mod qualys;
mod servicenow;
mod tenable;
