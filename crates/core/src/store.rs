//! The `Store` trait: where normalized assets, checkpoints and run summaries live.
//!
//! Implementations (SQLite, MongoDB) are in `corral-store`. Every method is
//! async and must never block the tokio runtime; every write is idempotent.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::adapter::{Checkpoint, Reject};
use crate::asset::{Asset, AssetBody, AssetKind, KeyType};
use crate::summary::RunSummary;

/// One load batch: assets of one connection from one sync.
#[derive(Debug, Clone)]
pub struct LoadBatch {
    pub sync_id: String,
    pub connection: String,
    /// When this sync started; written as `last_seen` (and `first_seen` on insert).
    pub seen_at: DateTime<Utc>,
    /// Shared, so that a retry sends the same batch again without copying
    /// every asset (and its raw record) for each attempt.
    pub assets: std::sync::Arc<[Asset]>,
    /// Records this sync fetched but rejected, by key: the vendor still has
    /// them, so their stored assets (if any) get `last_seen` moved forward
    /// (never back), `last_sync_id` set and their stale mark cleared; their
    /// contents are left as they are. Without this a record that fails to
    /// normalize once would have its stored asset marked stale, and deleted
    /// after `delete_after`, while the vendor still lists it.
    pub seen: Vec<(AssetKind, String)>,
}

/// What the store did with one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Records the store refused one by one (document too large, validation):
    /// the rest of the batch was stored.
    pub rejected: Vec<Reject>,
}

impl LoadOutcome {
    pub fn stored(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }

    pub fn add(&mut self, other: LoadOutcome) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.rejected.extend(other.rejected);
    }
}

/// How to treat assets a completed stream no longer returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum StalePolicy {
    /// Leave them alone.
    Keep,
    /// Set `stale_since`; delete those stale for longer than `delete_after` (if set).
    Mark {
        #[serde(default, with = "opt_duration_secs")]
        delete_after: Option<Duration>,
    },
}

impl Default for StalePolicy {
    fn default() -> Self {
        StalePolicy::Mark { delete_after: None }
    }
}

mod opt_duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// The scope stale handling may touch: one stream of one connection, after
/// a sync whose fetch of that stream completed cleanly and whose loads all succeeded.
///
/// Stale means *last seen before this sync started* (`last_seen <
/// started_at`), not "last written by another sync": because upserts only
/// ever move `last_seen` forward, an asset that any sync started at or after
/// this one has seen is never marked, however two runs' writes interleave.
#[derive(Debug, Clone)]
pub struct StaleScope {
    pub connection: String,
    pub stream: String,
    /// The sync doing the stale handling (for logs).
    pub sync_id: String,
    /// When that sync started: its batches' `seen_at`. Assets of the scope
    /// last seen before it are stale.
    pub started_at: DateTime<Utc>,
    /// The time written as `stale_since`, and from which `delete_after` ages are measured.
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleOutcome {
    /// Newly marked stale by this run.
    pub marked: u64,
    /// Deleted because they had been stale longer than the configured age.
    pub deleted: u64,
}

/// A claim on one connection: while a run holds it, no other run of that
/// connection starts, in this process or any other sharing the store. The
/// holder renews it while the run lives; another run may take it over only
/// once it has expired (its holder died or lost the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub connection: String,
    /// The run holding it: its sync id.
    pub holder: String,
    /// Where that run lives, for people (`host-1 pid 4242`).
    pub owner: String,
    pub acquired_at: DateTime<Utc>,
    /// After this instant (by the store's clock) the lease may be taken over.
    pub expires_at: DateTime<Utc>,
}

/// The answer to [`Store::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    /// The lease is the caller's until `expires_at` (unless renewed).
    Acquired(Lease),
    /// Another run holds it; here is its lease.
    Held(Lease),
}

/// Filter for `corral assets` (and any reader of the store).
///
/// Conditions are ANDed; each is an OR of per-kind predicates (a field may
/// exist in several kinds, with a different shape in each). Build conditions
/// with [`crate::schema::parse_where`].
#[derive(Debug, Clone, Default)]
pub struct AssetFilter {
    pub connection: Option<String>,
    pub kind: Option<AssetKind>,
    pub include_stale: bool,
    pub conditions: Vec<Condition>,
    /// Only assets that reference this one ([`Asset::references`]; a
    /// reference without a connection points into its record's own).
    pub points_at: Option<AssetKey>,
}

/// One `--where FIELD=VALUE`: matches an asset of one of the alternatives'
/// kinds for which that alternative's predicate holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// As the user wrote it (for messages).
    pub text: String,
    pub alternatives: Vec<(AssetKind, Predicate)>,
}

/// What a condition tests on one kind's assets. Paths are dotted paths into
/// the stored fields (`os.family`, `attributes.status`), checked against the
/// schema, so stores may embed them in a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// The asset's source id.
    SourceId(String),
    /// The asset has this correlation key (indexed: [`Asset::correlation_keys`]).
    Key { key: KeyType, value: String },
    /// The field at `path` equals `value`.
    Equals { path: String, value: Scalar },
    /// The list at `path` has an element equal to `value`.
    Contains { path: String, value: Scalar },
    /// The `{key, value}` list at `path` has the pair (`key`, `value`).
    Tag { path: String, key: String, value: String },
}

/// A typed value to compare a stored field with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    /// Whether the JSON value `v` is this scalar (numbers compare by value).
    pub fn matches(&self, v: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (self, v) {
            (Scalar::Str(s), Value::String(t)) => s == t,
            (Scalar::Bool(b), Value::Bool(c)) => b == c,
            (Scalar::Int(i), Value::Number(n)) => n.as_f64() == Some(*i as f64),
            (Scalar::Float(f), Value::Number(n)) => n.as_f64() == Some(*f),
            _ => false,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Str(s) => serde_json::Value::from(s.as_str()),
            Scalar::Int(i) => serde_json::Value::from(*i),
            Scalar::Float(f) => serde_json::Value::from(*f),
            Scalar::Bool(b) => serde_json::Value::from(*b),
        }
    }
}

fn at_path<'a>(fields: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(fields, |v, seg| v.get(seg))
}

impl Predicate {
    /// Whether `asset` (stored as `stored`) satisfies the predicate: the
    /// reference semantics every store implements (the [`crate::testing::MemoryStore`] uses it).
    pub fn matches(&self, stored: &StoredAsset, asset: Option<&Asset>) -> bool {
        match self {
            Predicate::SourceId(id) => stored.source_id == *id,
            Predicate::Key { key, value } => {
                asset.is_some_and(|a| a.correlation_keys().iter().any(|(k, v)| k == key && v == value))
            }
            Predicate::Equals { path, value } => at_path(&stored.fields, path).is_some_and(|v| value.matches(v)),
            Predicate::Contains { path, value } => at_path(&stored.fields, path)
                .and_then(serde_json::Value::as_array)
                .is_some_and(|items| items.iter().any(|i| value.matches(i))),
            Predicate::Tag { path, key, value } => {
                at_path(&stored.fields, path).and_then(serde_json::Value::as_array).is_some_and(|items| {
                    items.iter().any(|i| {
                        i.get("key").and_then(serde_json::Value::as_str) == Some(key.as_str())
                            && i.get("value").and_then(serde_json::Value::as_str) == Some(value.as_str())
                    })
                })
            }
        }
    }
}

impl AssetFilter {
    /// Whether a stored asset passes every part of the filter: the reference
    /// semantics the stores implement with their indexes.
    pub fn matches(&self, stored: &StoredAsset) -> bool {
        if self.connection.as_ref().is_some_and(|c| *c != stored.connection)
            || self.kind.is_some_and(|k| k != stored.kind)
            || (!self.include_stale && stored.stale_since.is_some())
        {
            return false;
        }
        if self.conditions.is_empty() && self.points_at.is_none() {
            return true;
        }
        let asset = stored.asset().ok();
        let conditions = self
            .conditions
            .iter()
            .all(|c| c.alternatives.iter().any(|(k, p)| *k == stored.kind && p.matches(stored, asset.as_ref())));
        let points = self.points_at.as_ref().is_none_or(|target| {
            asset.as_ref().is_some_and(|a| {
                a.references().iter().any(|(_, r)| {
                    r.kind == target.kind
                        && r.source_id == target.source_id
                        && r.connection_or(&stored.connection) == target.connection
                })
            })
        });
        conditions && points
    }
}

/// (connection, kind, source_id): what identifies a stored asset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetKey {
    pub connection: String,
    pub kind: AssetKind,
    pub source_id: String,
}

impl AssetKey {
    pub fn of(asset: &StoredAsset) -> AssetKey {
        AssetKey { connection: asset.connection.clone(), kind: asset.kind, source_id: asset.source_id.clone() }
    }
}

/// Where a store keeps a listed asset in its listing order, when that order
/// is not the key's: SQLite lists a connection's assets of one kind in the
/// order they were first stored, and gives each listed asset its row id here
/// so that a page can start after an asset deleted since it was listed.
///
/// Bookkeeping of one listing, not part of the asset: it is never
/// serialized, and two [`StoredAsset`]s compare equal whatever their
/// positions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListPosition(pub Option<i64>);

impl PartialEq for ListPosition {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Where a page of [`Store::list_assets_after`] ended: the key of its last
/// asset and, from stores that list in an order of their own, its
/// [`ListPosition`]. Serialized as the key's fields plus `position`, so a
/// bare key still reads as a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetCursor {
    #[serde(flatten)]
    pub key: AssetKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

impl AssetCursor {
    /// The cursor after `asset`, an asset of the last page.
    pub fn of(asset: &StoredAsset) -> AssetCursor {
        AssetCursor { key: AssetKey::of(asset), position: asset.position.0 }
    }
}

/// Which runs [`Store::list_runs`] lists, most recent first (by `started_at`,
/// then sync id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this connection's runs.
    pub connection: Option<String>,
    /// Only runs after this one in the list (older): where the previous page ended.
    pub before: Option<RunCursor>,
}

/// A position in the runs list: the last run of a page. Stores compare
/// `started_at` at the precision they keep (MongoDB: milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCursor {
    pub started_at: DateTime<Utc>,
    pub sync_id: String,
}

impl RunCursor {
    pub fn of(run: &RunSummary) -> RunCursor {
        RunCursor { started_at: run.started_at, sync_id: run.sync_id.clone() }
    }

    /// Whether a run started at `started_at` with `sync_id` comes after this
    /// position in the list: it is older, or as old with a smaller sync id.
    pub fn precedes(&self, started_at: DateTime<Utc>, sync_id: &str) -> bool {
        started_at < self.started_at || (started_at == self.started_at && sync_id < self.sync_id.as_str())
    }
}

/// An asset as stored, with the bookkeeping fields the store maintains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAsset {
    pub connection: String,
    pub kind: AssetKind,
    pub source_id: String,
    pub stream: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub last_sync_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<DateTime<Utc>>,
    /// The asset's fields (as [`Asset::fields_json`]).
    pub fields: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
    /// Where the listing that returned this asset keeps it (see
    /// [`ListPosition`]); the default everywhere else.
    #[serde(skip)]
    pub position: ListPosition,
}

impl StoredAsset {
    /// The asset back from its stored fields (stream, attributes and raw
    /// included): what a store needs to derive keys and references of a
    /// row written by an older version.
    pub fn asset(&self) -> Result<Asset, serde_json::Error> {
        let mut fields = match &self.fields {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let attributes = fields.remove("attributes");
        fields.insert("kind".into(), serde_json::Value::from(self.kind.as_str()));
        let body: AssetBody = serde_json::from_value(serde_json::Value::Object(fields))?;
        let mut asset = Asset::new(self.stream.clone(), body).with_raw(self.raw.clone());
        if let Some(a) = attributes {
            asset.attributes = serde_json::from_value(a)?;
        }
        Ok(asset)
    }

    pub fn key(&self) -> AssetKey {
        AssetKey { connection: self.connection.clone(), kind: self.kind, source_id: self.source_id.clone() }
    }
}

/// Count of stored assets per (connection, kind) matching a filter: `count`
/// live ones (with `include_stale`, live and stale), `stale` the stale ones,
/// whether or not `include_stale` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetCount {
    pub connection: String,
    pub kind: AssetKind,
    pub count: u64,
    pub stale: u64,
}

/// A rejected record kept for inspection, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReject {
    pub sync_id: String,
    pub connection: String,
    pub stream: String,
    #[serde(flatten)]
    pub reject: Reject,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: network blip, primary stepping down, lock timeout.
    #[error("transient store error: {0}")]
    Transient(String),
    /// Not worth retrying: the store is gone, misconfigured or refused the operation.
    #[error("store error: {0}")]
    Permanent(String),
    #[error("store configuration error: {0}")]
    Config(String),
    #[error("stored data could not be decoded: {0}")]
    Corrupt(String),
    /// A batch failed after part of it was stored (the store writes a big
    /// batch as several commands): `stored` says what was, so the run's
    /// counts stay true even though the batch as a whole failed.
    #[error("{source}")]
    Partial {
        stored: LoadOutcome,
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Transient(_) => true,
            StoreError::Partial { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// What part of the failed batch was stored anyway (nothing, unless `Partial`).
    pub fn stored(&self) -> Option<&LoadOutcome> {
        match self {
            StoreError::Partial { stored, .. } => Some(stored),
            _ => None,
        }
    }
}

/// The contract, checked by `corral_store::conformance` for every implementation:
/// - keys are (connection, kind, source_id); within one batch a repeated key is
///   counted once as inserted, then as updated/unchanged (the later record wins);
/// - a record the store refuses on its own is returned in `LoadOutcome::rejected`
///   with `Reject::record` naming it (`<kind> <source_id>`, or the bare source
///   id: [`Asset::is_named_by`]), and the rest of the batch is stored;
/// - without `include_stale`, stale assets are not listed, and
///   `AssetCount::count` counts live assets only; with it, they are listed
///   and `count` includes them; `stale` always says how many match
///   (a (connection, kind) with only stale assets still has its count row);
/// - `AssetFilter::conditions` and `points_at` select as
///   [`AssetFilter::matches`] does, through the store's indexes where the
///   field is indexed (correlation keys, references);
/// - `upsert` maintains the correlation keys ([`Asset::correlation_keys`])
///   and references ([`Asset::references`]) of an asset it inserts or
///   whose content changed; deleting a stale asset deletes them too;
/// - a `limit` of 0 returns nothing; rejects come back in the order saved;
/// - pages of [`Store::list_assets_after`] and [`Store::list_runs`] follow
///   each other without a gap or a repeat, whatever the page size, and are
///   read with the store's indexes (never the whole table in memory);
/// - timestamps keep at least millisecond precision.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and summaries (`sqlite:./corral.db`, `mongodb:corral`), never with credentials.
    fn describe(&self) -> String;

    /// Idempotent upsert keyed by (connection, kind, source_id). Keeps
    /// `first_seen` from the first insert, moves `last_seen` forward to the
    /// batch's `seen_at` (never back: a late write of an older run keeps the
    /// newer value), sets `last_sync_id`, clears `stale_since`. Returns inserted / updated / unchanged counts; a
    /// batch that failed after part of it was stored says so with
    /// [`StoreError::Partial`].
    async fn upsert(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError>;

    /// Stale handling for one scope. The engine calls this only for a stream
    /// whose fetch completed and whose every batch was acknowledged. Marks
    /// the scope's assets last seen before `scope.started_at` (never one seen
    /// by a sync started at or after it) and deletes those of them stale for
    /// longer than `delete_after`.
    async fn handle_stale(&self, scope: &StaleScope, policy: StalePolicy) -> Result<StaleOutcome, StoreError>;

    async fn save_checkpoint(&self, connection: &str, stream: &str, checkpoint: &Checkpoint) -> Result<(), StoreError>;
    async fn load_checkpoint(&self, connection: &str, stream: &str) -> Result<Option<Checkpoint>, StoreError>;

    /// Keep rejected records for inspection (`corral runs --rejects`).
    async fn save_rejects(&self, rejects: Vec<StoredReject>) -> Result<(), StoreError>;
    async fn rejects(&self, sync_id: &str, limit: usize) -> Result<Vec<StoredReject>, StoreError>;

    async fn save_run(&self, summary: &RunSummary) -> Result<(), StoreError>;

    /// Take the lease on `connection` for the run `holder` for `ttl`, by the
    /// store's clock: granted when nobody holds it, when it expired, or when
    /// `holder` already holds it. Atomic: of two runs asking at once, at most
    /// one is granted.
    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError>;

    /// Extend `holder`'s lease to `ttl` from now. `None`: the lease is no
    /// longer `holder`'s (another run took it over after it expired).
    async fn renew_lease(&self, connection: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError>;

    /// Give the lease up, if `holder` still holds it.
    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError>;

    /// The lease on `connection` as stored (it may have expired), if any.
    async fn lease(&self, connection: &str) -> Result<Option<Lease>, StoreError>;
    /// Most recent first.
    async fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.list_runs(&RunQuery::default(), limit).await
    }

    /// Runs matching `query`, most recent first (by `started_at`, then sync
    /// id, both descending): at most `limit`, starting after `query.before`.
    async fn list_runs(&self, query: &RunQuery, limit: usize) -> Result<Vec<RunSummary>, StoreError>;

    /// The run with this sync id, if the store has it (`corral runs
    /// --rejects` tells an unknown id from a run without rejects). The
    /// default scans [`Store::runs`]; stores look it up by key.
    async fn run(&self, sync_id: &str) -> Result<Option<RunSummary>, StoreError> {
        Ok(self.runs(usize::MAX).await?.into_iter().find(|r| r.sync_id == sync_id))
    }

    async fn count_assets(&self, filter: &AssetFilter) -> Result<Vec<AssetCount>, StoreError>;

    /// The first `limit` assets matching `filter`, in the store's listing order.
    async fn list_assets(&self, filter: &AssetFilter, limit: usize) -> Result<Vec<StoredAsset>, StoreError> {
        self.list_assets_after(filter, None, limit).await
    }

    /// At most `limit` assets matching `filter` that come after `after` (all
    /// of them from the start when `None`) in the store's listing order: a
    /// page of a listing, the next one starting after
    /// [`AssetCursor::of`] this one's last asset. Every store orders by
    /// connection, then kind; within those, MongoDB and the in-memory store
    /// order by source id, SQLite by when the asset was first stored (its
    /// row id: new keys are appended, not inserted into a key index). Pages
    /// list every asset that is there throughout exactly once, also when
    /// the asset a page ended at has been deleted since.
    async fn list_assets_after(
        &self,
        filter: &AssetFilter,
        after: Option<&AssetCursor>,
        limit: usize,
    ) -> Result<Vec<StoredAsset>, StoreError>;
}
