//! `upsert`: how a load batch becomes unordered multi-statement `update` commands.
//!
//! 1. **Prepare** (on the blocking pool: it is CPU work): dedupe the batch by
//!    key (the later record wins, as in every store), encode each asset's full
//!    upsert statement as raw BSON, and reject on its own any record whose
//!    document would exceed MongoDB's 16 MiB limit (`document_too_large`) or
//!    cannot be encoded (`store_encode`).
//! 2. **Chunk** by statement count and by bytes, so every command stays well
//!    under the 16 MiB command-document limit (`run_command` sends the command
//!    as one document; a single statement larger than the byte budget goes alone).
//! 3. For each chunk (a few in flight at once), one **attempt** is:
//!    - one `find` per asset kind, `{connection, kind, source_id: {$in: [...]}}`
//!      projected to `source_id, content_hash`: the existing hashes;
//!    - one `update` command, `ordered: false`, one statement per asset:
//!      - new or changed content: filter on the key, `upsert: true`,
//!        `$setOnInsert: {first_seen}`, `$set: {fields, raw, stream,
//!        content_hash, last_seen, last_sync_id}`, `$unset: {stale_since}`
//!        (and `raw` when the record has none);
//!      - unchanged content (same hash): a light statement that sends no
//!        fields: filter on the key **and** the hash, `upsert: false`,
//!        `$set: {stream, last_seen, last_sync_id}`, `$unset: {stale_since}`.
//!
//!      `inserted` = the statements in `upserted`; a full statement that
//!      matched is `updated`; light ones are `unchanged`. If fewer light
//!      statements matched than were sent (the document changed or vanished
//!      between the read and the write), those assets are written again with
//!      full statements, so a race can never lose data, only cost a round trip.
//!    - Per-statement write errors: transient codes and duplicate key (two
//!      concurrent upserts of one new key) are retried; a document over the
//!      size limit, a validation failure or any other per-document refusal
//!      rejects that record alone.
//!    - Command-level transient errors retry the attempt with capped
//!      exponential backoff ([`super::RetryPolicy`]); every statement is
//!      idempotent, so a retry after an ambiguous failure is safe (it may then
//!      count as unchanged what the lost attempt had inserted).
//!
//! Why not one round trip with a conditional (pipeline) update? It cannot say
//! per document whether the content changed, and the reads are cheap index
//! lookups on the unique key; the light statements then save sending the
//! fields of unchanged assets, which in a steady-state sync are most of them.
//!
//! Filters use `{field: {$eq: v}}`: identical in MongoDB to `{field: v}`
//! (including the equality fields an upsert copies into the new document), and
//! the only spelling nx-27017, the test stand-in, turns into an index lookup.
//! Updates that `$set` a date also carry [`NOOP_PULL`] for the stand-in (see there).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use corral_core::adapter::Reject;
use corral_core::asset::{Asset, AssetKind};
use corral_core::store::{LoadBatch, LoadOutcome, StoreError};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{self, Bson, Document, RawArrayBuf, RawDocumentBuf, doc, rawdoc};
use mongodb::options::Acknowledgment;
use serde::Serialize;

use super::MongoStore;
use super::errors::{DUPLICATE_KEY, Retry, TOO_LARGE_CODES, VALIDATION_FAILED, classify, is_transient_code};

/// A `$pull` of nothing from a field corral never writes.
///
/// In MongoDB it is a no-op (`$pull` on a missing field changes nothing and
/// creates nothing, on update and on upsert-insert). It is there for
/// nx-27017 0.8.1, the stand-in the tests run against: its fast SQL path for
/// `$set` on an existing document stores BSON dates as text
/// (`"2024-05-01 12:00:00"`), which breaks every date comparison; a `$pull`
/// routes the update through its document-level path, which keeps dates as dates.
pub(crate) const NOOP_PULL_FIELD: &str = "_corral_noop";

pub(crate) fn noop_pull() -> RawDocumentBuf {
    rawdoc! { NOOP_PULL_FIELD: { "$in": [] } }
}

/// Per-element overhead of a statement inside the `updates` array (type byte,
/// index key) plus slack.
const STATEMENT_OVERHEAD: usize = 16;
/// Bytes of the stored document beyond the `$set` part: `_id`, key fields,
/// `first_seen`, field names.
const STORED_DOC_OVERHEAD: usize = 160;

/// Per-batch context shared by every chunk.
pub(crate) struct LoadCtx {
    pub connection: String,
    pub sync_id: String,
    pub seen: bson::DateTime,
}

/// One asset (after dedupe) ready to write.
pub(crate) struct Item {
    pub kind: AssetKind,
    pub source_id: String,
    pub stream: String,
    /// Content hash of the record written (the last occurrence in the batch).
    pub hash: String,
    /// Content hash of the first occurrence, to count it against what is stored.
    pub first_hash: String,
    /// Later occurrences of the key in the batch: counted against the previous one.
    pub extra_updated: u64,
    pub extra_unchanged: u64,
    /// The full upsert statement.
    pub full: RawDocumentBuf,
}

impl Item {
    fn size(&self) -> usize {
        self.full.as_bytes().len() + STATEMENT_OVERHEAD
    }

    fn record(&self) -> String {
        record_name(self.kind, &self.source_id)
    }
}

fn record_name(kind: AssetKind, source_id: &str) -> String {
    format!("{kind} {source_id}")
}

pub(crate) struct Prepared {
    pub items: Vec<Item>,
    pub rejected: Vec<Reject>,
}

#[derive(Serialize)]
struct SetFull<'a> {
    fields: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a serde_json::Value>,
    stream: &'a str,
    content_hash: &'a str,
    last_seen: bson::DateTime,
    last_sync_id: &'a str,
}

pub(crate) fn key_filter(connection: &str, kind: AssetKind, source_id: &str) -> RawDocumentBuf {
    rawdoc! {
        "connection": { "$eq": connection },
        "kind": { "$eq": kind.as_str() },
        "source_id": { "$eq": source_id },
    }
}

/// Encode one asset's full upsert statement, or reject it.
fn encode(asset: &Asset, hash: &str, ctx: &LoadCtx, max_document_bytes: usize) -> Result<RawDocumentBuf, Reject> {
    let kind = asset.kind();
    let source_id = asset.source_id();
    let record = record_name(kind, source_id);
    let fields = asset.fields_json();
    let set = SetFull {
        fields: &fields,
        raw: asset.raw.as_ref(),
        stream: &asset.stream,
        content_hash: hash,
        last_seen: ctx.seen,
        last_sync_id: &ctx.sync_id,
    };
    let set = bson::to_raw_document_buf(&set)
        .map_err(|e| Reject::new(record.clone(), "store_encode", format!("could not encode the asset as BSON: {e}")))?;
    let stored = set.as_bytes().len() + ctx.connection.len() + source_id.len() + STORED_DOC_OVERHEAD;
    if stored > max_document_bytes {
        let sample = serde_json::to_vec(&fields).unwrap_or_default();
        return Err(Reject::new(
            record,
            "document_too_large",
            format!(
                "the stored document would be about {stored} bytes, over MongoDB's limit of {max_document_bytes} bytes"
            ),
        )
        .with_raw(&sample[..sample.len().min(Reject::MAX_RAW)]));
    }
    let mut unset = rawdoc! { "stale_since": "" };
    if asset.raw.is_none() {
        unset.append("raw", "");
    }
    Ok(rawdoc! {
        "q": key_filter(&ctx.connection, kind, source_id),
        "u": {
            "$setOnInsert": { "first_seen": ctx.seen },
            "$set": set,
            "$unset": unset,
            "$pull": noop_pull(),
        },
        "upsert": true,
        "multi": false,
    })
}

/// Dedupe, hash and encode a batch (CPU work: run it on the blocking pool).
pub(crate) fn prepare(assets: Vec<Asset>, ctx: &LoadCtx, max_document_bytes: usize) -> Prepared {
    let mut items: Vec<Item> = Vec::with_capacity(assets.len());
    let mut index: HashMap<(AssetKind, String), usize> = HashMap::with_capacity(assets.len());
    let mut rejected = Vec::new();
    for asset in assets {
        let hash = asset.content_hash();
        let full = match encode(&asset, &hash, ctx, max_document_bytes) {
            Ok(full) => full,
            Err(reject) => {
                rejected.push(reject);
                continue;
            }
        };
        let kind = asset.kind();
        match index.get(&(kind, asset.source_id().to_string())) {
            Some(&i) => {
                let item = &mut items[i];
                if item.hash == hash {
                    item.extra_unchanged += 1;
                } else {
                    item.extra_updated += 1;
                }
                item.hash = hash;
                item.stream = asset.stream;
                item.full = full;
            }
            None => {
                index.insert((kind, asset.source_id().to_string()), items.len());
                items.push(Item {
                    kind,
                    source_id: asset.source_id().to_string(),
                    stream: asset.stream,
                    first_hash: hash.clone(),
                    hash,
                    extra_updated: 0,
                    extra_unchanged: 0,
                    full,
                });
            }
        }
    }
    Prepared { items, rejected }
}

/// Split statement sizes into consecutive chunks of at most `max_docs`
/// statements and `max_bytes` bytes; a statement larger than `max_bytes` goes alone.
pub(crate) fn chunk_sizes(sizes: &[usize], max_docs: usize, max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let max_docs = max_docs.max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let count = i - start;
        if count > 0 && (count >= max_docs || bytes + size > max_bytes) {
            chunks.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push(start..sizes.len());
    }
    chunks
}

/// An item still to be written, with what earlier attempts learned.
struct Pending {
    item: Item,
    /// Write the full statement even if the stored hash matches (a light one missed).
    force_full: bool,
    /// Duplicate-key errors seen: retried once (a concurrent upsert), then rejected.
    duplicate_keys: u8,
}

/// What one attempt did with one item.
enum Disposition {
    /// Stored: (inserted, updated, unchanged) for the item and its duplicates.
    Done(u64, u64, u64),
    Rejected(Reject),
    /// A light statement may have missed: write it again in full, now.
    RedoFull,
    /// Transient per-statement failure: retry after backoff.
    Retry(String),
    /// Duplicate key: retry once, then reject.
    DuplicateKey(String),
}

impl MongoStore {
    pub(crate) async fn upsert_batch(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        if batch.assets.is_empty() {
            return Ok(LoadOutcome::default());
        }
        self.ensure_indexes().await?;
        let ctx = LoadCtx {
            connection: batch.connection,
            sync_id: batch.sync_id,
            seen: bson::DateTime::from_millis(batch.seen_at.timestamp_millis()),
        };
        let max_document_bytes = self.inner.opts.max_document_bytes;
        let assets = batch.assets;
        let (ctx, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = prepare(assets, &ctx, max_document_bytes);
            (ctx, prepared)
        })
        .await
        .map_err(|e| StoreError::Permanent(format!("preparing the MongoDB batch failed: {e}")))?;

        let Prepared { items, rejected } = prepared;
        let mut outcome = LoadOutcome { rejected, ..Default::default() };
        let sizes: Vec<usize> = items.iter().map(Item::size).collect();
        let ranges = chunk_sizes(&sizes, self.inner.opts.max_batch_docs, self.inner.opts.max_batch_bytes);
        tracing::debug!(
            connection = %ctx.connection,
            assets = items.len(),
            chunks = ranges.len(),
            bytes = sizes.iter().sum::<usize>(),
            "MongoDB upsert"
        );
        let mut chunks: Vec<Vec<Item>> = Vec::with_capacity(ranges.len());
        let mut items = items.into_iter();
        for range in ranges {
            chunks.push(items.by_ref().take(range.len()).collect());
        }
        let ctx = &ctx;
        let mut results = futures::stream::iter(chunks)
            .map(|chunk| self.load_chunk(ctx, chunk))
            .buffer_unordered(self.inner.opts.max_in_flight.max(1));
        while let Some(chunk_outcome) = results.try_next().await? {
            outcome.add(chunk_outcome);
        }
        Ok(outcome)
    }

    /// Write one chunk, retrying transient failures.
    async fn load_chunk(&self, ctx: &LoadCtx, items: Vec<Item>) -> Result<LoadOutcome, StoreError> {
        let opts = &self.inner.opts;
        let mut pending: Vec<Pending> =
            items.into_iter().map(|item| Pending { item, force_full: false, duplicate_keys: 0 }).collect();
        let mut outcome = LoadOutcome::default();
        let mut retry = Retry::new(&opts.retry, "upsert");
        while !pending.is_empty() {
            let attempt = tokio::time::timeout(opts.attempt_timeout, self.write_attempt(ctx, &pending)).await;
            let dispositions = match attempt {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                    retry.after_failure(e).await?;
                    continue;
                }
                Err(_) => {
                    self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let e = StoreError::Transient(format!(
                        "upsert: no answer from MongoDB within {:.1}s",
                        opts.attempt_timeout.as_secs_f64()
                    ));
                    retry.after_failure(e).await?;
                    continue;
                }
            };
            let mut next = Vec::new();
            let mut transient: Option<String> = None;
            for (mut p, d) in pending.into_iter().zip(dispositions) {
                match d {
                    Disposition::Done(i, u, n) => {
                        outcome.inserted += i;
                        outcome.updated += u;
                        outcome.unchanged += n;
                    }
                    Disposition::Rejected(r) => outcome.rejected.push(r),
                    Disposition::RedoFull => {
                        p.force_full = true;
                        next.push(p);
                    }
                    Disposition::Retry(msg) => {
                        transient = Some(msg);
                        next.push(p);
                    }
                    Disposition::DuplicateKey(msg) => {
                        p.duplicate_keys += 1;
                        if p.duplicate_keys > 1 {
                            outcome.rejected.push(Reject::new(
                                p.item.record(),
                                "duplicate_key",
                                format!("MongoDB kept refusing the document with a duplicate key error: {msg}"),
                            ));
                        } else {
                            next.push(p);
                        }
                    }
                }
            }
            pending = next;
            if let Some(msg) = transient {
                self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                retry.after_failure(StoreError::Transient(format!("upsert: {msg}"))).await?;
            }
        }
        Ok(outcome)
    }

    /// The existing content hashes of the pending items' keys.
    async fn existing_hashes(
        &self,
        ctx: &LoadCtx,
        pending: &[Pending],
    ) -> Result<HashMap<(AssetKind, String), String>, StoreError> {
        let mut existing = HashMap::with_capacity(pending.len());
        for kind in AssetKind::ALL {
            let ids: Vec<&str> =
                pending.iter().filter(|p| p.item.kind == kind).map(|p| p.item.source_id.as_str()).collect();
            if ids.is_empty() {
                continue;
            }
            let batch_size = u32::try_from(ids.len().clamp(1, 10_000)).unwrap_or(10_000);
            let filter = doc! {
                "connection": { "$eq": &ctx.connection },
                "kind": { "$eq": kind.as_str() },
                "source_id": { "$in": ids },
            };
            let mut cursor = self
                .inner
                .assets
                .find(filter)
                .projection(doc! { "_id": 0, "source_id": 1, "content_hash": 1 })
                .batch_size(batch_size)
                .await
                .map_err(|e| classify("upsert: read existing hashes", &e))?;
            while let Some(doc) = cursor.try_next().await.map_err(|e| classify("upsert: read existing hashes", &e))? {
                let Ok(source_id) = doc.get_str("source_id") else { continue };
                // A document without a hash (written by something else) is always rewritten.
                let hash = doc.get_str("content_hash").unwrap_or_default();
                existing.insert((kind, source_id.to_string()), hash.to_string());
            }
        }
        Ok(existing)
    }

    /// One attempt at writing the pending items: read hashes, send one `update` command.
    async fn write_attempt(&self, ctx: &LoadCtx, pending: &[Pending]) -> Result<Vec<Disposition>, StoreError> {
        let existing = self.existing_hashes(ctx, pending).await?;

        let mut updates = RawArrayBuf::new();
        let mut light = Vec::with_capacity(pending.len());
        let mut before: Vec<Option<&String>> = Vec::with_capacity(pending.len());
        for p in pending {
            let stored = existing.get(&(p.item.kind, p.item.source_id.clone()));
            let is_light = !p.force_full && stored == Some(&p.item.hash);
            if is_light {
                updates.push(light_statement(ctx, &p.item));
            } else {
                updates.push(p.item.full.clone());
            }
            light.push(is_light);
            before.push(stored);
        }
        let mut command = rawdoc! {
            "update": self.inner.opts.assets_collection.as_str(),
            "updates": updates,
            "ordered": false,
        };
        // `run_command` sends the command as is: pass on the write concern the
        // client was configured with (URI `w`, `journal`, `wtimeoutMS`). An
        // unacknowledged one (w: 0) would leave nothing to count: the server default is used instead.
        if let Some(wc) = self.inner.db.write_concern()
            && wc.w != Some(Acknowledgment::Nodes(0))
            && let Ok(wc) = bson::to_raw_document_buf(wc)
            && !wc.is_empty()
        {
            command.append("writeConcern", wc);
        }
        let bytes = command.as_bytes().len() as u64;
        let stats = &self.inner.stats;
        stats.update_commands.fetch_add(1, Ordering::Relaxed);
        stats.statements.fetch_add(pending.len() as u64, Ordering::Relaxed);
        stats.light_statements.fetch_add(light.iter().filter(|l| **l).count() as u64, Ordering::Relaxed);
        stats.command_bytes.fetch_add(bytes, Ordering::Relaxed);
        stats.max_command_bytes.fetch_max(bytes, Ordering::Relaxed);

        let reply = self.inner.db.run_raw_command(command).await.map_err(|e| classify("upsert", &e))?;
        let reply = UpdateReply::parse(&reply)?;
        if let Some((code, msg)) = &reply.write_concern_error {
            let msg = format!("upsert: write concern error {code}: {msg}");
            return Err(if is_transient_code(*code) || reply.retryable_label {
                StoreError::Transient(msg)
            } else {
                StoreError::Permanent(msg)
            });
        }

        let full_ok = (0..pending.len()).filter(|i| !light[*i] && !reply.errors.contains_key(i)).count() as u64;
        let light_ok = (0..pending.len()).filter(|i| light[*i] && !reply.errors.contains_key(i)).count() as u64;
        // `n` counts matched plus upserted documents: each full statement that
        // did not fail contributes exactly one, the rest are light matches.
        let light_all_matched = reply.n >= full_ok && reply.n - full_ok >= light_ok;

        let mut out = Vec::with_capacity(pending.len());
        for (i, p) in pending.iter().enumerate() {
            let item = &p.item;
            if let Some((code, msg)) = reply.errors.get(&i) {
                out.push(write_error(item, *code, msg));
                continue;
            }
            let extras = (item.extra_updated, item.extra_unchanged);
            let first_vs_stored = |stored: Option<&String>| match stored {
                Some(h) if *h == item.first_hash => (0, 0, 1),
                _ => (0, 1, 0),
            };
            let (i0, u0, n0) = if light[i] {
                if !light_all_matched {
                    out.push(Disposition::RedoFull);
                    continue;
                }
                first_vs_stored(before[i])
            } else if reply.upserted.contains(&i) {
                (1, 0, 0)
            } else {
                // Matched an existing document (perhaps one a concurrent writer
                // inserted after our read: then it counts as updated).
                first_vs_stored(before[i])
            };
            out.push(Disposition::Done(i0, u0 + extras.0, n0 + extras.1));
        }
        Ok(out)
    }
}

/// The statement for an asset whose stored content hash equals its own: no
/// fields sent; the hash in the filter makes it miss if the content changed meanwhile.
fn light_statement(ctx: &LoadCtx, item: &Item) -> RawDocumentBuf {
    let mut q = key_filter(&ctx.connection, item.kind, &item.source_id);
    q.append("content_hash", rawdoc! { "$eq": item.hash.as_str() });
    rawdoc! {
        "q": q,
        "u": {
            "$set": {
                "stream": item.stream.as_str(),
                "last_seen": ctx.seen,
                "last_sync_id": ctx.sync_id.as_str(),
            },
            "$unset": { "stale_since": "" },
            "$pull": noop_pull(),
        },
        "upsert": false,
        "multi": false,
    }
}

fn write_error(item: &Item, code: i32, msg: &str) -> Disposition {
    if is_transient_code(code) {
        Disposition::Retry(format!("{}: write error {code}: {msg}", item.record()))
    } else if code == DUPLICATE_KEY {
        Disposition::DuplicateKey(format!("{msg} (code {code})"))
    } else if TOO_LARGE_CODES.contains(&code) {
        Disposition::Rejected(Reject::new(
            item.record(),
            "document_too_large",
            format!("MongoDB refused the document as too large (code {code}): {msg}"),
        ))
    } else if code == VALIDATION_FAILED {
        Disposition::Rejected(Reject::new(
            item.record(),
            "validation_failed",
            format!("the document failed the collection's validation (code {code}): {msg}"),
        ))
    } else {
        Disposition::Rejected(Reject::new(
            item.record(),
            "store_write_error",
            format!("MongoDB refused the document (code {code}): {msg}"),
        ))
    }
}

/// The parts of an `update` command reply that matter here.
#[derive(Debug, Default)]
struct UpdateReply {
    n: u64,
    upserted: HashSet<usize>,
    errors: HashMap<usize, (i32, String)>,
    write_concern_error: Option<(i32, String)>,
    retryable_label: bool,
}

fn as_i64(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

impl UpdateReply {
    fn parse(reply: &Document) -> Result<Self, StoreError> {
        let bad = |what: &str| StoreError::Permanent(format!("upsert: unexpected reply from MongoDB ({what})"));
        let mut out = UpdateReply {
            n: as_i64(reply.get("n")).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| bad("no `n`"))?,
            ..Default::default()
        };
        if let Some(Bson::Array(upserted)) = reply.get("upserted") {
            for u in upserted {
                let Bson::Document(u) = u else { return Err(bad("`upserted` entry")) };
                let i = as_i64(u.get("index"))
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| bad("`upserted.index`"))?;
                out.upserted.insert(i);
            }
        }
        if let Some(Bson::Array(errors)) = reply.get("writeErrors") {
            for e in errors {
                let Bson::Document(e) = e else { return Err(bad("`writeErrors` entry")) };
                let i = as_i64(e.get("index"))
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| bad("`writeErrors.index`"))?;
                let code = as_i64(e.get("code")).and_then(|c| i32::try_from(c).ok()).unwrap_or(0);
                let msg = e.get_str("errmsg").unwrap_or_default().to_string();
                out.errors.insert(i, (code, msg));
            }
        }
        if let Ok(wce) = reply.get_document("writeConcernError") {
            let code = as_i64(wce.get("code")).and_then(|c| i32::try_from(c).ok()).unwrap_or(0);
            out.write_concern_error = Some((code, wce.get_str("errmsg").unwrap_or_default().to_string()));
        }
        if let Ok(labels) = reply.get_array("errorLabels") {
            out.retryable_label = labels.iter().any(|l| matches!(l, Bson::String(s) if s == "RetryableWriteError"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::asset::Device;

    fn ctx() -> LoadCtx {
        LoadCtx { connection: "c".into(), sync_id: "s".into(), seen: bson::DateTime::from_millis(0) }
    }

    fn dev(id: &str, host: &str) -> Asset {
        Asset::device("hosts", Device { source_id: id.into(), hostname: Some(host.into()), ..Default::default() })
    }

    #[test]
    fn chunks_split_by_count_and_bytes() {
        assert_eq!(chunk_sizes(&[], 10, 100), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(chunk_sizes(&[10; 5], 2, 1000), vec![0..2, 2..4, 4..5]);
        assert_eq!(chunk_sizes(&[40, 40, 40, 40], 100, 100), vec![0..2, 2..4]);
        // An item larger than the byte budget goes alone.
        assert_eq!(chunk_sizes(&[10, 500, 10, 10], 100, 100), vec![0..1, 1..2, 2..4]);
        assert_eq!(chunk_sizes(&[500], 100, 100), vec![0..1]);
    }

    #[test]
    fn prepare_dedupes_later_wins() {
        let p = prepare(vec![dev("a", "one"), dev("b", "x"), dev("a", "two"), dev("a", "two")], &ctx(), 16 << 20);
        assert!(p.rejected.is_empty());
        assert_eq!(p.items.len(), 2);
        let a = &p.items[0];
        assert_eq!(a.source_id, "a");
        assert_eq!((a.extra_updated, a.extra_unchanged), (1, 1));
        assert_eq!(a.hash, dev("a", "two").content_hash());
        assert_eq!(a.first_hash, dev("a", "one").content_hash());
        let set = a.full.get_document("u").and_then(|u| u.get_document("$set")).expect("$set");
        let host = set.get_document("fields").and_then(|f| f.get_str("hostname")).expect("hostname");
        assert_eq!(host, "two");
    }

    #[test]
    fn oversized_is_rejected_with_its_record() {
        let big = dev("big", &"x".repeat(2000));
        let p = prepare(vec![dev("a", "one"), big], &ctx(), 1000);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].record, "device big");
        assert_eq!(p.rejected[0].reason, "document_too_large");
    }

    #[test]
    fn unencodable_raw_is_rejected() {
        let bad = dev("u64", "h").with_raw(Some(serde_json::json!({"n": u64::MAX})));
        let p = prepare(vec![bad], &ctx(), 16 << 20);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].reason, "store_encode");
    }

    #[test]
    fn reply_parsing() {
        let reply = doc! {
            "ok": 1, "n": 3, "nModified": 1,
            "upserted": [{"index": 2, "_id": 1}],
            "writeErrors": [{"index": 0, "code": 17419, "errmsg": "too big"}],
        };
        let r = UpdateReply::parse(&reply).expect("parse");
        assert_eq!(r.n, 3);
        assert!(r.upserted.contains(&2));
        assert_eq!(r.errors.get(&0), Some(&(17419, "too big".to_string())));
        assert!(UpdateReply::parse(&doc! {"ok": 1}).is_err());
    }
}
