//! SQLite store: the embedded default (`./corral.db`), no server needed.
//!
//! - One writer connection and (for file databases) one read-only reader
//!   connection, each behind a `std::sync::Mutex`. Nothing runs on the
//!   runtime's worker threads: the writer's work runs on the store's own
//!   writer thread (`WriterThread`, so SQLite's memory stays in one thread's
//!   heap), a batch's rows are prepared and the reader's queries run on
//!   tokio's blocking pool, and every one of these threads gives way to the
//!   runtime (`corral_core::yield_cpu_to_the_runtime`: niceness 10,
//!   `SCHED_BATCH`).
//!   In WAL mode the reader sees the last committed state, so `runs`,
//!   `assets` and `load_checkpoint` never wait behind a long load.
//! - WAL journal, `synchronous=NORMAL`, a busy timeout; write transactions
//!   start `IMMEDIATE` so two processes on one file queue instead of failing.
//! - The WAL is checkpointed on a thread of the store's own (see
//!   `start_checkpointer`), not inside the commit that filled it: a load
//!   goes on while the WAL is copied into the database and fsynced.
//! - Timestamps are stored as fixed-width RFC 3339 UTC text with nanoseconds
//!   (`2024-05-01T12:00:00.000000000Z`), so text order is time order.
//! - The schema is created idempotently; `meta.schema_version` records its version.
//! - An upsert is one transaction per batch, its assets sorted by key: a
//!   search of the batch's keys (statements of up to 256), then cached
//!   multi-row `INSERT .. ON CONFLICT (id) DO UPDATE .. RETURNING`
//!   statements of up to 256 assets: the conflict clause compares the stored
//!   content hash and records in `assets.last_change` whether the row was
//!   inserted, updated or unchanged.
//! - Assets are keyed by an integer `id` (`INTEGER PRIMARY KEY`, stable:
//!   `VACUUM` keeps it). New rows are appended to the table (the next id)
//!   instead of landing at random places of a clustered text key (vendor ids
//!   are random): a commit writes every page it dirtied, so random placement
//!   cost a page per asset. For the same reason there is no unique index on
//!   `(connection, kind, source_id)` (schema version 4): at a million assets
//!   it cost nearly a page per new key. An asset's row is found by a 64-bit
//!   hash of its kind and source id (`asset_key_hash`) in two levels:
//!   `asset_key_recent (h, id)`, the keys added since the last merge (a few
//!   hundred pages, so a batch dirties few), and `asset_key (h, id)`, into
//!   which they are merged in hash order once this process has added
//!   [`SqliteOptions::key_recent_rows`] (each page of the large level is
//!   then written at most once per merge). The store keeps keys unique: the
//!   writer holds an `IMMEDIATE` transaction while it searches the batch's
//!   keys in both levels (each candidate confirmed by the row's own
//!   connection, kind and source id, so a colliding hash or another
//!   connection's asset is never taken), gives each new key the next id,
//!   once however often the batch repeats it, and upserts by id. Triggers
//!   add a new row's key to the recent level and delete a deleted row's.
//! - Assets are listed by connection, kind and id (the `(connection, kind)`
//!   index, whose entries end with the id, and which new rows append to):
//!   in the order they were first stored, a batch's new assets in key
//!   order. Each listed asset carries its id as its `ListPosition`, so a
//!   page can start after an asset deleted since.
//! - Stale handling uses the `(connection, stream)` index, which upserts never
//!   rewrite (see `upsert_sql`), and a partial index on `stale_since` for deletes.
//! - Correlation keys and references are found through one lookup index,
//!   `asset_lookup (h, asset)`: `h` a 64-bit hash of the key (type and
//!   value) or of the asset referred to ([`lookup_hash`]). Each asset's
//!   hashes are in its `lookup` column. New rows go first to
//!   `asset_lookup_log (asset, h)`, which grows in asset order (appends):
//!   the writer logs a new asset's hashes itself, with multi-row inserts
//!   after each upsert statement (a trigger doing it from the `lookup`
//!   column, as version 4 did, cost about a tenth of the writer's CPU:
//!   parsing the JSON back and running a trigger program per asset);
//!   triggers replace an asset's rows when its `lookup` column changes and
//!   delete them when it is deleted (stale deletes). Once this process has logged
//!   [`SqliteOptions::lookup_log_rows`] rows, the log is merged into the index
//!   in hash order, in the transaction of the batch that crossed the bound.
//!   Writing each new key at its random place in a large index would again
//!   cost about a page per key per commit; the merge writes each page of the
//!   index at most once per merge. A lookup reads both (the log by a scan
//!   bounded by the same setting).
//! - Schema versions: 1 (assets, runs, checkpoints, rejects, leases), 2 (+
//!   `asset_keys`, `asset_refs`), 3 (assets by integer id, the lookup index
//!   and its log instead of version 2's tables), 4 (no unique key index;
//!   the two key levels), 5 (no insert trigger on the lookup log). Opening
//!   an older database for writing migrates it in place, in one
//!   transaction: from version 4 the trigger is dropped, from version 3 the table is rebuilt
//!   keeping every id, from 1 or 2 also deriving the lookup hashes of every
//!   stored asset from its fields. A read-only open leaves it as it is and
//!   lists it in key order: on version 1 or 2 everything but `--where` on a
//!   correlation key and `--points-at` works, and those say to run a sync once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use corral_core::adapter::{Checkpoint, Reject};
use corral_core::asset::{Asset, AssetKind};
use corral_core::store::{
    AssetCount, AssetCursor, AssetFilter, AssetKey, Lease, LeaseGrant, ListPosition, LoadBatch, LoadOutcome, Predicate,
    RunQuery, Scalar, StaleOutcome, StalePolicy, StaleScope, Store, StoreError, StoredAsset, StoredReject,
};
use corral_core::summary::RunSummary;
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 5;

/// How long a statement waits for another connection's lock before failing
/// with `SQLITE_BUSY` (reported as [`StoreError::Transient`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Tables every version has, unchanged since version 1.
const SCHEMA_BASE: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    connection TEXT NOT NULL,
    stream     TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (connection, stream)
);
CREATE TABLE IF NOT EXISTS runs (
    sync_id    TEXT PRIMARY KEY NOT NULL,
    connection TEXT NOT NULL,
    started_at TEXT NOT NULL,
    status     TEXT NOT NULL,
    summary    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started_at ON runs (started_at, sync_id);
CREATE INDEX IF NOT EXISTS runs_connection ON runs (connection, started_at, sync_id);
CREATE TABLE IF NOT EXISTS rejects (
    id         INTEGER PRIMARY KEY,
    sync_id    TEXT NOT NULL,
    connection TEXT NOT NULL,
    stream     TEXT NOT NULL,
    record     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    raw        TEXT
);
CREATE INDEX IF NOT EXISTS rejects_sync_id ON rejects (sync_id, id);
CREATE TABLE IF NOT EXISTS leases (
    connection  TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
";

/// Since version 4: assets keyed by an integer id, appended (rows are not inserted
/// at random positions of a clustered text key), without a unique index on
/// their key: `asset_key` and `asset_key_recent` find an asset's row by a
/// 64-bit hash of its kind and source id (see the module docs), and the
/// store's code keeps keys unique. One lookup index of 64-bit hashes for
/// correlation keys and references, written through an append-mostly log.
const SCHEMA_ASSET_TABLES: &str = "
CREATE TABLE IF NOT EXISTS assets (
    id           INTEGER PRIMARY KEY,
    connection   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    stream       TEXT NOT NULL,
    fields       TEXT NOT NULL,
    raw          TEXT,
    content_hash TEXT NOT NULL,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    last_sync_id TEXT NOT NULL,
    stale_since  TEXT,
    -- What the last upsert did: 0 inserted, 1 updated, 2 unchanged; +4 stream changed.
    last_change  INTEGER NOT NULL DEFAULT 0,
    -- The lookup hashes of the asset's correlation keys and references (a
    -- JSON array): what the writer logs for a new asset, and what the
    -- triggers below replace when it changes and delete with the asset.
    lookup       TEXT NOT NULL DEFAULT '[]',
    -- The hash of (kind, source_id) under which asset_key(_recent) find the row.
    key_hash     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS assets_kind ON assets (connection, kind);
CREATE INDEX IF NOT EXISTS assets_stream ON assets (connection, stream);
CREATE INDEX IF NOT EXISTS assets_stale_since ON assets (connection, stream, stale_since) WHERE stale_since IS NOT NULL;
CREATE TABLE IF NOT EXISTS asset_key (
    h  INTEGER NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (h, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS asset_key_recent (
    h  INTEGER NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (h, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS asset_lookup (
    h     INTEGER NOT NULL,
    asset INTEGER NOT NULL,
    PRIMARY KEY (h, asset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS asset_lookup_log (
    asset INTEGER NOT NULL,
    h     INTEGER NOT NULL,
    PRIMARY KEY (asset, h)
) WITHOUT ROWID;
";

/// What keeps the key levels and the lookup index in step with `assets`.
const SCHEMA_ASSET_TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS assets_key_insert AFTER INSERT ON assets BEGIN
    INSERT INTO asset_key_recent (h, id) VALUES (new.key_hash, new.id);
END;
CREATE TRIGGER IF NOT EXISTS assets_key_delete AFTER DELETE ON assets BEGIN
    DELETE FROM asset_key_recent WHERE h = old.key_hash AND id = old.id;
    DELETE FROM asset_key WHERE h = old.key_hash AND id = old.id;
END;
CREATE TRIGGER IF NOT EXISTS assets_lookup_update AFTER UPDATE OF lookup ON assets
WHEN old.lookup IS NOT new.lookup BEGIN
    DELETE FROM asset_lookup WHERE asset = old.id AND h IN (SELECT value FROM json_each(old.lookup));
    DELETE FROM asset_lookup_log WHERE asset = old.id;
    INSERT OR IGNORE INTO asset_lookup_log (asset, h) SELECT new.id, value FROM json_each(new.lookup);
END;
CREATE TRIGGER IF NOT EXISTS assets_lookup_delete AFTER DELETE ON assets BEGIN
    DELETE FROM asset_lookup WHERE asset = old.id AND h IN (SELECT value FROM json_each(old.lookup));
    DELETE FROM asset_lookup_log WHERE asset = old.id;
END;
";

/// Move the recent keys into the key index, in hash order: every page of
/// the index is written at most once per merge, however large it is.
const MERGE_KEYS_SQL: &str = "
INSERT OR IGNORE INTO asset_key (h, id) SELECT h, id FROM asset_key_recent ORDER BY h, id;
DELETE FROM asset_key_recent;
";

/// `rows` rows of the lookup index in one statement: `?1`, `?2` the first
/// row's hash and asset, and so on.
fn lookup_insert_sql(rows: usize) -> String {
    format!("INSERT OR IGNORE INTO asset_lookup (h, asset) VALUES {}", pair_values(rows))
}

/// `rows` rows of the lookup log in one statement: `?1`, `?2` the first
/// row's asset and hash, and so on.
fn log_insert_sql(rows: usize) -> String {
    format!("INSERT OR IGNORE INTO asset_lookup_log (asset, h) VALUES {}", pair_values(rows))
}

/// `(?1,?2),(?3,?4)…` for `rows` rows.
fn pair_values(rows: usize) -> String {
    let values: Vec<String> = (0..rows).map(|row| format!("(?{},?{})", 2 * row + 1, 2 * row + 2)).collect();
    values.join(",")
}

static LOOKUP_INSERT_SQL: OnceLock<Vec<String>> = OnceLock::new();
static LOG_INSERT_SQL: OnceLock<Vec<String>> = OnceLock::new();

/// Insert `rows` (pairs of integers) with `build`'s multi-row statements,
/// up to [`STATEMENT_ROWS_MAX`] rows each.
fn insert_pairs(
    tx: &Connection,
    texts: &'static OnceLock<Vec<String>>,
    build: fn(usize) -> String,
    rows: &[(i64, i64)],
    what: &str,
) -> Result<(), StoreError> {
    let mut start = 0;
    while start < rows.len() {
        let n = statement_rows(rows.len() - start);
        let mut insert = tx.prepare_cached(statement_for(texts, build, n)).ctx(what)?;
        for (i, (a, b)) in rows[start..start + n].iter().enumerate() {
            insert.raw_bind_parameter(2 * i + 1, a).ctx(what)?;
            insert.raw_bind_parameter(2 * i + 2, b).ctx(what)?;
        }
        insert.raw_execute().ctx(what)?;
        start += n;
    }
    Ok(())
}

/// Move the log into the lookup index, in hash order: every page of the
/// index is written at most once per merge, however large the table is.
/// The log is sorted here rather than by SQLite (`INSERT .. SELECT ..
/// ORDER BY h`): its sorter took about 2.4 µs a row (1.2 s for a log of
/// 500,000, six times in a million-device load), a sort of the rows read
/// out of the log a fraction of that. The log's rows are held in memory for
/// the merge, 16 bytes each: 8 MB at the default
/// [`SqliteOptions::lookup_log_rows`]; a migration's log holds every stored
/// asset's hashes (SQLite's sorter would hold them in memory too, the store
/// keeping temporary storage there, and in more bytes a row). `expected` is
/// the number of rows this process logged since its last merge: the rows'
/// memory is taken at once rather than doubled as they are read (a doubling
/// vector holds up to one and a half times the log while it grows).
fn merge_lookup_log(tx: &Connection, expected: usize) -> Result<(), StoreError> {
    let mut rows: Vec<(i64, i64)> = Vec::with_capacity(expected);
    {
        let mut read = tx.prepare_cached("SELECT h, asset FROM asset_lookup_log").ctx("read the lookup log")?;
        let mut log = read.raw_query();
        while let Some(r) = log.next().ctx("read the lookup log")? {
            rows.push((r.get(0).ctx("read the lookup log")?, r.get(1).ctx("read the lookup log")?));
        }
    }
    rows.sort_unstable();
    insert_pairs(tx, &LOOKUP_INSERT_SQL, lookup_insert_sql, &rows, "merge the lookup log")?;
    tx.execute("DELETE FROM asset_lookup_log", []).ctx("empty the lookup log")?;
    Ok(())
}

/// The page size of a database the store creates (an existing database keeps
/// its own). 8 KiB rather than SQLite's 4 KiB: a million-device load took
/// about a tenth less CPU (growth bench at 600,000, two interleaved runs:
/// 14.8 / 14.4 against 16.8 / 15.7 CPU s), with half the B-tree pages to
/// search, balance and write a header for (a WAL frame is a page). 1 KiB
/// pages were slower (docs/ARCHITECTURE.md).
pub const PAGE_SIZE: u32 = 8192;

/// Tuning of the SQLite store; [`SqliteOptions::default`] suits most machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Page cache of each connection, in MiB (`PRAGMA cache_size`): the
    /// store's memory, whatever the size of the database. The default, 8,
    /// holds the small key level and the pages a batch dirties; the large
    /// levels are read through the operating system's cache (a million-host
    /// load took about the same CPU with 8 as with 32, its last tenth a
    /// little slower, and 30 MB less RSS; see docs/ARCHITECTURE.md, "Where
    /// RSS at 1M went").
    pub cache_mib: u32,
    /// Rows the lookup log may hold before they are merged into the lookup
    /// index (counted by this process). Larger: fewer merges (less written
    /// per asset on large tables), longer scans of the log by key lookups,
    /// and more memory while a merge sorts the log (16 bytes a row).
    pub lookup_log_rows: u64,
    /// WAL pages after which a commit checkpoints (`PRAGMA wal_autocheckpoint`):
    /// the default, 4,096, is 32 MiB of the [`PAGE_SIZE`] pages of a
    /// database created since December 2026 (16 MiB of an older one's 4 KiB).
    pub wal_autocheckpoint_pages: u32,
    /// Keys `asset_key_recent` may hold before they are merged into
    /// `asset_key` (counted by this process). A batch writes its new keys
    /// into the recent level's pages, a merge rewrites the large level's:
    /// about 30,000 balances the two (see docs/ARCHITECTURE.md).
    pub key_recent_rows: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            cache_mib: 8,
            lookup_log_rows: 500_000,
            wal_autocheckpoint_pages: 4096,
            key_recent_rows: 30_000,
        }
    }
}

/// The 64-bit hash under which a correlation key or a reference is indexed
/// in `asset_lookup`: SipHash-2-4 with fixed keys (a specified algorithm, so
/// the same on every build and platform) over a tagged, separated text.
/// Two different keys share a hash with a chance of about one in 2^64 per
/// pair; a lookup could then list an asset that does not have the key.
fn lookup_hash(parts: &[&str]) -> i64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0x636f_7272_616c_2d6b, 0x6579_732d_7633_0000);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.write_u8(0x1f);
        }
        h.write(part.as_bytes());
    }
    i64::from_ne_bytes(h.finish().to_ne_bytes())
}

fn key_hash(key: &str, value: &str) -> i64 {
    lookup_hash(&["key", key, value])
}

fn ref_hash(connection: &str, kind: &str, source_id: &str) -> i64 {
    lookup_hash(&["ref", connection, kind, source_id])
}

/// The hash under which `asset_key` and `asset_key_recent` find an asset's
/// row. Without the connection, so that a source id can be found whichever
/// connection stored it; the row's own columns tell connections (and the
/// rare colliding keys) apart.
fn asset_key_hash(kind: &str, source_id: &str) -> i64 {
    lookup_hash(&["asset", kind, source_id])
}

/// The `lookup` column of `asset` (its key and reference hashes, sorted,
/// without repeats, as a JSON array), and those hashes.
fn lookup_of(connection: &str, asset: &Asset) -> (String, Vec<i64>) {
    let mut hashes: Vec<i64> = Vec::with_capacity(8);
    asset.for_each_correlation_key(|k, v| hashes.push(key_hash(k.as_str(), v)));
    hashes.extend(
        asset.references().iter().map(|(_, r)| ref_hash(r.connection_or(connection), r.kind.as_str(), &r.source_id)),
    );
    hashes.sort_unstable();
    hashes.dedup();
    let mut out = String::with_capacity(2 + hashes.len() * 21);
    let mut number = itoa::Buffer::new();
    out.push('[');
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(number.format(*h));
    }
    out.push(']');
    (out, hashes)
}

/// The SQLite implementation of [`Store`]. Cheap to clone (shares the connections).
#[derive(Clone)]
pub struct SqliteStore {
    /// Declared before `inner`: when the last clone is dropped, the writer
    /// thread finishes its queued work and ends before the connections close.
    writer_thread: Arc<WriterThread>,
    inner: Arc<Inner>,
}

/// The one thread that runs the writer connection's work.
///
/// Not tokio's blocking pool: there each write could land on another
/// thread, and SQLite's memory (its page cache, its statements) ended up
/// spread over the heaps of every thread that had ever held the writer,
/// each keeping partly used pages. S1 at 1,000,000 hosts peaked about 20 MB
/// higher that way (docs/ARCHITECTURE.md, "Where RSS at 1M went"). The
/// thread gives way to the runtime as the blocking pool's store threads do
/// ([`corral_core::yield_cpu_to_the_runtime`]).
struct WriterThread {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl WriterThread {
    fn start(describe: &str) -> Result<Arc<Self>, StoreError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("corral-sqlite".to_string())
            .spawn(move || {
                corral_core::yield_cpu_to_the_runtime();
                for job in queue {
                    job();
                }
            })
            .map_err(|e| StoreError::Config(format!("cannot start the writer thread of {describe}: {e}")))?;
        Ok(Arc::new(WriterThread { jobs: Some(jobs), thread: Some(thread) }))
    }

    /// Run `f` on the thread, after the work queued before it. A panic in
    /// `f` is an error of this call; the thread goes on with the next job.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        let stopped = || StoreError::Transient("the SQLite writer thread has stopped".to_string());
        self.jobs.as_ref().and_then(|jobs| jobs.send(job).ok()).ok_or_else(stopped)?;
        match rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                Err(StoreError::Permanent(format!("SQLite task panicked: {}", corral_core::panic_message(&panic))))
            }
            Err(_) => Err(stopped()),
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the queued jobs are done.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Inner {
    describe: String,
    /// The database's schema version: [`SCHEMA_VERSION`], or older for a
    /// database opened read-only and not migrated.
    version: i64,
    writer: Mutex<Connection>,
    /// Read-only connection for file databases; `None` in memory (reads use the writer).
    reader: Option<Mutex<Connection>>,
    /// Rows this process added to the lookup log since its last merge (an
    /// estimate: other processes writing the file keep their own counts).
    log_rows: AtomicU64,
    /// Keys this process added to `asset_key_recent` since its last merge
    /// (an estimate, as `log_rows`).
    key_rows: AtomicU64,
    options: SqliteOptions,
    /// The WAL checkpoint thread of a file database ([`start_checkpointer`]).
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

impl Inner {
    /// The writer connection, outside any transaction. A write that panicked
    /// left the lock poisoned and may have left a transaction open (one a
    /// `rusqlite::Transaction` did not guard, which would have rolled back
    /// as it was dropped): it is rolled back here, since nothing of it was
    /// acknowledged, and the connection goes on serving.
    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        let conn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "could not roll back the transaction a failed write left open");
        }
        conn
    }
}

impl Drop for Inner {
    /// Stop the checkpoint thread and wait for it, so that the database's
    /// connections are all closed when the store is (another process, or a
    /// test, may change the file's journal mode right after).
    fn drop(&mut self) {
        let Some(thread) = self.checkpointer.take() else { return };
        let writer = self.writer.get_mut().unwrap_or_else(PoisonError::into_inner);
        // Dropping the hook drops the thread's waker: the thread ends.
        if writer.wal_hook(None::<fn(&mut rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()>>).is_ok() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("db", &self.inner.describe).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path` and its schema.
    ///
    /// This is a short synchronous call (it may wait up to the busy timeout if
    /// another process holds the write lock while creating the schema).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with explicit [`SqliteOptions`].
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let mut writer = Connection::open(&path)
            .map_err(|e| StoreError::Config(format!("cannot open SQLite database {shown}: {e}")))?;
        configure(&writer, true, options).ctx(&format!("configure {shown}"))?;
        let (log_rows, key_rows) = create_schema(&mut writer)?;
        let checkpointer =
            start_checkpointer(&path, &mut writer, options).ctx(&format!("start the WAL checkpointer of {shown}"))?;
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| StoreError::Config(format!("cannot open SQLite database {shown} for reading: {e}")))?;
        configure(&reader, false, options).ctx(&format!("configure reader {shown}"))?;
        Ok(SqliteStore {
            writer_thread: WriterThread::start(&shown)?,
            inner: Arc::new(Inner {
                describe: format!("sqlite:{shown}"),
                version: SCHEMA_VERSION,
                writer: Mutex::new(writer),
                reader: Some(Mutex::new(reader)),
                log_rows: AtomicU64::new(log_rows),
                key_rows: AtomicU64::new(key_rows),
                options,
                checkpointer,
            }),
        })
    }

    /// Open an existing database file for reading only, for `corral runs`
    /// and `corral assets`: no schema is created and nothing is written, so
    /// it works on a file or directory the caller may not write (a copy on
    /// read-only media, a database owned by the sync's account). A missing
    /// file is an error ("no database at PATH"), never a new empty database.
    ///
    /// SQLite opens the file read-only. A WAL database is read through its
    /// `-shm` index; when that cannot be created (a read-only directory) the
    /// file is opened `immutable=1` instead: read as it is, without locks, so
    /// a sync writing to it at that very moment may make the read fail. In a
    /// writable directory, reading a WAL database leaves the `-wal` and `-shm`
    /// files beside it as any SQLite reader does; the database file itself
    /// is never written. Writes through the returned store fail.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(StoreError::Config(format!("{shown} is not a database file"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Config(format!("no database at {shown}; run `corral sync` first")));
            }
            Err(e) => return Err(StoreError::Config(format!("cannot read the SQLite database {shown}: {e}"))),
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // SQLite opens lazily: reading the schema version is what fails when
        // the `-shm` index cannot be had.
        let attempt = |immutable: bool| -> rusqlite::Result<(Connection, String)> {
            let conn = if immutable {
                Connection::open_with_flags(immutable_uri(&path), flags | OpenFlags::SQLITE_OPEN_URI)?
            } else {
                Connection::open_with_flags(&path, flags)?
            };
            configure(&conn, false, SqliteOptions::default())?;
            let version = conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))?;
            Ok((conn, version))
        };
        let (conn, version) = match attempt(false) {
            Ok(opened) => opened,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    ErrorCode::CannotOpen
                        | ErrorCode::ReadOnly
                        | ErrorCode::PermissionDenied
                        | ErrorCode::SystemIoFailure
                ) =>
            {
                attempt(true).map_err(|e| read_only_error(&shown, e))?
            }
            Err(e) => return Err(read_only_error(&shown, e)),
        };
        let version = match version.parse::<i64>() {
            Ok(v) if v <= SCHEMA_VERSION => v,
            Ok(v) => {
                return Err(StoreError::Config(format!(
                    "database schema version {v} is newer than this corral supports ({SCHEMA_VERSION}); upgrade corral"
                )));
            }
            Err(_) => return Err(StoreError::Corrupt(format!("meta.schema_version is not a number: {version:?}"))),
        };
        Ok(SqliteStore {
            writer_thread: WriterThread::start(&shown)?,
            inner: Arc::new(Inner {
                describe: format!("sqlite:{shown}"),
                version,
                writer: Mutex::new(conn),
                reader: None,
                log_rows: AtomicU64::new(0),
                key_rows: AtomicU64::new(0),
                options: SqliteOptions::default(),
                checkpointer: None,
            }),
        })
    }

    /// A private in-memory database (for tests); gone when the store is dropped.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::open_in_memory_with(SqliteOptions::default())
    }

    /// [`SqliteStore::open_in_memory`] with explicit [`SqliteOptions`].
    pub fn open_in_memory_with(options: SqliteOptions) -> Result<Self, StoreError> {
        let mut writer = Connection::open_in_memory()
            .map_err(|e| StoreError::Config(format!("cannot open in-memory SQLite database: {e}")))?;
        configure(&writer, false, options).ctx("configure in-memory database")?;
        let (log_rows, key_rows) = create_schema(&mut writer)?;
        Ok(SqliteStore {
            writer_thread: WriterThread::start("sqlite::memory:")?,
            inner: Arc::new(Inner {
                describe: "sqlite::memory:".to_string(),
                version: SCHEMA_VERSION,
                writer: Mutex::new(writer),
                reader: None,
                log_rows: AtomicU64::new(log_rows),
                key_rows: AtomicU64::new(key_rows),
                options,
                checkpointer: None,
            }),
        })
    }

    /// Run `f` on the writer connection, on the writer thread.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        self.writer_thread
            .run(move || {
                let mut conn = inner.lock_writer();
                f(&mut conn)
            })
            .await
    }

    /// Run `f` on the reader connection on the blocking pool (in memory, on
    /// the writer connection and its thread).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inner.reader.is_none() {
            return self.write(move |conn| f(conn)).await;
        }
        let inner = Arc::clone(&self.inner);
        corral_core::spawn_yielding(move || {
            let lock = inner.reader.as_ref().unwrap_or(&inner.writer);
            let conn = lock.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(join_error)?
    }
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    if e.is_panic() {
        StoreError::Permanent(format!("SQLite task panicked: {e}"))
    } else {
        StoreError::Transient(format!("SQLite task cancelled: {e}"))
    }
}

fn configure(conn: &Connection, wal: bool, options: SqliteOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Plans that do not depend on the values bound (the query planner
    // stability guarantee). Without it SQLite re-prepares a statement when a
    // new binding might change its plan, and the key search (up to 256 rows
    // of `VALUES`) was parsed and planned again on every run: 6 % of the
    // CPU of a million-asset load. The plans are the ones the query-plan
    // test checks.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if wal {
        // The page size takes effect only on a database not created yet; an
        // existing one keeps its own.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        // Returns the resulting mode as a row; WAL is unavailable only on odd filesystems.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The page cache, in KiB when negative.
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_mib.max(1)) * 1024)?;
    if wal {
        // Checkpoint (copy the WAL into the database, and fsync it) once the
        // WAL holds this many pages rather than SQLite's 1,000 (4 MiB): a
        // checkpoint every few batches made a load wait on the disk.
        let _pages: i64 =
            conn.query_row(&format!("PRAGMA wal_autocheckpoint = {}", options.wal_autocheckpoint_pages), [], |r| {
                r.get(0)
            })?;
    }
    // After a checkpoint, truncate a WAL that grew beyond 64 MiB.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(())
}

/// Checkpoint the writer's WAL on a thread of its own instead of inside the
/// commit that crossed `wal_autocheckpoint_pages` (SQLite's autocheckpoint):
/// copying the WAL into the database and fsyncing it took about a fifth of
/// the writer's time in a large load, during which no batch was written.
///
/// The writer's WAL hook (called after each commit with the pages in the
/// WAL) wakes the checkpointer, which runs `PRAGMA wal_checkpoint(PASSIVE)`
/// on a connection of its own: it copies what is committed while the writer
/// goes on appending, and never waits for a lock. SQLite restarts the WAL
/// from its beginning at the first write after a checkpoint that copied all
/// of it, which a writer that never pauses may not leave time for: once the
/// WAL reaches four times the bound, the committing writer checkpoints all
/// of it itself (waiting for the thread's checkpoint to end first), so the
/// WAL stays within a few times the bound on disk.
///
/// The thread ends when the writer's hook, and the channel's sender with
/// it, are dropped (`Inner`'s `Drop` does, then joins it). `None` when no
/// thread could be started: SQLite's autocheckpoint then stays in place.
fn start_checkpointer(
    path: &Path,
    writer: &mut Connection,
    options: SqliteOptions,
) -> rusqlite::Result<Option<std::thread::JoinHandle<()>>> {
    let checkpointer = Connection::open(path)?;
    configure(&checkpointer, false, SqliteOptions { cache_mib: 1, ..options })?;
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    let shown = path.display().to_string();
    // Held while either side checkpoints: SQLite's checkpoint lock is not
    // waited for (a second checkpoint is refused at once), this is.
    let checkpointing = Arc::new(Mutex::new(()));
    let in_thread = Arc::clone(&checkpointing);
    let spawned = std::thread::Builder::new().name("corral-sqlite-checkpoint".into()).spawn(move || {
        corral_core::yield_cpu_to_the_runtime();
        while woken.recv().is_ok() {
            let _running = in_thread.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(database = %shown, error = %e, "WAL checkpoint failed; the next commit tries again");
            }
        }
    });
    let thread = match spawned {
        Ok(thread) => thread,
        Err(e) => {
            // No thread: SQLite's own autocheckpoint (set by `configure`) stays in place.
            tracing::warn!(error = %e, "cannot start the WAL checkpoint thread; commits checkpoint themselves");
            return Ok(None);
        }
    };
    let bound = i32::try_from(options.wal_autocheckpoint_pages.max(1)).unwrap_or(i32::MAX);
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
        if pages >= bound.saturating_mul(4) {
            // Wait for a checkpoint the thread is running, then copy every
            // frame (FULL), so that the next write starts the WAL over. The
            // transaction is committed and its lock released when the hook runs.
            let _running = checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = wal.checkpoint_v2(rusqlite::wal::CheckpointMode::FULL) {
                tracing::debug!(error = %e, pages, "inline WAL checkpoint did not complete");
            }
        } else if pages >= bound {
            // Full: the checkpointer is already woken.
            let _ = wake.try_send(());
        }
        // The commit happened whatever the checkpoint did.
        Ok(())
    }))?;
    Ok(Some(thread))
}

/// Create the schema, or migrate an older one in place, in one transaction.
/// Returns the rows in the lookup log and in the recent key level.
fn create_schema(conn: &mut Connection) -> Result<(u64, u64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).ctx("begin schema transaction")?;
    tx.execute_batch(SCHEMA_BASE).ctx("create schema")?;
    let found: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .optional()
        .ctx("read schema version")?;
    let found: i64 = match found {
        // A new database.
        None => SCHEMA_VERSION,
        Some(v) => v.parse().map_err(|_| StoreError::Corrupt(format!("meta.schema_version is not a number: {v:?}")))?,
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "database schema version {found} is newer than this corral supports ({SCHEMA_VERSION}); upgrade corral"
        )));
    }
    match found {
        ..=2 => migrate_from_v2(&tx)?,
        3 => migrate_from_v3(&tx)?,
        _ => {
            // Version 4 logged a new asset's lookup hashes by a trigger;
            // the writer now logs them itself.
            tx.execute_batch("DROP TRIGGER IF EXISTS assets_lookup_insert;").ctx("migrate: drop the lookup trigger")?;
            tx.execute_batch(SCHEMA_ASSET_TABLES).ctx("create schema (assets)")?;
            tx.execute_batch(SCHEMA_ASSET_TRIGGERS).ctx("create schema (asset triggers)")?;
        }
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![SCHEMA_VERSION.to_string()],
    )
    .ctx("record schema version")?;
    if found < SCHEMA_VERSION {
        tracing::info!(from = found, to = SCHEMA_VERSION, "SQLite store schema migrated");
    }
    let log_rows: i64 =
        tx.query_row("SELECT COUNT(*) FROM asset_lookup_log", [], |r| r.get(0)).ctx("count the lookup log")?;
    let key_rows: i64 =
        tx.query_row("SELECT COUNT(*) FROM asset_key_recent", [], |r| r.get(0)).ctx("count the recent keys")?;
    tx.commit().ctx("commit schema")?;
    Ok((u64::try_from(log_rows).unwrap_or(0), u64::try_from(key_rows).unwrap_or(0)))
}

/// Version 3 -> 5 (inside the schema transaction): the assets table is
/// rebuilt without its unique index, each row keeping its id (the lookup
/// index refers to it) and gaining its key hash, and the key index is
/// built from those hashes in one ordered pass.
fn migrate_from_v3(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "DROP TRIGGER IF EXISTS assets_lookup_insert;
         DROP TRIGGER IF EXISTS assets_lookup_update;
         DROP TRIGGER IF EXISTS assets_lookup_delete;
         DROP INDEX IF EXISTS assets_stream;
         DROP INDEX IF EXISTS assets_stale_since;
         ALTER TABLE assets RENAME TO assets_before_v4;",
    )
    .ctx("migrate: set the version 3 assets table aside")?;
    // No triggers yet: the lookup index already has these rows.
    tx.execute_batch(SCHEMA_ASSET_TABLES).ctx("migrate: create the assets table")?;
    let mut select = tx
        .prepare("SELECT id, kind, source_id FROM assets_before_v4 ORDER BY id")
        .ctx("migrate: prepare reading keys")?;
    let mut copy = tx
        .prepare(
            "INSERT INTO assets (id, connection, kind, source_id, stream, fields, raw, content_hash, first_seen, \
             last_seen, last_sync_id, stale_since, last_change, lookup, key_hash) \
             SELECT id, connection, kind, source_id, stream, fields, raw, content_hash, first_seen, last_seen, \
             last_sync_id, stale_since, last_change, lookup, ?2 FROM assets_before_v4 WHERE id = ?1",
        )
        .ctx("migrate: prepare copying assets")?;
    let mut rows = select.query([]).ctx("migrate: read keys")?;
    let mut migrated = 0_u64;
    while let Some(row) = rows.next().ctx("migrate: read a key")? {
        let id: i64 = row.get(0).ctx("migrate")?;
        let kind: String = row.get(1).ctx("migrate")?;
        let source_id: String = row.get(2).ctx("migrate")?;
        copy.execute(params![id, asset_key_hash(&kind, &source_id)]).ctx("migrate: copy an asset")?;
        migrated += 1;
    }
    drop(rows);
    drop(select);
    drop(copy);
    tx.execute_batch(
        "INSERT INTO asset_key (h, id) SELECT key_hash, id FROM assets ORDER BY key_hash, id;
         DROP TABLE assets_before_v4;",
    )
    .ctx("migrate: build the key index")?;
    tx.execute_batch(SCHEMA_ASSET_TRIGGERS).ctx("migrate: create the asset triggers")?;
    tracing::debug!(assets = migrated, "rebuilt the assets table without its unique index, and its key index");
    Ok(())
}

/// Version 1 or 2 -> 5 (inside the schema transaction): the assets table is
/// rebuilt with an integer id, its key index, and the lookup index derived
/// from each stored asset's fields (version 1 had no keys; version 2's key
/// and reference tables are replaced).
fn migrate_from_v2(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "DROP TRIGGER IF EXISTS assets_delete_derived;
         DROP TABLE IF EXISTS asset_keys;
         DROP TABLE IF EXISTS asset_refs;
         DROP INDEX IF EXISTS assets_stream;
         DROP INDEX IF EXISTS assets_stale_since;
         ALTER TABLE assets RENAME TO assets_before_v3;",
    )
    .ctx("migrate: set the old assets table aside")?;
    tx.execute_batch(SCHEMA_ASSET_TABLES).ctx("migrate: create the assets table")?;
    tx.execute_batch(SCHEMA_ASSET_TRIGGERS).ctx("migrate: create the asset triggers")?;
    let mut select = tx
        .prepare(
            "SELECT connection, kind, source_id, stream, fields, raw, content_hash, first_seen, last_seen, \
             last_sync_id, stale_since, last_change FROM assets_before_v3 ORDER BY connection, kind, source_id",
        )
        .ctx("migrate: prepare reading assets")?;
    let mut insert = tx
        .prepare(
            "INSERT INTO assets (connection, kind, source_id, stream, fields, raw, content_hash, first_seen, \
             last_seen, last_sync_id, stale_since, last_change, lookup, key_hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .ctx("migrate: prepare writing assets")?;
    let mut log = tx
        .prepare("INSERT OR IGNORE INTO asset_lookup_log (asset, h) VALUES (?1, ?2)")
        .ctx("migrate: prepare logging lookup hashes")?;
    let mut rows = select.query([]).ctx("migrate: read assets")?;
    let mut migrated = 0_u64;
    let mut logged = 0_usize;
    while let Some(row) = rows.next().ctx("migrate: read an asset")? {
        let connection: String = row.get(0).ctx("migrate")?;
        let kind: String = row.get(1).ctx("migrate")?;
        let source_id: String = row.get(2).ctx("migrate")?;
        let fields: String = row.get(4).ctx("migrate")?;
        let stored = StoredAsset {
            kind: parse_kind(&kind)?,
            fields: parse_json("assets.fields", &fields)?,
            connection: connection.clone(),
            source_id: source_id.clone(),
            stream: row.get(3).ctx("migrate")?,
            first_seen: DateTime::<Utc>::MIN_UTC,
            last_seen: DateTime::<Utc>::MIN_UTC,
            last_sync_id: String::new(),
            stale_since: None,
            raw: None,
            position: ListPosition::default(),
        };
        let asset = stored
            .asset()
            .map_err(|e| StoreError::Corrupt(format!("migrate: {kind} {source_id} has undecodable fields: {e}")))?;
        let (lookup, hashes) = lookup_of(&connection, &asset);
        let key = asset_key_hash(&kind, &source_id);
        insert
            .execute(params![
                connection,
                kind,
                source_id,
                stored.stream,
                fields,
                row.get::<_, Option<String>>(5).ctx("migrate")?,
                row.get::<_, String>(6).ctx("migrate")?,
                row.get::<_, String>(7).ctx("migrate")?,
                row.get::<_, String>(8).ctx("migrate")?,
                row.get::<_, String>(9).ctx("migrate")?,
                row.get::<_, Option<String>>(10).ctx("migrate")?,
                row.get::<_, i64>(11).ctx("migrate")?,
                lookup,
                key,
            ])
            .ctx("migrate: write an asset")?;
        let id = tx.last_insert_rowid();
        for h in &hashes {
            log.execute(params![id, h]).ctx("migrate: log a lookup hash")?;
        }
        logged += hashes.len();
        migrated += 1;
    }
    drop(rows);
    drop(select);
    drop(insert);
    drop(log);
    tx.execute_batch("DROP TABLE assets_before_v3;").ctx("migrate: drop the old assets table")?;
    merge_lookup_log(tx, logged)?;
    tx.execute_batch(MERGE_KEYS_SQL).ctx("migrate: build the key index")?;
    tracing::debug!(assets = migrated, "rebuilt the assets table and its lookup index");
    Ok(())
}

/// A `file:` URI opening `path` immutable (read as is, no locks, no `-shm`).
fn immutable_uri(path: &Path) -> String {
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().replace('\\', "/").into_bytes();
    let mut uri = String::from("file:");
    for b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'~') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Why a database could not be opened for reading, in an operator's words.
fn read_only_error(shown: &str, e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => {
            StoreError::Config(format!("{shown} is not a SQLite database"))
        }
        rusqlite::Error::SqliteFailure(_, Some(msg)) if msg.contains("no such table") => {
            StoreError::Config(format!("{shown} is not a corral database (no corral tables in it)"))
        }
        rusqlite::Error::QueryReturnedNoRows => {
            StoreError::Config(format!("{shown} is not a corral database (no schema version in it)"))
        }
        _ => StoreError::Config(format!("cannot open the SQLite database {shown} for reading: {e}")),
    }
}

/// Map rusqlite errors: busy/locked are worth retrying, the rest are not;
/// values that do not decode mean the stored data is corrupt.
fn sql_error(what: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &e {
        E::SqliteFailure(err, _) if matches!(err.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Transient(format!("{what}: {e}"))
        }
        E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..)
        | E::IntegralValueOutOfRange(..) => StoreError::Corrupt(format!("{what}: {e}")),
        _ => StoreError::Permanent(format!("{what}: {e}")),
    }
}

trait SqlContext<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|e| sql_error(what, e))
    }
}

/// Fixed-width RFC 3339 UTC text: lexical order is chronological order.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_ts(what: &str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("{what}: invalid timestamp {s:?}: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn parse_kind(s: &str) -> Result<AssetKind, StoreError> {
    AssetKind::from_str(s).map_err(|e| StoreError::Corrupt(format!("assets.kind: {e}")))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// One asset prepared for writing: serialized, hashed and its lookup
/// hashes derived off the connection lock; the asset itself is dropped.
struct PreparedAsset {
    kind: &'static str,
    source_id: String,
    key_hash: i64,
    stream: String,
    fields: String,
    raw: Option<String>,
    hash: String,
    lookup: String,
    /// The hashes `lookup` lists.
    hashes: Vec<i64>,
}

fn prepare(connection: &str, asset: &Asset) -> Result<PreparedAsset, Reject> {
    let kind = asset.kind().as_str();
    let source_id = asset.source_id().to_string();
    let fields = asset.fields_string().map_err(|e| {
        Reject::new(format!("{kind} {source_id}"), "store_encode", format!("could not encode fields: {e}"))
    })?;
    let raw = match &asset.raw {
        Some(v) => Some(serde_json::to_string(v).map_err(|e| {
            Reject::new(format!("{kind} {source_id}"), "store_encode", format!("could not encode raw record: {e}"))
        })?),
        None => None,
    };
    // The content hash from the bytes just serialized, not serialized again.
    let hash = asset.content_hash_of(&fields, raw.as_deref());
    let (lookup, hashes) = lookup_of(connection, asset);
    let key_hash = asset_key_hash(kind, &source_id);
    Ok(PreparedAsset { kind, source_id, key_hash, stream: asset.stream.clone(), fields, raw, hash, lookup, hashes })
}

/// What the last upsert did to a row, in `assets.last_change` (returned by the
/// upsert itself): 0 inserted, 1 updated, 2 unchanged, plus 4 when the stream changed.
const CHANGE_INSERTED: i64 = 0;
const CHANGE_UPDATED: i64 = 1;
const CHANGE_UNCHANGED: i64 = 2;
const CHANGE_STREAM: i64 = 4;

/// Insert, or update keeping `first_seen`, for `rows` assets in one
/// statement, each with the row id [`upsert_blocking`] found or assigned
/// for its key. In the `DO UPDATE` clause bare column names are the
/// existing row's values, so `last_change` records whether the content hash
/// (and the stream) changed, and `RETURNING` hands it back: no separate
/// read needed. The rows of one statement are applied in order, each seeing
/// the ones before it (a key twice in a batch has one id: the second
/// updates the first), as if they were separate statements; what one
/// statement saves is the work done per statement (starting it, a statement
/// journal of the pages it touches, resetting it), done once per 256 assets
/// instead of once per asset: with one row per statement, the journal and
/// the resets were about a fifth of the writer's samples under `perf`.
///
/// Parameters: `?1` connection, `?2` seen at, `?3` sync id, then nine per
/// row from `?4` (id, kind, source id, key hash, stream, fields, raw,
/// content hash, lookup). `RETURNING` gives, in no promised order, each
/// row's change and id. (How many lookup hashes a changed row logged is
/// counted in Rust: `json_array_length` parsed every row's lookup again.)
///
/// `stream` is deliberately not in the `SET` list: SQLite rewrites the entries
/// of every index on a column it sets, and the `(connection, stream)` index
/// would then be rewritten on every re-sync. A changed stream (rare) is
/// written by [`SET_STREAM_SQL`] instead.
fn upsert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO assets (id, connection, kind, source_id, key_hash, stream, fields, raw, content_hash, \
         first_seen, last_seen, last_sync_id, stale_since, last_change, lookup) VALUES ",
    );
    for row in 0..rows {
        let b = UPSERT_SHARED_PARAMS + 1 + row * UPSERT_ROW_PARAMS;
        if row > 0 {
            sql.push(',');
        }
        let p: Vec<String> = (b..b + UPSERT_ROW_PARAMS).map(|n| format!("?{n}")).collect();
        sql.push_str(&format!(
            "({},?1,{},{},{},{},{},{},{},?2,?2,?3,NULL,0,{})",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
        ));
    }
    sql.push_str(
        " ON CONFLICT (id) DO UPDATE SET \
            last_change = CASE WHEN content_hash = excluded.content_hash THEN 2 ELSE 1 END \
                        + CASE WHEN stream = excluded.stream THEN 0 ELSE 4 END, \
            fields = excluded.fields, \
            raw = excluded.raw, \
            content_hash = excluded.content_hash, \
            last_seen = max(last_seen, excluded.last_seen), \
            last_sync_id = excluded.last_sync_id, \
            stale_since = NULL, \
            lookup = excluded.lookup \
         RETURNING last_change, id",
    );
    sql
}

const UPSERT_SHARED_PARAMS: usize = 3;
const UPSERT_ROW_PARAMS: usize = 9;

/// The most rows of one multi-row statement (an upsert, a key search). A
/// batch goes in statements of 256, then the powers of two its remainder
/// is made of (1,000 assets: 256 × 3, 128, 64, 32, 8), so at most nine
/// statements of each sort are ever prepared (and cached) for it.
const STATEMENT_ROWS_MAX: usize = 256;

/// How many of `rest` rows the next multi-row statement takes.
fn statement_rows(rest: usize) -> usize {
    if rest >= STATEMENT_ROWS_MAX { STATEMENT_ROWS_MAX } else { 1 << rest.ilog2() }
}

/// `build`'s texts for 1, 2, 4 … [`STATEMENT_ROWS_MAX`] rows, built once in `texts`.
fn statement_for(texts: &'static OnceLock<Vec<String>>, build: fn(usize) -> String, rows: usize) -> &'static str {
    let all = texts.get_or_init(|| {
        std::iter::successors(Some(1_usize), |n| (*n < STATEMENT_ROWS_MAX).then_some(n * 2)).map(build).collect()
    });
    // rows is a power of two no larger than STATEMENT_ROWS_MAX (see statement_rows).
    &all[rows.trailing_zeros() as usize]
}

static UPSERT_SQL: OnceLock<Vec<String>> = OnceLock::new();
static FIND_IDS_SQL: OnceLock<Vec<String>> = OnceLock::new();

/// The rows of `rows` keys of one connection, in both key levels: `?1` the
/// connection, then three per key from `?2` (key hash, kind, source id).
/// Returns (the key's place in the statement, its row's id). The hash finds
/// candidates; the row's own columns confirm them, so another connection's
/// asset of the same kind and id, or a colliding hash, is never taken.
fn find_ids_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let b = 2 + row * 3;
            format!("({row},?{b},?{},?{})", b + 1, b + 2)
        })
        .collect();
    let level = |table: &str| {
        format!(
            "SELECT batch.n, assets.id FROM batch CROSS JOIN {table} AS k CROSS JOIN assets \
             WHERE k.h = batch.h AND assets.id = k.id AND assets.connection = ?1 \
             AND assets.kind = batch.kind AND assets.source_id = batch.source_id"
        )
    };
    format!(
        "WITH batch(n, h, kind, source_id) AS (VALUES {}) {} UNION ALL {}",
        values.join(","),
        level("asset_key_recent"),
        level("asset_key")
    )
}

/// The row id of each of `keys` (kind, source id, key hash) of
/// `connection`, `None` for a key not stored.
fn find_ids(conn: &Connection, connection: &str, keys: &[(&str, &str, i64)]) -> Result<Vec<Option<i64>>, StoreError> {
    let mut found = vec![None; keys.len()];
    let mut start = 0;
    while start < keys.len() {
        let rows = statement_rows(keys.len() - start);
        let mut find =
            conn.prepare_cached(statement_for(&FIND_IDS_SQL, find_ids_sql, rows)).ctx("prepare key search")?;
        find.raw_bind_parameter(1, connection).ctx("bind key search")?;
        for (row, (kind, source_id, h)) in keys[start..start + rows].iter().enumerate() {
            let b = 2 + row * 3;
            find.raw_bind_parameter(b, h).ctx("bind key search")?;
            find.raw_bind_parameter(b + 1, kind).ctx("bind key search")?;
            find.raw_bind_parameter(b + 2, source_id).ctx("bind key search")?;
        }
        let mut ids = find.raw_query();
        while let Some(r) = ids.next().ctx("search keys")? {
            let n: i64 = r.get(0).ctx("search keys")?;
            let id: i64 = r.get(1).ctx("search keys")?;
            let at = start + usize::try_from(n).unwrap_or(usize::MAX);
            let (Some(slot), Some((kind, source_id, _))) = (found.get_mut(at), keys.get(at)) else {
                return Err(StoreError::Corrupt(format!("a key search returned place {n} of {rows}")));
            };
            if let Some(other) = slot.replace(id) {
                return Err(StoreError::Corrupt(format!(
                    "{connection} {kind} {source_id} is stored twice (rows {other} and {id})"
                )));
            }
        }
        start += rows;
    }
    Ok(found)
}

const SET_STREAM_SQL: &str = "UPDATE assets SET stream = ?2 WHERE id = ?1";

/// A rejected record's stored asset, seen again: `last_seen` only moves forward.
const TOUCH_SQL: &str =
    "UPDATE assets SET last_seen = max(last_seen, ?2), last_sync_id = ?3, stale_since = NULL WHERE id = ?1";

/// Write a batch in one transaction. Keys are unique because this is the
/// only writer of `assets` rows and it runs inside an `IMMEDIATE`
/// transaction: it finds the rows of the batch's keys in both key levels,
/// gives each new key the next id (one id per key, however often the batch
/// repeats it), and upserts by id.
fn upsert_blocking(
    inner: &Inner,
    conn: &mut Connection,
    connection: &str,
    sync_id: &str,
    seen: &str,
    assets: &[PreparedAsset],
    still_there: &[(AssetKind, String)],
) -> Result<LoadOutcome, StoreError> {
    let mut outcome = LoadOutcome::default();
    let mut logged = 0_u64;
    // The lookup log rows of a statement's new assets.
    let mut log: Vec<(i64, i64)> = Vec::new();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).ctx("begin upsert")?;
    {
        let keys: Vec<(&str, &str, i64)> = assets.iter().map(|a| (a.kind, a.source_id.as_str(), a.key_hash)).collect();
        let found = find_ids(&tx, connection, &keys)?;
        let mut next: i64 =
            tx.query_row("SELECT coalesce(max(id), 0) + 1 FROM assets", [], |r| r.get(0)).ctx("next asset id")?;
        let mut new_ids: HashMap<(&str, &str), i64> = HashMap::new();
        let ids: Vec<i64> = keys
            .iter()
            .zip(&found)
            .map(|(&(kind, source_id, _), found)| match found {
                Some(id) => *id,
                None => *new_ids.entry((kind, source_id)).or_insert_with(|| {
                    next += 1;
                    next - 1
                }),
            })
            .collect();
        let mut start = 0;
        while start < assets.len() {
            let rows = statement_rows(assets.len() - start);
            let (chunk, chunk_ids) = (&assets[start..start + rows], &ids[start..start + rows]);
            start += rows;
            let mut upsert = tx.prepare_cached(statement_for(&UPSERT_SQL, upsert_sql, rows)).ctx("prepare upsert")?;
            upsert.raw_bind_parameter(1, connection).ctx("bind upsert")?;
            upsert.raw_bind_parameter(2, seen).ctx("bind upsert")?;
            upsert.raw_bind_parameter(3, sync_id).ctx("bind upsert")?;
            for (row, (a, id)) in chunk.iter().zip(chunk_ids).enumerate() {
                let b = UPSERT_SHARED_PARAMS + 1 + row * UPSERT_ROW_PARAMS;
                upsert.raw_bind_parameter(b, id).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 1, a.kind).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 2, &a.source_id).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 3, a.key_hash).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 4, &a.stream).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 5, &a.fields).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 6, &a.raw).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 7, &a.hash).ctx("bind upsert")?;
                upsert.raw_bind_parameter(b + 8, &a.lookup).ctx("bind upsert")?;
            }
            let mut moved: Vec<i64> = Vec::new();
            let mut returned = 0_usize;
            // Each id's lookup hashes (a key twice in the chunk: its last row's).
            let mut lookup_rows: Vec<(i64, &[i64])> =
                chunk_ids.iter().copied().zip(chunk.iter().map(|a| a.hashes.as_slice())).collect();
            lookup_rows.sort_by_key(|(id, _)| *id);
            let mut changes = upsert.raw_query();
            while let Some(r) = changes.next().ctx("upsert assets")? {
                returned += 1;
                let change: i64 = r.get(0).ctx("upsert assets")?;
                let id: i64 = r.get(1).ctx("upsert assets")?;
                if change & CHANGE_STREAM != 0 {
                    moved.push(id);
                }
                match change & !CHANGE_STREAM {
                    CHANGE_INSERTED => outcome.inserted += 1,
                    CHANGE_UPDATED => outcome.updated += 1,
                    CHANGE_UNCHANGED => {
                        outcome.unchanged += 1;
                        continue;
                    }
                    other => return Err(StoreError::Corrupt(format!("assets.last_change: unexpected value {other}"))),
                }
                // Inserted or updated: its lookup hashes are logged (an
                // estimate: an update that kept them logged none). A new
                // asset's are logged here, a changed one's by the update
                // trigger.
                let at = lookup_rows.partition_point(|(i, _)| *i <= id);
                let Some((_, hashes)) = at.checked_sub(1).map(|at| lookup_rows[at]).filter(|(i, _)| *i == id) else {
                    return Err(StoreError::Corrupt(format!("the upsert reported row {id}, not in the batch")));
                };
                logged += hashes.len() as u64;
                if change & !CHANGE_STREAM == CHANGE_INSERTED {
                    log.extend(hashes.iter().map(|h| (id, *h)));
                }
            }
            drop(changes);
            if returned != rows {
                return Err(StoreError::Corrupt(format!("an upsert of {rows} assets reported {returned}")));
            }
            // Logged before the next statement: if that one updates an
            // asset inserted here (a key twice in the batch), the update
            // trigger replaces these rows with the new record's.
            log.sort_unstable();
            insert_pairs(&tx, &LOG_INSERT_SQL, log_insert_sql, &log, "log lookup hashes")?;
            log.clear();
            // The stream a moved key ends in: its last record's in the chunk.
            for id in moved {
                let Some((a, _)) = chunk.iter().zip(chunk_ids).rev().find(|(_, i)| **i == id) else {
                    return Err(StoreError::Corrupt(format!("the upsert reported row {id}, not in the batch")));
                };
                tx.prepare_cached(SET_STREAM_SQL)
                    .ctx("prepare upsert stream change")?
                    .execute(params![id, a.stream])
                    .ctx("upsert: change stream")?;
            }
        }
        // Rejected records the vendor still has: fresh, not stale, contents kept.
        if !still_there.is_empty() {
            let keys: Vec<(&str, &str, i64)> = still_there
                .iter()
                .map(|(kind, source_id)| (kind.as_str(), source_id.as_str(), asset_key_hash(kind.as_str(), source_id)))
                .collect();
            let mut touch = tx.prepare_cached(TOUCH_SQL).ctx("prepare touch")?;
            for id in find_ids(&tx, connection, &keys)?.into_iter().flatten() {
                touch.execute(params![id, seen, sync_id]).ctx("touch asset")?;
            }
        }
    }
    // The lookup log and the recent keys hold what was written since their
    // last merge; past its bound, each is merged in this same transaction.
    let pending = inner.log_rows.load(Ordering::Relaxed) + logged;
    let merged = pending >= inner.options.lookup_log_rows;
    if merged {
        merge_lookup_log(&tx, usize::try_from(pending).unwrap_or(0))?;
    }
    let recent = inner.key_rows.load(Ordering::Relaxed) + outcome.inserted;
    let merged_keys = recent >= inner.options.key_recent_rows;
    if merged_keys {
        tx.execute_batch(MERGE_KEYS_SQL).ctx("merge the recent keys")?;
    }
    tx.commit().ctx("commit upsert")?;
    inner.log_rows.store(if merged { 0 } else { pending }, Ordering::Relaxed);
    inner.key_rows.store(if merged_keys { 0 } else { recent }, Ordering::Relaxed);
    Ok(outcome)
}

/// Stale: last seen before the run started (`?3`); see [`StaleScope`].
const MARK_STALE_SQL: &str = "UPDATE assets SET stale_since = ?4 \
    WHERE connection = ?1 AND stream = ?2 AND last_seen < ?3 AND stale_since IS NULL";

const DELETE_STALE_SQL: &str = "DELETE FROM assets WHERE connection = ?1 AND stream = ?2 AND last_seen < ?3 \
    AND stale_since IS NOT NULL AND stale_since <= ?4";

fn stale_blocking(
    conn: &mut Connection,
    scope: &StaleScope,
    delete_after: Option<Duration>,
) -> Result<StaleOutcome, StoreError> {
    let now = ts(&scope.now);
    let started = ts(&scope.started_at);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).ctx("begin stale handling")?;
    let marked = tx
        .prepare_cached(MARK_STALE_SQL)
        .ctx("prepare stale mark")?
        .execute(params![scope.connection, scope.stream, started, now])
        .ctx("mark stale assets")?;
    let mut deleted = 0;
    if let Some(age) = delete_after {
        // An age too large to represent means nothing is old enough.
        let cutoff = chrono::Duration::from_std(age).ok().and_then(|age| scope.now.checked_sub_signed(age));
        if let Some(cutoff) = cutoff {
            deleted = tx
                .prepare_cached(DELETE_STALE_SQL)
                .ctx("prepare stale delete")?
                .execute(params![scope.connection, scope.stream, started, ts(&cutoff)])
                .ctx("delete stale assets")?;
        }
    }
    tx.commit().ctx("commit stale handling")?;
    Ok(StaleOutcome { marked: marked as u64, deleted: deleted as u64 })
}

/// Take the lease when it is free, expired or already the holder's (one
/// statement, so two processes asking at once cannot both get it).
const ACQUIRE_LEASE_SQL: &str = "\
INSERT INTO leases (connection, holder, owner, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
ON CONFLICT (connection) DO UPDATE SET holder = excluded.holder, owner = excluded.owner, \
    acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
WHERE leases.expires_at <= excluded.acquired_at OR leases.holder = excluded.holder";

const SELECT_LEASE_SQL: &str =
    "SELECT connection, holder, owner, acquired_at, expires_at FROM leases WHERE connection = ?1";

fn lease_expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn read_lease(conn: &Connection, connection: &str) -> Result<Option<Lease>, StoreError> {
    let row: Option<(String, String, String, String, String)> = conn
        .prepare_cached(SELECT_LEASE_SQL)
        .ctx("prepare read lease")?
        .query_row(params![connection], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()
        .ctx("read lease")?;
    row.map(|(connection, holder, owner, acquired_at, expires_at)| {
        Ok(Lease {
            connection,
            holder,
            owner,
            acquired_at: parse_ts("leases.acquired_at", &acquired_at)?,
            expires_at: parse_ts("leases.expires_at", &expires_at)?,
        })
    })
    .transpose()
}

/// `WHERE` clause and parameters for an [`AssetFilter`]. `stale` false
/// leaves stale assets in whatever `include_stale` says (counts take both).
/// Correlation keys and references are looked up by their hash in the
/// lookup index and its log ([`lookup_sql`]), joined on the assets' id.
fn filter_sql(filter: &AssetFilter, stale: bool, version: i64) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    let bind = |params: &mut Vec<Value>, v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    if let Some(c) = &filter.connection {
        let p = bind(&mut params, Value::Text(c.clone()));
        clauses.push(format!("connection = {p}"));
    }
    if let Some(k) = filter.kind {
        let p = bind(&mut params, Value::Text(k.as_str().to_string()));
        clauses.push(format!("kind = {p}"));
    }
    if stale && !filter.include_stale {
        clauses.push("stale_since IS NULL".to_string());
    }
    for condition in &filter.conditions {
        let mut alternatives = Vec::new();
        for (kind, predicate) in &condition.alternatives {
            let k = bind(&mut params, Value::Text(kind.as_str().to_string()));
            let test = match predicate {
                Predicate::SourceId(id) if version >= 4 => {
                    let h = bind(&mut params, Value::Integer(asset_key_hash(kind.as_str(), id)));
                    let id = bind(&mut params, Value::Text(id.clone()));
                    format!("{} AND source_id = {id}", key_sql(&h))
                }
                // Older versions have a unique index on the key.
                Predicate::SourceId(id) => format!("source_id = {}", bind(&mut params, Value::Text(id.clone()))),
                Predicate::Key { key, value } => {
                    let h = bind(&mut params, Value::Integer(key_hash(key.as_str(), value)));
                    lookup_sql(&h)
                }
                Predicate::Equals { path, value } => {
                    let p = bind(&mut params, Value::Text(format!("$.{path}")));
                    format!("json_extract(fields, {p}) = {}", bind(&mut params, scalar(value)))
                }
                Predicate::Contains { path, value } => {
                    let p = bind(&mut params, Value::Text(format!("$.{path}")));
                    let v = bind(&mut params, scalar(value));
                    format!("EXISTS (SELECT 1 FROM json_each(assets.fields, {p}) WHERE json_each.value = {v})")
                }
                Predicate::Tag { path, key, value } => {
                    let p = bind(&mut params, Value::Text(format!("$.{path}")));
                    let k = bind(&mut params, Value::Text(key.clone()));
                    let v = bind(&mut params, Value::Text(value.clone()));
                    format!(
                        "EXISTS (SELECT 1 FROM json_each(assets.fields, {p}) \
                         WHERE json_extract(json_each.value, '$.key') = {k} \
                         AND json_extract(json_each.value, '$.value') = {v})"
                    )
                }
            };
            alternatives.push(format!("(kind = {k} AND {test})"));
        }
        if alternatives.is_empty() {
            clauses.push("0".to_string());
        } else {
            clauses.push(format!("({})", alternatives.join(" OR ")));
        }
    }
    if let Some(target) = &filter.points_at {
        let h = ref_hash(&target.connection, target.kind.as_str(), &target.source_id);
        let h = bind(&mut params, Value::Integer(h));
        clauses.push(lookup_sql(&h));
    }
    let sql = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    (sql, params)
}

/// The assets indexed under the lookup hash bound to `h`: in the lookup
/// index (a seek) or still in its log (a scan of at most
/// [`SqliteOptions::lookup_log_rows`] rows, as many as a process wrote since
/// its last merge).
fn lookup_sql(h: &str) -> String {
    format!(
        "id IN (SELECT asset FROM asset_lookup WHERE h = {h} \
         UNION ALL SELECT asset FROM asset_lookup_log WHERE h = {h})"
    )
}

/// The assets whose key hash is bound to `h`, in both key levels (seeks).
fn key_sql(h: &str) -> String {
    format!("id IN (SELECT id FROM asset_key WHERE h = {h} UNION ALL SELECT id FROM asset_key_recent WHERE h = {h})")
}

fn scalar(v: &Scalar) -> Value {
    match v {
        Scalar::Str(s) => Value::Text(s.clone()),
        Scalar::Int(i) => Value::Integer(*i),
        Scalar::Float(f) => Value::Real(*f),
        // JSON true/false read back as 1/0.
        Scalar::Bool(b) => Value::Integer(i64::from(*b)),
    }
}

/// Whether `filter` needs the lookup index (version 3 and later).
fn needs_lookup(filter: &AssetFilter) -> bool {
    filter.points_at.is_some()
        || filter.conditions.iter().any(|c| c.alternatives.iter().any(|(_, p)| matches!(p, Predicate::Key { .. })))
}

/// The columns a listing reads, in [`row_to_asset`]'s order.
const LISTED_COLUMNS: &str =
    "connection, kind, source_id, stream, first_seen, last_seen, last_sync_id, stale_since, fields, raw";

/// Where a page of assets starts: after this connection, kind and, last,
/// row id (version 4) or source id (older versions).
enum ListSeek<'a> {
    Id(&'a AssetKey, i64),
    Key(&'a AssetKey),
}

/// A page of assets: `filter`, after `after`, `limit`. Version 4 orders by
/// connection, kind and id, the order of the `(connection, kind)` index,
/// whose entries end with the row id. SQLite seeks a row value only on
/// declared index columns, so `(connection, kind, id) > (..)` would seek
/// to the start of the cursor's connection and kind and scan all of it up
/// to the cursor: a page late in a million-asset connection read a million
/// entries. A page after a cursor is therefore three seeks, merged in
/// order (a `UNION ALL` with `ORDER BY`, which stops at the limit): the rest
/// of the cursor's kind by id, the connection's later kinds, later
/// connections. Older versions (opened read-only) order by key, which their
/// unique key index seeks as a whole.
fn list_assets_sql(
    filter: &AssetFilter,
    after: Option<ListSeek<'_>>,
    limit: usize,
    version: i64,
) -> (String, Vec<Value>) {
    let (where_sql, mut params) = filter_sql(filter, true, version);
    let with = |extra: &str| {
        if where_sql.is_empty() { format!(" WHERE {extra}") } else { format!("{where_sql} AND {extra}") }
    };
    let mut bind = |v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    let (select, order) = if version >= 4 {
        (format!("SELECT {LISTED_COLUMNS}, id FROM assets"), "connection, kind, id")
    } else {
        (format!("SELECT {LISTED_COLUMNS}, NULL FROM assets"), "connection, kind, source_id")
    };
    let body = match after {
        None => format!("{select}{where_sql}"),
        Some(ListSeek::Key(k)) => {
            let (c, kind, id) = (
                bind(Value::Text(k.connection.clone())),
                bind(Value::Text(k.kind.as_str().to_string())),
                bind(Value::Text(k.source_id.clone())),
            );
            format!("{select}{}", with(&format!("(connection, kind, source_id) > ({c}, {kind}, {id})")))
        }
        Some(ListSeek::Id(k, id)) => {
            let (c, kind, id) = (
                bind(Value::Text(k.connection.clone())),
                bind(Value::Text(k.kind.as_str().to_string())),
                bind(Value::Integer(id)),
            );
            // Only the parts the filter's own connection and kind leave
            // anything in: a part that cannot match would still read every
            // entry its seek lands on.
            let connection_is =
                |f: fn(&str, &str) -> bool| filter.connection.as_deref().is_none_or(|fc| f(fc, &k.connection));
            let kind_is = |f: fn(&str, &str) -> bool| filter.kind.is_none_or(|fk| f(fk.as_str(), k.kind.as_str()));
            let parts: Vec<String> = [
                (connection_is(|a, b| a == b) && kind_is(|a, b| a == b))
                    .then(|| format!("connection = {c} AND kind = {kind} AND id > {id}")),
                (connection_is(|a, b| a == b) && kind_is(|a, b| a > b))
                    .then(|| format!("connection = {c} AND kind > {kind}")),
                connection_is(|a, b| a > b).then(|| format!("connection > {c}")),
            ]
            .into_iter()
            .flatten()
            .map(|part| format!("{select}{}", with(&part)))
            .collect();
            if parts.is_empty() { format!("{select} WHERE 0") } else { parts.join(" UNION ALL ") }
        }
    };
    let limit = bind(Value::Integer(limit_param(limit)));
    (format!("{body} ORDER BY {order} LIMIT {limit}"), params)
}

/// A page of runs, most recent first: `query`'s connection, runs after its cursor.
fn runs_sql(query: &RunQuery, limit: usize) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    if let Some(c) = &query.connection {
        params.push(Value::Text(c.clone()));
        clauses.push(format!("connection = ?{}", params.len()));
    }
    if let Some(b) = &query.before {
        params.push(Value::Text(ts(&b.started_at)));
        params.push(Value::Text(b.sync_id.clone()));
        let n = params.len();
        clauses.push(format!("(started_at < ?{} OR (started_at = ?{} AND sync_id < ?{n}))", n - 1, n - 1));
    }
    params.push(Value::Integer(limit_param(limit)));
    let where_sql = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    let sql =
        format!("SELECT summary FROM runs{where_sql} ORDER BY started_at DESC, sync_id DESC LIMIT ?{}", params.len());
    (sql, params)
}

fn row_to_asset(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawAssetRow> {
    Ok(RawAssetRow {
        connection: row.get(0)?,
        kind: row.get(1)?,
        source_id: row.get(2)?,
        stream: row.get(3)?,
        first_seen: row.get(4)?,
        last_seen: row.get(5)?,
        last_sync_id: row.get(6)?,
        stale_since: row.get(7)?,
        fields: row.get(8)?,
        raw: row.get(9)?,
        id: row.get(10)?,
    })
}

struct RawAssetRow {
    connection: String,
    kind: String,
    source_id: String,
    stream: String,
    first_seen: String,
    last_seen: String,
    last_sync_id: String,
    stale_since: Option<String>,
    fields: String,
    raw: Option<String>,
    /// The row id, for version 4's listing order; `None` from older versions.
    id: Option<i64>,
}

impl RawAssetRow {
    fn decode(self) -> Result<StoredAsset, StoreError> {
        Ok(StoredAsset {
            kind: parse_kind(&self.kind)?,
            first_seen: parse_ts("assets.first_seen", &self.first_seen)?,
            last_seen: parse_ts("assets.last_seen", &self.last_seen)?,
            stale_since: self.stale_since.as_deref().map(|s| parse_ts("assets.stale_since", s)).transpose()?,
            fields: parse_json("assets.fields", &self.fields)?,
            raw: self.raw.as_deref().map(|s| parse_json("assets.raw", s)).transpose()?,
            connection: self.connection,
            source_id: self.source_id,
            stream: self.stream,
            last_sync_id: self.last_sync_id,
            position: ListPosition(self.id),
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    async fn upsert(&self, batch: LoadBatch) -> Result<LoadOutcome, StoreError> {
        if batch.assets.is_empty() && batch.seen.is_empty() {
            return Ok(LoadOutcome::default());
        }
        // Serialized on the blocking pool, before the writer thread takes
        // the batch, so that concurrent batches overlap their CPU work.
        let (prepared, rejected, rest) = corral_core::spawn_yielding(move || {
            let LoadBatch { sync_id, connection, seen_at, assets, seen: still_there } = batch;
            let mut rejected = Vec::new();
            let mut prepared = Vec::with_capacity(assets.len());
            for asset in assets.iter() {
                match prepare(&connection, asset) {
                    Ok(p) => prepared.push(p),
                    Err(r) => rejected.push(r),
                }
            }
            // The assets are freed here, not on the writer thread.
            drop(assets);
            // In key order, so that the batch's inserts into the key index
            // go in one pass (stable: the later record of a key still wins).
            prepared.sort_by(|a, b| (a.kind, &a.source_id).cmp(&(b.kind, &b.source_id)));
            (prepared, rejected, (connection, sync_id, ts(&seen_at), still_there))
        })
        .await
        .map_err(join_error)?;
        let inner = Arc::clone(&self.inner);
        let mut outcome = self
            .writer_thread
            .run(move || {
                let (connection, sync_id, seen, still_there) = rest;
                let mut conn = inner.lock_writer();
                upsert_blocking(&inner, &mut conn, &connection, &sync_id, &seen, &prepared, &still_there)
            })
            .await?;
        outcome.rejected = rejected;
        Ok(outcome)
    }

    async fn handle_stale(&self, scope: &StaleScope, policy: StalePolicy) -> Result<StaleOutcome, StoreError> {
        let delete_after = match policy {
            StalePolicy::Keep => return Ok(StaleOutcome::default()),
            StalePolicy::Mark { delete_after } => delete_after,
        };
        let scope = scope.clone();
        self.write(move |conn| stale_blocking(conn, &scope, delete_after)).await
    }

    async fn save_checkpoint(&self, connection: &str, stream: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let value = serde_json::to_string(&checkpoint.0)
            .map_err(|e| StoreError::Permanent(format!("encode checkpoint: {e}")))?;
        let (connection, stream) = (connection.to_string(), stream.to_string());
        let now = ts(&Utc::now());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO checkpoints (connection, stream, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (connection, stream) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .ctx("prepare save checkpoint")?
            .execute(params![connection, stream, value, now])
            .ctx("save checkpoint")?;
            Ok(())
        })
        .await
    }

    async fn load_checkpoint(&self, connection: &str, stream: &str) -> Result<Option<Checkpoint>, StoreError> {
        let (connection, stream) = (connection.to_string(), stream.to_string());
        let value: Option<String> = self
            .read(move |conn| {
                conn.prepare_cached("SELECT value FROM checkpoints WHERE connection = ?1 AND stream = ?2")
                    .ctx("prepare load checkpoint")?
                    .query_row(params![connection, stream], |r| r.get(0))
                    .optional()
                    .ctx("load checkpoint")
            })
            .await?;
        value.map(|v| parse_json("checkpoints.value", &v).map(Checkpoint)).transpose()
    }

    async fn save_rejects(&self, rejects: Vec<StoredReject>) -> Result<(), StoreError> {
        if rejects.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).ctx("begin save rejects")?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO rejects (sync_id, connection, stream, record, reason, detail, raw) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .ctx("prepare save rejects")?;
                for r in &rejects {
                    insert
                        .execute(params![
                            r.sync_id,
                            r.connection,
                            r.stream,
                            r.reject.record,
                            r.reject.reason,
                            r.reject.detail,
                            r.reject.raw
                        ])
                        .ctx("save reject")?;
                }
            }
            tx.commit().ctx("commit save rejects")
        })
        .await
    }

    async fn rejects(&self, sync_id: &str, limit: usize) -> Result<Vec<StoredReject>, StoreError> {
        let sync_id = sync_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT sync_id, connection, stream, record, reason, detail, raw FROM rejects \
                     WHERE sync_id = ?1 ORDER BY id LIMIT ?2",
                )
                .ctx("prepare list rejects")?;
            let rows = stmt
                .query_map(params![sync_id, limit_param(limit)], |r| {
                    Ok(StoredReject {
                        sync_id: r.get(0)?,
                        connection: r.get(1)?,
                        stream: r.get(2)?,
                        reject: Reject {
                            record: r.get(3)?,
                            reason: r.get(4)?,
                            detail: r.get(5)?,
                            raw: r.get(6)?,
                            key: None,
                        },
                    })
                })
                .ctx("list rejects")?;
            rows.collect::<rusqlite::Result<Vec<_>>>().ctx("read rejects")
        })
        .await
    }

    async fn save_run(&self, summary: &RunSummary) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(summary).map_err(|e| StoreError::Permanent(format!("encode run summary: {e}")))?;
        let sync_id = summary.sync_id.clone();
        let connection = summary.connection.clone();
        let started_at = ts(&summary.started_at);
        let status = summary.status.as_str();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO runs (sync_id, connection, started_at, status, summary) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (sync_id) DO UPDATE SET connection = excluded.connection, \
                 started_at = excluded.started_at, status = excluded.status, summary = excluded.summary",
            )
            .ctx("prepare save run")?
            .execute(params![sync_id, connection, started_at, status, json])
            .ctx("save run")?;
            Ok(())
        })
        .await
    }

    async fn list_runs(&self, query: &RunQuery, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let (sql, params) = runs_sql(query, limit);
        let rows: Vec<String> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql).ctx("prepare list runs")?;
                let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| r.get(0)).ctx("list runs")?;
                rows.collect::<rusqlite::Result<Vec<String>>>().ctx("read runs")
            })
            .await?;
        rows.iter().map(|s| parse_json("runs.summary", s)).collect()
    }

    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let (connection, holder, owner) = (connection.to_string(), holder.to_string(), owner.to_string());
        self.write(move |conn| {
            let now = Utc::now();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).ctx("begin acquire lease")?;
            let taken = tx
                .prepare_cached(ACQUIRE_LEASE_SQL)
                .ctx("prepare acquire lease")?
                .execute(params![connection, holder, owner, ts(&now), ts(&lease_expiry(now, ttl))])
                .ctx("acquire lease")?;
            let lease = read_lease(&tx, &connection)?
                .ok_or_else(|| StoreError::Corrupt(format!("lease of {connection} missing right after writing it")))?;
            tx.commit().ctx("commit acquire lease")?;
            Ok(if taken == 1 && lease.holder == holder { LeaseGrant::Acquired(lease) } else { LeaseGrant::Held(lease) })
        })
        .await
    }

    async fn renew_lease(&self, connection: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let (connection, holder) = (connection.to_string(), holder.to_string());
        self.write(move |conn| {
            let expires = ts(&lease_expiry(Utc::now(), ttl));
            let renewed = conn
                .prepare_cached("UPDATE leases SET expires_at = ?3 WHERE connection = ?1 AND holder = ?2")
                .ctx("prepare renew lease")?
                .execute(params![connection, holder, expires])
                .ctx("renew lease")?;
            if renewed == 0 { Ok(None) } else { read_lease(conn, &connection) }
        })
        .await
    }

    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        let (connection, holder) = (connection.to_string(), holder.to_string());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM leases WHERE connection = ?1 AND holder = ?2")
                .ctx("prepare release lease")?
                .execute(params![connection, holder])
                .ctx("release lease")?;
            Ok(())
        })
        .await
    }

    async fn lease(&self, connection: &str) -> Result<Option<Lease>, StoreError> {
        let connection = connection.to_string();
        self.read(move |conn| read_lease(conn, &connection)).await
    }

    async fn run(&self, sync_id: &str) -> Result<Option<RunSummary>, StoreError> {
        let sync_id = sync_id.to_string();
        let row: Option<String> = self
            .read(move |conn| {
                conn.prepare_cached("SELECT summary FROM runs WHERE sync_id = ?1")
                    .ctx("prepare find run")?
                    .query_row(params![sync_id], |r| r.get(0))
                    .optional()
                    .ctx("find run")
            })
            .await?;
        row.map(|s| parse_json("runs.summary", &s)).transpose()
    }

    async fn count_assets(&self, filter: &AssetFilter) -> Result<Vec<AssetCount>, StoreError> {
        self.check_version(filter)?;
        let (where_sql, params) = filter_sql(filter, false, self.inner.version);
        let sql = format!(
            "SELECT connection, kind, COUNT(*), COALESCE(SUM(stale_since IS NOT NULL), 0) FROM assets{where_sql} \
             GROUP BY connection, kind ORDER BY connection, kind"
        );
        let rows: Vec<(String, String, i64, i64)> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql).ctx("prepare count assets")?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .ctx("count assets")?;
                rows.collect::<rusqlite::Result<Vec<_>>>().ctx("read asset counts")
            })
            .await?;
        let include_stale = filter.include_stale;
        rows.into_iter()
            .map(|(connection, kind, total, stale)| {
                let (total, stale) = (u64::try_from(total).unwrap_or(0), u64::try_from(stale).unwrap_or(0));
                Ok(AssetCount {
                    connection,
                    kind: parse_kind(&kind)?,
                    count: if include_stale { total } else { total.saturating_sub(stale) },
                    stale,
                })
            })
            .collect()
    }

    async fn list_assets_after(
        &self,
        filter: &AssetFilter,
        after: Option<&AssetCursor>,
        limit: usize,
    ) -> Result<Vec<StoredAsset>, StoreError> {
        self.check_version(filter)?;
        let version = self.inner.version;
        let (filter, after) = (filter.clone(), after.cloned());
        let rows = self
            .read(move |conn| {
                let seek = match &after {
                    None => None,
                    Some(AssetCursor { key, .. }) if version < 4 => Some(ListSeek::Key(key)),
                    Some(AssetCursor { key, position: Some(id) }) => Some(ListSeek::Id(key, *id)),
                    // A cursor without a position (made by hand, or by
                    // another store): the position of its asset.
                    Some(AssetCursor { key, position: None }) => {
                        let h = asset_key_hash(key.kind.as_str(), &key.source_id);
                        let found = find_ids(conn, &key.connection, &[(key.kind.as_str(), &key.source_id, h)])?;
                        let Some(Some(id)) = found.first().copied() else {
                            return Err(StoreError::Config(format!(
                                "cannot list after {} {} {}: it is not stored, and the cursor does not say \
                                 where it was; list from the start",
                                key.connection, key.kind, key.source_id
                            )));
                        };
                        Some(ListSeek::Id(key, id))
                    }
                };
                let (sql, params) = list_assets_sql(&filter, seek, limit, version);
                let mut stmt = conn.prepare_cached(&sql).ctx("prepare list assets")?;
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(params.iter()), row_to_asset).ctx("list assets")?;
                rows.collect::<rusqlite::Result<Vec<_>>>().ctx("read assets")
            })
            .await?;
        rows.into_iter().map(RawAssetRow::decode).collect()
    }
}

impl SqliteStore {
    /// The database's schema version (older than [`SCHEMA_VERSION`] only
    /// for a database opened read-only that no sync has migrated yet).
    pub fn schema_version(&self) -> i64 {
        self.inner.version
    }

    fn check_version(&self, filter: &AssetFilter) -> Result<(), StoreError> {
        // The lookup index came with version 3.
        if self.inner.version < 3 && needs_lookup(filter) {
            return Err(StoreError::Config(format!(
                "{} has schema version {}, which has no lookup index of correlation keys and references yet; \
                 run `corral sync` once to upgrade it",
                self.inner.describe, self.inner.version
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let a = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z").map(|t| t.with_timezone(&Utc));
        let b = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.5Z").map(|t| t.with_timezone(&Utc));
        let (Ok(a), Ok(b)) = (a, b) else { panic!("parse") };
        let (sa, sb) = (ts(&a), ts(&b));
        assert_eq!(sa.len(), sb.len());
        assert!(sa < sb);
        assert_eq!(parse_ts("t", &sa).ok(), Some(a));
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The threads that write and read give way to the runtime, as the
    /// normalize pool does; the runtime's own thread is left alone.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn store_threads_give_way_to_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("corral.db")).expect("open");
        let inherited = corral_core::thread_scheduling().expect("scheduling");
        let expected = corral_core::yielded_scheduling(inherited);
        let writer = store.write(|_| Ok(corral_core::thread_scheduling())).await.expect("write");
        let reader = store.read(|_| Ok(corral_core::thread_scheduling())).await.expect("read");
        assert_eq!(writer, Some(expected), "the writer's thread");
        assert_eq!(reader, Some(expected), "the reader's thread");
        assert_eq!(corral_core::thread_scheduling(), Some(inherited), "the runtime's thread");
    }

    /// Every write runs on the store's one writer thread; a panic in one is
    /// that call's error, and the thread and its connection go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_run_on_one_thread_that_survives_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("corral.db")).expect("open");
        let thread = || Ok((std::thread::current().id(), std::thread::current().name().map(str::to_string)));
        let other = store.clone();
        let (a, b) = tokio::join!(store.write(move |_| thread()), other.write(move |_| thread()));
        drop(other);
        let first = a.expect("write");
        assert_eq!(first.1.as_deref(), Some("corral-sqlite"), "a write ran off the store's writer thread");
        assert_eq!(first, b.expect("write"), "two concurrent writes ran on different threads");
        let err = store
            .write(|conn| -> Result<(), StoreError> {
                conn.execute_batch("BEGIN IMMEDIATE; CREATE TABLE half_done (x)")
                    .map_err(|e| StoreError::Permanent(e.to_string()))?;
                panic!("boom in the writer");
            })
            .await
            .expect_err("a panic is an error");
        assert!(
            matches!(&err, StoreError::Permanent(m) if m.contains("panicked") && m.contains("boom in the writer")),
            "{err}"
        );
        assert_eq!(store.write(move |_| thread()).await.expect("the writer goes on"), first);
        // The transaction the panic left open is not committed by later work.
        let device = corral_core::Device { source_id: "a1".into(), ..Default::default() };
        let batch = LoadBatch {
            sync_id: "s1".into(),
            connection: "c".into(),
            seen_at: Utc::now(),
            assets: vec![Asset::device("hosts", device)].into(),
            seen: vec![],
        };
        assert_eq!(store.upsert(batch).await.expect("upsert after the panic").inserted, 1);
        drop(store);
        let reopened = SqliteStore::open(dir.path().join("corral.db")).expect("reopen");
        let tables: i64 = reopened
            .read(|c| {
                c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'", [], |r| r.get(0))
                    .map_err(|e| StoreError::Permanent(e.to_string()))
            })
            .await
            .expect("read");
        assert_eq!(tables, 0, "the panicked write's transaction was committed");
    }

    #[tokio::test]
    async fn read_only_open_reads_never_writes_and_never_creates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corral.db");
        let err = SqliteStore::open_read_only(&path).expect_err("no database yet");
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("no database at") && m.contains("corral sync")),
            "{err}"
        );
        assert!(listing(dir.path()).is_empty(), "nothing created");

        let store = SqliteStore::open(&path).expect("open");
        store.save_run(&RunSummary::new("c", "a")).await.expect("save run");
        drop(store);
        // A rollback-journal database: reading it needs no file beside it.
        let conn = Connection::open(&path).expect("open");
        let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).expect("journal mode");
        assert_eq!(mode, "delete");
        drop(conn);
        let (bytes, files) = (std::fs::read(&path).expect("read"), listing(dir.path()));

        let ro = SqliteStore::open_read_only(&path).expect("open read-only");
        assert_eq!(ro.runs(10).await.expect("runs").len(), 1);
        assert!(ro.count_assets(&AssetFilter::default()).await.expect("count").is_empty());
        assert!(ro.save_run(&RunSummary::new("c", "a")).await.is_err(), "writes fail");
        drop(ro);
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "the database file is unchanged");
        assert_eq!(listing(dir.path()), files, "no file created beside it");

        // Files that are not corral databases are named as such.
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"not sqlite at all, just some text that is long enough").expect("write");
        let err = SqliteStore::open_read_only(&other).expect_err("not sqlite");
        assert!(err.to_string().contains("not a SQLite database"), "{err}");
        let empty = dir.path().join("empty.db");
        Connection::open(&empty).and_then(|c| c.execute_batch("CREATE TABLE x (y)")).expect("sqlite");
        let err = SqliteStore::open_read_only(&empty).expect_err("not corral");
        assert!(err.to_string().contains("not a corral database"), "{err}");
        let err = SqliteStore::open_read_only(dir.path()).expect_err("a directory");
        assert!(err.to_string().contains("not a database file"), "{err}");
    }

    /// The writer's statements keep their plans whatever values are bound:
    /// SQLite otherwise re-prepares a statement when a new binding could
    /// change its plan, and the key search was re-prepared (parsed and
    /// planned again, 256 rows of `VALUES`) on every run: 6 % of a 1M load.
    #[tokio::test]
    async fn the_writer_never_re_prepares_its_statements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("corral.db")).expect("open");
        let device = |i: usize| {
            Asset::device(
                "hosts",
                corral_core::Device {
                    source_id: format!("{i:032x}"),
                    hostname: Some(format!("host-{i}")),
                    ..Default::default()
                },
            )
        };
        for round in 0..3 {
            // Each batch half stored already, half new.
            let assets: Vec<Asset> = (round * 300..round * 300 + 600).map(device).collect();
            let batch = LoadBatch {
                sync_id: format!("s{round}"),
                connection: "c".into(),
                seen_at: Utc::now(),
                assets: assets.into(),
                seen: vec![],
            };
            store.upsert(batch).await.expect("upsert");
        }
        let reprepared = store
            .write(|conn| {
                let mut counts = Vec::new();
                for rows in [256, 64, 16, 8] {
                    for (what, sql) in [
                        ("key search", statement_for(&FIND_IDS_SQL, find_ids_sql, rows)),
                        ("upsert", statement_for(&UPSERT_SQL, upsert_sql, rows)),
                    ] {
                        // The cached statement the batches ran, not a new one.
                        let st = conn.prepare_cached(sql).ctx("prepare")?;
                        let (runs, reprepared) = (
                            st.get_status(rusqlite::StatementStatus::Run),
                            st.get_status(rusqlite::StatementStatus::RePrepare),
                        );
                        counts.push((what, rows, runs, reprepared));
                    }
                }
                Ok(counts)
            })
            .await
            .expect("statements");
        assert!(reprepared.iter().all(|(_, _, runs, n)| *runs > 0 && *n == 0), "(runs, re-prepared): {reprepared:?}");
    }

    #[test]
    fn immutable_uris_escape_the_path() {
        assert_eq!(immutable_uri(Path::new("/a b/c?d#e%.db")), "file:/a%20b/c%3Fd%23e%25.db?immutable=1");
        assert_eq!(immutable_uri(Path::new("rel/corral.db")), "file:rel/corral.db?immutable=1");
    }

    fn query_plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
        let nulls = vec![Value::Null; stmt.parameter_count()];
        let rows = stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3)).expect("plan");
        rows.collect::<rusqlite::Result<Vec<_>>>().expect("plan rows").join("; ")
    }

    #[test]
    fn hot_queries_use_indexes() {
        let store = SqliteStore::open_in_memory().expect("open");
        let conn = store.inner.writer.lock().expect("lock");
        let plan = query_plan(&conn, MARK_STALE_SQL);
        assert!(plan.contains("USING INDEX assets_stream"), "mark stale: {plan}");
        let plan = query_plan(&conn, DELETE_STALE_SQL);
        assert!(plan.contains("USING INDEX"), "delete stale: {plan}");
        let plan = query_plan(&conn, SET_STREAM_SQL);
        assert!(plan.contains("INTEGER PRIMARY KEY (rowid=?)"), "set stream: {plan}");
        let plan = query_plan(&conn, TOUCH_SQL);
        assert!(plan.contains("INTEGER PRIMARY KEY (rowid=?)"), "touch: {plan}");
        // The key search seeks both key levels, then each row by id.
        let plan = query_plan(&conn, &find_ids_sql(4));
        assert!(plan.contains("SEARCH k USING PRIMARY KEY (h=?)"), "key search: {plan}");
        assert!(plan.contains("SEARCH assets USING INTEGER PRIMARY KEY (rowid=?)"), "key search: {plan}");
        assert!(!plan.contains("SCAN k") && !plan.contains("SCAN assets"), "key search: {plan}");
        // The key triggers delete by key, never by scan.
        for level in ["asset_key", "asset_key_recent"] {
            let plan = query_plan(&conn, &format!("DELETE FROM {level} WHERE h = ?1 AND id = ?2"));
            assert!(plan.contains("USING PRIMARY KEY (h=? AND id=?)"), "{level}: {plan}");
        }
        let by_id = AssetFilter {
            conditions: vec![
                corral_core::schema::parse_where("source_id=x", Some(AssetKind::Device), &[]).expect("parse"),
            ],
            ..Default::default()
        };
        let (where_sql, _) = filter_sql(&by_id, true, SCHEMA_VERSION);
        let plan = query_plan(&conn, &format!("SELECT source_id FROM assets{where_sql}"));
        assert!(plan.contains("SEARCH asset_key USING PRIMARY KEY (h=?)"), "--where source_id: {plan}");
        assert!(plan.contains("SEARCH asset_key_recent USING PRIMARY KEY (h=?)"), "--where source_id: {plan}");
        assert!(!plan.contains("SCAN assets"), "--where source_id: {plan}");
        let by_key = AssetFilter {
            conditions: vec![corral_core::schema::parse_where("serial_number=x", None, &[]).expect("parse")],
            ..Default::default()
        };
        let (where_sql, _) = filter_sql(&by_key, true, SCHEMA_VERSION);
        let plan = query_plan(&conn, &format!("SELECT source_id FROM assets{where_sql}"));
        assert!(plan.contains("SEARCH asset_lookup USING PRIMARY KEY (h=?)"), "--where on a key: {plan}");
        assert!(plan.contains("SCAN asset_lookup_log"), "--where on a key reads the log: {plan}");
        assert!(plan.contains("INTEGER PRIMARY KEY (rowid=?)"), "--where on a key, assets by id: {plan}");
        let points = AssetFilter {
            points_at: Some(corral_core::store::AssetKey {
                connection: "c".into(),
                kind: AssetKind::Device,
                source_id: "d".into(),
            }),
            ..Default::default()
        };
        let (where_sql, _) = filter_sql(&points, true, SCHEMA_VERSION);
        let plan = query_plan(&conn, &format!("SELECT source_id FROM assets{where_sql}"));
        assert!(plan.contains("SEARCH asset_lookup USING PRIMARY KEY (h=?)"), "points_at: {plan}");
        // What the triggers run to delete an asset's lookup rows seeks, never scans.
        let plan =
            query_plan(&conn, "DELETE FROM asset_lookup WHERE asset = ?1 AND h IN (SELECT value FROM json_each(?2))");
        assert!(plan.contains("SEARCH asset_lookup USING PRIMARY KEY (h=? AND asset=?)"), "delete lookups: {plan}");
        let plan = query_plan(&conn, "DELETE FROM asset_lookup_log WHERE asset = ?1");
        assert!(plan.contains("SEARCH asset_lookup_log USING PRIMARY KEY (asset=?)"), "delete logged: {plan}");
        let plan = query_plan(&conn, "SELECT summary FROM runs ORDER BY started_at DESC, sync_id DESC LIMIT 5");
        assert!(plan.contains("USING INDEX runs_started_at"), "runs: {plan}");
        // Pages of assets and runs seek with an index and never sort the table.
        let seeks = |filter: &AssetFilter, after: Option<ListSeek<'_>>| {
            let (sql, _) = list_assets_sql(filter, after, 10, SCHEMA_VERSION);
            let plan = query_plan(&conn, &sql);
            assert!(plan.contains("USING INDEX assets_kind") && !plan.contains("TEMP B-TREE"), "{plan}");
            plan
        };
        let device = AssetKey { connection: "c".into(), kind: AssetKind::Device, source_id: "s".into() };
        let user = AssetKey { kind: AssetKind::User, ..device.clone() };
        let c_users = AssetFilter { connection: Some("c".into()), kind: Some(AssetKind::User), ..Default::default() };
        seeks(&AssetFilter::default(), None);
        seeks(&c_users, None);
        // After a cursor: seeks to it (the rest of its kind by id), never a
        // scan of its connection and kind up to it; then the later kinds and
        // connections, each by a seek.
        let plan = seeks(&AssetFilter::default(), Some(ListSeek::Id(&device, 7)));
        assert!(plan.contains("assets_kind (connection=? AND kind=? AND rowid>?)"), "{plan}");
        assert!(plan.contains("assets_kind (connection=? AND kind>?)"), "{plan}");
        assert!(plan.contains("assets_kind (connection>?)") && !plan.contains("SCAN"), "{plan}");
        // With the filter's connection and kind, only the rest of that kind.
        let plan = seeks(&c_users, Some(ListSeek::Id(&user, 7)));
        assert_eq!(plan, "SEARCH assets USING INDEX assets_kind (connection=? AND kind=? AND rowid>?)");
        // A cursor of an earlier kind: the filter's kind from its start.
        let plan = seeks(&c_users, Some(ListSeek::Id(&device, 7)));
        assert_eq!(plan, "SEARCH assets USING INDEX assets_kind (connection=? AND kind=?)");
        let cursor = corral_core::RunCursor { started_at: Utc::now(), sync_id: "s".into() };
        let (sql, _) = runs_sql(&RunQuery { connection: Some("c".into()), before: Some(cursor.clone()) }, 5);
        let plan = query_plan(&conn, &sql);
        assert!(plan.contains("USING INDEX runs_connection") && !plan.contains("TEMP B-TREE"), "runs of c: {plan}");
        let (sql, _) = runs_sql(&RunQuery { connection: None, before: Some(cursor) }, 5);
        let plan = query_plan(&conn, &sql);
        assert!(plan.contains("USING INDEX runs_started_at") && !plan.contains("TEMP B-TREE"), "runs: {plan}");
    }

    #[test]
    fn busy_maps_to_transient() {
        let e = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(sql_error("x", e).is_transient());
        let e = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT), None);
        assert!(!sql_error("x", e).is_transient());
    }
}
