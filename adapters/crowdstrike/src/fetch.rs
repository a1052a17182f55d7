//! Fetching the `hosts` stream: host ids from the scroll endpoint, then host
//! details in batches, concurrently.
//!
//! The two steps overlap. The scroller walks `/devices/queries/devices-scroll/v1`
//! on its own and never waits on the pipeline (a scroll offset expires two
//! minutes after it was issued; a slow store must not make it expire). It
//! hands id batches over a bounded queue holding `ids_in_memory` ids; when the
//! queue is full, batches go to an anonymous temporary file, read back once the
//! scroll is done, so memory stays bounded however many hosts the tenant has.
//! The details side takes batches as they come and keeps up to
//! `details_concurrency` calls in flight; each answer goes to the sink
//! undecoded, and while the sink is full no new call starts (backpressure).
//! Only ids pages are decoded here (the next offset lives in the body), and
//! always off the runtime.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::time::Duration;

use bytes::Bytes;
use corral_core::{FetchContext, FetchError, RawPage};
use corral_http::{HttpClient, RetryConfig};
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::Settings;

pub(crate) const TOKEN_PATH: &str = "/oauth2/token";
pub(crate) const QUERY_PATH: &str = "/devices/queries/devices/v1";
pub(crate) const SCROLL_PATH: &str = "/devices/queries/devices-scroll/v1";
pub(crate) const DETAILS_PATH: &str = "/devices/entities/devices/v2";

/// Attempts for an ids page whose 200 body does not decode (a proxy's HTML
/// page, a truncated answer) before the stream fails.
const IDS_PAGE_ATTEMPTS: u32 = 3;

/// One batch of ids for the details call.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Batch {
    /// 0-based batch number.
    n: usize,
    /// Position of the first id in the listing.
    first: u64,
    ids: Vec<String>,
}

impl Batch {
    fn locator(&self) -> String {
        let end = self.first + self.ids.len() as u64;
        format!("details batch {} (listing positions {}..{})", self.n, self.first, end)
    }
}

/// The ids page fields the scroll needs; nothing else is decoded.
#[derive(Deserialize)]
struct IdsBody {
    #[serde(default)]
    meta: Option<IdsMeta>,
    #[serde(default)]
    resources: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct IdsMeta {
    #[serde(default)]
    pagination: Option<IdsPagination>,
}

#[derive(Deserialize)]
struct IdsPagination {
    /// An opaque string on the scroll endpoint (a number on the offset endpoint).
    #[serde(default)]
    offset: Option<serde_json::Value>,
}

/// A decoded ids page.
#[derive(Debug, PartialEq)]
pub(crate) struct IdsPage {
    pub ids: Vec<String>,
    pub next: Option<String>,
}

/// Decode an ids page: its ids and the offset of the next one.
pub(crate) fn parse_ids(body: &[u8]) -> Result<IdsPage, String> {
    let b: IdsBody = serde_json::from_slice(body).map_err(|e| format!("ids page is not the expected JSON: {e}"))?;
    let ids = b.resources.ok_or_else(|| "ids page has no `resources` array".to_string())?;
    let next = match b.meta.and_then(|m| m.pagination).and_then(|p| p.offset) {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
    .filter(|s| !s.trim().is_empty());
    Ok(IdsPage { ids, next })
}

/// [`parse_ids`] off the runtime, whatever the page's size.
async fn decode_ids(body: Bytes) -> Result<IdsPage, String> {
    corral_http::off_runtime(move || parse_ids(&body))
        .await
        .unwrap_or_else(|| Err("the ids page decoder failed".to_string()))
}

/// What one fetch of the `hosts` stream did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostsStats {
    pub listed: u64,
    pub ids_pages: u64,
    pub details_batches: usize,
    /// Batches that did not fit in `ids_in_memory` and went through the temporary file.
    pub spilled_batches: usize,
}

/// Fetch the whole `hosts` stream into `ctx.sink`. `Ok` only when every ids
/// page and every details batch succeeded.
pub(crate) async fn hosts(client: &HttpClient, s: &Settings, ctx: &FetchContext) -> Result<HostsStats, FetchError> {
    let (tx, rx) = mpsc::channel::<Queued>(s.ids_in_memory.div_ceil(s.details_batch).max(1));
    let scroll = scroll_ids(client, s, ctx, tx);
    let details = details(client, s, ctx, rx);
    let ((listed, ids_pages, spilled_batches), details_batches) = futures::future::try_join(scroll, details).await?;
    tracing::info!(connection = %ctx.connection, stream = %ctx.stream.name, hosts_listed = listed, ids_pages, details_batches, spilled_batches, "crowdstrike hosts fetched");
    Ok(HostsStats { listed, ids_pages, details_batches, spilled_batches })
}

/// Step 1: walk the scroll, cutting the ids into details batches.
/// Returns (ids listed, ids pages fetched, batches spilled to the temporary file).
async fn scroll_ids(
    client: &HttpClient,
    s: &Settings,
    ctx: &FetchContext,
    tx: mpsc::Sender<Queued>,
) -> Result<(u64, u64, usize), FetchError> {
    let mut offset: Option<String> = None;
    let mut carry: Vec<String> = Vec::with_capacity(s.details_batch);
    let (mut listed, mut pages, mut batches) = (0u64, 0u64, 0usize);
    let mut spill = SpillWriter::default();
    // The receiver only goes away when the details side already failed.
    let stopped = || FetchError::Other("details stage stopped".into());
    let mut send = async |ids: Vec<String>, listed: u64| -> Result<(), FetchError> {
        let first = listed - ids.len() as u64;
        let batch = Batch { n: batches, first, ids };
        batches += 1;
        match tx.try_send(Queued::Batch(batch)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Queued::Batch(batch))) => spill.push(batch).await,
            Err(_) => Err(stopped()),
        }
    };
    loop {
        let page = ids_page(client, s, ctx, offset.as_deref()).await?;
        pages += 1;
        let got = page.ids.len();
        tracing::debug!(connection = %ctx.connection, page = pages, ids = got, "ids page");
        for id in page.ids {
            if id.trim().is_empty() {
                continue;
            }
            carry.push(id);
            listed += 1;
            if carry.len() >= s.details_batch {
                send(std::mem::replace(&mut carry, Vec::with_capacity(s.details_batch)), listed).await?;
            }
        }
        // The last page still carries an offset; the page after it is empty.
        match page.next {
            Some(next) if got > 0 => offset = Some(next),
            _ => break,
        }
    }
    if !carry.is_empty() {
        send(carry, listed).await?;
    }
    let spilled = spill.batches;
    if let Some(reader) = spill.finish().await? {
        tracing::debug!(connection = %ctx.connection, batches = reader.remaining, "ids batches read back from the spill file");
        // The scroll is done: waiting for room in the queue is harmless now.
        tx.send(Queued::Spilled(reader)).await.map_err(|_| stopped())?;
    }
    Ok((listed, pages, spilled))
}

/// What the scroller hands to the details side.
enum Queued {
    Batch(Batch),
    /// Batches that did not fit in memory, to be read back in turn.
    Spilled(SpillReader),
}

fn spill_error(source: std::io::Error) -> FetchError {
    FetchError::Io { what: "the temporary file of listed host ids".into(), source }
}

/// Run blocking file work off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("spill task failed: {e}"))))
        .map_err(spill_error)
}

/// Id batches written one JSON line each to an anonymous temporary file
/// (deleted by the OS when closed), created on the first batch that does not fit.
#[derive(Default)]
struct SpillWriter {
    file: Option<BufWriter<File>>,
    batches: usize,
}

impl SpillWriter {
    async fn push(&mut self, batch: Batch) -> Result<(), FetchError> {
        let file = self.file.take();
        let file = blocking(move || {
            let mut w = match file {
                Some(w) => w,
                None => BufWriter::new(tempfile::tempfile()?),
            };
            serde_json::to_writer(&mut w, &batch)?;
            w.write_all(b"\n")?;
            Ok(w)
        })
        .await?;
        self.file = Some(file);
        self.batches += 1;
        Ok(())
    }

    /// The written batches, ready to be read back (None if nothing was spilled).
    async fn finish(self) -> Result<Option<SpillReader>, FetchError> {
        let Some(w) = self.file else { return Ok(None) };
        let remaining = self.batches;
        let file = blocking(move || {
            let mut f = w.into_inner().map_err(|e| e.into_error())?;
            f.rewind()?;
            Ok(f)
        })
        .await?;
        Ok(Some(SpillReader { file: Some(BufReader::new(file)), remaining }))
    }
}

struct SpillReader {
    file: Option<BufReader<File>>,
    remaining: usize,
}

impl SpillReader {
    async fn next(&mut self) -> Result<Option<Batch>, FetchError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let Some(mut file) = self.file.take() else { return Ok(None) };
        let (file, batch) = blocking(move || {
            let mut line = String::new();
            file.read_line(&mut line)?;
            let batch: Batch = serde_json::from_str(&line)?;
            Ok((file, batch))
        })
        .await?;
        self.file = Some(file);
        self.remaining -= 1;
        Ok(Some(batch))
    }
}

/// One scroll page, decoded. A 200 whose body does not decode is asked for again.
async fn ids_page(
    client: &HttpClient,
    s: &Settings,
    ctx: &FetchContext,
    offset: Option<&str>,
) -> Result<IdsPage, FetchError> {
    let limit = s.ids_page_size.to_string();
    let mut query: Vec<(&str, &str)> = vec![("limit", &limit)];
    if let Some(f) = &s.filter {
        query.push(("filter", f));
    }
    if let Some(o) = offset {
        query.push(("offset", o));
    }
    let endpoint = client.url(SCROLL_PATH).map(|u| corral_http::redact_url(&u)).unwrap_or_else(|_| SCROLL_PATH.into());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let resp = client.get(SCROLL_PATH).query(&query).send_bytes().await?;
        match decode_ids(resp.body).await {
            Ok(page) => return Ok(page),
            Err(detail) if attempt < IDS_PAGE_ATTEMPTS => {
                let wait = corral_http::backoff(&RetryConfig::default(), attempt).max(Duration::from_millis(50));
                tracing::warn!(connection = %ctx.connection, %endpoint, attempt, error = %detail, "undecodable ids page; asking again");
                ctx.requests.record_retry(wait);
                tokio::time::sleep(wait).await;
            }
            Err(detail) => {
                return Err(FetchError::Protocol { endpoint, detail: format!("{detail} (after {attempt} attempts)") });
            }
        }
    }
}

#[derive(Serialize)]
struct DetailsRequest<'a> {
    ids: &'a [String],
}

/// Step 2: details batches, `details_concurrency` at a time, each answer to the sink.
/// Returns the number of batches sent on.
async fn details(
    client: &HttpClient,
    s: &Settings,
    ctx: &FetchContext,
    rx: mpsc::Receiver<Queued>,
) -> Result<usize, FetchError> {
    // Batches from the queue, then from the spill file; a spill read error ends the stream with it.
    let batches = stream::unfold((rx, None::<SpillReader>), |(mut rx, mut spilled)| async move {
        loop {
            if let Some(reader) = spilled.as_mut() {
                match reader.next().await {
                    Ok(Some(batch)) => return Some((Ok(batch), (rx, spilled))),
                    Ok(None) => spilled = None,
                    Err(e) => return Some((Err(e), (rx, None))),
                }
            }
            match rx.recv().await? {
                Queued::Batch(batch) => return Some((Ok(batch), (rx, spilled))),
                Queued::Spilled(reader) => spilled = Some(reader),
            }
        }
    });
    let answers = batches
        .map(|batch| async move {
            let batch = batch?;
            // 404 means none of the ids exists any more (hosts removed since the
            // listing); the body still is a normal envelope, for normalize.
            let resp = client
                .post(DETAILS_PATH)
                .json(&DetailsRequest { ids: &batch.ids })
                .allow_status(404)
                .send_bytes()
                .await;
            Ok::<_, FetchError>((batch, resp))
        })
        .buffer_unordered(s.details_concurrency);
    let mut answers = std::pin::pin!(answers);
    let mut sent = 0;
    while let Some(answer) = answers.next().await {
        let (batch, resp) = answer?;
        let resp = resp?;
        let locator = batch.locator();
        tracing::debug!(connection = %ctx.connection, page = %locator, status = resp.status.as_u16(), bytes = resp.body.len(), "details batch");
        let page = RawPage::new(ctx.stream.name.clone(), resp.body, locator)
            .with_first_record(batch.first)
            .with_record_hint(batch.ids.len());
        ctx.sink.send(page).await?;
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_page_decoding() {
        let p = parse_ids(br#"{"meta":{"pagination":{"offset":"abc","total":3}},"resources":["a","b"],"errors":[]}"#);
        assert_eq!(p, Ok(IdsPage { ids: vec!["a".into(), "b".into()], next: Some("abc".into()) }));
        let last = parse_ids(br#"{"meta":{"pagination":{"limit":5}},"resources":[]}"#);
        assert_eq!(last, Ok(IdsPage { ids: vec![], next: None }));
        let numeric = parse_ids(br#"{"meta":{"pagination":{"offset":100}},"resources":["a"]}"#);
        assert_eq!(numeric.map(|p| p.next), Ok(Some("100".into())));
        let blank = parse_ids(br#"{"meta":{"pagination":{"offset":""}},"resources":["a"]}"#);
        assert_eq!(blank.map(|p| p.next), Ok(None));
        assert!(parse_ids(b"<html>").is_err());
        assert!(parse_ids(br#"{"meta":{}, "resources": ["a", "#).is_err());
        assert!(parse_ids(br#"{"meta":{}}"#).is_err());
        assert!(parse_ids(br#"{"resources":[1,2]}"#).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn spilled_batches_read_back_in_order() {
        let mut w = SpillWriter::default();
        assert!(SpillWriter::default().finish().await.expect("empty").is_none(), "no file until a batch spills");
        let batch = |n: usize| Batch { n, first: n as u64 * 2, ids: vec![format!("id-{n}-a"), format!("id \"{n}\"")] };
        for n in 0..5 {
            w.push(batch(n)).await.expect("spill");
        }
        let mut r = w.finish().await.expect("finish").expect("spilled");
        for n in 0..5 {
            assert_eq!(r.next().await.expect("read"), Some(batch(n)));
        }
        assert_eq!(r.next().await.expect("end"), None);
    }

    #[test]
    fn batch_locator() {
        let b = Batch { n: 2, first: 10_000, ids: vec!["x".into(); 5000] };
        assert_eq!(b.locator(), "details batch 2 (listing positions 10000..15000)");
    }
}
