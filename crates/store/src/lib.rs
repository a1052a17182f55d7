//! corral-store: implementations of `corral_core::Store`.
//!
//! - [`sqlite`]: the embedded default (`./corral.db`), no server needed.
//! - [`mongo`]: the production store, through the official `mongodb` driver.
//! - [`nx`]: a private nx-27017 MongoDB stand-in for tests that stop their server.
//! - [`conformance`]: the suite every store implementation must pass.
pub mod conformance;
pub mod mongo;
pub mod nx;
pub mod sqlite;
