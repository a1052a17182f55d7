//! Loading and checking a spec: TOML into [`crate::spec`], then every check
//! that can be made without a connection, into a [`Plan`] (the compiled
//! spec). Every problem is a [`SpecError`] naming the file, the line and
//! what is wrong.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use corral_core::{AdapterInfo, AdapterNotes, AssetKind, AttrType, ConfigField, FieldType, StreamInfo};
use serde_json::Value;
use toml::Spanned;

use crate::map::{self, Expr, Mapping, Source, Target, Transform, Want};
use crate::path::Path;
use crate::spec::{
    self, AuthSpec, AuthType, ClientAuth, ConfigType, FieldEntry, MethodSpec, PaginationSpec, PaginationType, Spec,
    StreamSpec,
};

/// A problem in a spec file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{file}: cannot read the spec: {detail}")]
    Read { file: String, detail: String },
    /// A problem at a line of the file.
    #[error("{file}:{line}: {problem}")]
    At { file: String, line: usize, problem: String },
    /// A problem with the spec as a whole.
    #[error("{file}: {problem}")]
    Whole { file: String, problem: String },
}

impl SpecError {
    /// The line the problem is on, if it is on one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SpecError::At { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Requests in flight at once when a spec does not say (`rate_limit.max_in_flight`).
const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// Config fields every spec adapter has, besides its own.
pub const BUILTIN_CONFIG: &[&str] = &["timeout_secs", "requests_per_minute", "max_in_flight", "keep_raw"];

/// A config field as the spec declares it.
#[derive(Debug, Clone)]
pub struct ConfigDef {
    pub name: String,
    pub ty: ConfigType,
    pub required: bool,
    pub secret: bool,
    pub description: String,
    pub default: Option<Value>,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

/// A string with `{config.NAME}` placeholders, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// The config field at this index of [`Plan::config`].
    Config(usize),
}

impl Template {
    pub fn literal(text: &str) -> Template {
        Template { parts: vec![Part::Lit(text.to_string())], text: text.to_string() }
    }
    /// Whether it refers to a secret config field.
    pub fn uses_secret(&self, defs: &[ConfigDef]) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Config(i) if defs[*i].secret))
    }
}

/// How pages follow each other.
#[derive(Debug, Clone)]
pub enum PagePlan {
    None,
    BodyCursor { cursor: Path, param: String },
    NextUrl { next: Path },
    Link,
    Offset { offset_param: String, limit_param: String, size: Template, total: Total },
    PageNumber { page_param: String, size_param: String, first: u64, size: Template, total: Total },
}

/// Where the total count of records is, if anywhere.
#[derive(Debug, Clone)]
pub enum Total {
    None,
    Body(Path),
    Header(String),
}

/// The compiled authentication.
#[derive(Debug, Clone)]
pub enum AuthPlan {
    None,
    Bearer {
        token: Template,
    },
    Header {
        header: String,
        prefix: String,
        token: Template,
    },
    Basic {
        username: Template,
        password: Template,
    },
    OAuth2 {
        token_url: Template,
        client_id: Template,
        client_secret: Template,
        scopes: Vec<String>,
        client_auth: ClientAuth,
        token_per_minute: Option<u32>,
    },
    TokenCall {
        token_path: Template,
        username: Template,
        password: Template,
        /// Object keys leading to the token in the token call's answer.
        token_field: Vec<String>,
        /// Object keys leading to its expiry.
        expires_field: Vec<String>,
        header: String,
        prefix: String,
    },
}

/// One compiled stream.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub name: String,
    pub method: MethodSpec,
    pub path: Template,
    pub query: Vec<(String, Template)>,
    pub body: Option<Value>,
    /// Strings in the body that are templates: (JSON pointer, template).
    pub body_templates: Vec<(String, Template)>,
    pub records: Path,
    pub pagination: PagePlan,
    pub incremental: Option<(Path, String)>,
    pub mapping: Mapping,
}

/// A checked, compiled spec: what every connection of the adapter shares.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: String,
    pub info: AdapterInfo,
    pub config: Vec<ConfigDef>,
    pub base_url: Template,
    pub headers: Vec<(String, Template)>,
    pub timeout_secs: u64,
    pub check: Option<Template>,
    pub auth: AuthPlan,
    pub requests_per_minute: u32,
    pub max_in_flight: usize,
    pub window_secs: u64,
    pub adapt_to_headers: bool,
    pub auth_statuses: Vec<u16>,
    pub not_found_statuses: Vec<u16>,
    pub retry_statuses: Vec<u16>,
    pub streams: Vec<StreamPlan>,
}

impl Plan {
    pub fn config_index(&self, name: &str) -> Option<usize> {
        self.config.iter().position(|c| c.name == name)
    }
}

/// Read and check the spec at `path`; the adapter is named after the file.
pub fn load_file(path: &std::path::Path) -> Result<Plan, SpecError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| SpecError::Read { file: file.clone(), detail: e.to_string() })?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    load_str(&text, &file, Some(&stem))
}

/// Check the spec `text` (from `file`, for messages); `expected_name`: the
/// name the adapter must have (the file's name without `.toml`).
pub fn load_str(text: &str, file: &str, expected_name: Option<&str>) -> Result<Plan, SpecError> {
    let cx = Cx { text, file };
    let spec: Spec = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => cx.at(&span, e.message().trim_end().to_string()),
        None => SpecError::Whole { file: file.to_string(), problem: e.message().trim_end().to_string() },
    })?;
    cx.compile(spec, expected_name)
}

struct Cx<'a> {
    text: &'a str,
    file: &'a str,
}

fn valid_name(n: &str, dash: bool) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || (dash && *c == b'-'))
}

/// The header families corral-http reads rate-limit budgets from.
const RATE_FAMILIES: &[&str] = &["x-ratelimit-", "x-rate-limit-", "ratelimit-"];

impl<'a> Cx<'a> {
    fn line(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|b| **b == b'\n').count() + 1
    }
    fn at(&self, span: &Range<usize>, problem: impl Into<String>) -> SpecError {
        SpecError::At { file: self.file.to_string(), line: self.line(span.start), problem: problem.into() }
    }
    fn whole(&self, problem: impl Into<String>) -> SpecError {
        SpecError::Whole { file: self.file.to_string(), problem: problem.into() }
    }

    fn template(&self, s: &Spanned<String>, defs: &[ConfigDef], what: &str) -> Result<Template, SpecError> {
        parse_template(s.get_ref(), defs).map_err(|e| self.at(&s.span(), format!("{what}: {e}")))
    }

    /// A template that must not carry a secret (it goes into URLs, headers or logs).
    fn public(&self, s: &Spanned<String>, defs: &[ConfigDef], what: &str) -> Result<Template, SpecError> {
        let t = self.template(s, defs, what)?;
        if t.uses_secret(defs) {
            return Err(self.at(
                &s.span(),
                format!(
                    "{what}: uses a secret config field; secrets may only be used in [auth] (a URL, query or header \
                     would leak them into logs)"
                ),
            ));
        }
        Ok(t)
    }

    /// A token-call answer's field: object keys only (`default` when not given).
    fn answer_keys(&self, s: Option<&Spanned<String>>, key: &str, default: &str) -> Result<Vec<String>, SpecError> {
        let Some(s) = s else { return Ok(vec![default.to_string()]) };
        let path = self.path(s, &format!("auth.{key}"))?;
        match path.keys() {
            Some(keys) if !keys.is_empty() => Ok(keys.into_iter().map(str::to_string).collect()),
            _ => Err(self.at(&s.span(), format!("auth.{key}: `{}` must be object keys only", path.text))),
        }
    }

    fn path(&self, s: &Spanned<String>, what: &str) -> Result<Path, SpecError> {
        Path::parse(s.get_ref()).map_err(|e| self.at(&s.span(), format!("{what}: path `{}` {e}", s.get_ref())))
    }

    fn compile(&self, spec: Spec, expected_name: Option<&str>) -> Result<Plan, SpecError> {
        let name = spec.adapter.name.get_ref().clone();
        if !valid_name(&name, true) {
            return Err(self.at(
                &spec.adapter.name.span(),
                format!("adapter name `{name}` must be lowercase letters, digits, `-` and `_`, starting with a letter"),
            ));
        }
        if let Some(expected) = expected_name
            && expected != name
        {
            return Err(self.at(
                &spec.adapter.name.span(),
                format!("adapter name `{name}` must be the file's name without .toml (`{expected}`)"),
            ));
        }
        let defs = self.config_defs(&spec)?;
        let base_url = self.public(&spec.http.base_url, &defs, "http.base_url")?;
        let mut headers = Vec::new();
        for (k, v) in &spec.http.headers {
            if corral_http::HeaderValue::from_str(k).is_err() || k.is_empty() || k.contains([' ', ':']) {
                return Err(self.at(&v.span(), format!("http.headers: `{k}` is not a header name")));
            }
            headers.push((k.clone(), self.public(v, &defs, &format!("http.headers.{k}"))?));
        }
        let check = spec.http.check.as_ref().map(|c| self.public(c, &defs, "http.check")).transpose()?;
        let auth = self.auth(&spec.auth, &defs)?;
        let r = &spec.rate_limit;
        let mut family = None;
        for h in [&r.remaining_header, &r.reset_header].into_iter().flatten() {
            let lower = h.get_ref().to_ascii_lowercase();
            let Some(f) = RATE_FAMILIES.iter().find(|f| lower.starts_with(**f)) else {
                return Err(self.at(
                    &h.span(),
                    format!(
                        "rate_limit: header `{}` is not one corral reads (X-RateLimit-*, X-Rate-Limit-* or RateLimit-*)",
                        h.get_ref()
                    ),
                ));
            };
            if family.is_some_and(|g| g != *f) {
                return Err(
                    self.at(&h.span(), "rate_limit: remaining_header and reset_header are of different families")
                );
            }
            family = Some(*f);
        }
        if r.max_in_flight == Some(0) || r.max_in_flight_limit == Some(0) {
            return Err(self.whole("rate_limit.max_in_flight and max_in_flight_limit must be at least 1"));
        }
        if let Some(limit) = r.max_in_flight_limit
            && r.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT) > limit
        {
            return Err(self.whole(format!(
                "rate_limit.max_in_flight ({}) is over max_in_flight_limit ({limit})",
                r.max_in_flight.map_or(format!("{DEFAULT_MAX_IN_FLIGHT}, the default"), |n| n.to_string())
            )));
        }
        if spec.streams.is_empty() {
            return Err(self.whole("a spec needs at least one [[streams]]"));
        }
        let mut streams = Vec::new();
        let mut infos = Vec::new();
        let mut names = BTreeSet::new();
        for s in &spec.streams {
            let (plan, info) = self.stream(s, &defs)?;
            if !names.insert(plan.name.clone()) {
                return Err(self.at(&s.span(), format!("stream `{}` is declared twice", plan.name)));
            }
            streams.push(plan);
            infos.push(info);
        }
        let mut config: Vec<ConfigField> = defs
            .iter()
            .map(|d| {
                let ty = match d.ty {
                    ConfigType::String => FieldType::String,
                    ConfigType::Integer => FieldType::Integer,
                    ConfigType::Boolean => FieldType::Boolean,
                    ConfigType::Url => FieldType::Url,
                };
                let f = if d.required {
                    ConfigField::required(&d.name, ty, &d.description)
                } else {
                    ConfigField::optional(&d.name, ty, &d.description)
                };
                if d.secret { f.secret() } else { f }
            })
            .collect();
        config.retain(|_| true);
        let info = AdapterInfo {
            name,
            version: spec.adapter.version.clone().unwrap_or_else(|| "1".into()),
            description: spec.adapter.description.clone(),
            streams: infos,
            config,
            notes: AdapterNotes {
                auth: spec.adapter.notes.auth.clone(),
                permissions: spec.adapter.notes.permissions.clone(),
                rate_limits: spec.adapter.notes.rate_limits.clone(),
            },
        };
        let problems = info.problems();
        if let Some(p) = problems.first() {
            return Err(self.whole(p.clone()));
        }
        Ok(Plan {
            file: self.file.to_string(),
            info,
            config: defs,
            base_url,
            headers,
            timeout_secs: spec.http.timeout_secs.unwrap_or(300).clamp(1, 3600),
            check,
            auth,
            requests_per_minute: r.requests_per_minute.unwrap_or(0),
            max_in_flight: r.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            window_secs: r.window_secs.unwrap_or(60).max(1),
            adapt_to_headers: true,
            auth_statuses: spec.errors.auth.clone(),
            not_found_statuses: spec.errors.not_found.clone(),
            retry_statuses: spec.errors.retry.clone(),
            streams,
        })
    }

    fn config_defs(&self, spec: &Spec) -> Result<Vec<ConfigDef>, SpecError> {
        let mut defs: Vec<ConfigDef> = Vec::new();
        for c in &spec.config {
            let span = c.span();
            let c = c.get_ref();
            if !valid_name(&c.name, false) {
                return Err(self.at(&span, format!("config field name `{}` must be [a-z][a-z0-9_]*", c.name)));
            }
            if BUILTIN_CONFIG.contains(&c.name.as_str()) {
                return Err(self.at(&span, format!("config field `{}` is built in to every spec adapter", c.name)));
            }
            if defs.iter().any(|d| d.name == c.name) {
                return Err(self.at(&span, format!("config field `{}` is declared twice", c.name)));
            }
            if c.secret && c.default.is_some() {
                return Err(self.at(&span, format!("config field `{}`: a secret cannot have a default", c.name)));
            }
            if (c.min.is_some() || c.max.is_some()) && c.ty != ConfigType::Integer {
                return Err(self.at(&span, format!("config field `{}`: min and max are for integers", c.name)));
            }
            let default = match &c.default {
                None => None,
                Some(v) => {
                    let j = serde_json::to_value(v).map_err(|e| self.at(&span, e.to_string()))?;
                    if !type_fits(c.ty, &j) {
                        return Err(
                            self.at(&span, format!("config field `{}`: the default is not of its type", c.name))
                        );
                    }
                    Some(j)
                }
            };
            defs.push(ConfigDef {
                name: c.name.clone(),
                ty: c.ty,
                required: c.required,
                secret: c.secret,
                description: c.description.clone(),
                default,
                min: c.min,
                max: c.max,
            });
        }
        let builtin = |name: &str, ty, description: &str, min, max| ConfigDef {
            name: name.into(),
            ty,
            required: false,
            secret: false,
            description: description.into(),
            default: None,
            min,
            max,
        };
        defs.push(builtin(
            "timeout_secs",
            ConfigType::Integer,
            "Whole-request timeout in seconds (1..=3600); a request that takes longer is cut and retried. Default: the spec's.",
            Some(1),
            Some(3600),
        ));
        defs.push(builtin(
            "requests_per_minute",
            ConfigType::Integer,
            "Fixed request quota for this connection; 0 = none (pace from the vendor's headers only). Default: the spec's.",
            Some(0),
            None,
        ));
        defs.push(builtin(
            "max_in_flight",
            ConfigType::Integer,
            "Requests in flight at once. Default: the spec's (4 unless it says).",
            Some(1),
            Some(spec.rate_limit.max_in_flight_limit.map_or(256, |n| n as i64)),
        ));
        defs.push(builtin(
            "keep_raw",
            ConfigType::Boolean,
            "Keep each vendor record on its asset. Default false.",
            None,
            None,
        ));
        Ok(defs)
    }

    fn auth(&self, a: &AuthSpec, defs: &[ConfigDef]) -> Result<AuthPlan, SpecError> {
        let ty = a.ty;
        let tname = format!("{ty:?}").to_lowercase();
        let allowed: &[&str] = match ty {
            AuthType::None => &[],
            AuthType::Bearer => &["token"],
            AuthType::Header => &["token", "header", "prefix"],
            AuthType::Basic => &["username", "password"],
            AuthType::Oauth2 => {
                &["token_url", "client_id", "client_secret", "scopes", "client_auth", "token_requests_per_minute"]
            }
            AuthType::TokenCall => {
                &["token_path", "username", "password", "token_field", "expires_field", "header", "prefix"]
            }
        };
        let present: [(&str, Option<Range<usize>>, bool); 14] = [
            ("token", a.token.as_ref().map(Spanned::span), a.token.is_some()),
            ("header", None, a.header.is_some()),
            ("prefix", None, a.prefix.is_some()),
            ("username", a.username.as_ref().map(Spanned::span), a.username.is_some()),
            ("password", a.password.as_ref().map(Spanned::span), a.password.is_some()),
            ("token_url", a.token_url.as_ref().map(Spanned::span), a.token_url.is_some()),
            ("client_id", a.client_id.as_ref().map(Spanned::span), a.client_id.is_some()),
            ("client_secret", a.client_secret.as_ref().map(Spanned::span), a.client_secret.is_some()),
            ("scopes", None, !a.scopes.is_empty()),
            ("client_auth", None, a.client_auth.is_some()),
            ("token_requests_per_minute", None, a.token_requests_per_minute.is_some()),
            ("token_path", a.token_path.as_ref().map(Spanned::span), a.token_path.is_some()),
            ("token_field", a.token_field.as_ref().map(Spanned::span), a.token_field.is_some()),
            ("expires_field", a.expires_field.as_ref().map(Spanned::span), a.expires_field.is_some()),
        ];
        for (key, span, set) in &present {
            if *set && !allowed.contains(key) {
                let msg = format!("auth: `{key}` does not apply to auth type `{tname}`");
                return Err(match span {
                    Some(s) => self.at(s, msg),
                    None => self.whole(msg),
                });
            }
        }
        fn need<'s>(
            cx: &Cx<'_>,
            tname: &str,
            v: &'s Option<Spanned<String>>,
            key: &str,
        ) -> Result<&'s Spanned<String>, SpecError> {
            v.as_ref().ok_or_else(|| cx.whole(format!("auth: type `{tname}` needs `{key}`")))
        }
        let need = |v, key| need(self, &tname, v, key);
        // Credentials must come from a secret config field, never be written into the spec.
        let secret = |v: &Spanned<String>, key: &str| -> Result<Template, SpecError> {
            let t = self.template(v, defs, &format!("auth.{key}"))?;
            if !t.uses_secret(defs) {
                return Err(self.at(
                    &v.span(),
                    format!("auth.{key} must come from a secret config field (`{{config.NAME}}` with secret = true)"),
                ));
            }
            Ok(t)
        };
        Ok(match ty {
            AuthType::None => AuthPlan::None,
            AuthType::Bearer => AuthPlan::Bearer { token: secret(need(&a.token, "token")?, "token")? },
            AuthType::Header => AuthPlan::Header {
                header: a.header.clone().unwrap_or_else(|| "Authorization".into()),
                prefix: a.prefix.clone().unwrap_or_default(),
                token: secret(need(&a.token, "token")?, "token")?,
            },
            AuthType::Basic => AuthPlan::Basic {
                username: self.public(need(&a.username, "username")?, defs, "auth.username")?,
                password: secret(need(&a.password, "password")?, "password")?,
            },
            AuthType::Oauth2 => AuthPlan::OAuth2 {
                token_url: self.public(need(&a.token_url, "token_url")?, defs, "auth.token_url")?,
                client_id: self.public(need(&a.client_id, "client_id")?, defs, "auth.client_id")?,
                client_secret: secret(need(&a.client_secret, "client_secret")?, "client_secret")?,
                scopes: a.scopes.clone(),
                client_auth: a.client_auth.unwrap_or_default(),
                token_per_minute: a.token_requests_per_minute,
            },
            AuthType::TokenCall => AuthPlan::TokenCall {
                token_path: self.public(need(&a.token_path, "token_path")?, defs, "auth.token_path")?,
                username: self.public(need(&a.username, "username")?, defs, "auth.username")?,
                password: secret(need(&a.password, "password")?, "password")?,
                token_field: self.answer_keys(a.token_field.as_ref(), "token_field", "token")?,
                expires_field: self.answer_keys(a.expires_field.as_ref(), "expires_field", "expires")?,
                header: a.header.clone().unwrap_or_else(|| "Authorization".into()),
                prefix: a.prefix.clone().unwrap_or_else(|| "Bearer ".into()),
            },
        })
    }

    fn stream(&self, s: &Spanned<StreamSpec>, defs: &[ConfigDef]) -> Result<(StreamPlan, StreamInfo), SpecError> {
        let span = s.span();
        let s = s.get_ref();
        if !valid_name(&s.name, false) {
            return Err(self.at(&span, format!("stream name `{}` must be [a-z][a-z0-9_]*", s.name)));
        }
        let what = |k: &str| format!("stream `{}`: {k}", s.name);
        let kind = match s.kind {
            spec::KindSpec::Device => AssetKind::Device,
            spec::KindSpec::User => AssetKind::User,
            spec::KindSpec::Vulnerability => AssetKind::Vulnerability,
            spec::KindSpec::Software => AssetKind::Software,
            spec::KindSpec::CloudResource => AssetKind::CloudResource,
        };
        let path = self.public(&s.path, defs, &what("path"))?;
        if !s.path.get_ref().starts_with('/') {
            return Err(self.at(&s.path.span(), format!("{}: must start with `/`", what("path"))));
        }
        let mut query = Vec::new();
        for (k, v) in &s.query {
            for item in v.get_ref().values() {
                let item = Spanned::new(v.span(), item.clone());
                query.push((k.clone(), self.public(&item, defs, &what(&format!("query.{k}")))?));
            }
        }
        let (body, body_templates) = match &s.body {
            None => (None, Vec::new()),
            Some(b) => {
                if s.method != MethodSpec::Post {
                    return Err(self.at(&b.span(), format!("{}: a body needs method = \"POST\"", what("body"))));
                }
                let v = serde_json::to_value(b.get_ref()).map_err(|e| self.at(&b.span(), e.to_string()))?;
                let mut templates = Vec::new();
                collect_templates(&v, String::new(), &mut templates);
                let mut parsed = Vec::new();
                for (ptr, text) in templates {
                    let t = parse_template(&text, defs)
                        .map_err(|e| self.at(&b.span(), format!("{}: {e}", what("body"))))?;
                    if t.uses_secret(defs) {
                        return Err(self.at(
                            &b.span(),
                            format!("{}: uses a secret config field; secrets may only be used in [auth]", what("body")),
                        ));
                    }
                    parsed.push((ptr, t));
                }
                (Some(v), parsed)
            }
        };
        let records = self.path(&s.records, &what("records"))?;
        let key = self.path(&s.key, &what("key"))?;
        if key.is_multi() || key.segs.is_empty() {
            return Err(
                self.at(&s.key.span(), format!("{}: `{}` must name one value of the record", what("key"), key.text))
            );
        }
        let no_paging = PaginationSpec::default();
        let pagination = match &s.pagination {
            Some(p) => self.pagination(p.get_ref(), &p.span(), s, defs)?,
            None => self.pagination(&no_paging, &span, s, defs)?,
        };
        let incremental = match &s.incremental {
            None => None,
            Some(i) => {
                let p = self.path(&i.cursor_field, &what("incremental.cursor_field"))?;
                if p.is_multi() {
                    return Err(self.at(
                        &i.cursor_field.span(),
                        format!("{}: must name one value", what("incremental.cursor_field")),
                    ));
                }
                Some((p, i.param.clone()))
            }
        };
        let mut info = StreamInfo::new(&s.name, kind, &key.text, &s.description);
        let mut fields = Vec::new();
        let mut domain_mapped = false;
        let mut paths_used: Vec<(Path, Range<usize>, String)> = vec![(key.clone(), s.key.span(), what("key"))];
        for (name, entry) in &s.fields {
            let espan = entry.span();
            let Some((target, want)) = map::target(kind, name) else {
                let known: Vec<&str> = map::TARGETS.iter().filter(|t| t.0 == kind).map(|t| t.1).collect();
                return Err(self.at(
                    &espan,
                    format!(
                        "{}: `{name}` is not a {kind} field a spec can fill (one of: {})",
                        what("fields"),
                        known.join(", ")
                    ),
                ));
            };
            if target == Target::DDomain {
                domain_mapped = true;
            }
            let label = what(&format!("fields.{name}"));
            let expr = self.expr(entry, want, target == Target::DHostname, false, &label, &mut paths_used)?;
            let from = describe(entry.get_ref());
            info = info.fills(name, &from);
            fields.push((target, expr));
        }
        // What the engine derives: the OS family from name and version, the domain from the hostname.
        if fields.iter().any(|(t, _)| matches!(t, Target::DOsName | Target::DOsVersion)) {
            info = info.fills("os.family", "from `os.name` and `os.version` (`fields::os`)");
        }
        if !domain_mapped && let Some(FieldEntry::Expr(e)) = s.fields.get("hostname").map(Spanned::get_ref) {
            if let Some(d) = &e.domain {
                info = info.fills("domain", &format!("`{}`, or the hostname's domain", d.get_ref()));
            }
        } else if !domain_mapped && s.fields.contains_key("hostname") {
            info = info.fills("domain", "the hostname's domain (an FQDN, `DOMAIN\\name`)");
        }
        let mut attributes = Vec::new();
        for (name, entry) in &s.attributes {
            let espan = entry.span();
            let label = what(&format!("attributes.{name}"));
            let FieldEntry::Expr(e) = entry.get_ref() else {
                return Err(self.at(&espan, format!("{label}: an attribute is a table with `type` and `description`")));
            };
            let ty_s = e.ty.as_ref().ok_or_else(|| self.at(&espan, format!("{label}: needs `type`")))?;
            let ty: AttrType =
                ty_s.get_ref().parse().map_err(|m: String| self.at(&ty_s.span(), format!("{label}: {m}")))?;
            let description =
                e.description.clone().ok_or_else(|| self.at(&espan, format!("{label}: needs `description`")))?;
            let expr = self.expr(entry, map::attr_want(ty), false, true, &label, &mut paths_used)?;
            info = info.attribute(name, ty, &description);
            attributes.push((name.clone(), ty, expr));
        }
        if let Some(ex) = &s.example {
            self.check_example(ex, &records, &paths_used, &what("example"))?;
        }
        let mapping = Mapping { kind, key, fields, attributes, domain_mapped };
        let plan = StreamPlan {
            name: s.name.clone(),
            method: s.method,
            path,
            query,
            body,
            body_templates,
            records,
            pagination,
            incremental,
            mapping,
        };
        Ok((plan, info))
    }

    /// Errors point at the pagination table's line (`span`; the stream's when there is none).
    fn pagination(
        &self,
        p: &PaginationSpec,
        span: &Range<usize>,
        s: &StreamSpec,
        defs: &[ConfigDef],
    ) -> Result<PagePlan, SpecError> {
        let tname = format!("{:?}", p.ty);
        let label = format!("stream `{}`: pagination", s.name);
        let allowed: &[&str] = match p.ty {
            PaginationType::None | PaginationType::LinkHeader => &[],
            PaginationType::BodyCursor => &["cursor", "param"],
            PaginationType::NextUrl => &["next"],
            PaginationType::Offset => &["offset_param", "limit_param", "size", "total", "total_header"],
            PaginationType::PageNumber => &["page_param", "size_param", "first_page", "size", "total", "total_header"],
        };
        let set = [
            ("cursor", p.cursor.is_some()),
            ("param", p.param.is_some()),
            ("next", p.next.is_some()),
            ("offset_param", p.offset_param.is_some()),
            ("limit_param", p.limit_param.is_some()),
            ("page_param", p.page_param.is_some()),
            ("size_param", p.size_param.is_some()),
            ("first_page", p.first_page.is_some()),
            ("size", p.size.is_some()),
            ("total", p.total.is_some()),
            ("total_header", p.total_header.is_some()),
        ];
        for (k, on) in set {
            if on && !allowed.contains(&k) {
                return Err(self.at(span, format!("{label}: `{k}` does not apply to type `{}`", snake(&tname))));
            }
        }
        let need = |v: &Option<String>, k: &str| {
            v.clone().ok_or_else(|| self.at(span, format!("{label}: type `{}` needs `{k}`", snake(&tname))))
        };
        let body_style = matches!(p.ty, PaginationType::BodyCursor | PaginationType::NextUrl);
        if body_style && s.method != MethodSpec::Get {
            return Err(self.at(span, format!("{label}: `{}` paging needs method = \"GET\"", snake(&tname))));
        }
        let keys_only = |sp: &Spanned<String>, k: &str| -> Result<Path, SpecError> {
            let path = self.path(sp, &format!("{label}.{k}"))?;
            if path.keys().is_none() || path.segs.is_empty() {
                return Err(self.at(&sp.span(), format!("{label}.{k}: `{}` must be object keys only", path.text)));
            }
            Ok(path)
        };
        let total = || -> Result<Total, SpecError> {
            Ok(match (&p.total, &p.total_header) {
                (Some(_), Some(_)) => {
                    return Err(self.at(span, format!("{label}: give `total` or `total_header`, not both")));
                }
                (Some(t), None) => Total::Body(self.path(t, &format!("{label}.total"))?),
                (None, Some(h)) => Total::Header(h.clone()),
                (None, None) => Total::None,
            })
        };
        let size = |label: &str| -> Result<Template, SpecError> {
            let sz =
                p.size.as_ref().ok_or_else(|| self.at(span, format!("{label}: needs `size` (records per page)")))?;
            self.public(sz, defs, &format!("{label}.size"))
        };
        Ok(match p.ty {
            PaginationType::None => PagePlan::None,
            PaginationType::LinkHeader => PagePlan::Link,
            PaginationType::BodyCursor => PagePlan::BodyCursor {
                cursor: keys_only(
                    p.cursor
                        .as_ref()
                        .ok_or_else(|| self.at(span, format!("{label}: type `body_cursor` needs `cursor`")))?,
                    "cursor",
                )?,
                param: need(&p.param, "param")?,
            },
            PaginationType::NextUrl => PagePlan::NextUrl {
                next: keys_only(
                    p.next.as_ref().ok_or_else(|| self.at(span, format!("{label}: type `next_url` needs `next`")))?,
                    "next",
                )?,
            },
            PaginationType::Offset => PagePlan::Offset {
                offset_param: need(&p.offset_param, "offset_param")?,
                limit_param: need(&p.limit_param, "limit_param")?,
                size: size(&label)?,
                total: total()?,
            },
            PaginationType::PageNumber if p.first_page.is_some_and(|f| f > 1) => {
                return Err(self.at(span, format!("{label}: `first_page` is 0 or 1")));
            }
            PaginationType::PageNumber => PagePlan::PageNumber {
                page_param: need(&p.page_param, "page_param")?,
                size_param: need(&p.size_param, "size_param")?,
                first: p.first_page.unwrap_or(0),
                size: size(&label)?,
                total: total()?,
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn expr(
        &self,
        entry: &Spanned<FieldEntry>,
        want: Want,
        hostname: bool,
        attribute: bool,
        label: &str,
        paths: &mut Vec<(Path, Range<usize>, String)>,
    ) -> Result<Expr, SpecError> {
        let span = entry.span();
        let plain = |p: Path| Expr {
            source: Source::Path(p),
            split: None,
            lowercase: false,
            uppercase: false,
            map: None,
            prefix: None,
            transform: want.default,
            domain: None,
        };
        let e = match entry.get_ref() {
            FieldEntry::Path(p) => {
                let path = Path::parse(p).map_err(|m| self.at(&span, format!("{label}: path `{p}` {m}")))?;
                paths.push((path.clone(), span.clone(), label.to_string()));
                return Ok(plain(path));
            }
            FieldEntry::Expr(e) => e,
        };
        if !attribute && e.ty.is_some() {
            return Err(self.at(&span, format!("{label}: `type` is for attributes; a canonical field has its own")));
        }
        if e.domain.is_some() && !hostname {
            return Err(self.at(&span, format!("{label}: `domain` applies to the hostname field only")));
        }
        let sources = [e.path.is_some(), e.first.is_some(), e.join.is_some(), e.value.is_some()];
        if sources.iter().filter(|b| **b).count() != 1 {
            return Err(self.at(&span, format!("{label}: give exactly one of `path`, `first`, `join` or `value`")));
        }
        let sub = |items: &Vec<Spanned<FieldEntry>>, paths: &mut Vec<(Path, Range<usize>, String)>| {
            let text_want = Want { out: map::Out::Str, list: false, default: Transform::Text };
            items
                .iter()
                .map(|i| {
                    let mut x = self.expr(i, text_want, false, false, label, paths)?;
                    // Inner parts keep their values as they are; the outer transform converts.
                    if matches!(i.get_ref(), FieldEntry::Path(_)) {
                        x.transform = Transform::Text;
                    }
                    Ok(x)
                })
                .collect::<Result<Vec<_>, SpecError>>()
        };
        let source = if let Some(p) = &e.path {
            let path = self.path(p, label)?;
            paths.push((path.clone(), p.span(), label.to_string()));
            Source::Path(path)
        } else if let Some(items) = &e.first {
            if items.is_empty() {
                return Err(self.at(&span, format!("{label}: `first` is empty")));
            }
            let mut alts = sub(items, paths)?;
            // The alternatives are evaluated as they are; the outer expression transforms.
            for a in &mut alts {
                if matches!(a.source, Source::Path(_)) && !a_has_ops(a) {
                    a.transform = Transform::Text;
                }
            }
            Source::First(alts)
        } else if let Some(items) = &e.join {
            if items.is_empty() {
                return Err(self.at(&span, format!("{label}: `join` is empty")));
            }
            Source::Join(sub(items, paths)?, e.sep.clone().unwrap_or_else(|| " ".into()))
        } else {
            let v =
                e.value.as_ref().map(serde_json::to_value).transpose().map_err(|x| self.at(&span, x.to_string()))?;
            Source::Const(v.unwrap_or(Value::Null))
        };
        if e.sep.is_some() && e.join.is_none() {
            return Err(self.at(&span, format!("{label}: `sep` goes with `join`")));
        }
        if e.default.is_some() && e.map.is_none() {
            return Err(self.at(&span, format!("{label}: `default` goes with `map`")));
        }
        if e.lowercase && e.uppercase {
            return Err(self.at(&span, format!("{label}: `lowercase` and `uppercase` both set")));
        }
        let transform = match &e.transform {
            None => want.default,
            Some(t) => {
                let tr = Transform::parse(t.get_ref()).ok_or_else(|| {
                    let names: Vec<&str> = Transform::ALL.iter().map(|(n, _)| *n).collect();
                    self.at(
                        &t.span(),
                        format!("{label}: unknown transform `{}` (one of: {})", t.get_ref(), names.join(", ")),
                    )
                })?;
                if hostname && tr != Transform::Hostname {
                    return Err(self.at(&t.span(), format!("{label}: the hostname field takes transform `hostname`")));
                }
                if !map::fits(tr, want) {
                    return Err(self.at(
                        &t.span(),
                        format!(
                            "{label}: transform `{}` gives {}, but this field takes {}",
                            tr.name(),
                            tr.out().name(),
                            want.out.name()
                        ),
                    ));
                }
                tr
            }
        };
        let map = match &e.map {
            None => None,
            Some(m) => {
                let mut out = HashMap::new();
                for (k, v) in m {
                    out.insert(k.clone(), serde_json::to_value(v).map_err(|x| self.at(&span, x.to_string()))?);
                }
                let d = e
                    .default
                    .as_ref()
                    .map(serde_json::to_value)
                    .transpose()
                    .map_err(|x| self.at(&span, x.to_string()))?;
                Some((out, d))
            }
        };
        let domain = match &e.domain {
            None => None,
            Some(d) => {
                let p = self.path(d, &format!("{label}.domain"))?;
                paths.push((p.clone(), d.span(), format!("{label}.domain")));
                Some(p)
            }
        };
        Ok(Expr {
            source,
            split: e.split.clone(),
            lowercase: e.lowercase,
            uppercase: e.uppercase,
            map,
            prefix: e.prefix.clone(),
            transform,
            domain,
        })
    }

    fn check_example(
        &self,
        ex: &Spanned<String>,
        records: &Path,
        paths: &[(Path, Range<usize>, String)],
        label: &str,
    ) -> Result<(), SpecError> {
        let body: Value = serde_json::from_str(ex.get_ref())
            .map_err(|e| self.at(&ex.span(), format!("{label}: not valid JSON: {e}")))?;
        let recs = match records.get(&body) {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(self.at(
                    &ex.span(),
                    format!("{label}: the records path `{}` matches no array in the example", records.text),
                ));
            }
        };
        for (p, span, what) in paths {
            let found = recs.iter().any(|r| {
                let mut out = Vec::new();
                p.collect(r, &mut out);
                !out.is_empty() || p.get(r).is_some()
            });
            if !found {
                return Err(self.at(span, format!("{what}: path `{}` is in none of the example's records", p.text)));
            }
        }
        Ok(())
    }
}

fn a_has_ops(e: &Expr) -> bool {
    e.split.is_some() || e.lowercase || e.uppercase || e.map.is_some() || e.prefix.is_some()
}

fn snake(debug: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Docs text for a mapping: its description, or its source paths.
fn describe(e: &FieldEntry) -> String {
    match e {
        FieldEntry::Path(p) => format!("`{p}`"),
        FieldEntry::Expr(x) => {
            if let Some(d) = &x.description {
                return d.clone();
            }
            let mut s = if let Some(p) = &x.path {
                format!("`{}`", p.get_ref())
            } else if let Some(f) = &x.first {
                format!("first of {}", f.iter().map(|i| describe(i.get_ref())).collect::<Vec<_>>().join(", "))
            } else if let Some(j) = &x.join {
                format!("{} joined", j.iter().map(|i| describe(i.get_ref())).collect::<Vec<_>>().join(" and "))
            } else {
                "a constant".to_string()
            };
            if let Some(t) = &x.transform {
                s.push_str(&format!(" (`{}`)", t.get_ref()));
            }
            s
        }
    }
}

fn type_fits(ty: ConfigType, v: &Value) -> bool {
    match ty {
        ConfigType::String | ConfigType::Url => v.is_string(),
        ConfigType::Integer => v.is_i64() || v.is_u64(),
        ConfigType::Boolean => v.is_boolean(),
    }
}

/// `{config.NAME}` placeholders in `text`.
pub fn parse_template(text: &str, defs: &[ConfigDef]) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Lit(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("`{text}` has a `{{` without `}}`"))?;
        let inner = after[..close].trim();
        let name = inner
            .strip_prefix("config.")
            .ok_or_else(|| format!("`{{{inner}}}` is not a placeholder (write `{{config.NAME}}`)"))?;
        let i = defs
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| format!("refers to config field `{name}`, which the spec does not declare in [[config]]"))?;
        parts.push(Part::Config(i));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{text}` has a `}}` without `{{`"));
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_string()));
    }
    Ok(Template { parts, text: text.to_string() })
}

/// Every string in `v` that holds a placeholder, with its JSON pointer.
fn collect_templates(v: &Value, ptr: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if s.contains('{') || s.contains('}') => out.push((ptr, s.clone())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_templates(x, format!("{ptr}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                collect_templates(x, format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
}
