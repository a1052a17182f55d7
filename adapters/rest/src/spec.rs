//! The spec format: what a spec file says, as serde structs (TOML,
//! `deny_unknown_fields` everywhere, so a misspelt key is an error naming
//! its line). docs/DECLARATIVE.md documents every key; the JSON Schema for
//! editors (docs/rest-spec.schema.json) is generated from these structs.
//!
//! Values that later checks may find wrong (paths, templates, transform
//! names, config references) are kept [`Spanned`], so the error names the
//! line they are on. Sections whose keys depend on a `type` are flat
//! structs checked in [`crate::load`] (serde's tagged enums would lose the
//! spans).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A whole spec file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "corral REST adapter spec")]
pub struct Spec {
    /// Name, description and operator notes.
    pub adapter: AdapterSection,
    /// The connection config fields the spec needs (`[[config]]`), referenced
    /// elsewhere as `{config.NAME}`.
    #[serde(default)]
    #[schemars(with = "Vec<ConfigFieldSpec>")]
    pub config: Vec<Spanned<ConfigFieldSpec>>,
    /// Base URL, extra headers, timeouts, the check request.
    pub http: HttpSection,
    /// How requests authenticate.
    #[serde(default)]
    pub auth: AuthSpec,
    /// The vendor's rate limit and how corral keeps to it.
    #[serde(default)]
    pub rate_limit: RateSpec,
    /// Statuses with a meaning of their own at this vendor.
    #[serde(default)]
    pub errors: ErrorsSpec,
    /// The streams (`[[streams]]`): at least one.
    #[schemars(with = "Vec<StreamSpec>")]
    pub streams: Vec<Spanned<StreamSpec>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdapterSection {
    /// The adapter's name, as in a connection's `adapter = "..."`; must be
    /// the spec file's name without `.toml`. Lowercase letters, digits, `-`
    /// and `_`, starting with a letter.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// One line: what the adapter syncs.
    pub description: String,
    /// The spec's own version (default `1`).
    #[serde(default)]
    pub version: Option<String>,
    /// What an operator needs to connect it (`corral docs` prints it).
    #[serde(default)]
    pub notes: NotesSpec,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotesSpec {
    /// How it authenticates.
    #[serde(default)]
    pub auth: String,
    /// The permissions (scopes, roles) the credentials need.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The vendor's rate limits and how the adapter keeps to them.
    #[serde(default)]
    pub rate_limits: String,
}

/// The type of a config field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfigType {
    String,
    Integer,
    Boolean,
    Url,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFieldSpec {
    /// `[a-z][a-z0-9_]*`.
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ConfigType,
    #[serde(default)]
    pub required: bool,
    /// Held in a secret type, never printed; only `[auth]` may use it.
    #[serde(default)]
    pub secret: bool,
    pub description: String,
    /// The value when the connection does not set it (not for secrets).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<toml::Value>,
    /// Smallest allowed value (integers).
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest allowed value (integers).
    #[serde(default)]
    pub max: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Scheme, host and optional path prefix; a template (`{config.base_url}`).
    #[schemars(with = "String")]
    pub base_url: Spanned<String>,
    /// Headers sent with every request (templates of non-secret config fields).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Whole-request timeout by default (the connection's `timeout_secs` overrides it). Default 300.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// The request `corral check` makes: a path with its query (a template).
    /// Default: the first stream's first page.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub check: Option<Spanned<String>>,
}

/// Authentication styles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A whole header: `header` = `prefix` + `token` (`Authorization: SSWS <t>`).
    Header,
    /// HTTP Basic with `username` and `password`.
    Basic,
    /// OAuth2 client credentials at `token_url`.
    Oauth2,
    /// A token fetched from another call (POST `token_path` with Basic
    /// `username`/`password`, answering `{token, expires}`).
    TokenCall,
}

/// How the OAuth2 client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields.
    #[default]
    Form,
    /// As HTTP Basic.
    Basic,
}

/// `[auth]`: which keys apply depends on `type` (checked when loaded).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    #[serde(rename = "type", default)]
    pub ty: AuthType,
    /// bearer, header: the token (a template of a secret config field).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token: Option<Spanned<String>>,
    /// header: the header's name (default `Authorization`).
    #[serde(default)]
    pub header: Option<String>,
    /// header, token_call: what goes before the token (`SSWS `, `ApiToken `).
    #[serde(default)]
    pub prefix: Option<String>,
    /// basic, token_call: the user name (a template).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub username: Option<Spanned<String>>,
    /// basic, token_call: the password (a template of a secret config field).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub password: Option<Spanned<String>>,
    /// oauth2: the token endpoint, absolute or a path under the base URL (a template).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token_url: Option<Spanned<String>>,
    /// oauth2: the client id (a template).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub client_id: Option<Spanned<String>>,
    /// oauth2: the client secret (a template of a secret config field).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub client_secret: Option<Spanned<String>>,
    /// oauth2: scopes, sent space-separated.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// oauth2: `form` (default) or `basic`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// oauth2: the token endpoint's own limit, requests per minute.
    #[serde(default)]
    pub token_requests_per_minute: Option<u32>,
    /// token_call: the token request's path.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token_path: Option<Spanned<String>>,
    /// token_call: where the token sits in the answer (default `token`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token_field: Option<Spanned<String>>,
    /// token_call: where its expiry sits in the answer (default `expires`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub expires_field: Option<Spanned<String>>,
}

/// The rate-limit header family the vendor sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResetStyle {
    /// Seconds until the window resets.
    #[default]
    Seconds,
    /// The Unix time (seconds) when it resets.
    Epoch,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// The default quota (the connection's `requests_per_minute` overrides
    /// it); 0 or absent: no fixed quota.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at once (default 4).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// The most requests in flight a connection may ask for with its own
    /// `max_in_flight` (default 256): the vendor's ceiling on concurrent
    /// connections, where it has one. A larger setting is refused when the
    /// connection is configured.
    #[serde(default)]
    pub max_in_flight_limit: Option<usize>,
    /// The window a vendor's limit/remaining counts without a reset time (default 60).
    #[serde(default)]
    pub window_secs: Option<u64>,
    /// The header saying how many requests are left (`X-Rate-Limit-Remaining`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub remaining_header: Option<Spanned<String>>,
    /// The header saying when the window resets (`X-Rate-Limit-Reset`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub reset_header: Option<Spanned<String>>,
    /// What the reset header holds: `seconds` (a delay) or `epoch`.
    #[serde(default)]
    pub reset: Option<ResetStyle>,
    /// Whether a 429 carries `Retry-After` (default true; it is always honoured).
    #[serde(default)]
    pub retry_after: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSpec {
    /// Statuses meaning bad credentials (besides 401 and 403).
    #[serde(default)]
    pub auth: Vec<u16>,
    /// Statuses meaning nothing there: a wrong base URL or tenant (besides 404).
    #[serde(default)]
    pub not_found: Vec<u16>,
    /// Statuses to retry with backoff (besides 5xx, 408 and 429).
    #[serde(default)]
    pub retry: Vec<u16>,
}

/// The kinds of assets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindSpec {
    Device,
    User,
    Vulnerability,
    Software,
    CloudResource,
}

/// HTTP methods a listing may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MethodSpec {
    #[default]
    Get,
    Post,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// `[a-z][a-z0-9_]*`.
    pub name: String,
    pub kind: KindSpec,
    pub description: String,
    #[serde(default)]
    pub method: MethodSpec,
    /// The listing's path under the base URL (a template).
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Query parameters of the first page (templates); a list sends the
    /// parameter once per item (`section = ["GENERAL", "HARDWARE"]`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, QueryValue>")]
    pub query: BTreeMap<String, Spanned<QueryValue>>,
    /// A JSON body for POST listings (strings in it are templates).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub body: Option<Spanned<toml::Value>>,
    /// Where the records are in a page's JSON body (`data`, `result`);
    /// `.`: the body is the array.
    #[schemars(with = "String")]
    pub records: Spanned<String>,
    /// The record path of each record's id (its `source_id`).
    #[schemars(with = "String")]
    pub key: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "PaginationSpec")]
    pub pagination: Option<Spanned<PaginationSpec>>,
    #[serde(default)]
    pub incremental: Option<IncrementalSpec>,
    /// Canonical fields, by name (`hostname`, `os.name`, `email`, ...).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, FieldEntry>")]
    pub fields: BTreeMap<String, Spanned<FieldEntry>>,
    /// Vendor attributes, by name; each needs `type` and `description`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, FieldEntry>")]
    pub attributes: BTreeMap<String, Spanned<FieldEntry>>,
    /// An example page body (JSON): when given, the records path and every
    /// mapped path must be found in it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub example: Option<Spanned<String>>,
}

/// Pagination styles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaginationType {
    /// One request.
    #[default]
    None,
    /// A cursor in the body (`cursor`), sent back as query parameter `param`.
    BodyCursor,
    /// The next page's absolute URL in the body (`next`).
    NextUrl,
    /// `Link: <...>; rel="next"` headers.
    LinkHeader,
    /// `offset_param`/`limit_param`, with or without a total.
    Offset,
    /// `page_param` (from `first_page`) and `size_param`, with or without a total.
    PageNumber,
}

/// `[streams.pagination]`: which keys apply depends on `type`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaginationSpec {
    #[serde(rename = "type", default)]
    pub ty: PaginationType,
    /// body_cursor: the cursor's path in the body (`pagination.nextCursor`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cursor: Option<Spanned<String>>,
    /// body_cursor: the query parameter that sends it back (`cursor`).
    #[serde(default)]
    pub param: Option<String>,
    /// next_url: the next page's URL in the body (`['@odata.nextLink']`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub next: Option<Spanned<String>>,
    /// offset: the offset's query parameter.
    #[serde(default)]
    pub offset_param: Option<String>,
    /// offset: the page size's query parameter.
    #[serde(default)]
    pub limit_param: Option<String>,
    /// page_number: the page's query parameter.
    #[serde(default)]
    pub page_param: Option<String>,
    /// page_number: the page size's query parameter.
    #[serde(default)]
    pub size_param: Option<String>,
    /// page_number: the first page's number (0 or 1, default 0).
    #[serde(default)]
    pub first_page: Option<u64>,
    /// offset, page_number: records per page (a template: `{config.page_size}`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub size: Option<Spanned<String>>,
    /// offset, page_number: the total's path in the body.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub total: Option<Spanned<String>>,
    /// offset, page_number: the header with the total (`X-Total-Count`).
    #[serde(default)]
    pub total_header: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    /// The record path whose largest value is remembered (`lastActiveDate`).
    #[schemars(with = "String")]
    pub cursor_field: Spanned<String>,
    /// The query parameter that sends it on the next run (`updatedAt__gt`).
    pub param: String,
}

/// A query parameter's value: a template, or a list of them (the
/// parameter repeated, in order).
#[derive(Debug, Clone, JsonSchema)]
#[schemars(untagged)]
pub enum QueryValue {
    One(String),
    Many(Vec<String>),
}

impl QueryValue {
    /// The values, in order.
    pub fn values(&self) -> &[String] {
        match self {
            QueryValue::One(v) => std::slice::from_ref(v),
            QueryValue::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for QueryValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = QueryValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (a template) or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<QueryValue, E> {
                Ok(QueryValue::One(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<QueryValue, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(QueryValue::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One mapped value: a record path (`"computerName"`), or a table.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum FieldEntry {
    /// A record path.
    Path(String),
    /// An expression.
    Expr(Box<ExprSpec>),
}

/// An expression: a source (`path`, `first`, `join` or `value`), then
/// `split`, `lowercase`/`uppercase`, `map`, `prefix`, then `transform`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExprSpec {
    /// A record path (`networkInterfaces[].inet[]`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// The first of these that gives a non-empty value.
    #[serde(default)]
    #[schemars(with = "Option<Vec<FieldEntry>>")]
    pub first: Option<Vec<Spanned<FieldEntry>>>,
    /// These joined by `sep` (empty ones left out).
    #[serde(default)]
    #[schemars(with = "Option<Vec<FieldEntry>>")]
    pub join: Option<Vec<Spanned<FieldEntry>>>,
    /// The separator of `join` (default a space).
    #[serde(default)]
    pub sep: Option<String>,
    /// A constant.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub value: Option<toml::Value>,
    /// Split each string at this separator.
    #[serde(default)]
    pub split: Option<String>,
    #[serde(default)]
    pub lowercase: bool,
    #[serde(default)]
    pub uppercase: bool,
    /// Replace values: `{ ACTIVE = true, STAGED = false }`; unlisted values
    /// become `default`, or nothing.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub map: Option<BTreeMap<String, toml::Value>>,
    /// See `map`.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<toml::Value>,
    /// Put this before each string.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A named transform (docs/DECLARATIVE.md lists them); default: the target's own.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub transform: Option<Spanned<String>>,
    /// hostname: the record path of an explicit domain.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub domain: Option<Spanned<String>>,
    /// Attributes: `string`, `integer`, `float`, `boolean`, `timestamp`, `string_list`.
    #[serde(rename = "type", default)]
    #[schemars(with = "Option<String>")]
    pub ty: Option<Spanned<String>>,
    /// Attributes: what it means; fields: where it comes from (docs).
    #[serde(default)]
    pub description: Option<String>,
}

impl<'de> Deserialize<'de> for FieldEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a record path or a table (path, first, join, value, transform, ...)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldEntry, E> {
                Ok(FieldEntry::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldEntry, A::Error> {
                ExprSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(|e| FieldEntry::Expr(Box::new(e)))
            }
        }
        d.deserialize_any(V)
    }
}
