//! corral-core: the contracts every other corral crate builds on.
//!
//! - [`adapter`]: the `Adapter` trait vendor integrations implement, raw pages, rejects, the registry.
//! - [`asset`]: the normalized asset schema: five kinds (device, user, vulnerability, software,
//!   cloud resource), attributes, references, correlation keys.
//! - [`schema`]: the schema as data: field tables, `--where` parsing, docs/SCHEMA.md.
//! - [`fields`]: shared normalizers for hostnames, IPs, MACs, serials, OS, timestamps, severities, CVEs, CPEs.
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
pub mod schema;
pub mod store;
pub mod summary;
pub mod testing;

pub use adapter::AttributeInfo;
pub use adapter::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, CheckOutcome, Checkpoint, ConfigError, ConfigField,
    FetchContext, FetchError, FieldSource, FieldType, NormalizedPage, PageSink, RawPage, Registry, Reject, StreamInfo,
    parse_config,
};
pub use asset::{
    Asset, AssetBody, AssetKind, AssetRef, AttrType, AttrValue, CloudResource, CloudTag, Device, FindingState, KeyType,
    Os, Severity, Software, User, Vulnerability,
};
pub use engine::{
    Connection, Engine, EngineConfig, panic_message, spawn_yielding, thread_cpu_time, yield_cpu_to_the_runtime,
};
#[cfg(target_os = "linux")]
pub use engine::{thread_scheduling, yielded_scheduling};
pub use redact::Redactor;
pub use store::{
    AssetCursor, AssetKey, Lease, LeaseGrant, LoadBatch, LoadOutcome, RunCursor, RunQuery, StalePolicy, StaleScope,
    Store, StoreError,
};
pub use summary::{RunStatus, RunSummary};
