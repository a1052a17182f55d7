//! The synthetic adapter the engine tests drive, and helpers to build connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use corral_core::{
    Adapter, AdapterInfo, AssetKind, CheckOutcome, Checkpoint, Connection, Device, EngineConfig, FetchContext,
    FetchError, NormalizedPage, RawPage, Reject, StalePolicy, StreamInfo,
};

/// Pages of `{"id":..}` lines; knobs for the failure modes under test.
pub struct Synthetic {
    pub info: AdapterInfo,
    pub pages: u64,
    pub per_page: u64,
    /// Page indexes whose body is garbage.
    pub malformed_pages: Vec<u64>,
    /// Only this stream's pages are ever garbage (None: every stream's).
    pub malformed_stream: Option<String>,
    /// Pages say how many records they hold (`RawPage::record_hint`).
    pub hint_records: bool,
    /// Streams whose fetch fails after their first page.
    pub failing_streams: Vec<String>,
    /// Busy-loop this long per page in normalize.
    pub cpu_per_page: Duration,
    /// Record ids divisible by this are rejected (0: none).
    pub reject_every: u64,
    /// Wait this long before each page (a slow vendor).
    pub page_delay: Duration,
    pub generation: AtomicU64,
    /// Names of the threads normalize ran on.
    pub normalize_threads: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// What `max_open_files` reports.
    pub open_files: usize,
    /// Fetches running now and at most, shared by every adapter of a test.
    pub fetching: Arc<(AtomicU64, AtomicU64)>,
    /// Fetch calls `FetchContext::keep_checkpoint` (its checkpoints are a watermark).
    pub keep_checkpoint: bool,
}

impl Synthetic {
    pub fn new(pages: u64, per_page: u64) -> Self {
        let stream = |name: &str| StreamInfo::new(name, AssetKind::Device, "id", "");
        Synthetic {
            info: AdapterInfo {
                name: "synthetic".into(),
                version: "0".into(),
                description: String::new(),
                streams: vec![stream("hosts"), stream("phones")],
                config: vec![],
                notes: Default::default(),
            },
            pages,
            per_page,
            malformed_pages: vec![],
            malformed_stream: None,
            hint_records: true,
            failing_streams: vec![],
            cpu_per_page: Duration::ZERO,
            reject_every: 0,
            page_delay: Duration::ZERO,
            generation: AtomicU64::new(0),
            normalize_threads: Default::default(),
            open_files: 2,
            fetching: Arc::default(),
            keep_checkpoint: false,
        }
    }
}

#[async_trait]
impl Adapter for Synthetic {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    async fn check(&self) -> CheckOutcome {
        CheckOutcome::Ok { detail: "synthetic".into() }
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        let (running, peak) = &*self.fetching;
        peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        let result = self.fetch_pages(ctx).await;
        running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        self.normalize_page(page)
    }

    fn max_open_files(&self) -> usize {
        self.open_files
    }
}

impl Synthetic {
    async fn fetch_pages(&self, ctx: FetchContext) -> Result<(), FetchError> {
        let stream = ctx.stream.name.clone();
        let start = ctx.checkpoint.as_ref().and_then(|c| c.0["next_page"].as_u64()).unwrap_or(0);
        let generation = self.generation.load(Ordering::Relaxed);
        if self.keep_checkpoint {
            ctx.keep_checkpoint();
        }
        for page in start..self.pages {
            if !self.page_delay.is_zero() {
                tokio::time::sleep(self.page_delay).await;
            }
            if page == 1 && self.failing_streams.contains(&stream) {
                return Err(FetchError::Http {
                    endpoint: "https://vendor.example/api".into(),
                    detail: "HTTP 500".into(),
                });
            }
            let malformed = self.malformed_pages.contains(&page)
                && self.malformed_stream.as_ref().is_none_or(|only| *only == stream);
            let body = if malformed {
                "{not json".to_string()
            } else {
                (0..self.per_page)
                    .map(|i| format!("{{\"id\":\"{stream}-{}\",\"gen\":{generation}}}\n", page * self.per_page + i))
                    .collect()
            };
            let mut raw = RawPage::new(stream.clone(), Bytes::from(body), format!("page {page}"))
                .with_checkpoint(Checkpoint(serde_json::json!({ "next_page": page + 1 })));
            if self.hint_records {
                raw = raw.with_record_hint(self.per_page as usize);
            }
            ctx.sink.send(raw).await?;
        }
        Ok(())
    }

    fn normalize_page(&self, page: &RawPage) -> NormalizedPage {
        if let Ok(mut names) = self.normalize_threads.lock() {
            names.insert(std::thread::current().name().unwrap_or("(unnamed)").to_string());
        }
        // Burn `cpu_per_page` of this thread's CPU time (what the engine
        // counts as normalize time), not of the clock: on a busy machine a
        // thread spinning for 120 ms of the clock may get less of the CPU.
        let started = std::time::Instant::now();
        let cpu0 = corral_core::thread_cpu_time();
        while match (cpu0, corral_core::thread_cpu_time()) {
            (Some(before), Some(now)) => now.saturating_sub(before) < self.cpu_per_page,
            _ => started.elapsed() < self.cpu_per_page,
        } {
            std::hint::spin_loop();
        }
        let mut out = NormalizedPage::default();
        for (n, line) in page.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let v: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(_) => return NormalizedPage::page_failed(format!("{}: not JSON", page.locator)),
            };
            let id = v["id"].as_str().unwrap_or_default().to_string();
            let num: u64 = id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(1);
            if self.reject_every > 0 && num.is_multiple_of(self.reject_every) {
                out.rejects.push(
                    Reject::new(format!("record {n} of {}", page.locator), "bad_record", "divisible").with_raw(line),
                );
                continue;
            }
            let host = format!("host-{id}-g{}", v["gen"]);
            out.assets.push(corral_core::Asset::device(
                page.stream.clone(),
                Device { source_id: id, hostname: Some(host), ..Default::default() },
            ));
        }
        out
    }
}

pub fn conn(name: &str, adapter: Synthetic) -> Connection {
    conn_shared(name, Arc::new(adapter))
}

/// A connection syncing only `streams`.
pub fn conn_streams(name: &str, adapter: Synthetic, streams: &[&str]) -> Connection {
    Connection { streams: streams.iter().map(|s| s.to_string()).collect(), ..conn(name, adapter) }
}

/// A connection whose adapter the test keeps a handle on.
pub fn conn_shared(name: &str, adapter: Arc<Synthetic>) -> Connection {
    Connection { name: name.into(), adapter, streams: vec![], stale: StalePolicy::Mark { delete_after: None } }
}

pub fn small_config() -> EngineConfig {
    EngineConfig {
        raw_channel_capacity: 2,
        normalized_channel_capacity: 2,
        normalize_in_flight: 2,
        batch_max_records: 50,
        batches_in_flight: 2,
        max_page_records: 100,
        ..Default::default()
    }
}
