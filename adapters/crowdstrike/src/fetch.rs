//! Fetching the `hosts` stream: host ids from the scroll endpoint, then host
//! details in batches, concurrently.
//!
//! The two steps overlap. The scroller walks `/devices/queries/devices-scroll/v1`
//! on its own and hands id batches over an unbounded queue, so it never waits
//! on the pipeline (a scroll offset expires two minutes after it was issued;
//! a slow store must not make it expire). The details side takes batches as
//! they come and keeps up to `details_concurrency` calls in flight; each
//! answer goes to the sink undecoded, and while the sink is full no new call
//! starts (backpressure). Only ids pages are decoded here: they are small,
//! and the next offset lives in the body.

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
/// Ids pages up to this size are decoded inline; larger ones on the blocking pool.
const INLINE_DECODE_MAX: usize = 64 * 1024;

/// One batch of ids for the details call.
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

/// [`parse_ids`] off the runtime for pages above [`INLINE_DECODE_MAX`].
async fn decode_ids(body: Bytes) -> Result<IdsPage, String> {
    if body.len() <= INLINE_DECODE_MAX {
        return parse_ids(&body);
    }
    tokio::task::spawn_blocking(move || parse_ids(&body))
        .await
        .unwrap_or_else(|e| Err(format!("ids page decoder failed: {e}")))
}

/// Fetch the whole `hosts` stream into `ctx.sink`. `Ok` only when every ids
/// page and every details batch succeeded.
pub(crate) async fn hosts(client: &HttpClient, s: &Settings, ctx: &FetchContext) -> Result<(), FetchError> {
    let (tx, rx) = mpsc::unbounded_channel::<Batch>();
    let scroll = scroll_ids(client, s, ctx, tx);
    let details = details(client, s, ctx, rx);
    let ((listed, pages), sent) = futures::future::try_join(scroll, details).await?;
    tracing::info!(connection = %ctx.connection, stream = %ctx.stream.name, hosts_listed = listed, ids_pages = pages, details_batches = sent, "crowdstrike hosts fetched");
    Ok(())
}

/// Step 1: walk the scroll, cutting the ids into details batches.
/// Returns (ids listed, ids pages fetched).
async fn scroll_ids(
    client: &HttpClient,
    s: &Settings,
    ctx: &FetchContext,
    tx: mpsc::UnboundedSender<Batch>,
) -> Result<(u64, u64), FetchError> {
    let mut offset: Option<String> = None;
    let mut carry: Vec<String> = Vec::with_capacity(s.details_batch);
    let (mut listed, mut pages, mut batches) = (0u64, 0u64, 0usize);
    let mut send = |ids: Vec<String>, listed: u64| -> Result<(), FetchError> {
        let first = listed - ids.len() as u64;
        let batch = Batch { n: batches, first, ids };
        batches += 1;
        // The receiver only goes away when the details side already failed.
        tx.send(batch).map_err(|_| FetchError::Other("details stage stopped".into()))
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
                send(std::mem::replace(&mut carry, Vec::with_capacity(s.details_batch)), listed)?;
            }
        }
        // The last page still carries an offset; the page after it is empty.
        match page.next {
            Some(next) if got > 0 => offset = Some(next),
            _ => break,
        }
    }
    if !carry.is_empty() {
        send(carry, listed)?;
    }
    Ok((listed, pages))
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
    rx: mpsc::UnboundedReceiver<Batch>,
) -> Result<usize, FetchError> {
    let batches = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let answers = batches
        .map(|batch| async move {
            // 404 means none of the ids exists any more (hosts removed since the
            // listing); the body still is a normal envelope, for normalize.
            let resp = client
                .post(DETAILS_PATH)
                .json(&DetailsRequest { ids: &batch.ids })
                .allow_status(404)
                .send_bytes()
                .await;
            (batch, resp)
        })
        .buffer_unordered(s.details_concurrency);
    let mut answers = std::pin::pin!(answers);
    let mut sent = 0;
    while let Some((batch, resp)) = answers.next().await {
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

    #[test]
    fn batch_locator() {
        let b = Batch { n: 2, first: 10_000, ids: vec!["x".into(); 5000] };
        assert_eq!(b.locator(), "details batch 2 (listing positions 10000..15000)");
    }
}
