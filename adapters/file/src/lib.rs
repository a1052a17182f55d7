//! corral adapter `file`: devices or users from CSV or NDJSON exports.
//!
//! This is how operators bring in products without an API. The connection
//! names a file, its format, the asset kind it holds and which column feeds
//! which asset field:
//!
//! ```toml
//! path = "exports/devices.csv"
//! format = "csv"            # or "ndjson"; default: from the extension
//! kind = "device"           # or "user"
//! [columns]
//! source_id = "id"
//! hostname = "Host Name"
//! ```
//!
//! [`Adapter::fetch`] streams the file (never reading it whole) and cuts it
//! into raw pages of `page_records` records without decoding them; each CSV
//! page carries a copy of the header so [`Adapter::normalize`] can parse any
//! page on its own. Bad records become rejects naming their line.

use std::future::Future;
use std::io::SeekFrom;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, AssetKind, CheckOutcome, Checkpoint, ConfigError, ConfigField,
    FetchContext, FetchError, FieldType, NormalizedPage, RawPage, Reject, StreamInfo,
};
use std::io::{BufRead, BufReader, Seek};

pub mod config;
pub mod normalize;
pub mod sample;
pub mod split;

pub use config::{FileConfig, Format, Settings};
pub use split::{SplitPage, Splitter};

/// Read buffer for fetch.
const READ_BUFFER: usize = 256 * 1024;

/// Builds `file` adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileAdapterFactory;

fn stream_info(kind: AssetKind, key: &str) -> StreamInfo {
    let what = match kind {
        AssetKind::User => "Users from the file (when kind = \"user\")",
        _ => "Devices from the file (when kind = \"device\")",
    };
    let s = StreamInfo::new(config::stream_name(kind), kind, key, what);
    let column = "the column mapped to it in `columns`";
    let fields: &[&str] = match kind {
        AssetKind::User => &[
            "username",
            "email",
            "display_name",
            "first_name",
            "last_name",
            "active",
            "status",
            "created",
            "last_login",
            "tags",
        ],
        _ => &[
            "hostname",
            "domain",
            "ip_addresses",
            "mac_addresses",
            "serial_number",
            "os.family",
            "os.name",
            "os.version",
            "manufacturer",
            "model",
            "first_seen",
            "last_seen",
            "owner",
            "owner_ref",
            "tags",
        ],
    };
    fields.iter().fold(s, |s, f| match *f {
        "os.family" => s.fills(f, "from the `os_name` and `os_version` columns"),
        "os.name" => s.fills(f, "the `os_name` column"),
        "os.version" => s.fills(f, "the `os_version` column"),
        "owner_ref" => s.fills(f, "the `owner_id` column: a user of `owner_connection` (default: this connection)"),
        _ => s.fills(f, column),
    })
}

/// The stream a validated config feeds, with the attributes its `attributes` table declares.
fn configured_stream(settings: &Settings) -> StreamInfo {
    settings
        .attributes
        .iter()
        .fold(stream_info(settings.kind, settings.source_column()), |s, a| s.attribute(&a.name, a.ty, &a.description))
}

fn config_fields() -> Vec<ConfigField> {
    vec![
        ConfigField::required("path", FieldType::Path, "The CSV or NDJSON export to read."),
        ConfigField::optional(
            "format",
            FieldType::String,
            "\"csv\" or \"ndjson\" (alias \"jsonl\"). Default: from the extension (.csv/.tsv -> csv, .ndjson/.jsonl -> ndjson).",
        ),
        ConfigField::optional(
            "kind",
            FieldType::String,
            "\"device\" or \"user\": the asset kind the file holds; the stream is \"devices\" or \"users\". Default \"device\".",
        ),
        ConfigField::optional(
            "delimiter",
            FieldType::String,
            "CSV only: the field delimiter, one ASCII character. Default \",\" (tab for .tsv files).",
        ),
        ConfigField::optional("page_records", FieldType::Integer, "Records per raw page, 1..=100000. Default 1000."),
        ConfigField::optional(
            "keep_raw",
            FieldType::Boolean,
            "Keep each source record on its asset (a JSON object; for CSV header -> value). Default false.",
        ),
        ConfigField::required(
            "columns",
            FieldType::Table,
            "Asset field -> CSV header name or NDJSON key (NDJSON allows dotted paths like \"os.name\" or \"nics.0.mac\"). \
             source_id is required. Device fields: hostname, domain, ip_addresses, mac_addresses, serial_number, os_name, \
             os_version, manufacturer, model, first_seen, last_seen, owner, tags. User fields: username, email, \
             display_name, first_name, last_name, active, status, created, last_login, tags. ip_addresses, mac_addresses \
             and tags take a column holding several values (separated by , or ; -- IPs and MACs also by whitespace) or an NDJSON array. \
             owner_id (devices) references the owner as a user of owner_connection.",
        ),
        ConfigField::optional(
            "attributes",
            FieldType::Table,
            "Vendor attribute name -> its column (a string attribute), or { column = \"...\", type = \"string|integer|float|boolean|timestamp|string_list\", description = \"...\" }. \
             A value that is not of the type rejects the record (attribute_type).",
        ),
        ConfigField::optional(
            "owner_connection",
            FieldType::String,
            "Devices: the connection whose users the owner_id column names. Default: this connection.",
        ),
    ]
}

/// Registers this adapter: what the `corral` binary's build script calls for
/// every adapter crate it includes.
pub fn register(registry: &mut corral_core::Registry) {
    registry.register(FileAdapterFactory);
}

impl AdapterFactory for FileAdapterFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "file".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Devices or users from a CSV or NDJSON export (for products without an API)".into(),
            streams: vec![stream_info(AssetKind::Device, "source_id"), stream_info(AssetKind::User, "source_id")],
            config: config_fields(),
            notes: AdapterNotes {
                auth: "None: corral reads a file on this machine.".into(),
                permissions: vec!["Read access to the export file for the user corral runs as.".into()],
                rate_limits: String::new(),
            },
        }
    }

    fn info_for(&self, config: &serde_json::Value) -> AdapterInfo {
        match config::parse(config.clone()) {
            Ok(settings) => FileAdapter::new("", settings).info,
            Err(_) => self.info(),
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(FileAdapter::from_config(connection, config)?))
    }
}

/// A configured `file` connection.
#[derive(Debug, Clone)]
pub struct FileAdapter {
    connection: String,
    settings: Settings,
    info: AdapterInfo,
}

impl FileAdapter {
    /// Parse and validate `config`. Does no I/O.
    pub fn from_config(connection: &str, config: serde_json::Value) -> Result<Self, ConfigError> {
        Ok(Self::new(connection, config::parse(config)?))
    }

    pub fn new(connection: &str, settings: Settings) -> Self {
        let mut info = FileAdapterFactory.info();
        // This connection offers only the stream its kind feeds, with the attributes its config declares.
        info.streams = vec![configured_stream(&settings)];
        FileAdapter { connection: connection.into(), settings, info }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn path_str(&self) -> String {
        self.settings.path.display().to_string()
    }

    fn io_error(&self, source: std::io::Error) -> FetchError {
        FetchError::Io { what: self.path_str(), source }
    }

    fn raw_page(&self, p: SplitPage, ident: &FileIdent) -> RawPage {
        let locator = format!("{} lines {}-{}", self.settings.path.display(), p.first_line, p.last_line);
        let checkpoint = serde_json::json!({
            "offset": p.end_offset,
            "line": p.last_line,
            "size": ident.size,
            "mtime_ns": ident.mtime_ns,
        });
        let page = RawPage::new(self.settings.stream_name(), p.body, locator)
            .with_first_record(p.first_line)
            .with_checkpoint(Checkpoint(checkpoint));
        match p.too_long {
            None => page.with_record_hint(p.records),
            Some(skipped) => page.with_record_hint(1).with_reject(
                Reject::new(
                    format!("line {}", skipped.line),
                    "line_too_long",
                    format!("longer than {} MiB: skipped", split::MAX_RECORD_BYTES / (1024 * 1024)),
                )
                .with_raw(&skipped.prefix),
            ),
        }
    }

    /// Check a CSV header holds every mapped column.
    fn check_header(&self, header: &[u8]) -> Result<Vec<String>, String> {
        let names = normalize::parse_header(&self.settings, header)?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        normalize::resolve_columns(&self.settings, &refs)
            .map_err(|e| format!("{e}; the header has: {}", list_columns(&names)))?;
        Ok(names)
    }

    /// Read the file and hand each page to `send`, in order. This is
    /// [`Adapter::fetch`] without the engine's sink, for tools and tests.
    ///
    /// Reading and cutting pages (the CSV quote scan) run on a blocking
    /// thread, never on the runtime; pages come back through a channel of
    /// one, so at most a read buffer and two pages are held here.
    ///
    /// With a `checkpoint` from an earlier, interrupted run of this
    /// connection, reading resumes after the last page that run stored, but
    /// only when the file is unchanged (same size and modification time, and
    /// the offset is a record boundary); otherwise the whole file is read.
    pub async fn fetch_pages<F, Fut>(&self, checkpoint: Option<&Checkpoint>, send: F) -> Result<(), FetchError>
    where
        F: FnMut(RawPage) -> Fut + Send,
        Fut: Future<Output = Result<(), FetchError>> + Send,
    {
        self.read_all(checkpoint, send).await.map(|_| ())
    }

    /// [`FileAdapter::fetch_pages`], saying whether a checkpoint was given
    /// and not used (the file changed): the whole file was read.
    async fn read_all<F, Fut>(&self, checkpoint: Option<&Checkpoint>, mut send: F) -> Result<bool, FetchError>
    where
        F: FnMut(RawPage) -> Fut + Send,
        Fut: Future<Output = Result<(), FetchError>> + Send,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RawPage>(1);
        let reader = self.clone();
        let checkpoint = checkpoint.cloned();
        let reading = tokio::task::spawn_blocking(move || reader.read_pages(checkpoint.as_ref(), &tx));
        while let Some(page) = rx.recv().await {
            if let Err(e) = send(page).await {
                // The reader stops at its next page.
                drop(rx);
                let _ = reading.await;
                return Err(e);
            }
        }
        match reading.await {
            Ok(result) => result,
            Err(e) => Err(FetchError::Other(format!("reading {} stopped: {e}", self.path_str()))),
        }
    }

    /// The blocking half of [`FileAdapter::fetch_pages`].
    fn read_pages(
        &self,
        checkpoint: Option<&Checkpoint>,
        tx: &tokio::sync::mpsc::Sender<RawPage>,
    ) -> Result<bool, FetchError> {
        let s = &self.settings;
        let file = std::fs::File::open(&s.path).map_err(|e| self.io_error(e))?;
        let meta = file.metadata().map_err(|e| self.io_error(e))?;
        let ident = FileIdent::of(&meta);
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);

        let resumed = match checkpoint.and_then(|c| ResumePoint::parse(c, &ident)) {
            Some(at) => match self.resume(&mut reader, &at)? {
                Some(splitter) => {
                    tracing::info!(connection = %self.connection, path = %s.path.display(), offset = at.offset, line = at.line, "resuming the file from the checkpoint");
                    Some(splitter)
                }
                None => {
                    reader.seek(SeekFrom::Start(0)).map_err(|e| self.io_error(e))?;
                    None
                }
            },
            None => None,
        };
        let started_over = checkpoint.is_some() && resumed.is_none();
        if started_over {
            tracing::info!(connection = %self.connection, path = %s.path.display(), "the checkpoint does not match the file; reading it from the start");
        }
        let mut splitter = resumed.unwrap_or_else(|| Splitter::new(s.format, s.delimiter, s.page_records));

        let mut pages = Vec::new();
        let mut header_checked = s.format != Format::Csv;
        let protocol = |detail: String| FetchError::Protocol { endpoint: self.path_str(), detail };
        let mut eof = false;
        while !eof {
            let buf = reader.fill_buf().map_err(|e| self.io_error(e))?;
            if buf.is_empty() {
                eof = true;
                splitter.finish(&mut pages).map_err(|e| protocol(e.to_string()))?;
            } else {
                let n = buf.len();
                splitter.feed(buf, &mut pages).map_err(|e| protocol(e.to_string()))?;
                reader.consume(n);
            }
            if !header_checked && let Some(h) = splitter.header() {
                self.check_header(h).map_err(protocol)?;
                header_checked = true;
            }
            for p in pages.drain(..) {
                tx.blocking_send(self.raw_page(p, &ident)).map_err(|_| FetchError::Closed)?;
            }
        }
        tracing::debug!(connection = %self.connection, path = %s.path.display(), bytes = splitter.offset(), "file read");
        Ok(started_over)
    }

    /// Position `reader` at a checkpoint. None when the checkpoint does not
    /// fit the file (then the caller starts over).
    fn resume(&self, reader: &mut BufReader<std::fs::File>, at: &ResumePoint) -> Result<Option<Splitter>, FetchError> {
        let s = &self.settings;
        // The CSV header, read from the start again.
        let header = if s.format == Format::Csv {
            let mut probe = Splitter::new(Format::Csv, s.delimiter, config::MAX_PAGE_RECORDS);
            let mut discard = Vec::new();
            while probe.header().is_none() && probe.offset() < at.offset {
                let buf = reader.fill_buf().map_err(|e| self.io_error(e))?;
                if buf.is_empty() {
                    break;
                }
                let n = buf.len();
                if probe.feed(buf, &mut discard).is_err() {
                    return Ok(None);
                }
                reader.consume(n);
                discard.clear();
            }
            match probe.header() {
                Some(h) => Some((h.to_vec(), probe.header_lines())),
                None => return Ok(None),
            }
        } else {
            None
        };
        // The byte before the offset must end a record.
        if at.offset > 0 {
            reader.seek(SeekFrom::Start(at.offset - 1)).map_err(|e| self.io_error(e))?;
            let buf = reader.fill_buf().map_err(|e| self.io_error(e))?;
            if buf.first() != Some(&b'\n') {
                return Ok(None);
            }
            reader.consume(1);
        }
        Ok(Some(Splitter::resume(s.format, s.delimiter, s.page_records, header, at.offset, at.line + 1)))
    }

    /// What `check` reports: the file's size and, for CSV, its columns. Blocking.
    fn check_file(&self) -> Result<String, String> {
        let path: &Path = &self.settings.path;
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            return Err("is a directory, not a file".into());
        }
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let len = meta.len();
        match self.settings.format {
            Format::Ndjson => {
                // Prove it is readable.
                reader.fill_buf().map_err(|e| e.to_string())?;
                Ok(format!("{len} bytes, ndjson"))
            }
            Format::Csv => {
                let mut splitter = Splitter::new(Format::Csv, self.settings.delimiter, config::MAX_PAGE_RECORDS);
                let mut pages = Vec::new();
                while splitter.header().is_none() {
                    let buf = reader.fill_buf().map_err(|e| e.to_string())?;
                    if buf.is_empty() {
                        splitter.finish(&mut pages).map_err(|e| e.to_string())?;
                        break;
                    }
                    let n = buf.len();
                    splitter.feed(buf, &mut pages).map_err(|e| e.to_string())?;
                    reader.consume(n);
                    pages.clear();
                }
                let header = splitter.header().ok_or("the file is empty: no CSV header")?;
                let names = self.check_header(header)?;
                Ok(format!("{len} bytes, columns {}", list_columns(&names)))
            }
        }
    }
}

/// What identifies one version of the file: a checkpoint is only used for the same version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdent {
    size: u64,
    /// Modification time in nanoseconds since the epoch, when the platform has one.
    mtime_ns: Option<u64>,
}

impl FileIdent {
    fn of(meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        FileIdent { size: meta.len(), mtime_ns }
    }
}

/// A checkpoint this adapter wrote, for the same file version.
#[derive(Debug, Clone, Copy)]
struct ResumePoint {
    offset: u64,
    line: u64,
}

impl ResumePoint {
    fn parse(c: &Checkpoint, ident: &FileIdent) -> Option<Self> {
        let offset = c.0.get("offset")?.as_u64()?;
        let line = c.0.get("line")?.as_u64()?;
        let size = c.0.get("size")?.as_u64()?;
        let mtime_ns = c.0.get("mtime_ns")?.as_u64()?;
        let same = size == ident.size && Some(mtime_ns) == ident.mtime_ns && offset <= size && line > 0;
        same.then_some(ResumePoint { offset, line })
    }
}

/// `a, b, c` (at most 30 names).
fn list_columns(names: &[String]) -> String {
    const MAX: usize = 30;
    let mut s = names.iter().take(MAX).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > MAX {
        s.push_str(&format!(" and {} more", names.len() - MAX));
    }
    s
}

#[async_trait]
impl Adapter for FileAdapter {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    async fn check(&self) -> CheckOutcome {
        let me = self.clone();
        let checked = tokio::task::spawn_blocking(move || me.check_file())
            .await
            .unwrap_or_else(|e| Err(format!("the check stopped: {e}")));
        match checked {
            Ok(detail) => CheckOutcome::Ok { detail },
            Err(detail) => CheckOutcome::Unreachable { endpoint: self.path_str(), detail },
        }
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        if ctx.stream.name != self.settings.stream_name() {
            return Err(FetchError::UnknownStream(ctx.stream.name));
        }
        let sink = &ctx.sink;
        let started_over = if self.settings.page_records > ctx.max_page_records {
            // The engine's memory bound assumes pages of at most this many records.
            let mut smaller = self.clone();
            smaller.settings.page_records = ctx.max_page_records.max(1);
            smaller.read_all(ctx.checkpoint.as_ref(), move |page| sink.send(page)).await?
        } else {
            self.read_all(ctx.checkpoint.as_ref(), move |page| sink.send(page)).await?
        };
        if started_over {
            // The whole file was read: this run keeps its stale handling.
            ctx.fetching_from_start();
        }
        Ok(())
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        normalize::normalize_page(&self.settings, page)
    }
}
