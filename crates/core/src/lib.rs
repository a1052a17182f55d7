//! corral-core: the contracts every other corral crate builds on.
//!
//! - [`adapter`]: the `Adapter` trait vendor integrations implement, raw pages, rejects, the registry.
//! - [`asset`]: the normalized asset schema (Device, User).
//! - [`fields`]: shared normalizers for hostnames, IPs, MACs, serials, OS, timestamps.
//! - [`store`]: the `Store` trait (SQLite and MongoDB live in `corral-store`).
//! - [`engine`]: fetch (tokio) -> normalize (rayon) -> load (async), with backpressure.
//! - [`summary`]: run summaries.
//! - [`redact`]: scrubbing resolved secrets from summaries and rejects.
pub mod adapter;
pub mod asset;
pub mod engine;
pub mod fields;
pub mod metrics;
pub mod redact;
pub mod store;
pub mod summary;
pub mod testing;

pub use adapter::{
    Adapter, AdapterFactory, AdapterInfo, CheckOutcome, Checkpoint, ConfigError, ConfigField, FetchContext, FetchError,
    FieldType, NormalizedPage, PageSink, RawPage, Registry, Reject, StreamInfo, parse_config,
};
pub use asset::{Asset, AssetBody, AssetKind, Device, Os, User};
pub use engine::{Connection, Engine, EngineConfig};
pub use redact::Redactor;
pub use store::{
    AssetKey, Lease, LeaseGrant, LoadBatch, LoadOutcome, RunCursor, RunQuery, StalePolicy, StaleScope, Store,
    StoreError,
};
pub use summary::{RunStatus, RunSummary};
