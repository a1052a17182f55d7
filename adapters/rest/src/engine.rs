//! The `rest` engine: one [`Adapter`] that runs any checked spec ([`Plan`]).
//!
//! - `build` resolves the connection's config against the spec's `[[config]]`
//!   (typed, required, secret), renders the templates once and builds one
//!   `corral_http::HttpClient` (auth, rate limit, retries, timeouts).
//! - `fetch` does HTTP only: pages go to the sink as raw bytes. A cursor in
//!   the body is read with `corral_http::BodyCursor` (a cheap scan for that
//!   one field, off the runtime); offset and page-number paging count a
//!   page's records off the runtime when no total header says when to stop.
//! - `normalize` decodes a page on the normalize pool and runs the stream's
//!   compiled [`crate::map::Mapping`] on every record.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, CheckOutcome, Checkpoint, ConfigError, FetchContext, FetchError,
    NormalizedPage, RawPage, Reject,
};
use corral_http::{
    Auth, BodyCursor, CursorPage, HttpClient, HttpConfig, HttpError, Method, NextLinks, OAuth2Config, RateConfig,
    Response, Timeouts, Url,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::load::{AuthPlan, PagePlan, Part, Plan, StreamPlan, Template, Total};
use crate::map::{RecordError, json_type};
use crate::path::Path;
use crate::spec::{ClientAuth, ConfigType, MethodSpec};

/// Builds connections of one spec.
#[derive(Debug, Clone)]
pub struct RestFactory {
    plan: Arc<Plan>,
}

impl RestFactory {
    pub fn new(plan: Plan) -> Self {
        RestFactory { plan: Arc::new(plan) }
    }
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

impl AdapterFactory for RestFactory {
    fn info(&self) -> AdapterInfo {
        self.plan.info.clone()
    }
    fn build(&self, connection: &str, config: Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(RestAdapter::new(connection, self.plan.clone(), config)?))
    }
}

/// A config value as resolved for one connection.
enum Resolved {
    Plain(String),
    Secret(SecretString),
}

fn resolve_config(plan: &Plan, config: Value) -> Result<Vec<Option<Resolved>>, ConfigError> {
    let Value::Object(mut obj) = config else {
        return Err(ConfigError::Invalid("the config must be a table".into()));
    };
    if let Some(k) = obj.keys().find(|k| plan.config_index(k).is_none()) {
        return Err(ConfigError::field(k.clone(), "unknown field"));
    }
    let mut out = Vec::with_capacity(plan.config.len());
    for d in &plan.config {
        let v = obj.remove(&d.name).filter(|v| !v.is_null()).or_else(|| d.default.clone());
        let Some(v) = v else {
            if d.required {
                return Err(ConfigError::field(&d.name, "is required"));
            }
            out.push(None);
            continue;
        };
        let text = match (d.ty, &v) {
            (ConfigType::String | ConfigType::Url, Value::String(s)) => s.clone(),
            (ConfigType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
                let i = n.as_i64().unwrap_or(i64::MAX);
                if d.min.is_some_and(|m| i < m) || d.max.is_some_and(|m| i > m) {
                    let range = format!(
                        "{}..={}",
                        d.min.map(|m| m.to_string()).unwrap_or_default(),
                        d.max.map(|m| m.to_string()).unwrap_or_default()
                    );
                    return Err(ConfigError::field(&d.name, format!("must be {range}")));
                }
                n.to_string()
            }
            (ConfigType::Boolean, Value::Bool(b)) => b.to_string(),
            (ty, _) => {
                let want = match ty {
                    ConfigType::String => "a string",
                    ConfigType::Url => "a URL (a string)",
                    ConfigType::Integer => "an integer",
                    ConfigType::Boolean => "a boolean",
                };
                return Err(ConfigError::field(&d.name, format!("must be {want}")));
            }
        };
        if d.secret {
            let t = text.trim();
            if t.is_empty() {
                return Err(ConfigError::field(&d.name, "is empty"));
            }
            if t.chars().any(char::is_control) {
                return Err(ConfigError::field(&d.name, "contains control characters"));
            }
            out.push(Some(Resolved::Secret(SecretString::from(t.to_string()))));
            continue;
        }
        if d.ty == ConfigType::Url {
            let u = Url::parse(text.trim()).map_err(|_| ConfigError::field(&d.name, "is not a valid URL"))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(ConfigError::field(&d.name, "must be an http(s) URL with a host"));
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err(ConfigError::field(&d.name, "must not contain credentials"));
            }
            out.push(Some(Resolved::Plain(text.trim().trim_end_matches('/').to_string())));
            continue;
        }
        out.push(Some(Resolved::Plain(text)));
    }
    Ok(out)
}

/// Render a template; `Err(field)` names a config field it needs that is not set.
fn render(t: &Template, plan: &Plan, vals: &[Option<Resolved>]) -> Result<String, ConfigError> {
    let mut s = String::new();
    for p in &t.parts {
        match p {
            Part::Lit(l) => s.push_str(l),
            Part::Config(i) => match &vals[*i] {
                Some(Resolved::Plain(v)) => s.push_str(v),
                Some(Resolved::Secret(v)) => s.push_str(v.expose_secret()),
                None => return Err(ConfigError::field(&plan.config[*i].name, "is required by this spec")),
            },
        }
    }
    Ok(s)
}

fn render_secret(t: &Template, plan: &Plan, vals: &[Option<Resolved>]) -> Result<SecretString, ConfigError> {
    render(t, plan, vals).map(SecretString::from)
}

/// The config field a template names first (to blame in an error), or `what`.
fn blame(t: &Template, plan: &Plan, what: &str) -> String {
    t.parts
        .iter()
        .find_map(|p| if let Part::Config(i) = p { Some(plan.config[*i].name.clone()) } else { None })
        .unwrap_or_else(|| what.to_string())
}

/// One stream, rendered for this connection.
#[derive(Debug)]
struct Rendered {
    /// The first page: path and query.
    first: String,
    body: Option<Value>,
    size: Option<u64>,
}

/// A configured connection of a spec adapter.
pub struct RestAdapter {
    connection: String,
    plan: Arc<Plan>,
    http: HttpClient,
    streams: Vec<Rendered>,
    check: String,
    keep_raw: bool,
    max_in_flight: usize,
    extra_files: usize,
}

impl std::fmt::Debug for RestAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestAdapter")
            .field("connection", &self.connection)
            .field("adapter", &self.plan.info.name)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl RestAdapter {
    /// Resolve `config` and build the client. Sends nothing.
    pub fn new(connection: &str, plan: Arc<Plan>, config: Value) -> Result<Self, ConfigError> {
        let vals = resolve_config(&plan, config)?;
        let int = |name: &str| {
            plan.config_index(name).and_then(|i| match &vals[i] {
                Some(Resolved::Plain(s)) => s.parse::<u64>().ok(),
                _ => None,
            })
        };
        let keep_raw =
            plan.config_index("keep_raw").is_some_and(|i| matches!(&vals[i], Some(Resolved::Plain(s)) if s == "true"));
        let timeout = int("timeout_secs").unwrap_or(plan.timeout_secs);
        let rpm = int("requests_per_minute").map_or(plan.requests_per_minute, |v| u32::try_from(v).unwrap_or(u32::MAX));
        let max_in_flight = int("max_in_flight").map_or(plan.max_in_flight, |v| v as usize);
        let base = render(&plan.base_url, &plan, &vals)?;
        let base_field = blame(&plan.base_url, &plan, "base_url");
        let base_url =
            Url::parse(base.trim()).map_err(|_| ConfigError::field(&base_field, "does not make a valid base URL"))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
            return Err(ConfigError::field(&base_field, "must make an http(s) base URL with a host"));
        }
        let rate = RateConfig {
            default_window: Duration::from_secs(plan.window_secs),
            ..RateConfig::every(rpm, Duration::from_secs(60))
        }
        .with_max_in_flight(max_in_flight)
        .with_header_adaptation(plan.adapt_to_headers);
        let mut http = HttpConfig::new(base.trim())
            .with_connection(connection)
            .with_rate(rate)
            .with_timeouts(Timeouts { total: Duration::from_secs(timeout), ..Timeouts::default() })
            .with_header("Accept", "application/json");
        for (name, t) in &plan.headers {
            http = http.with_header(name, render(t, &plan, &vals)?);
        }
        let mut extra_files = 0;
        let auth = match &plan.auth {
            AuthPlan::None => Auth::None,
            AuthPlan::Bearer { token } => Auth::Bearer(render_secret(token, &plan, &vals)?),
            AuthPlan::Header { header, prefix, token } => {
                let t = render_secret(token, &plan, &vals)?;
                Auth::Header { name: header.clone(), value: format!("{prefix}{}", t.expose_secret()).into() }
            }
            AuthPlan::Basic { username, password } => {
                Auth::Basic { user: render(username, &plan, &vals)?, password: render_secret(password, &plan, &vals)? }
            }
            AuthPlan::OAuth2 { token_url, client_id, client_secret, scopes, client_auth, token_per_minute } => {
                extra_files = 1;
                let mut o = OAuth2Config::new(
                    render(token_url, &plan, &vals)?,
                    render(client_id, &plan, &vals)?,
                    render_secret(client_secret, &plan, &vals)?,
                );
                if !scopes.is_empty() {
                    o = o.scope(scopes.join(" "));
                }
                o.basic_client_auth = *client_auth == ClientAuth::Basic;
                if let Some(q) =
                    token_per_minute.and_then(|n| corral_http::Quota::with_period(Duration::from_secs(60) / n.max(1)))
                {
                    o = o.token_quota(q);
                }
                Auth::OAuth2ClientCredentials(o)
            }
            AuthPlan::TokenCall { token_path, username, password, token_field, expires_field, header, prefix } => {
                // The same token cache as OAuth2's: renewed ahead of expiry
                // and once after a 401, single-flight, one connection pool.
                extra_files = 1;
                let call = corral_http::TokenCall {
                    token_field: token_field.clone(),
                    expires_field: expires_field.clone(),
                    header: header.clone(),
                    prefix: prefix.clone(),
                    default_lifetime: Duration::from_secs(20 * 60),
                };
                Auth::OAuth2ClientCredentials(OAuth2Config::token_call(
                    render(token_path, &plan, &vals)?,
                    render(username, &plan, &vals)?,
                    render_secret(password, &plan, &vals)?,
                    call,
                ))
            }
        };
        let secret_field = plan.config.iter().find(|d| d.secret).map_or("auth", |d| d.name.as_str()).to_string();
        let client = HttpClient::new(http.with_auth(auth), Arc::default()).map_err(|e| match e {
            HttpError::Config(msg) => ConfigError::field(&secret_field, msg),
            other => ConfigError::Invalid(other.to_string()),
        })?;
        let mut streams = Vec::new();
        for s in &plan.streams {
            streams.push(render_stream(s, &plan, &vals)?);
        }
        let check = match &plan.check {
            Some(c) => render(c, &plan, &vals)?,
            None => streams.first().map(|s| s.first.clone()).unwrap_or_else(|| "/".into()),
        };
        Ok(RestAdapter {
            connection: connection.into(),
            plan,
            http: client,
            streams,
            check,
            keep_raw,
            max_in_flight,
            extra_files,
        })
    }

    fn stream_index(&self, name: &str) -> Option<usize> {
        self.plan.streams.iter().position(|s| s.name == name)
    }

    /// Map an HTTP error, with the spec's own statuses for bad credentials.
    fn fetch_error(&self, e: HttpError) -> FetchError {
        match e.status() {
            Some(s) if self.plan.auth_statuses.contains(&s) => {
                FetchError::Auth { endpoint: e.endpoint().unwrap_or_default().to_string(), detail: e.what() }
            }
            _ => e.into(),
        }
    }

    /// Send one request, retrying the spec's retry statuses with backoff.
    async fn send(
        &self,
        client: &HttpClient,
        method: MethodSpec,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, HttpError> {
        let mut attempt = 1;
        loop {
            let m = if method == MethodSpec::Post { Method::POST } else { Method::GET };
            let mut rb = client.request(m, url);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            match rb.send_bytes().await {
                Err(e) if e.status().is_some_and(|s| self.plan.retry_statuses.contains(&s)) && attempt < 5 => {
                    let wait = corral_http::backoff(&corral_http::RetryConfig::default(), attempt);
                    tracing::warn!(connection = %self.connection, error = %e, attempt, "retrying a status the spec says to retry");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A checkpoint's next-page URL, if it is one of this stream on this connection's origin.
    fn resume_url(&self, client: &HttpClient, first: &str, c: &Checkpoint) -> Option<String> {
        let next = c.0.get("next")?.as_str()?;
        let url = Url::parse(next).ok()?;
        let first = client.url(first).ok()?;
        (url.origin() == first.origin() && url.path() == first.path()).then(|| next.to_string())
    }
}

fn render_stream(s: &StreamPlan, plan: &Plan, vals: &[Option<Resolved>]) -> Result<Rendered, ConfigError> {
    let path = render(&s.path, plan, vals)?;
    let mut url = Url::parse("http://h/").map_err(|e| ConfigError::Invalid(e.to_string()))?;
    {
        let mut q = url.query_pairs_mut();
        for (k, t) in &s.query {
            q.append_pair(k, &render(t, plan, vals)?);
        }
    }
    let size = match &s.pagination {
        PagePlan::Offset { size, .. } | PagePlan::PageNumber { size, .. } => {
            let v = render(size, plan, vals)?;
            let n: u64 = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::field(blame(size, plan, "page size"), "must make a page size of at least 1")
            })?;
            Some(n)
        }
        _ => None,
    };
    let first = match url.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    };
    let body = match &s.body {
        None => None,
        Some(b) => {
            let mut b = b.clone();
            for (ptr, t) in &s.body_templates {
                if let Some(slot) = b.pointer_mut(ptr) {
                    *slot = Value::String(render(t, plan, vals)?);
                }
            }
            Some(b)
        }
    };
    Ok(Rendered { first, body, size })
}

/// `url` with `name=value` set (any previous value replaced).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let keep: Vec<(String, String)> = form_pairs(query).into_iter().filter(|(k, _)| k != name).collect();
    let mut u = match Url::parse("http://h/") {
        Ok(u) => u,
        Err(_) => return url.to_string(),
    };
    u.query_pairs_mut().extend_pairs(keep).append_pair(name, value);
    format!("{path}?{}", u.query().unwrap_or_default())
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    Url::parse(&format!("http://h/?{query}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// Records on a page and the total in its body, counted off the runtime.
async fn count_page(body: bytes::Bytes, records: Path, total: Option<Path>) -> Option<(usize, Option<u64>)> {
    corral_http::off_runtime(move || {
        let v: Value = serde_json::from_slice(&body).ok()?;
        let n = match records.get(&v) {
            Some(Value::Array(a)) => a.len(),
            _ => return None,
        };
        let t = total.and_then(|p| p.get(&v).and_then(|t| t.as_u64().or_else(|| t.as_str()?.parse().ok())));
        Some((n, t))
    })
    .await
    .flatten()
}

/// The largest value of `field` among a page's records, found off the runtime.
async fn max_cursor(body: bytes::Bytes, records: Path, field: Path) -> Option<Value> {
    corral_http::off_runtime(move || {
        let v: Value = serde_json::from_slice(&body).ok()?;
        let Some(Value::Array(a)) = records.get(&v) else { return None };
        a.iter()
            .filter_map(|r| field.get(r))
            .filter(|x| !x.is_null())
            .cloned()
            .reduce(|a, b| if later(&b, &a) { b } else { a })
    })
    .await
    .flatten()
}

/// Whether cursor value `a` comes after `b` (timestamps as instants, numbers as numbers, else as text).
fn later(a: &Value, b: &Value) -> bool {
    use corral_core::fields::timestamp_json;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().unwrap_or(0.0) > y.as_f64().unwrap_or(0.0),
        _ => match (timestamp_json(a), timestamp_json(b)) {
            (Some(x), Some(y)) => x > y,
            _ => a.as_str().unwrap_or_default() > b.as_str().unwrap_or_default(),
        },
    }
}

fn cursor_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Adapter for RestAdapter {
    fn info(&self) -> &AdapterInfo {
        &self.plan.info
    }

    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    async fn check_within(&self, limit: Duration) -> CheckOutcome {
        let outcome = self.http.check_within(&self.check, limit).await;
        match outcome {
            CheckOutcome::Failed { endpoint, status: Some(s), detail } if self.plan.auth_statuses.contains(&s) => {
                CheckOutcome::AuthError { endpoint, status: Some(s), detail }
            }
            CheckOutcome::Failed { endpoint, status: Some(s), detail } if self.plan.not_found_statuses.contains(&s) => {
                CheckOutcome::NotFound { endpoint, status: s, detail }
            }
            other => other,
        }
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        let Some(idx) = self.stream_index(&ctx.stream.name) else {
            return Err(FetchError::UnknownStream(ctx.stream.name));
        };
        let (sp, rs) = (&self.plan.streams[idx], &self.streams[idx]);
        let name = sp.name.as_str();
        let client = self.http.clone().with_metrics(ctx.requests.clone()).with_stream(name);
        let conn = &self.connection;
        // Incremental streams resume from the largest cursor value stored;
        // others from the next page of an interrupted run.
        // An incremental stream's checkpoint is its watermark: kept when the
        // stream completes (the engine clears a resume position then).
        if sp.incremental.is_some() {
            ctx.keep_checkpoint();
        }
        let mut since: Option<Value> = None;
        let mut url = rs.first.clone();
        let mut resuming = false;
        if let Some(c) = &ctx.checkpoint {
            match (&sp.incremental, &sp.pagination) {
                (Some((_, param)), _) => match c.0.get("since").filter(|v| !v.is_null()) {
                    Some(v) => {
                        since = Some(v.clone());
                        url = with_param(&url, param, &cursor_text(v));
                        tracing::info!(connection = %conn, stream = name, "fetching what changed since the last run");
                    }
                    None => ctx.fetching_from_start(),
                },
                (None, PagePlan::Link | PagePlan::BodyCursor { .. } | PagePlan::NextUrl { .. }) => {
                    match self.resume_url(&client, &rs.first, c) {
                        Some(u) => {
                            url = u;
                            resuming = true;
                            tracing::info!(connection = %conn, stream = name, "resuming from the checkpoint");
                        }
                        None => ctx.fetching_from_start(),
                    }
                }
                _ => ctx.fetching_from_start(),
            }
        }
        let mut high = since.clone();
        let mut page_no: u64 = 0;
        let records = sp.records.clone();
        let body = rs.body.as_ref();
        match &sp.pagination {
            PagePlan::None | PagePlan::Link => {
                let mut links = NextLinks::new(client.base_url(), "the Link rel=\"next\" URL");
                let follow = matches!(sp.pagination, PagePlan::Link);
                loop {
                    let resp = match self.send(&client, sp.method, &url, body).await {
                        Ok(r) => r,
                        Err(e) if resuming && e.status() == Some(400) => {
                            tracing::warn!(connection = %conn, stream = name, error = %e, "the checkpoint's page was refused; fetching from the start");
                            ctx.fetching_from_start();
                            resuming = false;
                            url = rs.first.clone();
                            continue;
                        }
                        Err(e) => return Err(self.fetch_error(e)),
                    };
                    resuming = false;
                    page_no += 1;
                    let next = if follow { links.from_link_header(&resp) } else { Ok(None) };
                    let last = !matches!(next, Ok(Some(_)));
                    let cp = self
                        .checkpoint(sp, &resp, &mut high, next.as_ref().ok().cloned().flatten(), last, &records)
                        .await;
                    self.emit(&ctx, sp, resp, format!("page {page_no}"), cp).await?;
                    match next.map_err(|e| self.fetch_error(e))? {
                        Some(n) => url = n,
                        None => return Ok(()),
                    }
                }
            }
            PagePlan::BodyCursor { cursor, .. } | PagePlan::NextUrl { next: cursor } => {
                let keys: Vec<&str> = cursor.keys().unwrap_or_default();
                let mut pages = match &sp.pagination {
                    PagePlan::BodyCursor { .. } => {
                        BodyCursor::param(client.base_url(), &keys, param_of(&sp.pagination))
                    }
                    _ => BodyCursor::next_url(client.base_url(), &keys),
                };
                let mut retried = 0;
                loop {
                    let got = match pages.get(&client, &url).await {
                        Ok(g) => g,
                        Err(e) if resuming && e.status() == Some(400) => {
                            ctx.fetching_from_start();
                            resuming = false;
                            url = rs.first.clone();
                            continue;
                        }
                        Err(e) if e.status().is_some_and(|s| self.plan.retry_statuses.contains(&s)) && retried < 4 => {
                            retried += 1;
                            let wait = corral_http::backoff(&corral_http::RetryConfig::default(), retried);
                            tracing::warn!(connection = %conn, stream = name, error = %e, attempt = retried, "retrying a status the spec says to retry");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Err(e) => return Err(self.fetch_error(e)),
                    };
                    resuming = false;
                    retried = 0;
                    page_no += 1;
                    match got {
                        CursorPage::Page { resp, next } => {
                            let cp =
                                self.checkpoint(sp, &resp, &mut high, next.clone(), next.is_none(), &records).await;
                            self.emit(&ctx, sp, resp, format!("page {page_no}"), cp).await?;
                            match next {
                                Some(n) => url = n,
                                None => return Ok(()),
                            }
                        }
                        CursorPage::Unreadable { resp, attempts } => {
                            let endpoint = resp.endpoint();
                            self.emit(&ctx, sp, resp, format!("page {page_no}"), None).await?;
                            return Err(FetchError::Protocol {
                                endpoint,
                                detail: format!(
                                    "page {page_no} is not valid JSON after {attempts} attempts and has no next-page cursor: \
                                     cannot tell whether more pages follow"
                                ),
                            });
                        }
                    }
                }
            }
            PagePlan::Offset { offset_param, limit_param, total, .. } => {
                let size = rs.size.unwrap_or(100);
                let mut offset: u64 = 0;
                loop {
                    let u = with_param(
                        &with_param(&url, limit_param, &size.to_string()),
                        offset_param,
                        &offset.to_string(),
                    );
                    let resp = self.send(&client, sp.method, &u, body).await.map_err(|e| self.fetch_error(e))?;
                    let (n, done) = self.page_end(&resp, &records, total, offset, size).await;
                    let cp = self.checkpoint(sp, &resp, &mut high, None, done, &records).await;
                    self.emit(&ctx, sp, resp, format!("offset {offset}"), cp).await?;
                    if done {
                        return Ok(());
                    }
                    offset += n as u64;
                }
            }
            PagePlan::PageNumber { page_param, size_param, first, total, .. } => {
                let size = rs.size.unwrap_or(100);
                let mut page = *first;
                let mut seen: u64 = 0;
                loop {
                    let u = with_param(&with_param(&url, size_param, &size.to_string()), page_param, &page.to_string());
                    let resp = self.send(&client, sp.method, &u, body).await.map_err(|e| self.fetch_error(e))?;
                    let (n, done) = self.page_end(&resp, &records, total, seen, size).await;
                    let cp = self.checkpoint(sp, &resp, &mut high, None, done, &records).await;
                    self.emit(&ctx, sp, resp, format!("page {page}"), cp).await?;
                    if done {
                        return Ok(());
                    }
                    seen += n as u64;
                    page += 1;
                }
            }
        }
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        let Some(sp) = self.plan.streams.iter().find(|s| s.name == page.stream) else {
            return NormalizedPage::page_failed(format!("unknown stream `{}`", page.stream));
        };
        let mut body: Value = match serde_json::from_slice(&page.body) {
            Ok(v) => v,
            Err(e) => return NormalizedPage::page_failed(format!("not valid JSON: {e}")),
        };
        let records = match take_at(&mut body, &sp.records) {
            Some(Value::Array(a)) => a,
            Some(other) => {
                return NormalizedPage::page_failed(format!(
                    "the records path `{}` holds {}, not an array",
                    sp.records.text,
                    json_type(&other)
                ));
            }
            None => {
                return NormalizedPage::page_failed(format!(
                    "the records path `{}` is missing from the page",
                    sp.records.text
                ));
            }
        };
        let mut out = NormalizedPage { assets: Vec::with_capacity(records.len()), ..Default::default() };
        for (i, rec) in records.into_iter().enumerate() {
            match sp.mapping.record(&sp.name, &rec) {
                Ok(asset) => {
                    let raw = self.keep_raw.then_some(rec);
                    out.assets.push(asset.with_raw(raw));
                }
                Err(err) => {
                    let (reason, detail) = match err {
                        RecordError::NotObject(t) => ("invalid_record", format!("expected an object, got {t}")),
                        RecordError::MissingKey(d) => ("missing_key", d),
                    };
                    out.rejects.push(
                        Reject::new(format!("record {i} of {}", page.locator), reason, detail)
                            .with_raw(&serde_json::to_vec(&rec).unwrap_or_default()),
                    );
                }
            }
        }
        out
    }

    fn max_open_files(&self) -> usize {
        self.max_in_flight + 1 + self.extra_files
    }
}

fn param_of(p: &PagePlan) -> &str {
    match p {
        PagePlan::BodyCursor { param, .. } => param,
        _ => "",
    }
}

/// Move the value at `path` out of `v`.
fn take_at(v: &mut Value, path: &Path) -> Option<Value> {
    let mut cur = v;
    for s in &path.segs {
        cur = match (s, cur) {
            (crate::path::Seg::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (crate::path::Seg::Index(n), Value::Array(a)) => a.get_mut(*n)?,
            _ => return None,
        };
    }
    Some(cur.take())
}

impl RestAdapter {
    /// Send one page on, named by where it starts.
    async fn emit(
        &self,
        ctx: &FetchContext,
        sp: &StreamPlan,
        resp: Response,
        start: String,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), FetchError> {
        let locator = format!("{start} ({})", resp.endpoint());
        tracing::debug!(connection = %self.connection, stream = %sp.name, page = %start, bytes = resp.body.len(), "page fetched");
        let mut page = RawPage::new(&sp.name, resp.body, locator);
        if let Some(c) = checkpoint {
            page = page.with_checkpoint(c);
        }
        ctx.sink.send(page).await
    }

    /// The checkpoint a page carries: the next page (paging with links or
    /// cursors), or for incremental streams the largest cursor value, on the last page only.
    async fn checkpoint(
        &self,
        sp: &StreamPlan,
        resp: &Response,
        high: &mut Option<Value>,
        next: Option<String>,
        last: bool,
        records: &Path,
    ) -> Option<Checkpoint> {
        match &sp.incremental {
            Some((field, _)) => {
                if let Some(m) = max_cursor(resp.body.clone(), records.clone(), field.clone()).await
                    && high.as_ref().is_none_or(|h| later(&m, h))
                {
                    *high = Some(m);
                }
                (last && high.is_some()).then(|| Checkpoint(serde_json::json!({ "since": high })))
            }
            None => next.map(|n| Checkpoint(serde_json::json!({ "next": n }))),
        }
    }

    /// Records on an offset or numbered page, and whether it was the last.
    async fn page_end(&self, resp: &Response, records: &Path, total: &Total, before: u64, size: u64) -> (usize, bool) {
        let header_total = match total {
            Total::Header(h) => resp.header(h).and_then(|v| v.trim().parse::<u64>().ok()),
            _ => None,
        };
        let body_total = match total {
            Total::Body(p) => Some(p.clone()),
            _ => None,
        };
        match count_page(resp.body.clone(), records.clone(), body_total).await {
            Some((n, t)) => {
                let total = header_total.or(t);
                let done = n == 0 || total.map_or((n as u64) < size, |t| before + n as u64 >= t);
                (n, done)
            }
            // Not readable: let normalize report it, and stop (nothing says what follows).
            None => (0, true),
        }
    }
}
