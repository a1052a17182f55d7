//! MongoDB store: the production store, through the official `mongodb` driver (3.x).
//!
//! Works with MongoDB 6.0 and later (standalone, replica set or sharded).
//!
//! ```ignore
//! let store = MongoStore::connect("mongodb://db.internal:27017", "corral").await?;
//! // or from a configuration file's `[store]` table:
//! let config: MongoConfig = toml::from_str(r#"uri = "mongodb://db.internal:27017""#)?;
//! let store = config.connect().await?;
//! // Clone it freely: clones share one pooled `mongodb::Client`.
//! ```
//!
//! Create one `MongoStore` per process and clone it (or build it with
//! [`MongoStore::from_client`] around a `Client` the program already has):
//! a `Client` owns a connection pool and background monitors.
//!
//! Collections (names configurable in [`CollectionNames`]):
//!
//! - `assets`: one document per (connection, kind, source_id):
//!   `{connection, kind, source_id, stream, fields: {...}, raw?, content_hash,
//!   keys, refs, derived, first_seen, last_seen, last_sync_id, stale_since?,
//!   insert_token, write_token, write_changed}`, dates as BSON dates (millisecond
//!   precision). `fields` is exactly [`Asset::fields_json`](corral_core::asset::Asset::fields_json)
//!   (attributes under `fields.attributes`). `keys` (the correlation keys as
//!   `"<type>:<value>"`) and `refs` (references as
//!   `"<kind>:<length of connection>:<connection>:<source_id>"`) are derived from the content and rewritten only
//!   with it; each has a multikey index. The three
//!   `*_token` / `write_changed` fields record which load batch inserted and
//!   last rewrote the document, so a retried batch counts exactly (see [`load`](self)).
//! - `runs`: `{_id: sync_id, sync_id, connection, adapter, status, started_at, ended_at,
//!   summary}`; `summary` is the [`RunSummary`] as JSON text, so it round-trips exactly.
//! - `checkpoints`: `{connection, stream, value, updated_at}`; `value` is the
//!   checkpoint's JSON text (opaque, kept byte for byte).
//! - `rejects`: `{_id, sync_id, connection, stream, record, reason, detail,
//!   raw?, seq, saved_at}`; `_id` is an ObjectId chosen before the first
//!   attempt, so a retried save stores each reject once while two saves of
//!   identical rejects keep both; `seq` keeps save order.
//!
//! Indexes are created (idempotently, by name) on first use, then checked
//! with `listIndexes`: the unique keys of `assets` and `checkpoints` must be
//! backed by a unique index, or the store refuses to write
//! ([`StoreError::Config`] naming the offending index).
//!
//! Loads: see [`load`](self) module docs: unordered multi-statement `update`
//! commands (what a bulk write is on the wire; `Client::bulk_write` needs
//! MongoDB 8.0), preceded by one indexed read of the existing content hashes
//! on the primary.
//!
//! Transient failures (network, timeouts, server selection, primary step-down,
//! `RetryableWriteError`) are retried with capped exponential backoff
//! ([`RetryPolicy`]); once the policy gives up the error is returned as
//! [`StoreError::Permanent`] ("gave up after N attempt(s) in T s"), so the
//! engine fails the run instead of retrying again. The connection string may
//! hold credentials: it is never logged nor put in an error message;
//! [`Store::describe`] is `mongodb:<database>`.
//!
//! The test stand-in: the tests run against nx-27017, a MongoDB wire-protocol
//! server backed by SQLite, which has two defects corral has to live with (see
//! [`ServerKind`]). The store recognises it by its `buildInfo` (`process:
//! "nx_27017"`) and only then adds the accommodations; a real MongoDB gets the
//! plain commands.

mod errors;
mod load;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_core::adapter::{Checkpoint, Reject};
use corral_core::asset::AssetKind;
use corral_core::store::{
    AssetCount, AssetCursor, AssetFilter, Lease, LeaseGrant, LoadBatch, LoadOutcome, Predicate, RunCursor, RunQuery,
    Scalar, StaleOutcome, StalePolicy, StaleScope, Store, StoreError, StoredAsset, StoredReject,
};
use corral_core::summary::RunSummary;
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{self, Bson, Document, RawDocumentBuf, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{
    ClientOptions, CollectionOptions, IndexOptions, ReadConcern, ReadPreference, SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

pub use errors::RetryPolicy;

/// MongoDB's limit on one BSON document (and so on one command, plus 16 KiB).
pub const MAX_BSON_BYTES: usize = 16 << 20;
/// MongoDB's limit on the statements of one write command (`maxWriteBatchSize`).
pub const MAX_WRITE_BATCH_DOCS: usize = 100_000;
/// Room kept below [`MAX_BSON_BYTES`] in every `update` command for what
/// surrounds the statements: the command's own fields, the write concern,
/// and what the driver adds (`$db`, `lsid`, `$clusterTime`, `txnNumber`).
pub const COMMAND_HEADROOM_BYTES: usize = 64 << 10;

/// The names of the collections. Deserializable (all fields optional,
/// defaults `assets`, `runs`, `checkpoints`, `rejects`, `leases`), e.g. from a TOML table
/// `collections = { assets = "corral_assets" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionNames {
    pub assets: String,
    pub runs: String,
    pub checkpoints: String,
    pub rejects: String,
    pub leases: String,
}

impl Default for CollectionNames {
    fn default() -> Self {
        CollectionNames {
            assets: "assets".into(),
            runs: "runs".into(),
            checkpoints: "checkpoints".into(),
            rejects: "rejects".into(),
            leases: "leases".into(),
        }
    }
}

impl CollectionNames {
    /// Each name must be a valid collection name, and they must all differ.
    pub fn validate(&self) -> Result<(), StoreError> {
        let all = [
            ("assets", &self.assets),
            ("runs", &self.runs),
            ("checkpoints", &self.checkpoints),
            ("rejects", &self.rejects),
            ("leases", &self.leases),
        ];
        for (i, (what, name)) in all.iter().enumerate() {
            if name.is_empty() || name.len() > 200 || name.starts_with("system.") || name.contains(['$', '\0']) {
                return Err(StoreError::Config(format!(
                    "invalid MongoDB collection name for {what}: {name:?} (1-200 characters, no `$`, not `system.*`)"
                )));
            }
            if let Some((other, _)) = all[..i].iter().find(|(_, n)| n == name) {
                return Err(StoreError::Config(format!(
                    "the MongoDB collections for {other} and {what} are both named {name:?}: they must differ"
                )));
            }
        }
        Ok(())
    }
}

fn default_database() -> String {
    "corral".to_string()
}

/// The MongoDB store as a configuration file describes it: connection string,
/// database and collection names. Deserializable; `database` defaults to
/// `corral` and each collection name to its default ([`CollectionNames`]);
/// unknown fields are refused. `Debug` never shows the URI (it may hold credentials).
///
/// ```toml
/// uri = "mongodb://db.internal:27017/?tls=true"   # required
/// database = "corral"                              # optional
/// collections = { assets = "corral_assets" }       # optional, per name
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// `mongodb://` or `mongodb+srv://` connection string (TLS, credentials,
    /// timeouts, read preference and write concern go here).
    pub uri: String,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default)]
    pub collections: CollectionNames,
}

impl std::fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &"<not shown>")
            .field("database", &self.database)
            .field("collections", &self.collections)
            .finish()
    }
}

impl MongoConfig {
    /// `uri` and `database`, default collection names.
    pub fn new(uri: impl Into<String>, database: impl Into<String>) -> Self {
        MongoConfig { uri: uri.into(), database: database.into(), collections: CollectionNames::default() }
    }

    /// [`MongoOptions::default`] with this config's collection names.
    pub fn options(&self) -> MongoOptions {
        MongoOptions { collections: self.collections.clone(), ..MongoOptions::default() }
    }

    /// Connect with [`MongoConfig::options`].
    pub async fn connect(&self) -> Result<MongoStore, StoreError> {
        MongoStore::connect_with(&self.uri, &self.database, self.options()).await
    }

    /// Connect with `tunables` (timeouts, retries, batch limits) and this config's collection names.
    pub async fn connect_with(&self, tunables: MongoOptions) -> Result<MongoStore, StoreError> {
        let opts = MongoOptions { collections: self.collections.clone(), ..tunables };
        MongoStore::connect_with(&self.uri, &self.database, opts).await
    }
}

/// Tunables of the MongoDB store. `Default` is right for production.
#[derive(Debug, Clone)]
pub struct MongoOptions {
    pub collections: CollectionNames,
    /// How long an operation waits for a usable server (only for [`MongoStore::connect`];
    /// a `serverSelectionTimeoutMS` in the URI wins). Short, so a stopped server is
    /// noticed in seconds; the retry policy covers brief elections.
    pub server_selection_timeout: Duration,
    /// TCP/TLS connect timeout (only for [`MongoStore::connect`]; `connectTimeoutMS` in the URI wins).
    pub connect_timeout: Duration,
    /// Upper bound on one attempt of one operation (the driver has no socket
    /// timeout: this is what notices a server that stopped answering). The
    /// retry policy starts no attempt past its budget, so one retried
    /// operation takes at most about `retry.budget + attempt_timeout`.
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
    /// Most statements in one `update` command; at most [`MAX_WRITE_BATCH_DOCS`]
    /// (larger values are lowered to it).
    pub max_batch_docs: usize,
    /// Most bytes of statements in one `update` command; at most
    /// [`MAX_BSON_BYTES`] - [`COMMAND_HEADROOM_BYTES`] (larger values are lowered
    /// to it). A single larger statement is sent alone.
    pub max_batch_bytes: usize,
    /// Documents larger than this are rejected (`document_too_large`) without
    /// being sent. At most MongoDB's limit, [`MAX_BSON_BYTES`].
    pub max_document_bytes: usize,
    /// `update` commands of one batch in flight at once (at least 1).
    pub max_in_flight: usize,
}

impl Default for MongoOptions {
    fn default() -> Self {
        MongoOptions {
            collections: CollectionNames::default(),
            server_selection_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            max_batch_docs: 1000,
            max_batch_bytes: 8 << 20,
            max_document_bytes: MAX_BSON_BYTES,
            max_in_flight: 4,
        }
    }
}

impl MongoOptions {
    /// The options with every limit brought within what MongoDB accepts.
    fn clamped(mut self) -> Self {
        let max_bytes = MAX_BSON_BYTES - COMMAND_HEADROOM_BYTES;
        if self.max_batch_docs > MAX_WRITE_BATCH_DOCS
            || self.max_batch_bytes > max_bytes
            || self.max_document_bytes > MAX_BSON_BYTES
        {
            tracing::warn!(
                max_batch_docs = self.max_batch_docs,
                max_batch_bytes = self.max_batch_bytes,
                max_document_bytes = self.max_document_bytes,
                "MongoDB batch limits above what the server accepts were lowered"
            );
        }
        self.max_batch_docs = self.max_batch_docs.clamp(1, MAX_WRITE_BATCH_DOCS);
        self.max_batch_bytes = self.max_batch_bytes.clamp(1, max_bytes);
        self.max_document_bytes = self.max_document_bytes.clamp(1, MAX_BSON_BYTES);
        self.max_in_flight = self.max_in_flight.max(1);
        self
    }
}

/// What the store talks to.
///
/// nx-27017 0.8.1 (the newest on PyPI), the stand-in the tests run against,
/// differs from MongoDB in two ways that matter here:
/// - a plain `$set` (with or without `$unset` / `$setOnInsert`) of a BSON date
///   on an existing document takes its fast SQL path, which stores the date as
///   text (`"2024-05-01 12:00:00"`), breaking every date comparison and
///   decoding; an update that also has another operator goes through its
///   document-level path, which keeps dates. So for the stand-in only, every
///   update carries `$pull: {_corral_noop: {$in: []}}` (`load::noop_pull`):
///   a field corral never writes, a no-op in MongoDB too.
/// - `$group` does not evaluate a compound `_id` (`{connection: "$connection",
///   kind: "$kind"}`: it groups everything under the literal), so for the
///   stand-in `count_assets` runs one aggregation per kind.
///
/// A real MongoDB never gets either accommodation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    MongoDb,
    /// nx-27017 (`buildInfo.process == "nx_27017"`).
    Nx27017StandIn,
}

impl ServerKind {
    fn stand_in(self) -> bool {
        self == ServerKind::Nx27017StandIn
    }
}

/// Counters of what the store sent, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MongoStats {
    /// `update` commands sent by `upsert` (attempts, retries included).
    pub update_commands: u64,
    /// Statements in them.
    pub statements: u64,
    /// Of which light (unchanged-content) statements.
    pub light_statements: u64,
    /// Bytes of those commands, and the largest one.
    pub command_bytes: u64,
    pub max_command_bytes: u64,
    /// Failed attempts that were retried or gave up.
    pub retries: u64,
}

#[derive(Default)]
struct Stats {
    update_commands: AtomicU64,
    statements: AtomicU64,
    light_statements: AtomicU64,
    command_bytes: AtomicU64,
    max_command_bytes: AtomicU64,
    retries: AtomicU64,
}

/// The MongoDB implementation of [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    db: Database,
    database: String,
    opts: MongoOptions,
    assets: Collection<RawDocumentBuf>,
    /// The assets collection for the pre-read of existing content hashes:
    /// always the primary with read concern `local`, whatever the URI's read
    /// preference says, so the read sees every write acknowledged before it
    /// (a secondary may lag, and then unchanged assets are counted updated and rewritten).
    assets_primary: Collection<Document>,
    runs: Collection<Document>,
    checkpoints: Collection<Document>,
    rejects: Collection<Document>,
    /// Run leases: primary, majority write and read concern (a lease must
    /// survive a failover, or two runs could both hold it).
    leases: Collection<Document>,
    indexes: tokio::sync::OnceCell<()>,
    server: tokio::sync::OnceCell<ServerKind>,
    stats: Stats,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore").field("database", &self.inner.database).finish_non_exhaustive()
    }
}

/// Replace the user-info part of a connection string (`user:password@`) in `text`.
fn redact(uri: &str, text: &str) -> String {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.is_empty() => {
            let mut out = text.replace(userinfo, "***");
            // Also the password alone, and its percent-decoded form would need a decoder: drop both halves.
            for part in userinfo.split(':').filter(|p| p.len() >= 3) {
                out = out.replace(part, "***");
            }
            out
        }
        _ => text.to_string(),
    }
}

fn validate_database_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || name.len() >= 64
        || name.contains(['/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0'])
    {
        return Err(StoreError::Config(format!(
            "invalid MongoDB database name {name:?}: 1-63 characters, none of /\\. \"$*<>:|?"
        )));
    }
    Ok(())
}

fn to_bson_date(t: &DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn from_bson_date(what: &str, t: bson::DateTime) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(t.timestamp_millis())
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: date out of range: {t}")))
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn scalar_bson(v: &Scalar) -> Bson {
    match v {
        Scalar::Str(s) => Bson::String(s.clone()),
        Scalar::Int(i) => Bson::Int64(*i),
        Scalar::Float(f) => Bson::Double(*f),
        Scalar::Bool(b) => Bson::Boolean(*b),
    }
}

fn count_of(b: Option<&Bson>) -> u64 {
    match b {
        Some(Bson::Int32(v)) => u64::try_from(*v).unwrap_or(0),
        Some(Bson::Int64(v)) => u64::try_from(*v).unwrap_or(0),
        Some(Bson::Double(v)) if *v >= 0.0 => *v as u64,
        _ => 0,
    }
}

/// An assets document as read back.
#[derive(Deserialize)]
struct AssetDoc {
    connection: String,
    kind: AssetKind,
    source_id: String,
    stream: String,
    first_seen: bson::DateTime,
    last_seen: bson::DateTime,
    last_sync_id: String,
    #[serde(default)]
    stale_since: Option<bson::DateTime>,
    fields: serde_json::Value,
    #[serde(default)]
    raw: Option<serde_json::Value>,
}

impl AssetDoc {
    fn decode(self) -> Result<StoredAsset, StoreError> {
        Ok(StoredAsset {
            first_seen: from_bson_date("assets.first_seen", self.first_seen)?,
            last_seen: from_bson_date("assets.last_seen", self.last_seen)?,
            stale_since: self.stale_since.map(|t| from_bson_date("assets.stale_since", t)).transpose()?,
            connection: self.connection,
            kind: self.kind,
            source_id: self.source_id,
            stream: self.stream,
            last_sync_id: self.last_sync_id,
            fields: self.fields,
            raw: self.raw,
            position: Default::default(),
        })
    }
}

/// A runs document as listed.
#[derive(Deserialize)]
struct RunDoc {
    sync_id: String,
    started_at: bson::DateTime,
    summary: String,
}

#[derive(Deserialize)]
struct RejectDoc {
    sync_id: String,
    connection: String,
    stream: String,
    record: String,
    reason: String,
    detail: String,
    #[serde(default)]
    raw: Option<String>,
}

/// Save order of rejects across calls (and roughly across processes: it starts at the clock).
static REJECT_SEQ: AtomicI64 = AtomicI64::new(0);

fn next_reject_seqs(n: usize) -> i64 {
    let now = Utc::now().timestamp_micros();
    let n = i64::try_from(n).unwrap_or(i64::MAX / 2);
    let mut current = REJECT_SEQ.load(Ordering::Relaxed);
    loop {
        let start = current.max(now);
        match REJECT_SEQ.compare_exchange_weak(current, start + n, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return start,
            Err(actual) => current = actual,
        }
    }
}

impl MongoStore {
    /// Connect with default options. `uri` is a MongoDB connection string
    /// (`mongodb://` or `mongodb+srv://`); it is never logged.
    pub async fn connect(uri: &str, database: &str) -> Result<Self, StoreError> {
        Self::connect_with(uri, database, MongoOptions::default()).await
    }

    pub async fn connect_with(uri: &str, database: &str, opts: MongoOptions) -> Result<Self, StoreError> {
        validate_database_name(database)?;
        let mut client_opts = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Config(redact(uri, &format!("invalid MongoDB connection string: {}", e.kind))))?;
        client_opts.server_selection_timeout.get_or_insert(opts.server_selection_timeout);
        client_opts.connect_timeout.get_or_insert(opts.connect_timeout);
        client_opts.app_name.get_or_insert_with(|| "corral".to_string());
        let client = Client::with_options(client_opts)
            .map_err(|e| StoreError::Config(redact(uri, &format!("cannot create the MongoDB client: {}", e.kind))))?;
        Self::from_client_with(client, database, opts)
    }

    /// Use an existing client (shares its pool) with default options.
    pub fn from_client(client: Client, database: &str) -> Result<Self, StoreError> {
        Self::from_client_with(client, database, MongoOptions::default())
    }

    pub fn from_client_with(client: Client, database: &str, opts: MongoOptions) -> Result<Self, StoreError> {
        validate_database_name(database)?;
        opts.collections.validate()?;
        let opts = opts.clamped();
        let db = client.database(database);
        let primary = CollectionOptions::builder()
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .read_concern(ReadConcern::local())
            .build();
        let names = &opts.collections;
        let majority = CollectionOptions::builder()
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .read_concern(ReadConcern::majority())
            .write_concern(WriteConcern::majority())
            .build();
        Ok(MongoStore {
            inner: Arc::new(Inner {
                assets: db.collection(&names.assets),
                assets_primary: db.collection_with_options(&names.assets, primary),
                runs: db.collection(&names.runs),
                checkpoints: db.collection(&names.checkpoints),
                rejects: db.collection(&names.rejects),
                leases: db.collection_with_options(&names.leases, majority),
                client,
                db,
                database: database.to_string(),
                opts,
                indexes: tokio::sync::OnceCell::new(),
                server: tokio::sync::OnceCell::new(),
                stats: Stats::default(),
            }),
        })
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    pub fn options(&self) -> &MongoOptions {
        &self.inner.opts
    }

    pub fn stats(&self) -> MongoStats {
        let s = &self.inner.stats;
        MongoStats {
            update_commands: s.update_commands.load(Ordering::Relaxed),
            statements: s.statements.load(Ordering::Relaxed),
            light_statements: s.light_statements.load(Ordering::Relaxed),
            command_bytes: s.command_bytes.load(Ordering::Relaxed),
            max_command_bytes: s.max_command_bytes.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
        }
    }

    /// One `ping` (no retries): is the server reachable with these credentials?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.db.run_command(doc! { "ping": 1 }).await.map(|_| ()).map_err(|e| errors::classify("ping", &e))
    }

    /// Drop the whole database (tests use it to clean up).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.inner.db.drop().await.map_err(|e| errors::classify("drop database", &e))
    }

    async fn retry<'a, T, F, Fut>(&'a self, what: &'a str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        errors::with_retry(&self.inner.opts.retry, self.inner.opts.attempt_timeout, what, |_| op()).await
    }

    /// Like [`MongoStore::retry`], telling each attempt whether an earlier one failed
    /// (after an ambiguous failure a write may or may not have been applied).
    async fn retry_flagged<'a, T, F, Fut>(&'a self, what: &'a str, op: F) -> Result<T, StoreError>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        errors::with_retry(&self.inner.opts.retry, self.inner.opts.attempt_timeout, what, op).await
    }

    /// Whether the server is MongoDB or the nx-27017 test stand-in (asked once per store).
    pub async fn server_kind(&self) -> Result<ServerKind, StoreError> {
        self.inner.server.get_or_try_init(|| self.retry("identify the server", || self.detect_server())).await.copied()
    }

    async fn detect_server(&self) -> Result<ServerKind, StoreError> {
        match self.inner.db.run_command(doc! { "buildInfo": 1 }).await {
            Ok(info) if info.get_str("process").is_ok_and(|p| p == "nx_27017") => Ok(ServerKind::Nx27017StandIn),
            Ok(_) => Ok(ServerKind::MongoDb),
            Err(e) => match errors::classify("buildInfo", &e) {
                transient @ StoreError::Transient(_) => Err(transient),
                // Refused (permissions, an unusual proxy): not the stand-in, which answers it.
                other => {
                    tracing::debug!(error = %other, "buildInfo refused; assuming MongoDB");
                    Ok(ServerKind::MongoDb)
                }
            },
        }
    }

    /// Create the indexes once per store (idempotent: same names, same keys) and check the unique ones.
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.inner
            .indexes
            .get_or_try_init(|| async { self.retry("create indexes", || self.create_indexes()).await })
            .await
            .map(|_| ())
    }

    /// Every index the store needs: (collection, keys, name, unique).
    fn index_specs(&self) -> Vec<IndexSpec<'_>> {
        let i = &self.inner;
        let spec = |coll: &'static str, name: &'static str, keys: Document, unique: bool| IndexSpec {
            name,
            keys,
            unique,
            handle: match coll {
                "runs" => &i.runs,
                "checkpoints" => &i.checkpoints,
                "rejects" => &i.rejects,
                _ => &i.assets_primary,
            },
        };
        vec![
            spec("assets", "asset_key", doc! { "connection": 1, "kind": 1, "source_id": 1 }, true),
            spec("assets", "asset_stale_seen", doc! { "connection": 1, "stream": 1, "last_seen": 1 }, false),
            spec("assets", "asset_stale_since", doc! { "connection": 1, "stream": 1, "stale_since": 1 }, false),
            spec("assets", "asset_hostname", doc! { "kind": 1, "fields.hostname": 1 }, false),
            spec("assets", "asset_serial_number", doc! { "kind": 1, "fields.serial_number": 1 }, false),
            spec("assets", "asset_mac_addresses", doc! { "kind": 1, "fields.mac_addresses": 1 }, false),
            spec("assets", "asset_keys", doc! { "keys": 1 }, false),
            spec("assets", "asset_refs", doc! { "refs": 1 }, false),
            spec("runs", "run_started_at", doc! { "started_at": -1, "sync_id": -1 }, false),
            spec("runs", "run_connection_started_at", doc! { "connection": 1, "started_at": -1, "sync_id": -1 }, false),
            spec("checkpoints", "checkpoint_key", doc! { "connection": 1, "stream": 1 }, true),
            spec("rejects", "reject_sync_seq", doc! { "sync_id": 1, "seq": 1 }, false),
        ]
    }

    async fn create_indexes(&self) -> Result<(), StoreError> {
        for spec in self.index_specs() {
            let mut options = IndexOptions::builder().name(spec.name.to_string()).build();
            if spec.unique {
                options.unique = Some(true);
            }
            let model = IndexModel::builder().keys(spec.keys.clone()).options(options).build();
            let coll = spec.handle;
            match coll.create_index(model).await {
                Ok(_) => {}
                // 85 IndexOptionsConflict: the keys are indexed under another name or with other
                // options (perhaps NOT unique); 86 IndexKeySpecsConflict: our name is taken by
                // other keys. Which index exists is checked below.
                Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 85 || c.code == 86) => {
                    let existing = self.list_indexes(coll).await?;
                    if !existing.iter().any(|ix| same_keys(&ix.keys, &spec.keys)) {
                        return Err(StoreError::Config(format!(
                            "cannot create index {} on {} {}: {}; an index of that name with other keys exists: \
                             drop or rename it",
                            spec.name,
                            coll.name(),
                            show_keys(&spec.keys),
                            errors::describe(&e)
                        )));
                    }
                    tracing::warn!(
                        collection = coll.name(),
                        index = spec.name,
                        "the keys are already indexed under another name"
                    );
                }
                Err(e) => return Err(errors::classify(&format!("create index {}.{}", coll.name(), spec.name), &e)),
            }
        }
        // Uniqueness is what makes an upsert keyed on them create one document per key.
        // An index on the same keys that is not unique (made by hand, under another name)
        // blocks ours on MongoDB (error 85 above) and silently replaces ours on nx-27017.
        for spec in self.index_specs().into_iter().filter(|s| s.unique) {
            let existing = self.list_indexes(spec.handle).await?;
            let on_keys: Vec<&ListedIndex> = existing.iter().filter(|ix| same_keys(&ix.keys, &spec.keys)).collect();
            if !on_keys.iter().any(|ix| ix.unique && !ix.partial) {
                let found = match on_keys.first() {
                    Some(ix) => format!(
                        "index {:?} on these keys is {}",
                        ix.name,
                        if ix.unique { "partial" } else { "not unique" }
                    ),
                    None => "no index on these keys exists".to_string(),
                };
                return Err(StoreError::Config(format!(
                    "collection {} needs a unique index on {}, but {found}: drop it so corral can create \
                     its own ({}), or make it unique",
                    spec.handle.name(),
                    show_keys(&spec.keys),
                    spec.name
                )));
            }
        }
        Ok(())
    }

    /// The collection's indexes (`listIndexes`), as the server reports them.
    async fn list_indexes(&self, coll: &Collection<Document>) -> Result<Vec<ListedIndex>, StoreError> {
        let what = format!("list indexes of {}", coll.name());
        let reply = self
            .inner
            .db
            .run_command(doc! { "listIndexes": coll.name() })
            .await
            .map_err(|e| errors::classify(&what, &e))?;
        let batch = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map_err(|_| StoreError::Permanent(format!("{what}: unexpected reply")))?;
        let mut out = Vec::new();
        for ix in batch {
            let Bson::Document(ix) = ix else { continue };
            let Ok(keys) = ix.get_document("key") else { continue };
            out.push(ListedIndex {
                name: ix.get_str("name").unwrap_or_default().to_string(),
                keys: keys.clone(),
                unique: ix.get("unique").is_some_and(truthy),
                partial: ix.contains_key("partialFilterExpression"),
            });
        }
        Ok(out)
    }

    /// The indexes of the assets collection (for tests and diagnostics): name, keys, unique.
    pub async fn asset_indexes(&self) -> Result<Vec<(String, Document, bool)>, StoreError> {
        let listed = self.retry("list indexes", || self.list_indexes(&self.inner.assets_primary)).await?;
        Ok(listed.into_iter().map(|ix| (ix.name, ix.keys, ix.unique)).collect())
    }

    /// The query for `filter`; `stale` false leaves stale assets in
    /// whatever `include_stale` says (counts take both).
    fn asset_filter(filter: &AssetFilter, stale: bool) -> Document {
        let mut q = Document::new();
        if let Some(c) = &filter.connection {
            q.insert("connection", doc! { "$eq": c });
        }
        if let Some(k) = filter.kind {
            q.insert("kind", doc! { "$eq": k.as_str() });
        }
        if stale && !filter.include_stale {
            // Matches a missing field (and null).
            q.insert("stale_since", Bson::Null);
        }
        let mut and: Vec<Document> = Vec::new();
        for condition in &filter.conditions {
            let alternatives: Vec<Document> = condition
                .alternatives
                .iter()
                .map(|(kind, predicate)| {
                    let mut d = doc! { "kind": { "$eq": kind.as_str() } };
                    match predicate {
                        Predicate::SourceId(id) => {
                            d.insert("source_id", doc! { "$eq": id });
                        }
                        Predicate::Key { key, value } => {
                            d.insert("keys", doc! { "$eq": load::key_string(*key, value) });
                        }
                        // `$eq` on an array field matches an element: the same for both.
                        Predicate::Equals { path, value } | Predicate::Contains { path, value } => {
                            d.insert(format!("fields.{path}"), doc! { "$eq": scalar_bson(value) });
                        }
                        Predicate::Tag { path, key, value } => {
                            d.insert(
                                format!("fields.{path}"),
                                doc! { "$elemMatch": { "key": { "$eq": key }, "value": { "$eq": value } } },
                            );
                        }
                    }
                    d
                })
                .collect();
            match alternatives.len() {
                0 => and.push(doc! { "_id": { "$exists": false } }),
                1 => and.extend(alternatives),
                _ => and.push(doc! { "$or": alternatives }),
            }
        }
        // Within `$and`, like the conditions: the same query to MongoDB, and
        // nx-27017 (the test stand-in) matches an array element there only,
        // not in a top-level `{refs: {$eq: ..}}` on an indexed array field.
        if let Some(t) = &filter.points_at {
            and.push(doc! { "refs": { "$eq": load::ref_string(&t.connection, t.kind, &t.source_id) } });
        }
        if !and.is_empty() {
            q.insert("$and", and);
        }
        q
    }

    /// The scope's assets last seen before its run started (see [`StaleScope`]).
    ///
    /// `last_seen <= start - 1 ms` is `last_seen < start` for BSON dates
    /// (whole milliseconds). `last_sync_id != this sync` adds nothing on
    /// MongoDB (the run's own writes have `last_seen >= start`), but keeps the
    /// run's own assets safe on nx-27017, the test stand-in, whose date
    /// comparisons are wrong within a second (`$lt` never matches there, `$lte`
    /// over-matches).
    fn stale_base(scope: &StaleScope) -> Document {
        let before = bson::DateTime::from_millis(scope.started_at.timestamp_millis().saturating_sub(1));
        doc! {
            "connection": { "$eq": &scope.connection },
            "stream": { "$eq": &scope.stream },
            "last_seen": { "$lte": before },
            "last_sync_id": { "$ne": &scope.sync_id },
        }
    }

    /// Mark the scope's unseen assets stale. Exact after a retry: once an attempt
    /// has failed (perhaps after the server applied it), the marked assets are
    /// counted as those of the scope whose `stale_since` is this run's `now`.
    async fn mark_stale(&self, scope: &StaleScope, server: ServerKind) -> Result<u64, StoreError> {
        let now = to_bson_date(&scope.now);
        let mut filter = Self::stale_base(scope);
        filter.insert("stale_since", Bson::Null);
        let mut mark = doc! { "$set": { "stale_since": now } };
        if server.stand_in() {
            mark.insert("$pull", doc! { load::NOOP_PULL_FIELD: { "$in": [] } });
        }
        let mut marked_now = Self::stale_base(scope);
        marked_now.insert("stale_since", doc! { "$eq": now });
        self.retry_flagged("mark stale assets", |retried| {
            let (filter, mark, marked_now) = (filter.clone(), mark.clone(), marked_now.clone());
            async move {
                let result = self
                    .inner
                    .assets
                    .update_many(filter, mark)
                    .await
                    .map_err(|e| errors::classify("mark stale assets", &e))?;
                if !retried {
                    return Ok(result.modified_count);
                }
                self.inner
                    .assets_primary
                    .count_documents(marked_now)
                    .await
                    .map_err(|e| errors::classify("count the assets marked stale", &e))
            }
        })
        .await
    }

    /// Delete the scope's assets stale since `cutoff` or earlier. Exact after a
    /// retry: they are counted before the first attempt, and once an attempt has
    /// failed the deleted ones are those no longer there.
    async fn delete_stale(&self, scope: &StaleScope, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut filter = Self::stale_base(scope);
        filter.insert("stale_since", doc! { "$lte": to_bson_date(&cutoff) });
        let before = self
            .retry("count stale assets to delete", || async {
                self.inner
                    .assets_primary
                    .count_documents(filter.clone())
                    .await
                    .map_err(|e| errors::classify("count stale assets to delete", &e))
            })
            .await?;
        if before == 0 {
            return Ok(0);
        }
        self.retry_flagged("delete stale assets", |retried| {
            let filter = filter.clone();
            async move {
                let result = self
                    .inner
                    .assets
                    .delete_many(filter.clone())
                    .await
                    .map_err(|e| errors::classify("delete stale assets", &e))?;
                if !retried {
                    return Ok(result.deleted_count);
                }
                let left = self
                    .inner
                    .assets_primary
                    .count_documents(filter)
                    .await
                    .map_err(|e| errors::classify("count stale assets left", &e))?;
                Ok(before.saturating_sub(left))
            }
        })
        .await
    }

    async fn save_rejects_once(&self, docs: &[Document]) -> Result<(), StoreError> {
        match self.inner.rejects.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            // Already saved by an earlier (ambiguous) attempt: the ids were chosen before the first one.
            Err(e)
                if matches!(e.kind.as_ref(), ErrorKind::InsertMany(im)
                    if im.write_concern_error.is_none()
                        && im.write_errors.as_ref().is_some_and(|ws| ws.iter().all(|w| w.code == errors::DUPLICATE_KEY))) =>
            {
                Ok(())
            }
            Err(e) => Err(errors::classify("save rejects", &e)),
        }
    }

    /// The server's clock (`hello.localTime`): leases expire by it, so the
    /// clocks of the machines running corral need not agree.
    async fn server_now(&self) -> Result<DateTime<Utc>, StoreError> {
        let reply = self
            .inner
            .db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| errors::classify("read the server time", &e))?;
        match reply.get("localTime") {
            Some(Bson::DateTime(t)) => from_bson_date("hello.localTime", *t),
            // A server (or proxy) that does not say: our own clock.
            _ => Ok(Utc::now()),
        }
    }

    async fn read_lease(&self, connection: &str) -> Result<Option<Lease>, StoreError> {
        let found = self
            .inner
            .leases
            .find_one(doc! { "_id": { "$eq": connection } })
            .await
            .map_err(|e| errors::classify("read a lease", &e))?;
        found.map(|d| decode_lease(connection, &d)).transpose()
    }

    /// One attempt at taking the lease: insert it; if it exists, take it over
    /// only when it expired or is already ours, with a compare-and-set on the
    /// holder and expiry read (so two runs taking over at once cannot both win).
    async fn try_acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let stand_in = self.server_kind().await?.stand_in();
        for _ in 0..3 {
            let now = self.server_now().await?;
            let lease = Lease {
                connection: connection.to_string(),
                holder: holder.to_string(),
                owner: owner.to_string(),
                acquired_at: now,
                expires_at: lease_expiry(now, ttl),
            };
            let fields = doc! {
                "holder": holder,
                "owner": owner,
                "acquired_at": to_bson_date(&lease.acquired_at),
                "expires_at": to_bson_date(&lease.expires_at),
            };
            let mut new = doc! { "_id": connection };
            new.extend(fields.clone());
            match self.inner.leases.insert_one(new).await {
                Ok(_) => return Ok(LeaseGrant::Acquired(lease)),
                Err(e) if errors::is_duplicate_key(&e) => {}
                Err(e) => return Err(errors::classify("take a lease", &e)),
            }
            let Some(held) = self.read_lease(connection).await? else { continue }; // released meanwhile
            if held.holder != holder && held.expires_at > now {
                return Ok(LeaseGrant::Held(held));
            }
            let cas = doc! {
                "_id": { "$eq": connection },
                "holder": { "$eq": &held.holder },
                "expires_at": { "$eq": to_bson_date(&held.expires_at) },
            };
            let mut update = doc! { "$set": fields };
            if stand_in {
                update.insert("$pull", doc! { load::NOOP_PULL_FIELD: { "$in": [] } });
            }
            let result = self
                .inner
                .leases
                .update_one(cas, update)
                .await
                .map_err(|e| errors::classify("take over a lease", &e))?;
            if result.matched_count == 1 {
                return Ok(LeaseGrant::Acquired(lease));
            }
            // Someone else changed it between the read and the write: look again.
        }
        match self.read_lease(connection).await? {
            Some(held) if held.holder != holder => Ok(LeaseGrant::Held(held)),
            _ => Err(StoreError::Transient(format!("the lease of {connection} kept changing while taking it"))),
        }
    }

    async fn try_renew_lease(
        &self,
        connection: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let stand_in = self.server_kind().await?.stand_in();
        let expires = lease_expiry(self.server_now().await?, ttl);
        let mut update = doc! { "$set": { "expires_at": to_bson_date(&expires) } };
        if stand_in {
            update.insert("$pull", doc! { load::NOOP_PULL_FIELD: { "$in": [] } });
        }
        let result = self
            .inner
            .leases
            .update_one(doc! { "_id": { "$eq": connection }, "holder": { "$eq": holder } }, update)
            .await
            .map_err(|e| errors::classify("renew a lease", &e))?;
        if result.matched_count == 0 {
            return Ok(None);
        }
        self.read_lease(connection).await
    }

    /// `count_assets` on MongoDB: one aggregation grouped by (connection, kind).
    async fn count_grouped(&self, filter: &AssetFilter) -> Result<Vec<AssetCount>, StoreError> {
        let pipeline = vec![
            doc! { "$match": Self::asset_filter(filter, false) },
            doc! { "$group": {
                "_id": { "connection": "$connection", "kind": "$kind" },
                "count": { "$sum": 1 },
                "stale": { "$sum": { "$cond": [ { "$ifNull": ["$stale_since", false] }, 1, 0 ] } },
            } },
        ];
        let rows = self.aggregate_counts(pipeline).await?;
        rows.into_iter()
            .map(|row| {
                let id = row.get_document("_id").map_err(|_| corrupt_count_row(&row))?;
                let connection = id.get_str("connection").map_err(|_| corrupt_count_row(&row))?.to_string();
                let kind = parse_kind(id.get_str("kind").map_err(|_| corrupt_count_row(&row))?)?;
                Ok(AssetCount {
                    connection,
                    kind,
                    count: count_of(row.get("count")),
                    stale: count_of(row.get("stale")),
                })
            })
            .collect()
    }

    /// `count_assets` on the stand-in (see [`ServerKind`]): one aggregation per kind, grouped by connection.
    async fn count_kind(&self, filter: &AssetFilter, kind: AssetKind) -> Result<Vec<AssetCount>, StoreError> {
        let mut matched = Self::asset_filter(filter, false);
        matched.insert("kind", doc! { "$eq": kind.as_str() });
        let pipeline = vec![
            doc! { "$match": matched },
            doc! { "$group": {
                "_id": "$connection",
                "count": { "$sum": 1 },
                "stale": { "$sum": { "$cond": [ { "$ifNull": ["$stale_since", false] }, 1, 0 ] } },
            } },
        ];
        let rows = self.aggregate_counts(pipeline).await?;
        rows.into_iter()
            .map(|row| {
                let connection = match row.get("_id") {
                    Some(Bson::String(s)) => s.clone(),
                    _ => return Err(corrupt_count_row(&row)),
                };
                Ok(AssetCount {
                    connection,
                    kind,
                    count: count_of(row.get("count")),
                    stale: count_of(row.get("stale")),
                })
            })
            .collect()
    }

    async fn aggregate_counts(&self, pipeline: Vec<Document>) -> Result<Vec<Document>, StoreError> {
        let cursor = self.inner.assets.aggregate(pipeline).await.map_err(|e| errors::classify("count assets", &e))?;
        cursor.try_collect().await.map_err(|e| errors::classify("count assets", &e))
    }
}

/// One index the store needs.
struct IndexSpec<'a> {
    name: &'static str,
    keys: Document,
    unique: bool,
    handle: &'a Collection<Document>,
}

/// One index as `listIndexes` reports it.
#[derive(Debug)]
struct ListedIndex {
    name: String,
    keys: Document,
    unique: bool,
    partial: bool,
}

fn truthy(b: &Bson) -> bool {
    match b {
        Bson::Boolean(v) => *v,
        Bson::Int32(v) => *v != 0,
        Bson::Int64(v) => *v != 0,
        Bson::Double(v) => *v != 0.0,
        _ => false,
    }
}

/// The same fields in the same order with the same directions (1 and 1.0 are
/// the same: indexes made by hand in mongosh have double values).
fn same_keys(a: &Document, b: &Document) -> bool {
    fn direction(v: &Bson) -> Option<String> {
        match v {
            Bson::Int32(n) => Some(n.signum().to_string()),
            Bson::Int64(n) => Some(n.signum().to_string()),
            Bson::Double(n) => Some(if *n < 0.0 { "-1" } else { "1" }.to_string()),
            Bson::String(s) => Some(s.clone()),
            _ => None,
        }
    }
    a.len() == b.len() && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| ka == kb && direction(va) == direction(vb))
}

fn show_keys(keys: &Document) -> String {
    let fields: Vec<String> = keys.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", fields.join(", "))
}

fn corrupt_count_row(row: &Document) -> StoreError {
    StoreError::Corrupt(format!("assets: unexpected count row {:?}", row.get("_id")))
}

fn lease_expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn decode_lease(connection: &str, d: &Document) -> Result<Lease, StoreError> {
    let text = |k: &str| {
        d.get_str(k)
            .map(str::to_string)
            .map_err(|_| StoreError::Corrupt(format!("leases.{k} of {connection} is missing")))
    };
    let date = |k: &str| match d.get(k) {
        Some(Bson::DateTime(t)) => from_bson_date(&format!("leases.{k}"), *t),
        _ => Err(StoreError::Corrupt(format!("leases.{k} of {connection} is not a date"))),
    };
    Ok(Lease {
        connection: connection.to_string(),
        holder: text("holder")?,
        owner: text("owner")?,
        acquired_at: date("acquired_at")?,
        expires_at: date("expires_at")?,
    })
}

fn parse_kind(kind: &str) -> Result<AssetKind, StoreError> {
    AssetKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| StoreError::Corrupt(format!("assets.kind is not a known kind: {kind:?}")))
}

#[async_trait]
impl Store for MongoStore {
    fn describe(&self) -> String {
        format!("mongodb:{}", self.inner.database)
    }

    async fn upsert(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        self.upsert_batch(batch).await
    }

    async fn handle_stale(&self, scope: &StaleScope, policy: StalePolicy) -> Result<StaleOutcome, StoreError> {
        let delete_after = match policy {
            StalePolicy::Keep => return Ok(StaleOutcome::default()),
            StalePolicy::Mark { delete_after } => delete_after,
        };
        self.ensure_indexes().await?;
        let server = self.server_kind().await?;
        // Two steps, each retried on its own: a failure of the delete must not
        // repeat the mark (whose count would then be 0).
        let marked = self.mark_stale(scope, server).await?;
        // An age too large to represent means nothing is old enough.
        let cutoff = delete_after
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .and_then(|age| scope.now.checked_sub_signed(age));
        let deleted = match cutoff {
            Some(cutoff) => self.delete_stale(scope, cutoff).await?,
            None => 0,
        };
        Ok(StaleOutcome { marked, deleted })
    }

    async fn save_checkpoint(&self, connection: &str, stream: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.ensure_indexes().await?;
        let value = serde_json::to_string(&checkpoint.0)
            .map_err(|e| StoreError::Permanent(format!("encode checkpoint: {e}")))?;
        let filter = doc! { "connection": { "$eq": connection }, "stream": { "$eq": stream } };
        let replacement = doc! {
            "connection": connection,
            "stream": stream,
            "value": value,
            "updated_at": to_bson_date(&Utc::now()),
        };
        self.retry("save checkpoint", || async {
            self.inner
                .checkpoints
                .replace_one(filter.clone(), replacement.clone())
                .upsert(true)
                .await
                .map(|_| ())
                .map_err(|e| errors::classify("save checkpoint", &e))
        })
        .await
    }

    async fn load_checkpoint(&self, connection: &str, stream: &str) -> Result<Option<Checkpoint>, StoreError> {
        let filter = doc! { "connection": { "$eq": connection }, "stream": { "$eq": stream } };
        let found = self
            .retry("load checkpoint", || async {
                self.inner
                    .checkpoints
                    .find_one(filter.clone())
                    .projection(doc! { "_id": 0, "value": 1 })
                    .await
                    .map_err(|e| errors::classify("load checkpoint", &e))
            })
            .await?;
        let Some(found) = found else { return Ok(None) };
        let value = found
            .get_str("value")
            .map_err(|_| StoreError::Corrupt("checkpoints.value is missing or not a string".into()))?;
        serde_json::from_str(value)
            .map(|v| Some(Checkpoint(v)))
            .map_err(|e| StoreError::Corrupt(format!("checkpoints.value: {e}")))
    }

    async fn save_rejects(&self, rejects: Vec<StoredReject>) -> Result<(), StoreError> {
        if rejects.is_empty() {
            return Ok(());
        }
        self.ensure_indexes().await?;
        let seq = next_reject_seqs(rejects.len());
        let saved_at = to_bson_date(&Utc::now());
        // Ids chosen once, before the first attempt: a retry re-sends the same
        // ids (and the duplicates are ignored), another save of equal rejects keeps both.
        let docs: Vec<Document> = rejects
            .iter()
            .zip(seq..)
            .map(|(r, seq)| {
                let mut d = doc! {
                    "_id": ObjectId::new(),
                    "sync_id": &r.sync_id,
                    "connection": &r.connection,
                    "stream": &r.stream,
                    "record": &r.reject.record,
                    "reason": &r.reject.reason,
                    "detail": &r.reject.detail,
                    "seq": seq,
                    "saved_at": saved_at,
                };
                if let Some(raw) = &r.reject.raw {
                    d.insert("raw", raw);
                }
                d
            })
            .collect();
        self.retry("save rejects", || self.save_rejects_once(&docs)).await
    }

    async fn rejects(&self, sync_id: &str, limit: usize) -> Result<Vec<StoredReject>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let coll = self.inner.rejects.clone_with_type::<RejectDoc>();
        let docs: Vec<RejectDoc> = self
            .retry("list rejects", || async {
                let cursor = coll
                    .find(doc! { "sync_id": { "$eq": sync_id } })
                    .sort(doc! { "seq": 1, "_id": 1 })
                    .limit(limit_i64(limit))
                    .await
                    .map_err(|e| errors::classify("list rejects", &e))?;
                cursor.try_collect().await.map_err(|e| errors::classify("list rejects", &e))
            })
            .await?;
        Ok(docs
            .into_iter()
            .map(|d| StoredReject {
                sync_id: d.sync_id,
                connection: d.connection,
                stream: d.stream,
                reject: Reject { record: d.record, reason: d.reason, detail: d.detail, raw: d.raw, key: None },
            })
            .collect())
    }

    async fn save_run(&self, summary: &RunSummary) -> Result<(), StoreError> {
        self.ensure_indexes().await?;
        let json =
            serde_json::to_string(summary).map_err(|e| StoreError::Permanent(format!("encode run summary: {e}")))?;
        let filter = doc! { "_id": { "$eq": &summary.sync_id } };
        let replacement = doc! {
            "_id": &summary.sync_id,
            "sync_id": &summary.sync_id,
            "connection": &summary.connection,
            "adapter": &summary.adapter,
            "status": summary.status.as_str(),
            "started_at": to_bson_date(&summary.started_at),
            "ended_at": to_bson_date(&summary.ended_at),
            "summary": json,
        };
        self.retry("save run", || async {
            self.inner
                .runs
                .replace_one(filter.clone(), replacement.clone())
                .upsert(true)
                .await
                .map(|_| ())
                .map_err(|e| errors::classify("save run", &e))
        })
        .await
    }

    async fn list_runs(&self, query: &RunQuery, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = Document::new();
        if let Some(c) = &query.connection {
            filter.insert("connection", doc! { "$eq": c });
        }
        // Dates are kept in whole milliseconds: so is the cursor. The query
        // takes the cursor's millisecond whole (`$lte`; nx-27017, the test
        // stand-in, matches dates within a second as equal), and the runs of
        // that millisecond not after the cursor are dropped here.
        let before = query.before.as_ref().map(|b| RunCursor {
            started_at: DateTime::<Utc>::from_timestamp_millis(b.started_at.timestamp_millis()).unwrap_or(b.started_at),
            sync_id: b.sync_id.clone(),
        });
        if let Some(b) = &before {
            filter.insert("started_at", doc! { "$lte": to_bson_date(&b.started_at) });
        }
        let docs: Vec<RunDoc> = self
            .retry("list runs", || async {
                let mut cursor = self
                    .inner
                    .runs
                    .clone_with_type::<RunDoc>()
                    .find(filter.clone())
                    .sort(doc! { "started_at": -1, "sync_id": -1 })
                    .projection(doc! { "summary": 1, "sync_id": 1, "started_at": 1 })
                    .await
                    .map_err(|e| errors::classify("list runs", &e))?;
                let mut out = Vec::new();
                while out.len() < limit {
                    let Some(d) = cursor.try_next().await.map_err(|e| errors::classify("list runs", &e))? else {
                        break;
                    };
                    let started = from_bson_date("runs.started_at", d.started_at)?;
                    if before.as_ref().is_none_or(|b| b.precedes(started, &d.sync_id)) {
                        out.push(d);
                    }
                }
                Ok(out)
            })
            .await?;
        docs.iter()
            .map(|d| serde_json::from_str(&d.summary).map_err(|e| StoreError::Corrupt(format!("runs.summary: {e}"))))
            .collect()
    }

    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        // Safe to retry: taking a lease the caller already holds succeeds again.
        self.retry("take a lease", || self.try_acquire_lease(connection, holder, owner, ttl)).await
    }

    async fn renew_lease(&self, connection: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        // One attempt: the engine renews again soon, and gives up only after a whole time to live.
        self.try_renew_lease(connection, holder, ttl).await
    }

    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        self.retry("release a lease", || async {
            self.inner
                .leases
                .delete_one(doc! { "_id": { "$eq": connection }, "holder": { "$eq": holder } })
                .await
                .map(|_| ())
                .map_err(|e| errors::classify("release a lease", &e))
        })
        .await
    }

    async fn lease(&self, connection: &str) -> Result<Option<Lease>, StoreError> {
        self.retry("read a lease", || self.read_lease(connection)).await
    }

    async fn run(&self, sync_id: &str) -> Result<Option<RunSummary>, StoreError> {
        let found: Option<Document> = self
            .retry("find run", || async {
                self.inner
                    .runs
                    .find_one(doc! { "_id": { "$eq": sync_id } })
                    .projection(doc! { "summary": 1 })
                    .await
                    .map_err(|e| errors::classify("find run", &e))
            })
            .await?;
        found
            .map(|d| {
                let s = d.get_str("summary").map_err(|_| StoreError::Corrupt("runs.summary is not a string".into()))?;
                serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("runs.summary: {e}")))
            })
            .transpose()
    }

    async fn count_assets(&self, filter: &AssetFilter) -> Result<Vec<AssetCount>, StoreError> {
        let mut counts = Vec::new();
        if self.server_kind().await?.stand_in() {
            let kinds: Vec<AssetKind> = match filter.kind {
                Some(k) => vec![k],
                None => AssetKind::ALL.to_vec(),
            };
            for kind in kinds {
                counts.extend(self.retry("count assets", || self.count_kind(filter, kind)).await?);
            }
        } else {
            counts = self.retry("count assets", || self.count_grouped(filter)).await?;
        }
        // `count` came back as live + stale: without include_stale it is the live ones.
        if !filter.include_stale {
            for c in &mut counts {
                c.count = c.count.saturating_sub(c.stale);
            }
        }
        counts.retain(|c| c.count > 0 || c.stale > 0);
        counts.sort_by(|a, b| (a.connection.as_bytes(), a.kind).cmp(&(b.connection.as_bytes(), b.kind)));
        Ok(counts)
    }

    async fn list_assets_after(
        &self,
        filter: &AssetFilter,
        after: Option<&AssetCursor>,
        limit: usize,
    ) -> Result<Vec<StoredAsset>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let coll = self.inner.assets.clone_with_type::<AssetDoc>();
        let mut q = Self::asset_filter(filter, true);
        if let Some(AssetCursor { key: k, .. }) = after {
            // After the key, in the order of the `asset_key` index.
            let kind = k.kind.as_str();
            let seek = doc! { "$or": [
                { "connection": { "$gt": &k.connection } },
                { "connection": { "$eq": &k.connection }, "kind": { "$gt": kind } },
                { "connection": { "$eq": &k.connection }, "kind": { "$eq": kind }, "source_id": { "$gt": &k.source_id } },
            ] };
            q = if q.is_empty() {
                seek
            } else {
                doc! { "$and": [q, seek] }
            };
        }
        let docs: Vec<AssetDoc> = self
            .retry("list assets", || async {
                let cursor = coll
                    .find(q.clone())
                    .sort(doc! { "connection": 1, "kind": 1, "source_id": 1 })
                    .projection(doc! {
                        "_id": 0, "content_hash": 0, "insert_token": 0, "write_token": 0, "write_changed": 0,
                        "keys": 0, "refs": 0, "derived": 0, load::NOOP_PULL_FIELD: 0,
                    })
                    .limit(limit_i64(limit))
                    .await
                    .map_err(|e| errors::classify("list assets", &e))?;
                cursor.try_collect().await.map_err(|e| errors::classify("list assets", &e))
            })
            .await?;
        docs.into_iter().map(AssetDoc::decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        let uri = "mongodb://corral:s3cr3t-pw@db.example.com:27017/admin?tls=true";
        let msg = redact(uri, "failed for corral:s3cr3t-pw@db.example.com and s3cr3t-pw");
        assert!(!msg.contains("s3cr3t-pw"), "{msg}");
        assert_eq!(redact("mongodb://localhost", "x"), "x");
    }

    #[test]
    fn database_names() {
        assert!(validate_database_name("corral").is_ok());
        assert!(validate_database_name("").is_err());
        assert!(validate_database_name("a.b").is_err());
        assert!(validate_database_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn reject_seqs_increase() {
        let a = next_reject_seqs(3);
        let b = next_reject_seqs(1);
        assert!(b >= a + 3);
    }

    #[tokio::test]
    async fn connect_with_bad_uri_is_config_error_without_secret() {
        let err = MongoStore::connect("mongodb://user:hunter2@", "corral").await.expect_err("bad uri");
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = MongoStore::connect("mongodb://localhost", "bad.name").await.expect_err("bad db");
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    }

    #[tokio::test]
    async fn describe_has_no_credentials() {
        let store = MongoStore::connect("mongodb://user:hunter2@127.0.0.1:1", "corral").await.expect("lazy connect");
        assert_eq!(store.describe(), "mongodb:corral");
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    /// The shape the CLI's `[store]` table has: `kind` picks the store.
    #[derive(Debug, Deserialize)]
    #[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
    enum StoreTable {
        #[allow(dead_code)]
        Sqlite {
            path: String,
        },
        Mongodb(MongoConfig),
    }

    fn parse_store(text: &str) -> Result<MongoConfig, String> {
        #[derive(Debug, Deserialize)]
        struct File {
            store: StoreTable,
        }
        match toml::from_str::<File>(text).map_err(|e| e.to_string())?.store {
            StoreTable::Mongodb(c) => Ok(c),
            other => Err(format!("not mongodb: {other:?}")),
        }
    }

    #[test]
    fn mongo_config_deserializes_with_defaults() {
        let c = parse_store("[store]\nkind = \"mongodb\"\nuri = \"mongodb://u:pw-secret@h\"\n").expect("minimal");
        assert_eq!(c, MongoConfig::new("mongodb://u:pw-secret@h", "corral"));
        assert_eq!(c.options().collections, CollectionNames::default());

        let c = parse_store(
            "[store]\nkind = \"mongodb\"\nuri = \"mongodb://h\"\ndatabase = \"inv\"\n\
             collections = { assets = \"corral_assets\", rejects = \"corral_rejects\" }\n",
        )
        .expect("names");
        assert_eq!(c.database, "inv");
        let names = c.options().collections;
        assert_eq!((names.assets.as_str(), names.rejects.as_str()), ("corral_assets", "corral_rejects"));
        assert_eq!((names.runs.as_str(), names.checkpoints.as_str()), ("runs", "checkpoints"), "defaults for the rest");

        let err =
            parse_store("[store]\nkind = \"mongodb\"\nuri = \"mongodb://h\"\ncollection = {}\n").expect_err("typo");
        assert!(err.contains("collection"), "{err}");
        let err = parse_store("[store]\nkind = \"mongodb\"\nuri = \"mongodb://h\"\ncollections = { asset = \"x\" }\n")
            .expect_err("unknown collection");
        assert!(err.contains("asset"), "{err}");
        assert!(parse_store("[store]\nkind = \"mongodb\"\n").expect_err("no uri").contains("uri"));
    }

    #[test]
    fn mongo_config_debug_hides_the_uri() {
        let c = MongoConfig::new("mongodb://corral:hunter2@db.example.com", "corral");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("db.example.com"), "{shown}");
    }

    #[tokio::test]
    async fn collection_names_are_validated() {
        let names = |assets: &str, runs: &str| CollectionNames {
            assets: assets.into(),
            runs: runs.into(),
            ..Default::default()
        };
        assert!(names("a", "r").validate().is_ok());
        for bad in [names("", "r"), names("a$b", "r"), names("system.x", "r"), names("same", "same")] {
            let err = bad.validate().expect_err("invalid names");
            assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        }
        let config =
            MongoConfig { collections: names("x", "x"), ..MongoConfig::new("mongodb://127.0.0.1:1", "corral") };
        let err = config.connect().await.expect_err("duplicate names");
        assert!(err.to_string().contains("both named"), "{err}");
        let config = MongoConfig { collections: names("corral_assets", "corral_runs"), ..config };
        let store = config.connect().await.expect("lazy connect");
        assert_eq!(store.inner.assets.name(), "corral_assets");
        assert_eq!(store.inner.assets_primary.name(), "corral_assets");
        assert_eq!(store.inner.runs.name(), "corral_runs");
        assert_eq!(store.inner.checkpoints.name(), "checkpoints");
    }

    #[tokio::test]
    async fn batch_limits_are_clamped_to_what_mongodb_accepts() {
        let opts = MongoOptions {
            max_batch_docs: 1_000_000,
            max_batch_bytes: 64 << 20,
            max_document_bytes: 32 << 20,
            max_in_flight: 0,
            ..MongoOptions::default()
        };
        let store = MongoStore::connect_with("mongodb://127.0.0.1:1", "corral", opts).await.expect("lazy connect");
        let o = store.options();
        assert_eq!(o.max_batch_docs, 100_000);
        assert_eq!(o.max_batch_bytes, (16 << 20) - COMMAND_HEADROOM_BYTES);
        assert!(o.max_batch_bytes < 16 << 20);
        assert_eq!(o.max_document_bytes, 16 << 20);
        assert_eq!(o.max_in_flight, 1);
        let defaults = MongoStore::connect("mongodb://127.0.0.1:1", "corral").await.expect("lazy connect");
        assert_eq!(defaults.options().max_batch_docs, 1000, "sensible values are kept");
        assert_eq!(defaults.options().max_batch_bytes, 8 << 20);
    }

    #[tokio::test]
    async fn the_pre_read_goes_to_the_primary_whatever_the_uri_says() {
        let uri = "mongodb://127.0.0.1:1/?readPreference=secondaryPreferred&readConcernLevel=available";
        let store = MongoStore::connect(uri, "corral").await.expect("lazy connect");
        assert!(
            matches!(
                store.inner.assets.selection_criteria(),
                Some(SelectionCriteria::ReadPreference(ReadPreference::SecondaryPreferred { .. }))
            ),
            "listing follows the URI: {:?}",
            store.inner.assets.selection_criteria()
        );
        assert!(
            matches!(
                store.inner.assets_primary.selection_criteria(),
                Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            ),
            "{:?}",
            store.inner.assets_primary.selection_criteria()
        );
        assert_eq!(store.inner.assets_primary.read_concern(), Some(&ReadConcern::local()));
    }

    /// A hung server: with the default options the store gives up in about a
    /// minute, and permanently, so the engine does not retry on top.
    #[tokio::test(start_paused = true)]
    async fn default_retries_give_up_on_a_hung_server_within_a_minute() {
        let opts = MongoOptions::default();
        let started = tokio::time::Instant::now();
        let r: Result<(), _> = errors::with_retry(&opts.retry, opts.attempt_timeout, "upsert", |_| async {
            std::future::pending::<()>().await;
            Ok(())
        })
        .await;
        let took = started.elapsed();
        let Err(StoreError::Permanent(msg)) = r else { panic!("expected a permanent error: {r:?}") };
        assert!(msg.contains("gave up after 1 attempt(s)"), "{msg}");
        assert!(took <= opts.retry.budget + opts.attempt_timeout && took <= Duration::from_secs(60), "{took:?}");
    }

    #[test]
    fn index_keys_compare_by_field_order_and_direction() {
        assert!(same_keys(&doc! { "a": 1, "b": 1 }, &doc! { "a": 1.0, "b": 1_i64 }));
        assert!(!same_keys(&doc! { "a": 1, "b": 1 }, &doc! { "b": 1, "a": 1 }));
        assert!(!same_keys(&doc! { "a": 1 }, &doc! { "a": -1 }));
        assert!(!same_keys(&doc! { "a": 1 }, &doc! { "a": 1, "b": 1 }));
    }
}
