//! `upsert`: how a load batch becomes unordered multi-statement `update` commands.
//!
//! 1. **Prepare** (on the blocking pool: it is CPU work): dedupe the batch by
//!    key (the later record wins, as in every store), encode each asset's
//!    `$set` part as raw BSON, reject on its own any record whose document
//!    would exceed MongoDB's 16 MiB limit (`document_too_large`) or cannot be
//!    encoded (`store_encode`), and compute the batch's **write token**: a
//!    64-bit hash of (connection, sync id, seen_at, every record's kind,
//!    source id and content hash in order). A retry of the batch (the store's
//!    own, or the engine's, which re-sends the same batch) has the same token;
//!    another batch, even of the same sync, has another.
//! 2. **Chunk** by statement count and by bytes, so every command stays well
//!    under the 16 MiB command-document limit (`run_command` sends the command
//!    as one document; a single statement larger than the byte budget goes alone).
//! 3. For each chunk (a few in flight at once), one **attempt** is:
//!    - one `find` per asset kind on the primary (read concern `local`, whatever
//!      the URI's read preference), `{connection, kind, source_id: {$in: [...]}}`
//!      projected to `source_id, content_hash, insert_token, write_token,
//!      write_changed`: what is stored;
//!    - one `update` command, `ordered: false`, one statement per asset:
//!      - new or changed content: filter on the key, `upsert: true`,
//!        `$setOnInsert: {first_seen, insert_token}`, `$set: {fields, raw,
//!        stream, content_hash, keys, refs, derived, last_sync_id,
//!        write_token, write_changed}`,
//!        `$max: {last_seen}`, `$unset: {stale_since}` (and `raw` when the record has none);
//!      - unchanged content (same hash): a light statement that sends no
//!        fields: filter on the key **and** the hash, `upsert: false`,
//!        `$set: {stream, last_sync_id}`, `$max: {last_seen}`, `$unset: {stale_since}`.
//!        A document written before keys and references were derived
//!        (`derived` missing or older than [`DERIVED_VERSION`]) gets the full
//!        statement once instead, still counted unchanged: so the indexes of
//!        a database written by an earlier version fill in on the next sync.
//!
//!      `keys` are the asset's correlation keys as `"<type>:<value>"` and
//!      `refs` its references as [`ref_string`]s, each array with a multikey
//!      index; both derived from the content, so they change only with it.
//!
//!      `last_seen` only moves forward (`$max`), so a late write of an older
//!      run never makes an asset look unseen to a newer one (see `StaleScope`).
//!
//!      `inserted` = the statements in `upserted`; a full statement that
//!      matched is `updated`; light ones are `unchanged`. If fewer light
//!      statements matched than were sent (the document changed or vanished
//!      between the read and the write), those assets are written again with
//!      full statements, so a race can never lose data, only cost a round trip.
//!    - **Counts survive retries.** After an ambiguous failure (the server may
//!      have applied the command; the reply was lost) the next attempt finds
//!      the asset already stored with its own content hash, which alone would
//!      count it unchanged. The tokens say what happened: `insert_token` equal
//!      to this batch's token means this batch inserted it; `write_token`
//!      equal to it means this batch rewrote it, and `write_changed` whether
//!      that counted as updated (or, for the first of in-batch duplicates, as
//!      unchanged). Such an asset is counted as that earlier attempt would have
//!      counted it. A full statement that matched a document the pre-read did
//!      not see is checked the same way (one extra read, only then).
//!    - Per-statement write errors: transient codes and duplicate key (two
//!      concurrent upserts of one new key) are retried; a document over the
//!      size limit, a validation failure or any other per-document refusal
//!      rejects that record alone.
//!    - Command-level transient errors retry the attempt with capped
//!      exponential backoff ([`super::RetryPolicy`]); every statement is
//!      idempotent, so a retry after an ambiguous failure is safe.
//! 4. Every chunk sent runs to its end even when another fails, so every chunk
//!    is either acknowledged, has used up its retries, or was never sent (none
//!    starts after a failure); then the first error is returned (its message
//!    says what the other chunks stored). A retry of the
//!    whole batch then counts the acknowledged chunks through their tokens:
//!    within one sync, inserted + updated + unchanged are exact however often
//!    the batch is retried. What a batch that fails for good stored anyway is
//!    returned in `StoreError::Partial`, so the failed run counts it too.
//!
//! Why not one round trip with a conditional (pipeline) update? It cannot say
//! per document whether the content changed, and the reads are cheap index
//! lookups on the unique key; the light statements then save sending the
//! fields of unchanged assets, which in a steady-state sync are most of them.
//!
//! Filters use `{field: {$eq: v}}`: identical in MongoDB to `{field: v}`
//! (including the equality fields an upsert copies into the new document), and
//! the only spelling nx-27017, the test stand-in, turns into an index lookup.
//! For the stand-in only, updates also carry [`noop_pull`] (see [`super::ServerKind`]).

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

/// The field of [`noop_pull`]: corral never writes it.
pub(crate) const NOOP_PULL_FIELD: &str = "_corral_noop";

/// `{_corral_noop: {$in: []}}`, the argument of a `$pull` of nothing from a
/// field corral never writes: sent to the nx-27017 stand-in only.
///
/// In MongoDB it would be a no-op (`$pull` on a missing field changes nothing
/// and creates nothing, on update and on upsert-insert). nx-27017 0.8.1's fast
/// SQL path for a `$set` on an existing document stores BSON dates as text
/// (`"2024-05-01 12:00:00"`), which breaks every date comparison; a `$pull`
/// routes the update through its document-level path, which keeps dates as
/// dates. A real MongoDB never gets it (see [`super::ServerKind`]).
pub(crate) fn noop_pull() -> RawDocumentBuf {
    rawdoc! { NOOP_PULL_FIELD: { "$in": [] } }
}

/// The version of the derived fields (`keys`, `refs`) a full statement
/// writes in `derived`. A stored document with an older one is rewritten in
/// full once, even when its content is unchanged.
pub(crate) const DERIVED_VERSION: i32 = 1;

/// A correlation key as stored in `keys`: `"<type>:<value>"`.
pub(crate) fn key_string(key: corral_core::asset::KeyType, value: &str) -> String {
    format!("{}:{value}", key.as_str())
}

/// A reference as stored in `refs`: `"<kind>:<length of connection>:<connection>:<source_id>"`
/// (`device:6:cs-eu1:abc`), unambiguous whatever the names hold.
pub(crate) fn ref_string(connection: &str, kind: AssetKind, source_id: &str) -> String {
    format!("{}:{}:{connection}:{source_id}", kind.as_str(), connection.len())
}

/// Per-element overhead of a statement inside the `updates` array (type byte,
/// index key) plus slack.
const STATEMENT_OVERHEAD: usize = 16;
/// Bytes of a full statement beyond its `$set` fields and its key filter:
/// operator and field names, `first_seen`, the tokens, `$unset`, the stand-in's `$pull`.
const FULL_STATEMENT_OVERHEAD: usize = 320;
/// Bytes of the stored document beyond the `$set` part: `_id`, key fields,
/// `first_seen`, `insert_token`, field names.
const STORED_DOC_OVERHEAD: usize = 200;

/// Per-batch context shared by every chunk.
pub(crate) struct LoadCtx {
    pub connection: String,
    pub sync_id: String,
    pub seen: bson::DateTime,
    /// This batch's write token (see the module docs); set by [`prepare`].
    pub token: i64,
    /// Talking to nx-27017: add [`noop_pull`] to every update.
    pub stand_in: bool,
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
    /// The `$set` part of the full statement (without the tokens).
    pub set: RawDocumentBuf,
    /// The record has raw data (else `raw` is unset).
    pub has_raw: bool,
}

impl Item {
    /// An upper bound on the full statement's size in the `updates` array.
    fn size(&self, ctx: &LoadCtx) -> usize {
        self.set.as_bytes().len()
            + 2 * (ctx.connection.len() + self.source_id.len())
            + FULL_STATEMENT_OVERHEAD
            + STATEMENT_OVERHEAD
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
    keys: Vec<String>,
    refs: Vec<String>,
    derived: i32,
    last_sync_id: &'a str,
}

pub(crate) fn key_filter(connection: &str, kind: AssetKind, source_id: &str) -> RawDocumentBuf {
    rawdoc! {
        "connection": { "$eq": connection },
        "kind": { "$eq": kind.as_str() },
        "source_id": { "$eq": source_id },
    }
}

/// Encode one asset's `$set` part, or reject it.
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
        keys: asset.correlation_keys().iter().map(|(k, v)| key_string(*k, v)).collect(),
        refs: asset
            .references()
            .iter()
            .map(|(_, r)| ref_string(r.connection_or(&ctx.connection), r.kind, &r.source_id))
            .collect(),
        derived: DERIVED_VERSION,
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
    Ok(set)
}

/// The full upsert statement of `item`. `changed`: what this write counts the
/// (first occurrence of the) asset as when it matches a stored document,
/// recorded in `write_changed` for a retry to find.
fn full_statement(ctx: &LoadCtx, item: &Item, changed: bool) -> RawDocumentBuf {
    let mut set = item.set.clone();
    set.append("write_token", ctx.token);
    set.append("write_changed", changed);
    let mut unset = rawdoc! { "stale_since": "" };
    if !item.has_raw {
        unset.append("raw", "");
    }
    let mut u = rawdoc! {
        "$setOnInsert": { "first_seen": ctx.seen, "insert_token": ctx.token },
        "$set": set,
        // Forward only: a late write of an older run keeps the newer time.
        "$max": { "last_seen": ctx.seen },
        "$unset": unset,
    };
    if ctx.stand_in {
        u.append("$pull", noop_pull());
    }
    rawdoc! {
        "q": key_filter(&ctx.connection, item.kind, &item.source_id),
        "u": u,
        "upsert": true,
        "multi": false,
    }
}

/// 64-bit FNV-1a over `parts`, each followed by a 0xff separator.
fn fnv1a64(hash: &mut u64, parts: &[&[u8]]) {
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            *hash ^= u64::from(*b);
            *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Dedupe, hash and encode a batch, and compute its write token into `ctx.token`
/// (CPU work: run it on the blocking pool).
pub(crate) fn prepare(assets: &[Asset], ctx: &mut LoadCtx, max_document_bytes: usize) -> Prepared {
    let mut items: Vec<Item> = Vec::with_capacity(assets.len());
    let mut index: HashMap<(AssetKind, String), usize> = HashMap::with_capacity(assets.len());
    let mut rejected = Vec::new();
    let mut token = 0xcbf2_9ce4_8422_2325_u64;
    fnv1a64(
        &mut token,
        &[ctx.connection.as_bytes(), ctx.sync_id.as_bytes(), &ctx.seen.timestamp_millis().to_le_bytes()],
    );
    for asset in assets {
        let hash = asset.content_hash();
        fnv1a64(&mut token, &[asset.kind().as_str().as_bytes(), asset.source_id().as_bytes(), hash.as_bytes()]);
        let set = match encode(asset, &hash, ctx, max_document_bytes) {
            Ok(set) => set,
            Err(reject) => {
                rejected.push(reject);
                continue;
            }
        };
        let kind = asset.kind();
        let has_raw = asset.raw.is_some();
        match index.get(&(kind, asset.source_id().to_string())) {
            Some(&i) => {
                let item = &mut items[i];
                if item.hash == hash {
                    item.extra_unchanged += 1;
                } else {
                    item.extra_updated += 1;
                }
                item.hash = hash;
                item.stream = asset.stream.clone();
                item.set = set;
                item.has_raw = has_raw;
            }
            None => {
                index.insert((kind, asset.source_id().to_string()), items.len());
                items.push(Item {
                    kind,
                    source_id: asset.source_id().to_string(),
                    stream: asset.stream.clone(),
                    first_hash: hash.clone(),
                    hash,
                    extra_updated: 0,
                    extra_unchanged: 0,
                    set,
                    has_raw,
                });
            }
        }
    }
    ctx.token = token as i64;
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
    Done(Counted),
    Rejected(Reject),
    /// A light statement may have missed: write it again in full, now.
    RedoFull,
    /// Transient per-statement failure: retry after backoff.
    Retry(String),
    /// Duplicate key: retry once, then reject.
    DuplicateKey(String),
}

/// How the first occurrence of an item counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Inserted,
    Updated,
    Unchanged,
}

impl Counted {
    fn add_to(self, item: &Item, outcome: &mut LoadOutcome) {
        match self {
            Counted::Inserted => outcome.inserted += 1,
            Counted::Updated => outcome.updated += 1,
            Counted::Unchanged => outcome.unchanged += 1,
        }
        outcome.updated += item.extra_updated;
        outcome.unchanged += item.extra_unchanged;
    }
}

/// What the pre-read found for one key.
#[derive(Debug, Default)]
struct Stored {
    hash: String,
    /// The `derived` version of the stored document (0: written before keys and references).
    derived: i32,
    insert_token: Option<i64>,
    write_token: Option<i64>,
    write_changed: bool,
}

impl Stored {
    /// How an earlier attempt of this very batch counted the item, if one wrote it
    /// and nothing changed it since.
    fn counted_by_this_batch(&self, item: &Item, token: i64) -> Option<Counted> {
        if self.hash != item.hash {
            return None;
        }
        if self.insert_token == Some(token) {
            Some(Counted::Inserted)
        } else if self.write_token == Some(token) {
            Some(if self.write_changed { Counted::Updated } else { Counted::Unchanged })
        } else {
            None
        }
    }
}

/// The first occurrence compared with what is stored.
fn first_vs_stored(item: &Item, stored: Option<&Stored>) -> Counted {
    match stored {
        Some(s) if s.hash == item.first_hash => Counted::Unchanged,
        _ => Counted::Updated,
    }
}

fn as_token(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        _ => None,
    }
}

impl MongoStore {
    /// Rejected records the vendor still has (`LoadBatch::seen`): their
    /// stored assets get `last_seen` moved forward (`$max`), this sync's id,
    /// and no stale mark; contents are left alone. One `updateMany` per kind
    /// (idempotent, so retried as it is).
    async fn touch(
        &self,
        connection: &str,
        sync_id: &str,
        seen_at: chrono::DateTime<chrono::Utc>,
        keys: &[(AssetKind, String)],
        stand_in: bool,
    ) -> Result<(), StoreError> {
        let seen = bson::DateTime::from_millis(seen_at.timestamp_millis());
        let mut by_kind: std::collections::BTreeMap<&'static str, Vec<&str>> = Default::default();
        for (kind, id) in keys {
            by_kind.entry(kind.as_str()).or_default().push(id);
        }
        for (kind, ids) in by_kind {
            let filter =
                doc! { "connection": { "$eq": connection }, "kind": { "$eq": kind }, "source_id": { "$in": ids } };
            let mut update = doc! {
                "$max": { "last_seen": seen },
                "$set": { "last_sync_id": sync_id },
                "$unset": { "stale_since": "" },
            };
            if stand_in {
                update.insert("$pull", doc! { NOOP_PULL_FIELD: { "$in": [] } });
            }
            self.retry("refresh rejected records' assets", || {
                let (filter, update) = (filter.clone(), update.clone());
                async move {
                    self.inner
                        .assets
                        .update_many(filter, update)
                        .await
                        .map_err(|e| classify("refresh rejected records' assets", &e))?;
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }

    pub(crate) async fn upsert_batch(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        if batch.assets.is_empty() && batch.seen.is_empty() {
            return Ok(LoadOutcome::default());
        }
        self.ensure_indexes().await?;
        let stand_in = self.server_kind().await?.stand_in();
        if !batch.seen.is_empty() {
            self.touch(&batch.connection, &batch.sync_id, batch.seen_at, &batch.seen, stand_in).await?;
        }
        if batch.assets.is_empty() {
            return Ok(LoadOutcome::default());
        }
        let mut ctx = LoadCtx {
            connection: batch.connection,
            sync_id: batch.sync_id,
            seen: bson::DateTime::from_millis(batch.seen_at.timestamp_millis()),
            token: 0,
            stand_in,
        };
        let max_document_bytes = self.inner.opts.max_document_bytes;
        let assets = batch.assets;
        // Encoding a batch is CPU work: below the runtime, as in SQLite's store.
        let (ctx, prepared) = corral_core::spawn_yielding(move || {
            let prepared = prepare(&assets, &mut ctx, max_document_bytes);
            (ctx, prepared)
        })
        .await
        .map_err(|e| StoreError::Permanent(format!("preparing the MongoDB batch failed: {e}")))?;

        let Prepared { items, rejected } = prepared;
        let mut outcome = LoadOutcome { rejected, ..Default::default() };
        let sizes: Vec<usize> = items.iter().map(|i| i.size(&ctx)).collect();
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
        let total_chunks = chunks.len();
        let ctx = &ctx;
        // Chunks already sent run to their end (acknowledged, or their retries
        // used up) even when another fails, so nothing is abandoned half-way;
        // once one has failed no further chunk starts (the server is likely
        // gone: waiting out each chunk's retries would only delay the error).
        let mut queue = chunks.into_iter();
        let mut running = futures::stream::FuturesUnordered::new();
        let mut failed: Vec<StoreError> = Vec::new();
        loop {
            while failed.is_empty() && running.len() < self.inner.opts.max_in_flight.max(1) {
                match queue.next() {
                    Some(chunk) => running.push(self.load_chunk(ctx, chunk)),
                    None => break,
                }
            }
            match running.next().await {
                Some(Ok(chunk_outcome)) => outcome.add(chunk_outcome),
                Some(Err(e)) => failed.push(e),
                None => break,
            }
        }
        if failed.is_empty() {
            return Ok(outcome);
        }
        let first = failed.swap_remove(0);
        let others = format!(
            " ({} of {total_chunks} update commands of this batch failed and {} were not sent; the others \
             stored {} record(s): {} inserted, {} updated, {} unchanged)",
            failed.len() + 1,
            queue.len(),
            outcome.stored(),
            outcome.inserted,
            outcome.updated,
            outcome.unchanged
        );
        let first = match first {
            StoreError::Transient(m) => StoreError::Transient(m + &others),
            StoreError::Permanent(m) => StoreError::Permanent(m + &others),
            StoreError::Config(m) => StoreError::Config(m + &others),
            StoreError::Corrupt(m) => StoreError::Corrupt(m + &others),
            partial @ StoreError::Partial { .. } => partial,
        };
        if outcome.stored() == 0 && outcome.rejected.is_empty() {
            return Err(first);
        }
        // The run's counts include what the acknowledged commands stored.
        Err(StoreError::Partial { stored: outcome, source: Box::new(first) })
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
                    Disposition::Done(counted) => counted.add_to(&p.item, &mut outcome),
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

    /// What is stored under the pending items' keys: content hash and tokens,
    /// read from the primary (see [`super::Inner::assets_primary`]).
    async fn existing(
        &self,
        ctx: &LoadCtx,
        pending: &[Pending],
    ) -> Result<HashMap<(AssetKind, String), Stored>, StoreError> {
        let mut existing = HashMap::with_capacity(pending.len());
        for kind in AssetKind::ALL {
            let ids: Vec<&str> =
                pending.iter().filter(|p| p.item.kind == kind).map(|p| p.item.source_id.as_str()).collect();
            if ids.is_empty() {
                continue;
            }
            // One reply: keys are unique, so at most `ids.len()` documents
            // match; with that as the limit MongoDB closes the cursor with
            // the first batch (a batch size equal to the matches alone can
            // leave it open, costing a `getMore` that returns nothing).
            let (limit, batch_size) = one_reply(ids.len());
            let filter = doc! {
                "connection": { "$eq": &ctx.connection },
                "kind": { "$eq": kind.as_str() },
                "source_id": { "$in": ids },
            };
            let mut cursor = self
                .inner
                .assets_primary
                .find(filter)
                .projection(doc! {
                    "_id": 0, "source_id": 1, "content_hash": 1, "insert_token": 1, "write_token": 1, "write_changed": 1,
                    "derived": 1,
                })
                .limit(limit)
                .batch_size(batch_size)
                .await
                .map_err(|e| classify("upsert: read existing hashes", &e))?;
            while let Some(doc) = cursor.try_next().await.map_err(|e| classify("upsert: read existing hashes", &e))? {
                let Ok(source_id) = doc.get_str("source_id") else { continue };
                let stored = Stored {
                    // A document without a hash (written by something else) is always rewritten.
                    hash: doc.get_str("content_hash").unwrap_or_default().to_string(),
                    derived: doc.get_i32("derived").unwrap_or(0),
                    insert_token: as_token(doc.get("insert_token")),
                    write_token: as_token(doc.get("write_token")),
                    write_changed: doc.get_bool("write_changed").unwrap_or(false),
                };
                existing.insert((kind, source_id.to_string()), stored);
            }
        }
        Ok(existing)
    }

    /// Of `items` (whose full statements matched documents the pre-read did not
    /// see), those an earlier attempt of this batch inserted.
    async fn inserted_by_this_batch(
        &self,
        ctx: &LoadCtx,
        items: &[&Item],
    ) -> Result<HashSet<(AssetKind, String)>, StoreError> {
        let mut found = HashSet::new();
        for kind in AssetKind::ALL {
            let ids: Vec<&str> = items.iter().filter(|i| i.kind == kind).map(|i| i.source_id.as_str()).collect();
            if ids.is_empty() {
                continue;
            }
            let (limit, batch_size) = one_reply(ids.len());
            let filter = doc! {
                "connection": { "$eq": &ctx.connection },
                "kind": { "$eq": kind.as_str() },
                "source_id": { "$in": ids },
                "insert_token": { "$eq": ctx.token },
            };
            let mut cursor = self
                .inner
                .assets_primary
                .find(filter)
                .projection(doc! { "_id": 0, "source_id": 1 })
                .limit(limit)
                .batch_size(batch_size)
                .await
                .map_err(|e| classify("upsert: check concurrent inserts", &e))?;
            while let Some(doc) =
                cursor.try_next().await.map_err(|e| classify("upsert: check concurrent inserts", &e))?
            {
                if let Ok(source_id) = doc.get_str("source_id") {
                    found.insert((kind, source_id.to_string()));
                }
            }
        }
        Ok(found)
    }

    /// One attempt at writing the pending items: read what is stored, send one `update` command.
    async fn write_attempt(&self, ctx: &LoadCtx, pending: &[Pending]) -> Result<Vec<Disposition>, StoreError> {
        let existing = self.existing(ctx, pending).await?;

        let mut updates = RawArrayBuf::new();
        let mut light = Vec::with_capacity(pending.len());
        // How each item counts if its statement matches a stored document.
        let mut if_matched: Vec<Counted> = Vec::with_capacity(pending.len());
        let mut seen_before = Vec::with_capacity(pending.len());
        for p in pending {
            let stored = existing.get(&(p.item.kind, p.item.source_id.clone()));
            let counted = stored
                .and_then(|s| s.counted_by_this_batch(&p.item, ctx.token))
                .unwrap_or_else(|| first_vs_stored(&p.item, stored));
            let is_light =
                !p.force_full && stored.is_some_and(|s| s.hash == p.item.hash && s.derived >= DERIVED_VERSION);
            if is_light {
                updates.push(light_statement(ctx, &p.item));
            } else {
                updates.push(full_statement(ctx, &p.item, counted == Counted::Updated));
            }
            light.push(is_light);
            if_matched.push(counted);
            seen_before.push(stored.is_some());
        }
        let mut command = rawdoc! {
            "update": self.inner.opts.collections.assets.as_str(),
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

        // Full statements that matched a document the pre-read did not see: a
        // concurrent writer inserted it, perhaps an earlier attempt of this batch.
        let unseen: Vec<&Item> = (0..pending.len())
            .filter(|&i| !light[i] && !seen_before[i] && !reply.errors.contains_key(&i) && !reply.upserted.contains(&i))
            .map(|i| &pending[i].item)
            .collect();
        let ours = if unseen.is_empty() { HashSet::new() } else { self.inserted_by_this_batch(ctx, &unseen).await? };

        let mut out = Vec::with_capacity(pending.len());
        for (i, p) in pending.iter().enumerate() {
            let item = &p.item;
            if let Some((code, msg)) = reply.errors.get(&i) {
                out.push(write_error(item, *code, msg));
                continue;
            }
            let counted = if light[i] {
                if !light_all_matched {
                    out.push(Disposition::RedoFull);
                    continue;
                }
                if_matched[i]
            } else if reply.upserted.contains(&i) || ours.contains(&(item.kind, item.source_id.clone())) {
                Counted::Inserted
            } else {
                if_matched[i]
            };
            out.push(Disposition::Done(counted));
        }
        Ok(out)
    }
}

/// The statement for an asset whose stored content hash equals its own: no
/// fields sent; the hash in the filter makes it miss if the content changed meanwhile.
fn light_statement(ctx: &LoadCtx, item: &Item) -> RawDocumentBuf {
    let mut q = key_filter(&ctx.connection, item.kind, &item.source_id);
    q.append("content_hash", rawdoc! { "$eq": item.hash.as_str() });
    let mut u = rawdoc! {
        "$set": {
            "stream": item.stream.as_str(),
            "last_sync_id": ctx.sync_id.as_str(),
        },
        "$max": { "last_seen": ctx.seen },
        "$unset": { "stale_since": "" },
    };
    if ctx.stand_in {
        u.append("$pull", noop_pull());
    }
    rawdoc! {
        "q": q,
        "u": u,
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

/// `limit` and `batchSize` of a `find` for at most `n` documents (by unique
/// key), so that they come back in one reply with the cursor closed. The
/// projected fields take under 200 bytes a document, so the default 1,000
/// statements per command answer in far less than a reply's 16 MiB; a much
/// larger `max_batch_docs` can still need `getMore`s, which the cursor sends.
fn one_reply(n: usize) -> (i64, u32) {
    let n = n.max(1);
    (i64::try_from(n).unwrap_or(i64::MAX), u32::try_from(n + 1).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::asset::Device;

    fn ctx() -> LoadCtx {
        LoadCtx {
            connection: "c".into(),
            sync_id: "s".into(),
            seen: bson::DateTime::from_millis(0),
            token: 0,
            stand_in: false,
        }
    }

    fn dev(id: &str, host: &str) -> Asset {
        Asset::device("hosts", Device { source_id: id.into(), hostname: Some(host.into()), ..Default::default() })
    }

    fn token_of(assets: Vec<Asset>, sync_id: &str) -> i64 {
        let mut c = LoadCtx { sync_id: sync_id.into(), ..ctx() };
        prepare(&assets, &mut c, 16 << 20);
        c.token
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
        let p = prepare(&[dev("a", "one"), dev("b", "x"), dev("a", "two"), dev("a", "two")], &mut ctx(), 16 << 20);
        assert!(p.rejected.is_empty());
        assert_eq!(p.items.len(), 2);
        let a = &p.items[0];
        assert_eq!(a.source_id, "a");
        assert_eq!((a.extra_updated, a.extra_unchanged), (1, 1));
        assert_eq!(a.hash, dev("a", "two").content_hash());
        assert_eq!(a.first_hash, dev("a", "one").content_hash());
        let host = a.set.get_document("fields").and_then(|f| f.get_str("hostname")).expect("hostname");
        assert_eq!(host, "two");
    }

    #[test]
    fn write_token_identifies_the_batch() {
        let batch = || vec![dev("a", "one"), dev("b", "two")];
        assert_eq!(token_of(batch(), "s"), token_of(batch(), "s"), "a retried batch has the same token");
        assert_ne!(token_of(batch(), "s"), token_of(batch(), "s2"), "another sync");
        assert_ne!(token_of(batch(), "s"), token_of(vec![dev("a", "one"), dev("b", "2")], "s"), "other content");
        assert_ne!(token_of(batch(), "s"), token_of(vec![dev("a", "one")], "s"), "a part of the batch");
    }

    #[test]
    fn statements_for_mongodb_carry_no_stand_in_operator() {
        let mut c = ctx();
        let p = prepare(&[dev("a", "one")], &mut c, 16 << 20);
        let item = &p.items[0];
        let ops = |stmt: &RawDocumentBuf| -> Vec<String> {
            let u = stmt.get_document("u").expect("u");
            u.iter().map(|e| e.expect("element").0.to_string()).collect()
        };
        assert_eq!(ops(&full_statement(&c, item, true)), ["$setOnInsert", "$set", "$max", "$unset"]);
        assert_eq!(ops(&light_statement(&c, item)), ["$set", "$max", "$unset"]);
        c.stand_in = true;
        assert_eq!(ops(&full_statement(&c, item, true)), ["$setOnInsert", "$set", "$max", "$unset", "$pull"]);
        assert_eq!(ops(&light_statement(&c, item)), ["$set", "$max", "$unset", "$pull"]);
    }

    #[test]
    fn full_statement_records_the_batch() {
        let mut c = ctx();
        let p = prepare(&[dev("a", "one")], &mut c, 16 << 20);
        let stmt = full_statement(&c, &p.items[0], false);
        let u = stmt.get_document("u").expect("u");
        let on_insert = u.get_document("$setOnInsert").expect("$setOnInsert");
        assert_eq!(on_insert.get_i64("insert_token").expect("insert_token"), c.token);
        let set = u.get_document("$set").expect("$set");
        assert_eq!(set.get_i64("write_token").expect("write_token"), c.token);
        assert!(!set.get_bool("write_changed").expect("write_changed"));
        assert_eq!(u.get_document("$unset").expect("$unset").iter().count(), 2, "stale_since and raw");
    }

    #[test]
    fn size_bounds_the_statement() {
        let mut c = LoadCtx { stand_in: true, connection: "a-connection-name".into(), ..ctx() };
        let big = dev("big", &"h".repeat(5000)).with_raw(Some(serde_json::json!({"k": "v".repeat(3000)})));
        let p = prepare(&[dev("a", "one"), big, dev(&"x".repeat(300), "long id")], &mut c, 16 << 20);
        for item in &p.items {
            let actual = full_statement(&c, item, true).as_bytes().len() + 8;
            assert!(item.size(&c) >= actual, "{} < {actual} for {}", item.size(&c), item.source_id);
            assert!(item.size(&c) < actual + 600, "{} far above {actual}", item.size(&c));
        }
    }

    #[test]
    fn a_retry_counts_what_this_batch_wrote() {
        let mut c = ctx();
        let p = prepare(&[dev("a", "one")], &mut c, 16 << 20);
        let item = &p.items[0];
        let stored = |insert: Option<i64>, write: Option<i64>, changed: bool| Stored {
            hash: item.hash.clone(),
            derived: DERIVED_VERSION,
            insert_token: insert,
            write_token: write,
            write_changed: changed,
        };
        let t = c.token;
        assert_eq!(stored(Some(t), Some(t), true).counted_by_this_batch(item, t), Some(Counted::Inserted));
        assert_eq!(stored(Some(1), Some(t), true).counted_by_this_batch(item, t), Some(Counted::Updated));
        assert_eq!(stored(Some(1), Some(t), false).counted_by_this_batch(item, t), Some(Counted::Unchanged));
        assert_eq!(stored(Some(1), Some(2), true).counted_by_this_batch(item, t), None, "another batch wrote it");
        let changed_since = Stored { hash: "other".into(), ..stored(Some(t), Some(t), true) };
        assert_eq!(changed_since.counted_by_this_batch(item, t), None, "changed since: counted afresh");
    }

    #[test]
    fn oversized_is_rejected_with_its_record() {
        let big = dev("big", &"x".repeat(2000));
        let p = prepare(&[dev("a", "one"), big], &mut ctx(), 1000);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].record, "device big");
        assert_eq!(p.rejected[0].reason, "document_too_large");
    }

    #[test]
    fn unencodable_raw_is_rejected() {
        let bad = dev("u64", "h").with_raw(Some(serde_json::json!({"n": u64::MAX})));
        let p = prepare(&[bad], &mut ctx(), 16 << 20);
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
