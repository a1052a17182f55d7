//! The simulator kit: a generic simulated vendor API described by a [`KitSpec`]
//! (auth style, listing path, where the records sit in the body, pagination
//! style, page sizes, rate-limit header style, and a record generator), served
//! with the same plumbing as the hand-written simulators: [`SimConfig`]'s
//! [`Faults`](crate::Faults), rate limit, latency, credentials and generation,
//! the [`Counters`](crate::Counters), the `/_sim/` admin routes and a
//! [`SimHandle`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral_sim::kit::KitError> {
//! use corral_sim::SimConfig;
//! use corral_sim::kit::{self, KitAuth, KitSpec, Pagination};
//! let seed = 7;
//! // SentinelOne-like: `Authorization: ApiToken <t>`, records in `data`,
//! // the cursor in `pagination.nextCursor`, sent back as `?cursor=`.
//! let spec = KitSpec::new("/web/api/v2.1/agents", kit::devices(seed))
//!     .auth(KitAuth::header("Authorization", "ApiToken "))
//!     .records_at(&["data"])
//!     .pagination(Pagination::body_cursor(&["pagination", "nextCursor"], "cursor"));
//! let expected = spec.ids(200, 0);
//! let sim = kit::start(spec, SimConfig::new(seed, 200)).await?;
//! # let _ = (sim, expected);
//! # Ok(()) }
//! ```
//!
//! Records are generated page by page (`generator(index, generation)`), never
//! the whole dataset at once; the only state a kit simulator keeps is bounded
//! (export jobs, and the ids of recent ids pages for ids-then-details).

mod serve;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::SimConfig;
use crate::server::SimHandle;

pub(crate) use serve::{Runtime, announced_wait, classify, rate_headers, router, server_error, too_many};

/// Why a kit simulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The spec cannot be served (a path that is not a plain absolute path, two
    /// endpoints on one path, a body cursor with nowhere to put the records, ...).
    #[error("invalid simulator kit spec: {0}")]
    InvalidSpec(String),
    #[error("the simulator did not start: {0}")]
    Io(#[from] std::io::Error),
}

/// Makes record `index` of generation `generation`.
pub type Generator = Arc<dyn Fn(u64, u64) -> Value + Send + Sync>;

/// Finds the index of a record by its id at a generation (for details lookups).
pub type IndexOf = Arc<dyn Fn(&str, u64) -> Option<u64> + Send + Sync>;

/// How a client authenticates. Credentials come from
/// [`SimConfig::credentials`](crate::SimConfig): `token` for static tokens,
/// `client_id`/`client_secret` for Basic and OAuth2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KitAuth {
    /// No credentials at all.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A header whose value is `prefix` + token: `Authorization: ApiToken <t>`
    /// (prefix `"ApiToken "`), `Authorization: SSWS <t>`, `X-Api-Key: <t>` (prefix `""`).
    Header { name: String, prefix: String },
    /// HTTP Basic with `client_id:client_secret`.
    Basic,
    /// OAuth2 client credentials: `POST token_path` (form `grant_type=client_credentials`,
    /// `client_id`, `client_secret`, or them as HTTP Basic) answers
    /// `{"access_token", "token_type": "bearer", "expires_in"}`; data requests need
    /// `Authorization: Bearer <access_token>`. Tokens live `lifetime`
    /// (`Faults::token_ttl` shortens it, as for the hand-written simulators).
    OAuth2 { token_path: String, lifetime: Duration },
}

impl KitAuth {
    pub fn header(name: &str, prefix: &str) -> Self {
        KitAuth::Header { name: name.to_string(), prefix: prefix.to_string() }
    }
    pub fn oauth2(token_path: &str, lifetime: Duration) -> Self {
        KitAuth::OAuth2 { token_path: token_path.to_string(), lifetime }
    }
}

/// How the listing pages. Page sizes come from [`KitSpec::page_size`] and the
/// [`KitSpec::limit_param`] query parameter (capped at the maximum; 0 or not a
/// number is a 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pagination {
    /// An opaque cursor in the body at `cursor_path` (`null` on the last page),
    /// sent back as query parameter `param` (SentinelOne).
    BodyCursor { cursor_path: Vec<String>, param: String },
    /// `Link: <url>; rel="next"` headers (and `rel="self"`); the next URL
    /// carries an opaque cursor as `param` (Okta's `after`).
    LinkHeader { param: String },
    /// `offset_param`/limit: the client counts (ServiceNow, CrowdStrike queries).
    OffsetLimit { offset_param: String },
    /// A page number, starting at `first` (0 or 1), and the page size (Jamf).
    PageNumber { page_param: String, first: u64 },
    /// The next page's whole URL in the body at `link_path` (Graph's `@odata.nextLink`),
    /// absent on the last page.
    NextLink { link_path: Vec<String> },
    /// The listing serves ids (offset/limit), `GET details_path?ids_param=a&ids_param=b`
    /// (or `a,b`) the records, at most `max_ids` per request (CrowdStrike).
    IdsThenDetails { offset_param: String, details_path: String, ids_param: String, max_ids: usize },
    /// An export job (Tenable): `POST <list path>` (optional JSON body
    /// `{"chunk_size": N}`) answers `{"export_uuid": J}`; `GET <list path>/J/status`
    /// answers `{"status": "PROCESSING" | "FINISHED", "chunks_available": [1, ..]}`,
    /// more chunks each poll, all of them after `polls_to_finish` polls;
    /// `GET <list path>/J/chunks/N` serves chunk N's records. A job serves the
    /// generation it was created at.
    Export { polls_to_finish: u32 },
}

fn path_of(path: &[&str]) -> Vec<String> {
    path.iter().map(|s| s.to_string()).collect()
}

impl Pagination {
    pub fn body_cursor(cursor_path: &[&str], param: &str) -> Self {
        Pagination::BodyCursor { cursor_path: path_of(cursor_path), param: param.to_string() }
    }
    pub fn link_header(param: &str) -> Self {
        Pagination::LinkHeader { param: param.to_string() }
    }
    pub fn offset_limit(offset_param: &str) -> Self {
        Pagination::OffsetLimit { offset_param: offset_param.to_string() }
    }
    pub fn page_number(page_param: &str, first: u64) -> Self {
        Pagination::PageNumber { page_param: page_param.to_string(), first }
    }
    pub fn next_link(link_path: &[&str]) -> Self {
        Pagination::NextLink { link_path: path_of(link_path) }
    }
    pub fn ids_then_details(offset_param: &str, details_path: &str, ids_param: &str, max_ids: usize) -> Self {
        Pagination::IdsThenDetails {
            offset_param: offset_param.to_string(),
            details_path: details_path.to_string(),
            ids_param: ids_param.to_string(),
            max_ids,
        }
    }
    pub fn export(polls_to_finish: u32) -> Self {
        Pagination::Export { polls_to_finish }
    }
}

/// When `X-RateLimit-Reset` says the window resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetStyle {
    /// Seconds from now.
    Seconds,
    /// Unix epoch seconds.
    Epoch,
}

/// The rate-limit headers on every answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateHeaders {
    None,
    /// `{prefix}-Limit`, `{prefix}-Remaining`, `{prefix}-Reset` (prefix `X-RateLimit`
    /// or Okta's `X-Rate-Limit`).
    XRateLimit {
        prefix: String,
        reset: ResetStyle,
    },
}

impl RateHeaders {
    pub fn x_ratelimit(reset: ResetStyle) -> Self {
        RateHeaders::XRateLimit { prefix: "X-RateLimit".into(), reset }
    }
}

/// Default and maximum page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize {
    pub default: usize,
    pub max: usize,
}

/// A generic simulated vendor API. Build with [`KitSpec::new`] and the
/// builder methods; serve with [`start`]. See the module docs.
#[derive(Clone)]
pub struct KitSpec {
    /// Names the simulator's thread and appears in error bodies.
    pub name: String,
    pub auth: KitAuth,
    /// The listing (or export) endpoint, e.g. `/api/v1/devices`.
    pub list_path: String,
    /// Where the records (ids, for an ids page) sit in a page's JSON body;
    /// empty: the body is the array itself.
    pub records_path: Vec<String>,
    pub pagination: Pagination,
    /// The page-size query parameter (`limit`).
    pub limit_param: String,
    pub page_size: PageSize,
    /// Where to put the dataset's total in each page's body, if anywhere.
    pub total_path: Option<Vec<String>>,
    pub rate_headers: RateHeaders,
    /// A 429 carries `Retry-After` (seconds).
    pub retry_after: bool,
    /// The rate limit counts a sliding window (default: fixed windows).
    pub sliding_window: bool,
    /// A cheap authenticated endpoint answering `{"ok": true}` (for `check`), if any.
    pub check_path: Option<String>,
    /// The field of a record holding its id.
    pub id_field: String,
    pub generator: Generator,
    /// Finds a record by id (ids-then-details); without it, the ids of the
    /// last 65 536 listed records are remembered.
    pub index_of: Option<IndexOf>,
}

impl fmt::Debug for KitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KitSpec")
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("list_path", &self.list_path)
            .field("records_path", &self.records_path)
            .field("pagination", &self.pagination)
            .field("limit_param", &self.limit_param)
            .field("page_size", &self.page_size)
            .field("total_path", &self.total_path)
            .field("rate_headers", &self.rate_headers)
            .field("retry_after", &self.retry_after)
            .field("id_field", &self.id_field)
            .finish_non_exhaustive()
    }
}

impl KitSpec {
    /// A spec serving `generator`'s records at `list_path`, with defaults:
    /// bearer auth, records in `data`, a cursor in `pagination.nextCursor`
    /// sent back as `cursor`, `limit` 100 (max 1000), `X-RateLimit-*` headers
    /// with reset in seconds, `Retry-After` on 429, ids in `id`.
    pub fn new(list_path: &str, generator: impl Fn(u64, u64) -> Value + Send + Sync + 'static) -> Self {
        KitSpec {
            name: "kit".into(),
            auth: KitAuth::Bearer,
            list_path: list_path.to_string(),
            records_path: vec!["data".into()],
            pagination: Pagination::body_cursor(&["pagination", "nextCursor"], "cursor"),
            limit_param: "limit".into(),
            page_size: PageSize { default: 100, max: 1000 },
            total_path: None,
            rate_headers: RateHeaders::x_ratelimit(ResetStyle::Seconds),
            retry_after: true,
            sliding_window: false,
            check_path: None,
            id_field: "id".into(),
            generator: Arc::new(generator),
            index_of: None,
        }
    }
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
    pub fn auth(mut self, auth: KitAuth) -> Self {
        self.auth = auth;
        self
    }
    /// Records at this path of object keys (`&[]`: the body is the array).
    pub fn records_at(mut self, path: &[&str]) -> Self {
        self.records_path = path_of(path);
        self
    }
    pub fn pagination(mut self, pagination: Pagination) -> Self {
        self.pagination = pagination;
        self
    }
    pub fn limit_param(mut self, name: &str) -> Self {
        self.limit_param = name.to_string();
        self
    }
    pub fn page_size(mut self, default: usize, max: usize) -> Self {
        self.page_size = PageSize { default, max };
        self
    }
    pub fn total_at(mut self, path: &[&str]) -> Self {
        self.total_path = Some(path_of(path));
        self
    }
    pub fn rate_headers(mut self, style: RateHeaders) -> Self {
        self.rate_headers = style;
        self
    }
    pub fn retry_after(mut self, on: bool) -> Self {
        self.retry_after = on;
        self
    }
    pub fn sliding_window(mut self, on: bool) -> Self {
        self.sliding_window = on;
        self
    }
    pub fn check_path(mut self, path: &str) -> Self {
        self.check_path = Some(path.to_string());
        self
    }
    pub fn id_field(mut self, field: &str) -> Self {
        self.id_field = field.to_string();
        self
    }
    pub fn index_of(mut self, f: impl Fn(&str, u64) -> Option<u64> + Send + Sync + 'static) -> Self {
        self.index_of = Some(Arc::new(f));
        self
    }

    /// Record `index` of `generation`.
    pub fn record(&self, index: u64, generation: u64) -> Value {
        (self.generator)(index, generation)
    }

    /// A record's id (a string, or a number as text).
    pub fn id_of(&self, record: &Value) -> Option<String> {
        match record.get(&self.id_field)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Every id the simulator serves with `size` records at `generation`, in
    /// listing order (for tests' expectations; generates each record once).
    pub fn ids(&self, size: usize, generation: u64) -> Vec<String> {
        (0..size as u64).filter_map(|i| self.id_of(&self.record(i, generation))).collect()
    }

    fn validate(&self) -> Result<(), KitError> {
        let bad = |m: String| Err(KitError::InvalidSpec(m));
        let mut paths = vec![("list path", self.list_path.clone())];
        if let KitAuth::OAuth2 { token_path, .. } = &self.auth {
            paths.push(("token path", token_path.clone()));
        }
        if let Pagination::IdsThenDetails { details_path, max_ids, .. } = &self.pagination {
            paths.push(("details path", details_path.clone()));
            if *max_ids == 0 {
                return bad("ids-then-details: max_ids must be at least 1".into());
            }
        }
        if let Some(p) = &self.check_path {
            paths.push(("check path", p.clone()));
        }
        for (what, p) in &paths {
            if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') {
                return bad(format!("{what} {p:?} must be an absolute path like /api/v1/devices"));
            }
            if p.contains(['{', '}', '*', ':', '?', '#', ' ']) {
                return bad(format!("{what} {p:?} must be a plain path (no parameters, query or spaces)"));
            }
            if p.starts_with("/_sim") {
                return bad(format!("{what} {p:?}: /_sim/ is the simulator's admin area"));
            }
        }
        for (i, (w1, p1)) in paths.iter().enumerate() {
            if let Some((w2, _)) = paths.iter().skip(i + 1).find(|(_, p2)| p2 == p1) {
                return bad(format!("the {w1} and the {w2} are both {p1:?}"));
            }
        }
        let PageSize { default, max } = self.page_size;
        if default == 0 || max < default {
            return bad(format!("page size: default {default} must be at least 1 and at most the maximum {max}"));
        }
        let needs_object = matches!(self.pagination, Pagination::BodyCursor { .. } | Pagination::NextLink { .. })
            || self.total_path.is_some();
        if needs_object && self.records_path.is_empty() {
            return bad(
                "records at the body's top level leave no room for a cursor, link or total: give a records path".into(),
            );
        }
        match &self.pagination {
            Pagination::BodyCursor { cursor_path, .. }
                if cursor_path.is_empty() || *cursor_path == self.records_path =>
            {
                return bad("the body cursor needs its own path".into());
            }
            Pagination::NextLink { link_path } if link_path.is_empty() || *link_path == self.records_path => {
                return bad("the next link needs its own path".into());
            }
            _ => {}
        }
        if self.id_field.is_empty() {
            return bad("the id field is empty".into());
        }
        Ok(())
    }
}

/// Start a kit simulator of `spec` on 127.0.0.1 with a free port.
pub async fn start(spec: KitSpec, config: SimConfig) -> Result<SimHandle, KitError> {
    start_on(spec, config, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Start a kit simulator of `spec` on a given address.
pub async fn start_on(spec: KitSpec, config: SimConfig, addr: SocketAddr) -> Result<SimHandle, KitError> {
    spec.validate()?;
    Ok(crate::server::launch(crate::config::Vendor::Kit, config, addr, Some(Arc::new(Runtime::new(spec)))).await?)
}

const SALT_KIT_ID: u64 = 0x4B01;
const SALT_KIT_DEV: u64 = 0x4B02;

/// An id for record `index` at `generation`: 16 hex digits that look random,
/// stable across generations except for the records the dataset rules
/// replace (about 2 % every 2 to 4 generations get a new id, see
/// [`crate::data`]). [`record_index`] decodes it.
pub fn record_id(seed: u64, index: u64, generation: u64) -> String {
    let payload = crate::data::id_payload(seed, index, generation);
    format!("{:016x}", crate::data::permute(payload, crate::data::h3(seed, SALT_KIT_ID, 0)))
}

/// The index of a [`record_id`] among `size` records at `generation` (`None`
/// for an id that is not current).
pub fn record_index(seed: u64, id: &str, size: usize, generation: u64) -> Option<u64> {
    if id.len() != 16 {
        return None;
    }
    let v = u64::from_str_radix(id, 16).ok()?;
    let payload = crate::data::unpermute(v, crate::data::h3(seed, SALT_KIT_ID, 0));
    crate::data::index_from_payload(seed, payload, size, generation)
}

/// How often record `index`'s mutable fields have changed by `generation`
/// (0 for the ~90 % of stable records): derive changing fields from it.
pub fn changes(seed: u64, index: u64, generation: u64) -> u64 {
    crate::data::state_epoch(seed, index, generation)
}

/// A ready generator of device records: `id` ([`record_id`]), `hostname`,
/// `serial_number`, `mac_address`, `ip_address`, `os`, `last_seen` (which
/// moves when the record [`changes`]).
pub fn devices(seed: u64) -> impl Fn(u64, u64) -> Value + Send + Sync + 'static {
    move |index, generation| {
        let mut g = crate::data::Gen::new(seed, SALT_KIT_DEV, index);
        let epoch = changes(seed, index, generation);
        let os = ["Windows 11", "Windows Server 2022", "macOS 14.5", "Ubuntu 22.04"][g.below(4) as usize];
        let mac = crate::data::messy_mac(crate::data::mac_bytes(g.next()), g.pct(), crate::data::MacStyle::ColonLower);
        let last_seen = crate::data::T0 + epoch as i64 * crate::data::DAY - g.below(crate::data::DAY as u64) as i64;
        json!({
            "id": record_id(seed, index, generation),
            "hostname": format!("host-{index:05}"),
            "serial_number": format!("SN{:010X}", g.next() & 0xFF_FFFF_FFFF),
            "mac_address": mac,
            "ip_address": crate::data::private_ip(g.next()).to_string(),
            "os": os,
            "last_seen": crate::data::iso(last_seen),
        })
    }
}

/// [`record_index`] for a spec whose ids are [`record_id`]s: pass to [`KitSpec::index_of`].
pub fn record_index_of(seed: u64, size: usize) -> impl Fn(&str, u64) -> Option<u64> + Send + Sync + 'static {
    move |id, generation| record_index(seed, id, size, generation)
}
