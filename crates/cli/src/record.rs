//! `corral record --connection NAME --out DIR`: sync one connection for
//! real, into a throwaway store, and keep every HTTP exchange of the sync
//! as a cassette (corral_http::cassette), redacted: resolved secrets,
//! tokens, credentials headers, the JSON fields named with
//! `--redact-field`, and the tenant's origins. corral-testkit replays a
//! cassette as a server, so an adapter can be tested against what a real
//! tenant returned. The cassette also lists the assets the sync stored
//! (`assets.ndjson`: kind, source id and a hash of the fields), for a
//! replay to compare against.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use corral_core::store::AssetFilter;
use corral_core::{AssetCursor, EngineConfig, Store};
use corral_http::cassette::{ASSETS_FILE, CassetteWriter, Meta, RecordedAsset};

use crate::commands::{Output, build_connections, registry_for, sync};
use crate::config::{Config, Redactor};

/// The throwaway store's file in the cassette directory (removed at the end).
const STORE_FILE: &str = ".record-store.db";

pub async fn run(
    config_path: &Path,
    connection: &str,
    out_dir: &Path,
    redact_fields: &[String],
    out: &Output,
    redactor: &Redactor,
) -> Result<u8> {
    let config = Config::load(config_path, redactor)?;
    let Some(conn_config) = config.connections.iter().find(|c| c.name == connection) else {
        bail!("no connection named `{connection}` in {}", config_path.display());
    };
    for f in redact_fields {
        if f.trim().is_empty() || f.contains(char::is_whitespace) {
            bail!("--redact-field `{f}`: a JSON field name, e.g. email");
        }
    }
    let registry = registry_for(&config)?;
    let conns = build_connections(&registry, &config.connections, &[connection.to_string()], redactor)?;
    let resolved = conn_config
        .resolved_config(redactor, &|name| std::env::var(name).ok())
        .with_context(|| format!("connection `{connection}`"))?;
    let mut writer = CassetteWriter::create(out_dir, redactor.clone(), redact_fields)?;
    // The tenant's URLs, so that text naming them is replaced from the first exchange on.
    if let Some(map) = resolved.as_object() {
        for v in map.values().filter_map(|v| v.as_str()) {
            if v.starts_with("http://") || v.starts_with("https://") {
                writer.know_origin(v);
            }
        }
    }
    let secret_fields: Vec<String> = registry
        .get(&conn_config.adapter)
        .map(|f| f.info().config.into_iter().filter(|c| c.secret).map(|c| c.name).collect())
        .unwrap_or_default();

    let mut exchanges = corral_http::record::start_recording(64)
        .ok_or_else(|| anyhow!("another recording is already running in this process"))?;
    let writing = std::thread::spawn(move || -> Result<CassetteWriter> {
        while let Some(exchange) = exchanges.blocking_recv() {
            writer.write(exchange)?;
        }
        Ok(writer)
    });

    let store_path = out_dir.join(STORE_FILE);
    let p = store_path.clone();
    let store = tokio::task::spawn_blocking(move || corral_store::sqlite::SqliteStore::open(&p))
        .await
        .context("opening the recording's store")?
        .with_context(|| format!("opening {}", store_path.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let engine = EngineConfig { wait_for_lease: false, ..config.engine };
    let code = sync(store.clone(), engine, conns, out, redactor).await;
    corral_http::record::stop_recording();
    let writer = tokio::task::spawn_blocking(move || writing.join())
        .await
        .context("waiting for the cassette writer")?
        .map_err(|_| anyhow!("the cassette writer panicked"))??;
    let code = code?;

    let template = writer.config_template(&resolved, &secret_fields);
    let meta = Meta {
        version: 1,
        connection: connection.to_string(),
        adapter: conn_config.adapter.clone(),
        recorded_at: chrono::Utc::now(),
        exchanges: 0,
        origins: 0,
        redacted_fields: vec![],
        config: template,
    };
    let written =
        tokio::task::spawn_blocking(move || writer.finish(meta)).await.context("finishing the cassette")??;
    let assets = write_assets(&*store, connection, &out_dir.join(ASSETS_FILE)).await?;
    drop(store);
    remove_store(&out_dir.join(STORE_FILE));
    if !out.json {
        eprintln!(
            "corral record: {written} exchanges of connection `{connection}` and {assets} stored assets in {}",
            out_dir.display()
        );
    }
    Ok(code)
}

/// The assets the recorded sync stored, one `{kind, source_id, fields_hash}` per line, a page at a time.
async fn write_assets(store: &dyn Store, connection: &str, path: &PathBuf) -> Result<u64> {
    let filter = AssetFilter { connection: Some(connection.to_string()), include_stale: true, ..Default::default() };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("{}", path.display()))?);
    let mut after: Option<AssetCursor> = None;
    let mut n = 0u64;
    loop {
        let page = store.list_assets_after(&filter, after.as_ref(), 1000).await.context("listing the stored assets")?;
        let Some(last) = page.last() else { break };
        after = Some(AssetCursor::of(last));
        for a in &page {
            let line = serde_json::to_string(&RecordedAsset::of(a)).context("encoding an asset line")?;
            // Small blocking writes: let the runtime move its other tasks meanwhile.
            tokio::task::block_in_place(|| writeln!(file, "{line}")).with_context(|| format!("{}", path.display()))?;
            n += 1;
        }
    }
    file.flush().with_context(|| format!("{}", path.display()))?;
    Ok(n)
}

fn remove_store(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
