//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use corral_adapter_file::FileAdapter;
use corral_core::{Adapter, Asset, FetchError, RawPage, Reject};
use serde_json::Value;

/// Write `contents` to `dir/name` and build an adapter with `cfg` plus `path`.
pub fn adapter(dir: &Path, name: &str, contents: &[u8], mut cfg: Value) -> (FileAdapter, PathBuf) {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    cfg["path"] = Value::String(path.display().to_string());
    (FileAdapter::from_config("test", cfg).expect("valid config"), path)
}

/// Every page fetch produces, in order.
pub async fn pages(a: &FileAdapter) -> Result<Vec<RawPage>, FetchError> {
    let mut out = Vec::new();
    a.fetch_pages(None, |p| {
        out.push(p);
        std::future::ready(Ok(()))
    })
    .await?;
    Ok(out)
}

/// Fetch and normalize the whole file.
pub async fn run(a: &FileAdapter) -> (Vec<Asset>, Vec<Reject>) {
    let mut assets = Vec::new();
    let mut rejects = Vec::new();
    for p in pages(a).await.expect("fetch") {
        let n = a.normalize(&p);
        assert_eq!(n.page_error, None, "page {}", p.locator);
        assets.extend(n.assets);
        // As the engine does: what fetch rejected comes first, then normalize's.
        rejects.extend(p.rejects.iter().cloned());
        rejects.extend(n.rejects);
    }
    (assets, rejects)
}

/// `(record, reason)` of each reject.
pub fn reasons(rejects: &[Reject]) -> Vec<(String, String)> {
    rejects.iter().map(|r| (r.record.clone(), r.reason.clone())).collect()
}
