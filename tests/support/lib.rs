//! Shared helpers for the workspace end-to-end tests and benches.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use corral_core::adapter::Checkpoint;
use corral_core::store::{
    AssetCount, AssetFilter, LoadBatch, LoadOutcome, StaleOutcome, StalePolicy, StaleScope, Store, StoreError,
    StoredAsset, StoredReject,
};
use corral_core::{Connection, RunSummary};

/// The column mapping for `corral_adapter_file::sample::write_devices_csv` files.
pub fn device_columns() -> serde_json::Value {
    serde_json::json!({
        "source_id": "Device ID", "hostname": "Host Name", "ip_addresses": "IP Addresses",
        "mac_addresses": "MAC", "serial_number": "Serial", "os_name": "OS", "os_version": "OS Version",
        "manufacturer": "Vendor", "model": "Model", "last_seen": "Last Seen", "owner": "Owner", "tags": "Tags",
    })
}

/// A `file` connection over a sample devices CSV.
pub fn devices_connection(name: &str, path: &Path, page_records: usize) -> Connection {
    let config = serde_json::json!({
        "path": path, "format": "csv", "kind": "device", "page_records": page_records, "columns": device_columns(),
    });
    let adapter = corral_adapter_file::FileAdapterFactory;
    let adapter = corral_core::AdapterFactory::build(&adapter, name, config).expect("valid file adapter config");
    Connection { name: name.into(), adapter, streams: vec![], stale: StalePolicy::Mark { delete_after: None } }
}

/// Wraps a store and makes every upsert after the first `ok_batches` fail, as
/// a store that goes away in the middle of a run.
pub struct FailingStore {
    pub inner: Arc<dyn Store>,
    pub ok_batches: u64,
    seen: AtomicU64,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn Store>, ok_batches: u64) -> Self {
        FailingStore { inner, ok_batches, seen: AtomicU64::new(0) }
    }
}

#[async_trait]
impl Store for FailingStore {
    fn describe(&self) -> String {
        format!("failing({})", self.inner.describe())
    }
    async fn upsert(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) >= self.ok_batches {
            return Err(StoreError::Permanent("injected: the store became unreachable".into()));
        }
        self.inner.upsert(batch).await
    }
    async fn handle_stale(&self, scope: &StaleScope, policy: StalePolicy) -> Result<StaleOutcome, StoreError> {
        self.inner.handle_stale(scope, policy).await
    }
    async fn save_checkpoint(&self, c: &str, s: &str, cp: &Checkpoint) -> Result<(), StoreError> {
        self.inner.save_checkpoint(c, s, cp).await
    }
    async fn load_checkpoint(&self, c: &str, s: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.load_checkpoint(c, s).await
    }
    async fn save_rejects(&self, r: Vec<StoredReject>) -> Result<(), StoreError> {
        self.inner.save_rejects(r).await
    }
    async fn rejects(&self, sync_id: &str, limit: usize) -> Result<Vec<StoredReject>, StoreError> {
        self.inner.rejects(sync_id, limit).await
    }
    async fn save_run(&self, summary: &RunSummary) -> Result<(), StoreError> {
        self.inner.save_run(summary).await
    }
    async fn list_runs(&self, q: &corral_core::RunQuery, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.inner.list_runs(q, limit).await
    }
    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<corral_core::LeaseGrant, StoreError> {
        self.inner.acquire_lease(connection, holder, owner, ttl).await
    }
    async fn renew_lease(
        &self,
        connection: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<corral_core::Lease>, StoreError> {
        self.inner.renew_lease(connection, holder, ttl).await
    }
    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lease(connection, holder).await
    }
    async fn lease(&self, connection: &str) -> Result<Option<corral_core::Lease>, StoreError> {
        self.inner.lease(connection).await
    }
    async fn count_assets(&self, f: &AssetFilter) -> Result<Vec<AssetCount>, StoreError> {
        self.inner.count_assets(f).await
    }
    async fn list_assets_after(
        &self,
        f: &AssetFilter,
        after: Option<&corral_core::AssetCursor>,
        limit: usize,
    ) -> Result<Vec<StoredAsset>, StoreError> {
        self.inner.list_assets_after(f, after, limit).await
    }
}

/// Total assets in a store (stale included).
pub async fn total_assets(store: &dyn Store) -> u64 {
    let filter = AssetFilter { include_stale: true, ..Default::default() };
    store.count_assets(&filter).await.expect("count assets").iter().map(|c| c.count).sum()
}

/// Stale assets in a store.
pub async fn stale_assets(store: &dyn Store) -> u64 {
    let filter = AssetFilter { include_stale: true, ..Default::default() };
    store.count_assets(&filter).await.expect("count assets").iter().map(|c| c.stale).sum()
}

/// Peak resident set size of this process in KiB (VmHWM), 0 where /proc is unavailable.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes this process wrote through write calls (`wchar` of /proc/self/io:
/// a store's journal and database writes, before the page cache), 0 where
/// unavailable.
pub fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("wchar:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this process, from /proc (0 where unavailable).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may contain spaces) start after ')'.
    let Some(rest) = stat.rsplit(')').next() else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// The median of some measurements (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
