//! Multi-step fetch drivers: ids-then-details and asynchronous export jobs.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corral_core::FetchError;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, stream};

/// Split `ids` into batches of `batch_size` and run `fetch` on each with at
/// most `concurrency` in flight. Results come in completion order; the
/// stream only starts new batches as the consumer pulls, so a slow sink
/// slows the fetching (backpressure).
///
/// ```ignore
/// let mut details = in_batches(ids, 5000, 4, |batch| {
///     let client = client.clone();
///     async move { client.post_json("/devices/entities/devices/v2", &json!({ "ids": batch })).send_bytes().await }
/// });
/// while let Some(resp) = details.next().await {
///     ctx.sink.send(RawPage::new("hosts", resp?.body, "details")).await?;
/// }
/// ```
pub fn in_batches<I, T, E, F, Fut>(
    ids: Vec<I>,
    batch_size: usize,
    concurrency: usize,
    fetch: F,
) -> impl Stream<Item = Result<T, E>>
where
    F: FnMut(Vec<I>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let size = batch_size.max(1);
    let mut ids = ids.into_iter();
    let batches = std::iter::from_fn(move || {
        let b: Vec<I> = ids.by_ref().take(size).collect();
        (!b.is_empty()).then_some(b)
    });
    stream::iter(batches).map(fetch).buffer_unordered(concurrency.max(1))
}

/// Where an export job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportState {
    /// Accepted, not producing yet (Tenable `QUEUED`).
    Queued,
    /// Producing chunks (Tenable `PROCESSING`).
    Running,
    /// Every chunk is listed (Tenable `FINISHED`).
    Finished,
    /// Ended without finishing (`CANCELLED`, `ERROR`), with the vendor's word for it.
    Failed(String),
}

/// One status poll: the state and every chunk available so far.
#[derive(Debug, Clone)]
pub struct ExportStatus<C> {
    pub state: ExportState,
    pub chunks: Vec<C>,
}

/// What fetching one chunk gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkBody {
    Data(Bytes),
    /// The vendor no longer has it (Tenable: 404 once a chunk is 24 h old;
    /// fetch it with `.allow_status(404)`).
    Expired,
}

/// A vendor's export API (Tenable `POST /assets/export`, status, chunks).
/// Decoding the small create/status answers is the adapter's business (off
/// the runtime, see [`crate::off_runtime`]).
pub trait ExportJob: Sync {
    type Chunk: Clone + Eq + Hash + fmt::Display + Send + Sync;
    /// Start the export; returns the job id.
    fn create(&self) -> impl Future<Output = Result<String, FetchError>> + Send;
    fn status(&self, job: &str) -> impl Future<Output = Result<ExportStatus<Self::Chunk>, FetchError>> + Send;
    fn fetch_chunk(&self, job: &str, chunk: &Self::Chunk)
    -> impl Future<Output = Result<ChunkBody, FetchError>> + Send;
    /// Called when the driver gives up (error, timeout), so the vendor can
    /// free the export slot. Default: nothing.
    fn cancel(&self, _job: &str) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Named in errors (`https://cloud.tenable.com/assets/export`).
    fn endpoint(&self) -> String {
        "export job".to_string()
    }
}

/// How [`run_export`] polls and fetches.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// First wait between polls; doubled while nothing new appears, reset when chunks appear.
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// Chunks downloaded at once.
    pub concurrency: usize,
    /// Give up (and cancel the job) after this long.
    pub timeout: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            poll_initial: Duration::from_secs(2),
            poll_max: Duration::from_secs(30),
            concurrency: 2,
            timeout: Duration::from_secs(4 * 3600),
        }
    }
}

/// What an export produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub job: String,
    pub chunks: usize,
    pub bytes: u64,
    pub polls: u32,
}

/// Create an export, poll it, and hand each chunk to `on_chunk` exactly once
/// as soon as it is listed (chunks appear out of order; they are fetched
/// `concurrency` at a time and delivered in completion order). Polling goes
/// on while chunks are fetched and delivered, so a chunk listed during a long
/// download starts as soon as a slot frees. At most `concurrency` chunks are
/// fetched or waiting for `on_chunk` at once. Returns when the job is
/// finished and every chunk was delivered; a chunk the vendor no longer has
/// ([`ChunkBody::Expired`]) fails the export with an error saying so.
pub async fn run_export<J, F, Fut>(job: &J, opts: ExportOptions, mut on_chunk: F) -> Result<ExportReport, FetchError>
where
    J: ExportJob,
    F: FnMut(J::Chunk, Bytes) -> Fut,
    Fut: Future<Output = Result<(), FetchError>>,
{
    let id = job.create().await?;
    let result = drive(job, &id, opts, &mut on_chunk).await;
    if result.is_err() {
        job.cancel(&id).await;
    }
    result
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A chunk download in flight: the chunk and what fetching it gave.
type Download<'a, C> = Boxed<'a, (C, Result<ChunkBody, FetchError>)>;

async fn drive<J, F, Fut>(job: &J, id: &str, opts: ExportOptions, on_chunk: &mut F) -> Result<ExportReport, FetchError>
where
    J: ExportJob,
    F: FnMut(J::Chunk, Bytes) -> Fut,
    Fut: Future<Output = Result<(), FetchError>>,
{
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + opts.timeout);
    let limit = opts.concurrency.max(1);
    let mut report = ExportReport { job: id.to_string(), chunks: 0, bytes: 0, polls: 0 };
    let mut seen: HashSet<J::Chunk> = HashSet::new();
    let mut listed: VecDeque<J::Chunk> = VecDeque::new();
    let mut fetching: FuturesUnordered<Download<'_, J::Chunk>> = FuturesUnordered::new();
    let mut fetched: VecDeque<(J::Chunk, Bytes)> = VecDeque::new();
    let mut delivering: Option<Pin<Box<Fut>>> = None;
    let mut polling: Option<Boxed<'_, Result<ExportStatus<J::Chunk>, FetchError>>> = None;
    let mut next_poll = tokio::time::Instant::now();
    let mut delay = opts.poll_initial;
    let mut finished = false;
    loop {
        // Start downloads while fewer than `limit` chunks are fetched or waiting for delivery.
        while fetching.len() + fetched.len() + usize::from(delivering.is_some()) < limit {
            let Some(chunk) = listed.pop_front() else { break };
            fetching.push(Box::pin(async move {
                let r = job.fetch_chunk(id, &chunk).await;
                (chunk, r)
            }));
        }
        if delivering.is_none()
            && let Some((chunk, body)) = fetched.pop_front()
        {
            report.chunks += 1;
            report.bytes += body.len() as u64;
            delivering = Some(Box::pin(on_chunk(chunk, body)));
        }
        let idle = listed.is_empty() && fetching.is_empty() && fetched.is_empty() && delivering.is_none();
        if finished && idle {
            return Ok(report);
        }
        tokio::select! {
            r = async { if let Some(d) = delivering.as_mut() { d.await } else { Ok(()) } }, if delivering.is_some() => {
                delivering = None;
                r?;
            }
            Some((chunk, r)) = fetching.next(), if !fetching.is_empty() => match r? {
                ChunkBody::Data(body) => {
                    tracing::debug!(job = %id, %chunk, bytes = body.len(), "export chunk fetched");
                    fetched.push_back((chunk, body));
                }
                ChunkBody::Expired => {
                    return Err(FetchError::Protocol {
                        endpoint: job.endpoint(),
                        detail: format!(
                            "export {id}: chunk {chunk} expired (the vendor no longer has it) before it was fetched; \
                             {} chunk(s) were delivered, the export must be run again",
                            report.chunks
                        ),
                    });
                }
            },
            status = async { if let Some(p) = polling.as_mut() { p.await } else { std::future::pending().await } }, if polling.is_some() => {
                polling = None;
                let status = status?;
                let mut got_new = false;
                for c in status.chunks {
                    if seen.insert(c.clone()) {
                        listed.push_back(c);
                        got_new = true;
                    }
                }
                match status.state {
                    ExportState::Finished => finished = true,
                    ExportState::Failed(why) => {
                        return Err(FetchError::Protocol {
                            endpoint: job.endpoint(),
                            detail: format!("export {id} ended as {why} after {} chunk(s)", report.chunks),
                        });
                    }
                    ExportState::Queued | ExportState::Running => {
                        delay = if got_new { opts.poll_initial } else { (delay * 2).min(opts.poll_max) };
                        next_poll = tokio::time::Instant::now() + if got_new { Duration::ZERO } else { delay };
                    }
                }
            }
            _ = tokio::time::sleep_until(next_poll), if polling.is_none() && !finished => {
                report.polls += 1;
                polling = Some(Box::pin(job.status(id)));
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(FetchError::Http {
                    endpoint: job.endpoint(),
                    detail: format!("export {id} not finished after {:?}", opts.timeout),
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
