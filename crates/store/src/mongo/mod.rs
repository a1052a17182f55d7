//! MongoDB store: the production store, through the official `mongodb` driver (3.x).
//!
//! Works with MongoDB 6.0 and later (standalone, replica set or sharded).
//!
//! ```ignore
//! let store = MongoStore::connect("mongodb://db.internal:27017", "corral").await?;
//! // Clone it freely: clones share one pooled `mongodb::Client`.
//! ```
//!
//! Create one `MongoStore` per process and clone it (or build it with
//! [`MongoStore::from_client`] around a `Client` the program already has):
//! a `Client` owns a connection pool and background monitors.
//!
//! Collections (names configurable in [`MongoOptions`]):
//!
//! - `assets`: one document per (connection, kind, source_id):
//!   `{connection, kind, source_id, stream, fields: {...}, raw?, content_hash,
//!   first_seen, last_seen, last_sync_id, stale_since?}`, dates as BSON dates
//!   (millisecond precision). `fields` is exactly [`Asset::fields_json`].
//! - `runs`: `{_id: sync_id, sync_id, connection, adapter, status, started_at, ended_at,
//!   summary}`; `summary` is the [`RunSummary`] as JSON text, so it round-trips exactly.
//! - `checkpoints`: `{connection, stream, value, updated_at}`; `value` is the
//!   checkpoint's JSON text (opaque, kept byte for byte).
//! - `rejects`: `{_id, sync_id, connection, stream, record, reason, detail,
//!   raw?, seq, saved_at}`; `_id` is derived from the content, so saving the
//!   same rejects again (a retry) stores them once; `seq` keeps save order.
//!
//! Indexes are created (idempotently, by name) on first use.
//!
//! Loads: see [`load`](self) module docs: unordered multi-statement `update`
//! commands (what a bulk write is on the wire; `Client::bulk_write` needs
//! MongoDB 8.0), preceded by one indexed read of the existing content hashes.
//!
//! Transient failures (network, timeouts, server selection, primary step-down,
//! `RetryableWriteError`) are retried with capped exponential backoff
//! ([`RetryPolicy`]); then the error is returned as [`StoreError::Transient`]
//! so the engine fails the run. The connection string may hold credentials: it
//! is never logged nor put in an error message; [`Store::describe`] is
//! `mongodb:<database>`.

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
    AssetCount, AssetFilter, LoadBatch, LoadOutcome, StaleOutcome, StalePolicy, StaleScope, Store, StoreError,
    StoredAsset, StoredReject,
};
use corral_core::summary::RunSummary;
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, RawDocumentBuf, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Deserialize;

pub use errors::RetryPolicy;

/// Tunables of the MongoDB store. `Default` is right for production.
#[derive(Debug, Clone)]
pub struct MongoOptions {
    pub assets_collection: String,
    pub runs_collection: String,
    pub checkpoints_collection: String,
    pub rejects_collection: String,
    /// How long an operation waits for a usable server (only for [`MongoStore::connect`];
    /// a `serverSelectionTimeoutMS` in the URI wins). Short, so a stopped server is
    /// noticed in seconds; the retry policy covers brief elections.
    pub server_selection_timeout: Duration,
    /// TCP/TLS connect timeout (only for [`MongoStore::connect`]; `connectTimeoutMS` in the URI wins).
    pub connect_timeout: Duration,
    /// Upper bound on one attempt of one operation (the driver has no socket
    /// timeout: this is what notices a server that stopped answering).
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
    /// Most statements in one `update` command.
    pub max_batch_docs: usize,
    /// Most bytes of statements in one `update` command (the command must stay
    /// under 16 MiB; a single larger statement is sent alone).
    pub max_batch_bytes: usize,
    /// Documents larger than this are rejected (`document_too_large`) without
    /// being sent. MongoDB's limit is 16 MiB.
    pub max_document_bytes: usize,
    /// `update` commands of one batch in flight at once.
    pub max_in_flight: usize,
}

impl Default for MongoOptions {
    fn default() -> Self {
        MongoOptions {
            assets_collection: "assets".into(),
            runs_collection: "runs".into(),
            checkpoints_collection: "checkpoints".into(),
            rejects_collection: "rejects".into(),
            server_selection_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            max_batch_docs: 1000,
            max_batch_bytes: 8 << 20,
            max_document_bytes: 16 << 20,
            max_in_flight: 4,
        }
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
    runs: Collection<Document>,
    checkpoints: Collection<Document>,
    rejects: Collection<Document>,
    indexes: tokio::sync::OnceCell<()>,
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
        })
    }
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

fn fnv1a64(seed: u64, parts: &[&str]) -> u64 {
    let mut hash = seed;
    for part in parts {
        for b in part.as_bytes().iter().chain(&[0xff]) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// A content-derived id for a reject: saving the same reject twice keeps one.
fn reject_id(r: &StoredReject) -> String {
    let raw = r.reject.raw.as_deref().unwrap_or("\u{0}none");
    let parts =
        [r.sync_id.as_str(), &r.connection, &r.stream, &r.reject.record, &r.reject.reason, &r.reject.detail, raw];
    format!("{:016x}{:016x}", fnv1a64(0xcbf2_9ce4_8422_2325, &parts), fnv1a64(0x6c62_272e_07bb_0142, &parts))
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
        for (what, name) in [
            ("assets", &opts.assets_collection),
            ("runs", &opts.runs_collection),
            ("checkpoints", &opts.checkpoints_collection),
            ("rejects", &opts.rejects_collection),
        ] {
            if name.is_empty() || name.starts_with("system.") || name.contains(['$', '\0']) {
                return Err(StoreError::Config(format!("invalid MongoDB collection name for {what}: {name:?}")));
            }
        }
        let db = client.database(database);
        Ok(MongoStore {
            inner: Arc::new(Inner {
                assets: db.collection(&opts.assets_collection),
                runs: db.collection(&opts.runs_collection),
                checkpoints: db.collection(&opts.checkpoints_collection),
                rejects: db.collection(&opts.rejects_collection),
                client,
                db,
                database: database.to_string(),
                opts,
                indexes: tokio::sync::OnceCell::new(),
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

    async fn retry<'a, T, F, Fut>(&'a self, what: &'a str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        errors::with_retry(&self.inner.opts.retry, self.inner.opts.attempt_timeout, what, op).await
    }

    /// Create the indexes once per store (idempotent: same names, same keys).
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.inner
            .indexes
            .get_or_try_init(|| async { self.retry("create indexes", || self.create_indexes()).await })
            .await
            .map(|_| ())
    }

    async fn create_indexes(&self) -> Result<(), StoreError> {
        let named = |keys: Document, name: &str, unique: bool| {
            let mut o = IndexOptions::builder().name(name.to_string()).build();
            if unique {
                o.unique = Some(true);
            }
            IndexModel::builder().keys(keys).options(o).build()
        };
        let assets = [
            named(doc! { "connection": 1, "kind": 1, "source_id": 1 }, "asset_key", true),
            named(doc! { "connection": 1, "stream": 1, "last_sync_id": 1 }, "asset_stale_scan", false),
            named(doc! { "connection": 1, "stream": 1, "stale_since": 1 }, "asset_stale_since", false),
            named(doc! { "kind": 1, "fields.hostname": 1 }, "asset_hostname", false),
            named(doc! { "kind": 1, "fields.serial_number": 1 }, "asset_serial_number", false),
            named(doc! { "kind": 1, "fields.mac_addresses": 1 }, "asset_mac_addresses", false),
        ];
        for index in assets {
            self.create_index(&self.inner.assets, index).await?;
        }
        self.create_index(&self.inner.runs, named(doc! { "started_at": -1, "sync_id": -1 }, "run_started_at", false))
            .await?;
        self.create_index(
            &self.inner.checkpoints,
            named(doc! { "connection": 1, "stream": 1 }, "checkpoint_key", true),
        )
        .await?;
        self.create_index(&self.inner.rejects, named(doc! { "sync_id": 1, "seq": 1 }, "reject_sync_seq", false))
            .await?;
        Ok(())
    }

    async fn create_index<T: Send + Sync>(&self, coll: &Collection<T>, index: IndexModel) -> Result<(), StoreError> {
        let name = index.options.as_ref().and_then(|o| o.name.clone()).unwrap_or_default();
        match coll.create_index(index).await {
            Ok(_) => Ok(()),
            // The same keys already indexed under another name (created by hand):
            // that index serves as well as ours.
            Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 85) => {
                tracing::warn!(collection = coll.name(), index = %name, "an equivalent index exists under another name");
                Ok(())
            }
            Err(e) => Err(errors::classify(&format!("create index {}.{name}", coll.name()), &e)),
        }
    }

    fn asset_filter(filter: &AssetFilter) -> Document {
        let mut q = Document::new();
        if let Some(c) = &filter.connection {
            q.insert("connection", doc! { "$eq": c });
        }
        if let Some(k) = filter.kind {
            q.insert("kind", doc! { "$eq": k.as_str() });
        }
        if !filter.include_stale {
            // Matches a missing field (and null).
            q.insert("stale_since", Bson::Null);
        }
        q
    }

    async fn handle_stale_once(
        &self,
        scope: &StaleScope,
        delete_after: Option<Duration>,
    ) -> Result<StaleOutcome, StoreError> {
        let base = doc! {
            "connection": { "$eq": &scope.connection },
            "stream": { "$eq": &scope.stream },
            "last_sync_id": { "$ne": &scope.sync_id },
        };
        let mut mark_filter = base.clone();
        mark_filter.insert("stale_since", Bson::Null);
        let now = to_bson_date(&scope.now);
        let mark = doc! { "$set": { "stale_since": now }, "$pull": { load::NOOP_PULL_FIELD: { "$in": [] } } };
        let marked = self
            .inner
            .assets
            .update_many(mark_filter, mark)
            .await
            .map_err(|e| errors::classify("mark stale assets", &e))?
            .modified_count;
        let mut deleted = 0;
        if let Some(age) = delete_after {
            // An age too large to represent means nothing is old enough.
            let cutoff = chrono::Duration::from_std(age).ok().and_then(|age| scope.now.checked_sub_signed(age));
            if let Some(cutoff) = cutoff {
                let mut delete_filter = base;
                delete_filter.insert("stale_since", doc! { "$lte": to_bson_date(&cutoff) });
                deleted = self
                    .inner
                    .assets
                    .delete_many(delete_filter)
                    .await
                    .map_err(|e| errors::classify("delete stale assets", &e))?
                    .deleted_count;
            }
        }
        Ok(StaleOutcome { marked, deleted })
    }

    async fn save_rejects_once(&self, docs: &[Document]) -> Result<(), StoreError> {
        match self.inner.rejects.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            // Already saved by an earlier (ambiguous) attempt: ids are content-derived.
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

    async fn count_kind(&self, filter: &AssetFilter, kind: AssetKind) -> Result<Vec<AssetCount>, StoreError> {
        let mut matched = Self::asset_filter(filter);
        matched.insert("kind", doc! { "$eq": kind.as_str() });
        // One group per connection for one kind at a time: nx-27017 (the test
        // stand-in) does not evaluate a compound `_id: {connection, kind}` in
        // `$group`; kinds are few, so this costs MongoDB one more cheap query.
        let pipeline = vec![
            doc! { "$match": matched },
            doc! { "$group": {
                "_id": "$connection",
                "count": { "$sum": 1 },
                "stale": { "$sum": { "$cond": [ { "$ifNull": ["$stale_since", false] }, 1, 0 ] } },
            } },
        ];
        let cursor = self.inner.assets.aggregate(pipeline).await.map_err(|e| errors::classify("count assets", &e))?;
        let rows: Vec<Document> = cursor.try_collect().await.map_err(|e| errors::classify("count assets", &e))?;
        rows.into_iter()
            .map(|row| {
                let connection = match row.get("_id") {
                    Some(Bson::String(s)) => s.clone(),
                    other => return Err(StoreError::Corrupt(format!("assets.connection is not a string: {other:?}"))),
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
        self.retry("handle stale", || self.handle_stale_once(scope, delete_after)).await
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
        let docs: Vec<Document> = rejects
            .iter()
            .zip(seq..)
            .map(|(r, seq)| {
                let mut d = doc! {
                    "_id": reject_id(r),
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
                reject: Reject { record: d.record, reason: d.reason, detail: d.detail, raw: d.raw },
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

    async fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let docs: Vec<Document> = self
            .retry("list runs", || async {
                let cursor = self
                    .inner
                    .runs
                    .find(doc! {})
                    .sort(doc! { "started_at": -1, "sync_id": -1 })
                    .projection(doc! { "summary": 1 })
                    .limit(limit_i64(limit))
                    .await
                    .map_err(|e| errors::classify("list runs", &e))?;
                cursor.try_collect().await.map_err(|e| errors::classify("list runs", &e))
            })
            .await?;
        docs.iter()
            .map(|d| {
                let s = d.get_str("summary").map_err(|_| StoreError::Corrupt("runs.summary is not a string".into()))?;
                serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("runs.summary: {e}")))
            })
            .collect()
    }

    async fn count_assets(&self, filter: &AssetFilter) -> Result<Vec<AssetCount>, StoreError> {
        let kinds: Vec<AssetKind> = match filter.kind {
            Some(k) => vec![k],
            None => AssetKind::ALL.to_vec(),
        };
        let mut counts = Vec::new();
        for kind in kinds {
            counts.extend(self.retry("count assets", || self.count_kind(filter, kind)).await?);
        }
        counts.retain(|c| c.count > 0);
        counts.sort_by(|a, b| (a.connection.as_bytes(), a.kind).cmp(&(b.connection.as_bytes(), b.kind)));
        Ok(counts)
    }

    async fn list_assets(&self, filter: &AssetFilter, limit: usize) -> Result<Vec<StoredAsset>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let coll = self.inner.assets.clone_with_type::<AssetDoc>();
        let q = Self::asset_filter(filter);
        let docs: Vec<AssetDoc> = self
            .retry("list assets", || async {
                let cursor = coll
                    .find(q.clone())
                    .sort(doc! { "connection": 1, "kind": 1, "source_id": 1 })
                    .projection(doc! { "_id": 0, "content_hash": 0 })
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
}
