//! The `Adapter` trait: what a vendor integration implements.
//!
//! An adapter has two halves that run in different places:
//! - [`Adapter::fetch`] is async I/O on the tokio runtime. It hands raw pages
//!   (bytes, never decoded) to the [`PageSink`] the engine provides; `send`
//!   waits when the pipeline is full, which is how backpressure reaches the vendor.
//! - [`Adapter::normalize`] is synchronous, pure CPU work on the engine's rayon
//!   pool: one raw page in, normalized assets and per-record rejects out.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::asset::{Asset, AssetKind, AttrType, AttrValue};
use crate::metrics::RequestMetrics;

/// One stream an adapter offers (for example CrowdStrike `hosts`, Graph `users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    pub name: String,
    /// The single asset kind this stream produces.
    pub kind: AssetKind,
    /// The vendor field that becomes the asset's `source_id`.
    pub key: String,
    pub description: String,
    /// The vendor attributes this stream's assets may carry, beyond the
    /// canonical fields. The engine rejects a record with an attribute not
    /// declared here, or of another type (`undeclared_attribute`,
    /// `attribute_type`), naming the attribute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeInfo>,
    /// Which canonical fields this stream fills, and from what vendor field
    /// (for `corral adapters` and docs/SCHEMA.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fills: Vec<FieldSource>,
}

/// A vendor attribute a stream declares: its name (lowercase letters,
/// digits and `_`, starting with a letter), type and meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: AttrType,
    pub description: String,
}

/// How a stream fills one canonical field: `field` (a name in
/// [`crate::schema::fields`], e.g. `os.family`) from `from` (the vendor's field or a rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldSource {
    pub field: String,
    pub from: String,
}

impl StreamInfo {
    pub fn new(name: &str, kind: AssetKind, key: &str, description: &str) -> Self {
        StreamInfo {
            name: name.into(),
            kind,
            key: key.into(),
            description: description.into(),
            attributes: Vec::new(),
            fills: Vec::new(),
        }
    }

    /// Declare a vendor attribute.
    pub fn attribute(mut self, name: &str, ty: AttrType, description: &str) -> Self {
        self.attributes.push(AttributeInfo { name: name.into(), ty, description: description.into() });
        self
    }

    /// Say that this stream fills canonical `field` from `from`.
    pub fn fills(mut self, field: &str, from: &str) -> Self {
        self.fills.push(FieldSource { field: field.into(), from: from.into() });
        self
    }

    /// The declared type of attribute `name`.
    pub fn attribute_type(&self, name: &str) -> Option<AttrType> {
        self.attributes.iter().find(|a| a.name == name).map(|a| a.ty)
    }

    /// Whether `asset`'s attributes are all declared here with their type:
    /// `Err((reason, detail))` naming the first one that is not.
    pub fn check_attributes(&self, asset: &Asset) -> Result<(), (&'static str, String)> {
        for (name, value) in &asset.attributes {
            match self.attribute_type(name) {
                None => {
                    return Err((
                        UNDECLARED_ATTRIBUTE,
                        format!("attribute `{name}` is not declared by stream `{}`", self.name),
                    ));
                }
                Some(ty) if ty != value.ty() => {
                    return Err((
                        ATTRIBUTE_TYPE,
                        format!(
                            "attribute `{name}` is declared {ty} by stream `{}` but the record has a {}",
                            self.name,
                            value.ty()
                        ),
                    ));
                }
                Some(_) => {
                    if let AttrValue::Float(f) = value
                        && !f.is_finite()
                    {
                        return Err((ATTRIBUTE_TYPE, format!("attribute `{name}` is not a finite number")));
                    }
                }
            }
        }
        Ok(())
    }

    /// What is wrong with this declaration, if anything: attribute names that
    /// are not `[a-z][a-z0-9_]*` (at most 64 characters) or declared twice,
    /// fills naming a field the stream's kind does not have.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, a) in self.attributes.iter().enumerate() {
            if !valid_attribute_name(&a.name) {
                out.push(format!(
                    "stream `{}`: attribute name `{}` must be lowercase letters, digits and _ (starting with a letter, at most 64)",
                    self.name, a.name
                ));
            }
            if self.attributes[..i].iter().any(|b| b.name == a.name) {
                out.push(format!("stream `{}`: attribute `{}` declared twice", self.name, a.name));
            }
        }
        for f in &self.fills {
            if crate::schema::field(self.kind, &f.field).is_none() {
                out.push(format!("stream `{}`: fills `{}`, which is not a {} field", self.name, f.field, self.kind));
            }
        }
        out
    }
}

/// Reject reason: a record carries an attribute its stream did not declare.
pub const UNDECLARED_ATTRIBUTE: &str = "undeclared_attribute";
/// Reject reason: a record's attribute is not of the type its stream declared.
pub const ATTRIBUTE_TYPE: &str = "attribute_type";

/// `[a-z][a-z0-9_]*`, at most 64 characters: safe in a JSON path, a MongoDB
/// field name and a `--where attributes.NAME=VALUE`.
pub fn valid_attribute_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The type of a config field, for `corral adapters` and config validation messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Boolean,
    Url,
    Path,
    Table,
    List,
}

/// One field of an adapter's config, as documented to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigField {
    pub name: String,
    pub ty: FieldType,
    pub required: bool,
    /// Secret fields are held in `secrecy` types and never printed.
    pub secret: bool,
    pub description: String,
}

impl ConfigField {
    pub fn required(name: &str, ty: FieldType, description: &str) -> Self {
        ConfigField { name: name.into(), ty, required: true, secret: false, description: description.into() }
    }
    pub fn optional(name: &str, ty: FieldType, description: &str) -> Self {
        ConfigField { name: name.into(), ty, required: false, secret: false, description: description.into() }
    }
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

/// Static description of an adapter: name, version, streams and config
/// fields, and what an operator needs to know to connect it (`corral docs`
/// writes a page of it per adapter).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub streams: Vec<StreamInfo>,
    pub config: Vec<ConfigField>,
    #[serde(skip_serializing_if = "AdapterNotes::is_empty")]
    pub notes: AdapterNotes,
}

/// What an adapter's documentation says beyond streams and config: how it
/// authenticates, the permissions (scopes, roles) its credentials need, and
/// the vendor's rate limits and how the adapter keeps to them. Plain
/// sentences; empty means "nothing to say".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AdapterNotes {
    pub auth: String,
    pub permissions: Vec<String>,
    pub rate_limits: String,
}

impl AdapterNotes {
    pub fn is_empty(&self) -> bool {
        self.auth.is_empty() && self.permissions.is_empty() && self.rate_limits.is_empty()
    }
}

impl AdapterInfo {
    pub fn stream(&self, name: &str) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Every problem of the streams' declarations ([`StreamInfo::problems`]);
    /// adapters assert it is empty in a test.
    pub fn problems(&self) -> Vec<String> {
        self.streams.iter().flat_map(StreamInfo::problems).map(|p| format!("adapter `{}`: {p}", self.name)).collect()
    }
}

/// An opaque resume position (cursor, offset, line number), saved by the
/// engine only after the store acknowledged every record before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checkpoint(pub serde_json::Value);

/// One raw page as fetched: bytes plus where it came from. Never decoded on the runtime.
#[derive(Debug, Clone)]
pub struct RawPage {
    pub stream: String,
    pub body: Bytes,
    /// Where this page sits in its stream, for error messages (`page 3`, `lines 1001-2000`, a URL).
    pub locator: String,
    /// A hint the adapter's normalize may use (for example the first line number of a file chunk).
    pub first_record: u64,
    /// Number of records in the page when the adapter knows it without decoding.
    pub record_hint: Option<usize>,
    /// Resume position valid once this page (and every page before it) is stored.
    pub checkpoint: Option<Checkpoint>,
    /// Records fetch already had to reject while cutting pages, without
    /// decoding anything (a line too long to hold); reported with the page's
    /// own rejects, in order.
    pub rejects: Vec<Reject>,
}

impl RawPage {
    pub fn new(stream: impl Into<String>, body: Bytes, locator: impl Into<String>) -> Self {
        RawPage {
            stream: stream.into(),
            body,
            locator: locator.into(),
            first_record: 0,
            record_hint: None,
            checkpoint: None,
            rejects: Vec::new(),
        }
    }
    pub fn with_first_record(mut self, n: u64) -> Self {
        self.first_record = n;
        self
    }
    pub fn with_record_hint(mut self, n: usize) -> Self {
        self.record_hint = Some(n);
        self
    }
    pub fn with_checkpoint(mut self, c: Checkpoint) -> Self {
        self.checkpoint = Some(c);
        self
    }
    pub fn with_reject(mut self, r: Reject) -> Self {
        self.rejects.push(r);
        self
    }
}

/// A record normalize could not turn into an asset. Kept for inspection, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Which record: `line 17`, `id 42`, `record 3 of page 2`.
    pub record: String,
    /// A short stable reason code for grouping (`malformed_json`, `missing_key`, ...).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The offending input, truncated to a few KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The record's source id, when it could be read although the record
    /// was rejected: the vendor still has it, so its stored asset (if any)
    /// is kept fresh and is not marked stale by this run. Not kept with
    /// stored rejects (the record's text names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Reject {
    pub const MAX_RAW: usize = 4096;

    pub fn new(record: impl Into<String>, reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Reject { record: record.into(), reason: reason.into(), detail: detail.into(), raw: None, key: None }
    }

    /// The rejected record's source id (see [`Reject::key`]).
    pub fn with_key(mut self, source_id: impl Into<String>) -> Self {
        let id = source_id.into();
        self.key = (!id.trim().is_empty()).then_some(id);
        self
    }

    /// Attach the offending input, truncated on a char boundary.
    pub fn with_raw(mut self, raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let mut end = text.len().min(Self::MAX_RAW);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.raw = Some(text[..end].to_string());
        self
    }
}

/// What normalize made of one raw page.
#[derive(Debug, Default)]
pub struct NormalizedPage {
    pub assets: Vec<Asset>,
    pub rejects: Vec<Reject>,
    /// Set when the page as a whole could not be decoded (malformed JSON,
    /// truncated body). Its records are unknown, so the stream is not clean
    /// and stale handling is skipped for it.
    pub page_error: Option<String>,
}

impl NormalizedPage {
    pub fn page_failed(reason: impl Into<String>) -> Self {
        NormalizedPage { page_error: Some(reason.into()), ..Default::default() }
    }
}

/// Result of [`Adapter::check`]: what failed, named so an operator knows
/// what to fix. Serialized with an `outcome` tag in snake_case (`ok`,
/// `auth_error`, `not_found`, `unreachable`, `server_error`,
/// `rate_limited`, `failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CheckOutcome {
    Ok {
        detail: String,
    },
    /// Credentials refused: 401/403, or the token endpoint refused the
    /// client (`invalid_client` and the like).
    AuthError {
        endpoint: String,
        status: Option<u16>,
        detail: String,
    },
    /// Nothing there (404): a wrong base URL or tenant.
    NotFound {
        endpoint: String,
        status: u16,
        detail: String,
    },
    /// No answer: connect, DNS or TLS failure, or a timeout.
    Unreachable {
        endpoint: String,
        detail: String,
    },
    /// The vendor kept answering 5xx through the check's retries.
    ServerError {
        endpoint: String,
        status: u16,
        attempts: u32,
        detail: String,
    },
    /// The vendor's rate limit left no room within the check's time.
    RateLimited {
        endpoint: String,
        detail: String,
    },
    /// Any other refusal or unusable answer (a 400 for a bad filter, a
    /// protocol error, an invalid request).
    Failed {
        endpoint: String,
        status: Option<u16>,
        detail: String,
    },
}

impl CheckOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckOutcome::Ok { .. })
    }
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckOutcome::Ok { detail } => write!(f, "ok: {detail}"),
            CheckOutcome::AuthError { endpoint, status: Some(s), detail } => {
                write!(f, "credentials refused by {endpoint} (HTTP {s}): {detail}")
            }
            CheckOutcome::AuthError { endpoint, status: None, detail } => {
                write!(f, "credentials refused by {endpoint}: {detail}")
            }
            CheckOutcome::NotFound { endpoint, status, detail } => {
                write!(f, "not found: {endpoint} answered HTTP {status} (wrong base URL or tenant?): {detail}")
            }
            CheckOutcome::Unreachable { endpoint, detail } => write!(f, "unreachable: {endpoint}: {detail}"),
            CheckOutcome::ServerError { endpoint, status, attempts, detail } => {
                write!(f, "server error: {endpoint} answered HTTP {status} after {attempts} attempt(s): {detail}")
            }
            CheckOutcome::RateLimited { endpoint, detail } => write!(f, "rate limited: {endpoint}: {detail}"),
            CheckOutcome::Failed { endpoint, status: Some(s), detail } => {
                write!(f, "failed: {endpoint} (HTTP {s}): {detail}")
            }
            CheckOutcome::Failed { endpoint, status: None, detail } => write!(f, "failed: {endpoint}: {detail}"),
        }
    }
}

/// Errors an adapter's fetch reports. The engine records them against the
/// stream; the stream then counts as not completed (no stale handling, no
/// checkpoint past the failure).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("authentication failed at {endpoint}: {detail}")]
    Auth { endpoint: String, detail: String },
    #[error("request to {endpoint} failed: {detail}")]
    Http { endpoint: String, detail: String },
    #[error("i/o error reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected response from {endpoint}: {detail}")]
    Protocol { endpoint: String, detail: String },
    #[error("unknown stream `{0}`")]
    UnknownStream(String),
    /// The pipeline behind the sink closed (the run is shutting down, usually
    /// because the load stage failed).
    #[error("pipeline closed")]
    Closed,
    #[error("{0}")]
    Other(String),
}

/// Errors building an adapter from its config. Always name the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("unknown adapter `{0}`")]
    UnknownAdapter(String),
}

impl ConfigError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field { field: field.into(), message: message.into() }
    }
}

/// Deserialize an adapter's typed config from the connection's config table;
/// errors name the offending field (`columns.hostname`, `page_size`, ...).
///
/// Error messages never quote the offending value: it may be a secret.
pub fn parse_config<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = redact_serde_message(&inner.to_string());
        if path == "." || path.is_empty() {
            // serde reports missing fields at the parent: "missing field `x`".
            match message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
                Some(f) => ConfigError::field(f, "is required"),
                None => ConfigError::Invalid(message),
            }
        } else {
            match message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
                Some(f) => ConfigError::field(format!("{path}.{f}"), "is required"),
                None => ConfigError::field(path, message),
            }
        }
    })
}

/// serde quotes the offending value (`invalid type: string "hunter2", expected
/// u32`, ``invalid type: integer `987654321`, expected a string``); keep the
/// shape of the message but never the value: it may be a secret.
fn redact_serde_message(msg: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let (found, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
            let kind = found.split(['`', '"']).next().unwrap_or_default().trim();
            let expected = if expected.is_empty() { String::new() } else { format!(", expected{expected}") };
            return format!("{prefix}{kind}{expected}");
        }
    }
    // Other messages (unknown field, unknown variant) name fields and variants, not values;
    // still drop anything in double quotes to be safe.
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '"' {
            if in_quote {
                out.push_str("\"…\"");
            }
            in_quote = !in_quote;
            continue;
        }
        if !in_quote {
            out.push(c);
        }
    }
    out
}

/// What travels from fetch to normalize: pages, then one end marker per stream.
#[derive(Debug)]
pub(crate) enum FetchItem {
    Page(RawPage),
    StreamEnd { stream: String, result: Result<(), String> },
}

/// Where fetch sends raw pages. Sending waits while the pipeline is full.
#[derive(Debug, Clone)]
pub struct PageSink {
    tx: mpsc::Sender<FetchItem>,
    gauge: Arc<crate::metrics::PipelineGauges>,
}

impl PageSink {
    pub(crate) fn new(tx: mpsc::Sender<FetchItem>, gauge: Arc<crate::metrics::PipelineGauges>) -> Self {
        PageSink { tx, gauge }
    }

    /// A sink outside the engine, for testing an adapter's `fetch` on its own:
    /// the receiver yields the pages it sent.
    pub fn channel(capacity: usize) -> (PageSink, mpsc::Receiver<RawPage>) {
        let (tx, mut rx) = mpsc::channel::<FetchItem>(capacity.max(1));
        let (out_tx, out_rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                if let FetchItem::Page(p) = item
                    && out_tx.send(p).await.is_err()
                {
                    break;
                }
            }
        });
        (PageSink::new(tx, Arc::default()), out_rx)
    }

    /// Hand one page to the pipeline. Returns [`FetchError::Closed`] when the
    /// run is shutting down; fetch should then return promptly.
    pub async fn send(&self, page: RawPage) -> Result<(), FetchError> {
        let bytes = page.body.len();
        let records = page.record_hint.unwrap_or(0);
        self.gauge.raw_page_entered(bytes, records);
        let started = std::time::Instant::now();
        let sent = self.tx.send(FetchItem::Page(page)).await;
        self.gauge.fetch_blocked(started.elapsed());
        if sent.is_err() {
            self.gauge.raw_page_left(bytes, records);
            return Err(FetchError::Closed);
        }
        Ok(())
    }

    pub(crate) async fn end_stream(&self, stream: String, result: Result<(), String>) {
        // If the pipeline is gone the run is already shutting down; nothing to tell.
        let _ = self.tx.send(FetchItem::StreamEnd { stream, result }).await;
    }
}

/// A [`FetchContext`] for testing an adapter's `fetch` outside the engine.
impl FetchContext {
    pub fn for_test(connection: &str, stream: StreamInfo, sink: PageSink) -> Self {
        FetchContext {
            connection: connection.to_string(),
            stream,
            checkpoint: None,
            sink,
            requests: Arc::default(),
            max_page_records: crate::EngineConfig::default().max_page_records,
            started_over: Arc::default(),
            keeps_checkpoint: Arc::default(),
            incomplete: Arc::default(),
        }
    }

    /// Say that this fetch does not use its checkpoint (unknown to the
    /// vendor, expired, refused, not one this adapter wrote) and reads the
    /// stream from the start: the run then sees the whole inventory, so the
    /// engine keeps its stale handling for the stream (a run that resumed
    /// from a checkpoint has none). Call it before `fetch` returns.
    pub fn fetching_from_start(&self) {
        self.started_over.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The same context sending pages to `sink` (an adapter that wraps
    /// another and looks at its pages); a call to `fetching_from_start` on
    /// either still reaches the engine.
    pub fn with_sink(&self, sink: PageSink) -> FetchContext {
        FetchContext { sink, ..self.clone() }
    }

    /// Whether [`FetchContext::fetching_from_start`] was called.
    pub fn started_over(&self) -> bool {
        self.started_over.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Say that the checkpoints this stream's pages carry are a watermark
    /// for the next run (an incremental export's `since`), not a resume
    /// position inside this one: when the stream completes cleanly the
    /// engine keeps the last one saved instead of clearing it, so the next
    /// run starts from it (and, having resumed, gets no stale handling unless
    /// it calls [`FetchContext::fetching_from_start`]). As always a
    /// checkpoint is saved only once every record before it is stored; a
    /// stream whose records the store refused has its checkpoint cleared
    /// anyway (the next run reads everything again). Call it before `fetch`
    /// returns.
    pub fn keep_checkpoint(&self) {
        self.keeps_checkpoint.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`FetchContext::keep_checkpoint`] was called.
    pub fn keeps_checkpoint(&self) -> bool {
        self.keeps_checkpoint.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Say that part of the stream's inventory could not be fetched while
    /// the rest was (a stream read from several scopes, e.g. the regions and
    /// accounts of a cloud connection, one of which failed): `reason` names
    /// the part. Call it before `fetch` returns `Ok`: what was fetched is
    /// loaded as usual, but the stream is not complete, so the engine
    /// records the reason as an error of the run (partial), leaves the
    /// stream's checkpoint as it is and skips its stale handling (the assets
    /// of the part not seen must not go stale). A fetch that returns `Err`
    /// needs none of this. Each call adds a reason.
    pub fn incomplete(&self, reason: impl Into<String>) {
        let mut r = self.incomplete.lock().unwrap_or_else(|e| e.into_inner());
        r.push(reason.into());
    }

    /// The reasons given to [`FetchContext::incomplete`] so far.
    pub fn incomplete_reasons(&self) -> Vec<String> {
        self.incomplete.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Everything fetch gets from the engine for one stream.
#[derive(Debug, Clone)]
pub struct FetchContext {
    pub connection: String,
    pub stream: StreamInfo,
    /// Where the last successful run of this stream stopped, if the adapter saves checkpoints.
    pub checkpoint: Option<Checkpoint>,
    pub sink: PageSink,
    /// Counters the HTTP toolkit fills in (requests by status, retries, 429s, limiter waits).
    pub requests: Arc<RequestMetrics>,
    /// The most records a page should hold: the engine's memory bound assumes
    /// it (`engine.max_page_records`). An adapter whose page size is its own
    /// choice stays at or below it.
    pub max_page_records: usize,
    /// Set by [`FetchContext::fetching_from_start`]; the engine reads it when the stream ends.
    pub(crate) started_over: Arc<std::sync::atomic::AtomicBool>,
    /// Set by [`FetchContext::keep_checkpoint`]; the engine reads it when the stream ends.
    pub(crate) keeps_checkpoint: Arc<std::sync::atomic::AtomicBool>,
    /// Filled by [`FetchContext::incomplete`]; the engine reads it when the stream ends.
    pub(crate) incomplete: Arc<std::sync::Mutex<Vec<String>>>,
}

/// A configured vendor integration for one connection.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    fn info(&self) -> &AdapterInfo;

    /// One cheap call that verifies credentials and reachability.
    async fn check(&self) -> CheckOutcome;

    /// [`Adapter::check`] answering within about `limit` (`corral check
    /// --timeout`): HTTP adapters fit their attempts, retries of transient
    /// failures and timeouts into it. The default ignores `limit`; the caller
    /// bounds the call anyway.
    async fn check_within(&self, limit: std::time::Duration) -> CheckOutcome {
        let _ = limit;
        self.check().await
    }

    /// Fetch one stream, sending raw pages to `ctx.sink`. Return `Ok` only
    /// when the stream was fetched completely: stale handling depends on it.
    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError>;

    /// Turn one raw page into assets and rejects. Pure CPU work; runs on the
    /// rayon pool, never on the tokio runtime. Must not panic on bad input.
    fn normalize(&self, page: &RawPage) -> NormalizedPage;

    /// The most file descriptors one sync of this connection can hold open
    /// at once: its pooled HTTP connections (requests in flight, the token
    /// endpoint), the files it reads. The engine budgets open files with it,
    /// so many connections at once never run the process out of descriptors.
    /// An adapter whose concurrency is configurable must report the
    /// configured figure.
    ///
    /// Count one connection more than the requests in flight for each HTTP
    /// client: a request's in-flight slot is freed when its answer has been
    /// read, and the connection goes back to the client's pool a moment
    /// later, so a request that starts in that moment opens another one.
    fn max_open_files(&self) -> usize {
        2
    }
}

/// Builds adapters of one kind from connection config. Registered by name.
pub trait AdapterFactory: Send + Sync + 'static {
    fn info(&self) -> AdapterInfo;

    /// What a connection with `config` (as written, secrets unresolved)
    /// offers, for commands that must not build the connection (`corral
    /// assets` reads the attribute declarations from it). The default is
    /// [`AdapterFactory::info`]; an adapter whose streams or attributes
    /// depend on its config (the file adapter) overrides it. Never fails:
    /// a config it cannot read gives the static info.
    fn info_for(&self, config: &serde_json::Value) -> AdapterInfo {
        let _ = config;
        self.info()
    }

    /// Validate the connection's config and build the adapter. Nothing may run
    /// (no network, no file reads beyond validation) before this succeeds.
    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError>;
}

/// The adapters a binary knows about, by name.
#[derive(Default, Clone)]
pub struct Registry {
    factories: std::collections::BTreeMap<String, Arc<dyn AdapterFactory>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, factory: impl AdapterFactory) -> &mut Self {
        let info = factory.info();
        self.factories.insert(info.name, Arc::new(factory));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn AdapterFactory>> {
        self.factories.get(name)
    }

    pub fn infos(&self) -> Vec<AdapterInfo> {
        self.factories.values().map(|f| f.info()).collect()
    }

    pub fn build(
        &self,
        adapter: &str,
        connection: &str,
        config: serde_json::Value,
    ) -> Result<Arc<dyn Adapter>, ConfigError> {
        let factory = self.get(adapter).ok_or_else(|| ConfigError::UnknownAdapter(adapter.to_string()))?;
        factory.build(connection, config)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        path: String,
        page_size: u32,
        #[serde(default)]
        nested: Option<Nested>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        token: String,
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_config::<Cfg>(serde_json::json!({"page_size": 3})).expect_err("missing path");
        assert_eq!(err.to_string(), "config field `path`: is required");
        let err = parse_config::<Cfg>(serde_json::json!({"path": "x", "page_size": 3, "nested": {}}))
            .expect_err("missing token");
        assert_eq!(err.to_string(), "config field `nested.token`: is required");
    }

    #[test]
    fn invalid_field_is_named_without_its_value() {
        let err =
            parse_config::<Cfg>(serde_json::json!({"path": "x", "page_size": "hunter2"})).expect_err("wrong type");
        let msg = err.to_string();
        assert!(msg.starts_with("config field `page_size`:"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let err = parse_config::<Cfg>(serde_json::json!({"path": 987654321, "page_size": 1})).expect_err("wrong type");
        let msg = err.to_string();
        assert!(msg.starts_with("config field `path`: invalid type: integer, expected"), "{msg}");
        assert!(!msg.contains("987654321"), "{msg}");
    }

    #[test]
    fn reject_raw_is_truncated_on_char_boundary() {
        let raw = "é".repeat(Reject::MAX_RAW);
        let r = Reject::new("line 1", "x", "y").with_raw(raw.as_bytes());
        let kept = r.raw.expect("raw kept");
        assert!(kept.len() <= Reject::MAX_RAW);
        assert!(kept.chars().all(|c| c == 'é'));
    }
}
