//! Test support for adapter authors and engine tests: an in-memory [`Store`]
//! with fault injection, and [`sync_once`], which runs one adapter end to end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::adapter::Checkpoint;
use crate::asset::AssetKind;
use crate::store::{
    AssetCount, AssetCursor, AssetFilter, Lease, LeaseGrant, LoadBatch, LoadOutcome, RunQuery, StaleOutcome,
    StalePolicy, StaleScope, Store, StoreError, StoredAsset, StoredReject,
};
use crate::summary::RunSummary;

type Key = (String, AssetKind, String);

/// Sync `adapter` once, as connection `connection`, through a real engine
/// (default limits) into `store`: fetch, normalize on the pool, load, stale
/// handling, the run summary. Must be called inside a tokio runtime.
pub async fn sync_once(
    store: &std::sync::Arc<MemoryStore>,
    connection: &str,
    adapter: std::sync::Arc<dyn crate::Adapter>,
) -> RunSummary {
    let store: std::sync::Arc<dyn Store> = store.clone();
    match crate::Engine::new(crate::EngineConfig::default(), store) {
        Ok(engine) => {
            engine
                .sync(crate::Connection {
                    name: connection.to_string(),
                    adapter,
                    streams: Vec::new(),
                    stale: StalePolicy::default(),
                })
                .await
        }
        // The default config always validates; report rather than panic.
        Err(e) => {
            let mut s = RunSummary::new(connection, &adapter.info().name);
            s.status = crate::RunStatus::Failed;
            s.errors.push(e.to_string());
            s
        }
    }
}

/// A `Store` in memory. Knobs make it slow or make it fail, to test the engine.
#[derive(Debug, Default)]
pub struct MemoryStore {
    assets: Mutex<HashMap<Key, (StoredAsset, String)>>,
    checkpoints: Mutex<BTreeMap<(String, String), Checkpoint>>,
    runs: Mutex<Vec<RunSummary>>,
    rejects: Mutex<Vec<StoredReject>>,
    /// Fail every upsert after this many succeeded (None: never).
    fail_after_batches: Mutex<Option<u64>>,
    /// Failing upserts store the first half of their batch first (`StoreError::Partial`).
    fail_partially: AtomicBool,
    batches: AtomicU64,
    /// Sleep this long in each upsert (milliseconds).
    delay_ms: AtomicU64,
    /// Block the calling thread instead of sleeping asynchronously (to test the lag monitor).
    block_thread: AtomicBool,
    stale_calls: AtomicU64,
    /// Source ids the store refuses one by one (as MongoDB refuses a document over 16 MB).
    refuse: Mutex<Vec<String>>,
    /// Records of each upsert, in the order they arrived.
    batch_sizes: Mutex<Vec<usize>>,
    /// Upserts running now, and at most.
    upserts_running: AtomicU64,
    upserts_peak: AtomicU64,
    leases: Mutex<BTreeMap<String, Lease>>,
    /// Lease renewals fail (as a store that cannot be reached would).
    fail_renewals: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every upsert after the first `n` fails with a permanent error.
    pub fn fail_after(&self, n: u64) {
        if let Ok(mut f) = self.fail_after_batches.lock() {
            *f = Some(n);
        }
    }

    /// Refuse these source ids record by record (returned in `LoadOutcome::rejected`).
    pub fn refuse(&self, source_ids: &[&str]) {
        if let Ok(mut r) = self.refuse.lock() {
            r.extend(source_ids.iter().map(|s| s.to_string()));
        }
    }

    /// Records of each upsert so far, in arrival order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batch_sizes.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// The most upserts that ran at the same time.
    pub fn peak_concurrent_upserts(&self) -> u64 {
        self.upserts_peak.load(Ordering::SeqCst)
    }

    /// Like [`MemoryStore::fail_after`], but a failing upsert first stores
    /// the first half of its batch and says so (`StoreError::Partial`), as a
    /// store writing a batch in several commands does.
    pub fn fail_partially_after(&self, n: u64) {
        self.fail_partially.store(true, Ordering::Relaxed);
        self.fail_after(n);
    }

    pub fn set_delay(&self, delay: Duration, block_thread: bool) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
        self.block_thread.store(block_thread, Ordering::Relaxed);
    }

    pub fn asset_count(&self) -> usize {
        self.assets.lock().map(|a| a.len()).unwrap_or(0)
    }

    pub fn stale_count(&self) -> usize {
        self.assets.lock().map(|a| a.values().filter(|(s, _)| s.stale_since.is_some()).count()).unwrap_or(0)
    }

    /// How many times stale handling was called.
    pub fn stale_calls(&self) -> u64 {
        self.stale_calls.load(Ordering::Relaxed)
    }

    pub fn checkpoint(&self, connection: &str, stream: &str) -> Option<Checkpoint> {
        self.checkpoints.lock().ok()?.get(&(connection.to_string(), stream.to_string())).cloned()
    }

    pub fn all_assets(&self) -> Vec<StoredAsset> {
        self.assets.lock().map(|a| a.values().map(|(s, _)| s.clone()).collect()).unwrap_or_default()
    }

    /// Hand `connection`'s lease to another holder, as a run on another
    /// machine taking over an expired lease would.
    pub fn steal_lease(&self, connection: &str, holder: &str) {
        if let Ok(mut leases) = self.leases.lock() {
            let now = chrono::Utc::now();
            leases.insert(
                connection.to_string(),
                Lease {
                    connection: connection.to_string(),
                    holder: holder.to_string(),
                    owner: "another machine".to_string(),
                    acquired_at: now,
                    expires_at: now + chrono::Duration::hours(1),
                },
            );
        }
    }

    /// Make every lease renewal fail with a transient error (or succeed again).
    pub fn fail_lease_renewals(&self, fail: bool) {
        self.fail_renewals.store(fail, Ordering::Relaxed);
    }

    fn poisoned() -> StoreError {
        StoreError::Permanent("memory store lock poisoned".into())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn upsert(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        if let Ok(mut sizes) = self.batch_sizes.lock() {
            sizes.push(batch.assets.len());
        }
        let running = self.upserts_running.fetch_add(1, Ordering::SeqCst) + 1;
        self.upserts_peak.fetch_max(running, Ordering::SeqCst);
        let result = self.upsert_inner(batch).await;
        self.upserts_running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn handle_stale(&self, scope: &StaleScope, policy: StalePolicy) -> Result<StaleOutcome, StoreError> {
        self.stale_calls.fetch_add(1, Ordering::Relaxed);
        let StalePolicy::Mark { delete_after } = policy else { return Ok(StaleOutcome::default()) };
        let mut assets = self.assets.lock().map_err(|_| Self::poisoned())?;
        let mut out = StaleOutcome::default();
        for (a, _) in assets.values_mut() {
            if a.connection == scope.connection
                && a.stream == scope.stream
                && a.last_seen < scope.started_at
                && a.stale_since.is_none()
            {
                a.stale_since = Some(scope.now);
                out.marked += 1;
            }
        }
        if let Some(age) = delete_after {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            let before = assets.len();
            assets.retain(|_, (a, _)| {
                !(a.connection == scope.connection
                    && a.stream == scope.stream
                    && a.last_seen < scope.started_at
                    && a.stale_since.is_some_and(|t| t <= scope.now - age))
            });
            out.deleted = (before - assets.len()) as u64;
        }
        Ok(out)
    }

    async fn save_checkpoint(&self, connection: &str, stream: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.checkpoints
            .lock()
            .map_err(|_| Self::poisoned())?
            .insert((connection.to_string(), stream.to_string()), checkpoint.clone());
        Ok(())
    }

    async fn load_checkpoint(&self, connection: &str, stream: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.checkpoint(connection, stream))
    }

    async fn save_rejects(&self, rejects: Vec<StoredReject>) -> Result<(), StoreError> {
        self.rejects.lock().map_err(|_| Self::poisoned())?.extend(rejects);
        Ok(())
    }

    async fn rejects(&self, sync_id: &str, limit: usize) -> Result<Vec<StoredReject>, StoreError> {
        let all = self.rejects.lock().map_err(|_| Self::poisoned())?;
        Ok(all.iter().filter(|r| r.sync_id == sync_id).take(limit).cloned().collect())
    }

    async fn save_run(&self, summary: &RunSummary) -> Result<(), StoreError> {
        let mut runs = self.runs.lock().map_err(|_| Self::poisoned())?;
        runs.retain(|r| r.sync_id != summary.sync_id);
        runs.push(summary.clone());
        Ok(())
    }

    async fn list_runs(&self, query: &RunQuery, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let mut runs: Vec<RunSummary> = self
            .runs
            .lock()
            .map_err(|_| Self::poisoned())?
            .iter()
            .filter(|r| query.connection.as_ref().is_none_or(|c| *c == r.connection))
            .filter(|r| query.before.as_ref().is_none_or(|b| b.precedes(r.started_at, &r.sync_id)))
            .cloned()
            .collect();
        runs.sort_by(|a, b| (b.started_at, &b.sync_id).cmp(&(a.started_at, &a.sync_id)));
        runs.truncate(limit);
        Ok(runs)
    }

    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let now = chrono::Utc::now();
        let mut leases = self.leases.lock().map_err(|_| Self::poisoned())?;
        if let Some(held) = leases.get(connection)
            && held.holder != holder
            && held.expires_at > now
        {
            return Ok(LeaseGrant::Held(held.clone()));
        }
        let lease = Lease {
            connection: connection.to_string(),
            holder: holder.to_string(),
            owner: owner.to_string(),
            acquired_at: now,
            expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        };
        leases.insert(connection.to_string(), lease.clone());
        Ok(LeaseGrant::Acquired(lease))
    }

    async fn renew_lease(&self, connection: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        if self.fail_renewals.load(Ordering::Relaxed) {
            return Err(StoreError::Transient("injected failure: lease renewal".into()));
        }
        let mut leases = self.leases.lock().map_err(|_| Self::poisoned())?;
        match leases.get_mut(connection) {
            Some(l) if l.holder == holder => {
                l.expires_at = chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
                Ok(Some(l.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        let mut leases = self.leases.lock().map_err(|_| Self::poisoned())?;
        if leases.get(connection).is_some_and(|l| l.holder == holder) {
            leases.remove(connection);
        }
        Ok(())
    }

    async fn lease(&self, connection: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self.leases.lock().map_err(|_| Self::poisoned())?.get(connection).cloned())
    }

    async fn count_assets(&self, filter: &AssetFilter) -> Result<Vec<AssetCount>, StoreError> {
        let mut counts: BTreeMap<(String, AssetKind), (u64, u64)> = BTreeMap::new();
        let all = AssetFilter { include_stale: true, ..filter.clone() };
        for a in self.list_assets(&all, usize::MAX).await? {
            let c = counts.entry((a.connection, a.kind)).or_default();
            let stale = a.stale_since.is_some();
            c.0 += u64::from(filter.include_stale || !stale);
            c.1 += u64::from(stale);
        }
        Ok(counts
            .into_iter()
            .map(|((connection, kind), (count, stale))| AssetCount { connection, kind, count, stale })
            .collect())
    }

    async fn list_assets_after(
        &self,
        filter: &AssetFilter,
        after: Option<&AssetCursor>,
        limit: usize,
    ) -> Result<Vec<StoredAsset>, StoreError> {
        let assets = self.assets.lock().map_err(|_| Self::poisoned())?;
        let mut out: Vec<StoredAsset> = assets
            .values()
            .map(|(a, _)| a)
            .filter(|a| {
                after.is_none_or(|c| {
                    let k = &c.key;
                    (&a.connection, a.kind, &a.source_id) > (&k.connection, k.kind, &k.source_id)
                })
            })
            .filter(|a| filter.matches(a))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.connection, a.kind, &a.source_id).cmp(&(&b.connection, b.kind, &b.source_id)));
        out.truncate(limit);
        Ok(out)
    }
}

impl MemoryStore {
    async fn upsert_inner(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::Relaxed));
        if !delay.is_zero() {
            if self.block_thread.load(Ordering::Relaxed) {
                std::thread::sleep(delay);
            } else {
                tokio::time::sleep(delay).await;
            }
        }
        let done = self.batches.fetch_add(1, Ordering::SeqCst);
        if let Some(limit) = *self.fail_after_batches.lock().map_err(|_| Self::poisoned())?
            && done >= limit
        {
            let error = StoreError::Permanent("injected failure: the store went away".into());
            if !self.fail_partially.load(Ordering::Relaxed) {
                return Err(error);
            }
            let mut batch = batch;
            batch.assets = batch.assets[..batch.assets.len() / 2].into();
            let stored = self.store_batch(batch)?;
            return Err(StoreError::Partial { stored, source: Box::new(error) });
        }
        self.store_batch(batch)
    }

    fn store_batch(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        let refuse = self.refuse.lock().map_err(|_| Self::poisoned())?.clone();
        let mut assets = self.assets.lock().map_err(|_| Self::poisoned())?;
        let mut out = LoadOutcome::default();
        for (kind, source_id) in &batch.seen {
            if let Some((stored, _)) = assets.get_mut(&(batch.connection.clone(), *kind, source_id.clone())) {
                stored.last_seen = stored.last_seen.max(batch.seen_at);
                stored.last_sync_id = batch.sync_id.clone();
                stored.stale_since = None;
            }
        }
        for a in batch.assets.iter() {
            if refuse.iter().any(|id| id == a.source_id()) {
                // Named as the real stores name it: `<kind> <source_id>`.
                let record = format!("{} {}", a.kind().as_str(), a.source_id());
                out.rejected.push(crate::adapter::Reject::new(record, "refused_by_store", "injected refusal"));
                continue;
            }
            let key = (batch.connection.clone(), a.kind(), a.source_id().to_string());
            let hash = a.content_hash();
            match assets.get_mut(&key) {
                Some((stored, old_hash)) => {
                    if *old_hash == hash {
                        out.unchanged += 1;
                    } else {
                        out.updated += 1;
                        stored.fields = a.fields_json();
                        stored.raw = a.raw.clone();
                        *old_hash = hash;
                    }
                    stored.stream = a.stream.clone();
                    stored.last_seen = stored.last_seen.max(batch.seen_at);
                    stored.last_sync_id = batch.sync_id.clone();
                    stored.stale_since = None;
                }
                None => {
                    out.inserted += 1;
                    let stored = StoredAsset {
                        connection: batch.connection.clone(),
                        kind: a.kind(),
                        source_id: a.source_id().to_string(),
                        stream: a.stream.clone(),
                        first_seen: batch.seen_at,
                        last_seen: batch.seen_at,
                        last_sync_id: batch.sync_id.clone(),
                        stale_since: None,
                        fields: a.fields_json(),
                        raw: a.raw.clone(),
                        position: Default::default(),
                    };
                    assets.insert(key, (stored, hash));
                }
            }
        }
        Ok(out)
    }
}
