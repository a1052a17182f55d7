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

pub mod jamf;
mod serve;
pub mod servicenow;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::SimConfig;
use crate::server::SimHandle;

pub(crate) use serve::{
    Runtime, announced_wait, classify, rate_headers, router, server_error, std_b64_decode, too_many,
};

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
    /// A bearer token bought with HTTP Basic (`client_id:client_secret`), as
    /// Jamf Pro does: `POST token_path` answers `{"token", "expires"}`
    /// (`expires`: an ISO-8601 UTC instant `lifetime` from now, shortened by
    /// `Faults::token_ttl`). `POST keep_alive_path` with a valid bearer token
    /// answers a new one and invalidates the old; an expired token is refused
    /// there too (401: log in with Basic again). `POST invalidate_path` ends a
    /// token (204). Data requests need `Authorization: Bearer <token>`; Basic
    /// on a data request is refused.
    TokenFromBasic {
        token_path: String,
        keep_alive_path: Option<String>,
        invalidate_path: Option<String>,
        lifetime: Duration,
    },
    /// Any of these (ServiceNow takes Basic or an OAuth bearer token on the
    /// same endpoints); refusals answer as the first one does.
    AnyOf(Vec<KitAuth>),
}

impl KitAuth {
    pub fn header(name: &str, prefix: &str) -> Self {
        KitAuth::Header { name: name.to_string(), prefix: prefix.to_string() }
    }
    pub fn oauth2(token_path: &str, lifetime: Duration) -> Self {
        KitAuth::OAuth2 { token_path: token_path.to_string(), lifetime }
    }
    /// [`KitAuth::TokenFromBasic`] without keep-alive or invalidate endpoints.
    pub fn token_from_basic(token_path: &str, lifetime: Duration) -> Self {
        KitAuth::TokenFromBasic {
            token_path: token_path.to_string(),
            keep_alive_path: None,
            invalidate_path: None,
            lifetime,
        }
    }

    /// Every auth style this one accepts (itself, or the members of `AnyOf`).
    pub(crate) fn styles(&self) -> Vec<&KitAuth> {
        match self {
            KitAuth::AnyOf(all) => all.iter().flat_map(KitAuth::styles).collect(),
            one => vec![one],
        }
    }

    /// The OAuth2 token endpoint, if any style has one.
    pub(crate) fn oauth_token(&self) -> Option<(&str, Duration)> {
        self.styles().into_iter().find_map(|a| match a {
            KitAuth::OAuth2 { token_path, lifetime } => Some((token_path.as_str(), *lifetime)),
            _ => None,
        })
    }

    /// The Basic-to-bearer endpoints `(token, keep-alive, invalidate, lifetime)`, if any style has them.
    pub(crate) fn basic_token(&self) -> Option<(&str, Option<&str>, Option<&str>, Duration)> {
        self.styles().into_iter().find_map(|a| match a {
            KitAuth::TokenFromBasic { token_path, keep_alive_path, invalidate_path, lifetime } => {
                Some((token_path.as_str(), keep_alive_path.as_deref(), invalidate_path.as_deref(), *lifetime))
            }
            _ => None,
        })
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
    /// Headers named one by one; `None` leaves one out (ServiceNow sends
    /// `X-RateLimit-Limit` and `X-RateLimit-Reset`, epoch, but no remaining count).
    Named {
        limit: Option<String>,
        remaining: Option<String>,
        reset: Option<String>,
        reset_style: ResetStyle,
    },
}

impl RateHeaders {
    pub fn x_ratelimit(reset: ResetStyle) -> Self {
        RateHeaders::XRateLimit { prefix: "X-RateLimit".into(), reset }
    }
    /// [`RateHeaders::Named`].
    pub fn named(limit: Option<&str>, remaining: Option<&str>, reset: Option<&str>, reset_style: ResetStyle) -> Self {
        RateHeaders::Named {
            limit: limit.map(str::to_string),
            remaining: remaining.map(str::to_string),
            reset: reset.map(str::to_string),
            reset_style,
        }
    }
}

/// The shape of error bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"errors": [{"code", "title", "detail"}]}`.
    #[default]
    Kit,
    /// Jamf Pro: `{"httpStatus": 401, "errors": [{"code", "description", "id", "field"}]}`.
    Jamf,
    /// ServiceNow: `{"error": {"message", "detail"}, "status": "failure"}`.
    ServiceNow,
}

/// Record sections chosen by a repeatable query parameter (Jamf's
/// `section=GENERAL&section=HARDWARE`, comma-separated lists too). A section
/// not asked for is `null` in each record; an unknown section name is a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sections {
    pub param: String,
    /// `(section name, record field)`: `("HARDWARE", "hardware")`.
    pub sections: Vec<(String, String)>,
    /// Sections served when the parameter is absent (Jamf: `GENERAL`).
    pub default: Vec<String>,
}

/// What the simulator does with a request beyond the concurrency limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// Answer at once with this status (e.g. 503) in the spec's error style.
    Refuse(u16),
    /// Serve it, this much slower (an overloaded server that does not refuse).
    Slow(Duration),
}

/// At most `max` requests in flight at once (Jamf Pro: 5); more are refused
/// or slowed, each counted as fault `over_concurrency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    pub max: usize,
    pub over: OverLimit,
}

/// ServiceNow-style display values. The generator writes fields that have a
/// display form as `{"value": v, "display_value": d}` and reference fields as
/// `{"value": sys_id, "display_value": name, "link": "/api/now/table/x/<sys_id>"}`
/// (a relative link is made absolute with the request's host); plain
/// strings have no separate display form. `param` picks what a page shows:
/// - `false` (default): values; references as `{"link", "value"}`;
/// - `true`: display values; references as `{"display_value", "link"}`;
/// - `all`: every field as `{"display_value", "value"}`, references with `link` too.
///
/// With `exclude_link_param=true` references lose `link` and are bare strings
/// for `false`/`true`. An empty reference is `""` (for `all`: both parts `""`).
/// Any other value of `param` is a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayValues {
    pub param: String,
    pub exclude_link_param: String,
}

/// Checks a listing's query parameters before the page is served; `Err` is a
/// 400 with that detail (e.g. "sysparm_query other than ORDERBY is not simulated").
pub type ParamCheck = Arc<dyn Fn(&[(String, String)]) -> Result<(), String> + Send + Sync>;

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
    /// A header carrying the dataset's total on each page (ServiceNow's `X-Total-Count`).
    pub total_header: Option<String>,
    /// Offset/limit pages carry one `Link` header with `rel="first"`,
    /// `"prev"` (not on the first page), `"next"` (not on the last) and
    /// `"last"`, comma-joined as ServiceNow sends them.
    pub offset_links: bool,
    pub sections: Option<Sections>,
    pub concurrency: Option<ConcurrencyLimit>,
    pub display_values: Option<DisplayValues>,
    /// A query parameter listing the fields to return (`sysparm_fields=a,b`);
    /// unknown names are left out silently.
    pub fields_param: Option<String>,
    pub param_check: Option<ParamCheck>,
    pub error_style: ErrorStyle,
    /// A "changed since" filter: `(param, field)`. With `?param=V` a page
    /// serves only its records whose top-level string `field` sorts after
    /// `V` (ISO-8601 instants of one format compare as text); paging still
    /// walks every index, so a page may hold fewer records, or none.
    pub since: Option<(String, String)>,
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
            .field("total_header", &self.total_header)
            .field("offset_links", &self.offset_links)
            .field("sections", &self.sections)
            .field("concurrency", &self.concurrency)
            .field("display_values", &self.display_values)
            .field("fields_param", &self.fields_param)
            .field("error_style", &self.error_style)
            .field("since", &self.since)
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
            total_header: None,
            offset_links: false,
            sections: None,
            concurrency: None,
            display_values: None,
            fields_param: None,
            param_check: None,
            error_style: ErrorStyle::Kit,
            since: None,
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
    pub fn total_header(mut self, name: &str) -> Self {
        self.total_header = Some(name.to_string());
        self
    }
    pub fn offset_links(mut self, on: bool) -> Self {
        self.offset_links = on;
        self
    }
    /// Sections chosen by `param`: `sections` are `(NAME, field)` pairs, `default` the names served without it.
    pub fn sections(mut self, param: &str, sections: &[(&str, &str)], default: &[&str]) -> Self {
        self.sections = Some(Sections {
            param: param.to_string(),
            sections: sections.iter().map(|(n, f)| (n.to_string(), f.to_string())).collect(),
            default: path_of(default),
        });
        self
    }
    pub fn concurrency(mut self, max: usize, over: OverLimit) -> Self {
        self.concurrency = Some(ConcurrencyLimit { max, over });
        self
    }
    pub fn display_values(mut self, param: &str, exclude_link_param: &str) -> Self {
        self.display_values =
            Some(DisplayValues { param: param.to_string(), exclude_link_param: exclude_link_param.to_string() });
        self
    }
    pub fn fields_param(mut self, name: &str) -> Self {
        self.fields_param = Some(name.to_string());
        self
    }
    pub fn param_check(
        mut self,
        f: impl Fn(&[(String, String)]) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.param_check = Some(Arc::new(f));
        self
    }
    pub fn error_style(mut self, style: ErrorStyle) -> Self {
        self.error_style = style;
        self
    }
    /// See [`KitSpec::since`]: `?param=V` keeps the records whose `field` sorts after `V`.
    pub fn since_filter(mut self, param: &str, field: &str) -> Self {
        self.since = Some((param.to_string(), field.to_string()));
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
        if let Some((token_path, _)) = self.auth.oauth_token() {
            paths.push(("token path", token_path.to_string()));
        }
        if let Some((token_path, keep_alive, invalidate, _)) = self.auth.basic_token() {
            paths.push(("token path", token_path.to_string()));
            if let Some(p) = keep_alive {
                paths.push(("keep-alive path", p.to_string()));
            }
            if let Some(p) = invalidate {
                paths.push(("invalidate path", p.to_string()));
            }
        }
        if self.auth.styles().iter().filter(|a| matches!(a, KitAuth::OAuth2 { .. })).count() > 1
            || self.auth.styles().iter().filter(|a| matches!(a, KitAuth::TokenFromBasic { .. })).count() > 1
        {
            return bad("at most one OAuth2 and one token-from-Basic style".into());
        }
        if let Some(c) = &self.concurrency
            && c.max == 0
        {
            return bad("the concurrency limit must be at least 1".into());
        }
        if let Some(s) = &self.sections
            && let Some(d) = s.default.iter().find(|d| !s.sections.iter().any(|(n, _)| n == *d))
        {
            return bad(format!("default section {d:?} is not one of the sections"));
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
