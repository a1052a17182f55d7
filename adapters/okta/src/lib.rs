//! corral adapter `okta`: users from the Okta Users API.
//!
//! ```toml
//! [[connection]]
//! name = "okta-prod"
//! adapter = "okta"
//! [connection.config]
//! base_url = "https://acme.okta.com"
//! token = "${OKTA_API_TOKEN}"
//! ```
//!
//! One stream, `users` (kind user, key `id`):
//! - [`Adapter::fetch`] pages through `GET /api/v1/users?limit=N`, following
//!   the `Link: <...>; rel="next"` URL exactly as Okta sends it (separate
//!   header lines or comma-joined) until there is none. Bodies go to the
//!   pipeline undecoded. Each page carries the next URL as its checkpoint,
//!   so an interrupted run resumes after the last page the store acknowledged.
//! - [`Adapter::normalize`] maps each user to [`corral_core::User`]
//!   (see [`normalize`]).
//! - [`Adapter::check`] makes one `GET /api/v1/users?limit=1` (the permission
//!   the sync needs), never retried.
//!
//! Rate limits: a fixed quota (`requests_per_minute`, default 600), pacing
//! from Okta's `X-Rate-Limit-Limit/-Remaining/-Reset` headers (reset in epoch
//! seconds) so the client slows down before Okta answers 429, and 429s waited
//! out until `X-Rate-Limit-Reset`; all of it in `corral-http`.

use std::sync::Arc;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, AssetKind, AttrType, CheckOutcome, Checkpoint, ConfigError,
    FetchContext, FetchError, NormalizedPage, RawPage, StreamInfo,
};
use corral_http::{Auth, HttpClient, HttpConfig, HttpError, NextLinks, RateConfig, Timeouts, Url, redact_url};

pub mod config;
pub mod normalize;

pub use config::{OktaConfig, Settings};

/// The one stream this adapter offers.
pub const USERS: &str = "users";
/// The users listing.
pub const USERS_PATH: &str = "/api/v1/users";

/// Builds `okta` adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct OktaFactory;

/// The `users` stream: what it fills and the attributes it declares.
pub fn users_stream() -> StreamInfo {
    StreamInfo::new(USERS, AssetKind::User, "id", "Users from /api/v1/users (DEPROVISIONED users are not listed by Okta)")
        .fills("username", "`profile.login`")
        .fills("email", "`profile.email`")
        .fills("display_name", "`profile.displayName`, or first and last name")
        .fills("first_name", "`profile.firstName`")
        .fills("last_name", "`profile.lastName`")
        .fills("active", "`status` (ACTIVE, PROVISIONED, RECOVERY, PASSWORD_EXPIRED, LOCKED_OUT: true; STAGED, SUSPENDED, DEPROVISIONED: false)")
        .fills("status", "`status`, upper-cased")
        .fills("created", "`created`")
        .fills("last_login", "`lastLogin`")
        .fills("tags", "`provider:<credentials.provider.type>`")
        .attribute("okta_status", AttrType::String, "The account's Okta `status` as sent (ACTIVE, STAGED, ...).")
        .attribute("credentials_provider_type", AttrType::String, "`credentials.provider.type` (OKTA, ACTIVE_DIRECTORY, LDAP, FEDERATION, SOCIAL).")
        .attribute("credentials_provider_name", AttrType::String, "`credentials.provider.name` (the directory or IdP).")
        .attribute("status_changed", AttrType::Timestamp, "`statusChanged`: when the status last changed.")
        .attribute("password_changed", AttrType::Timestamp, "`passwordChanged`.")
}

/// Registers this adapter: what the `corral` binary's build script calls for
/// every adapter crate it includes.
pub fn register(registry: &mut corral_core::Registry) {
    registry.register(OktaFactory);
}

impl AdapterFactory for OktaFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "okta".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Users from the Okta Users API (API token)".into(),
            streams: vec![users_stream()],
            config: config::config_fields(),
            notes: AdapterNotes {
                auth: "An Okta API token, sent as `Authorization: SSWS <token>`. Tokens act with the \
                       permissions of the admin who created them and expire after 30 days unused."
                    .into(),
                permissions: vec!["An admin role that can read users (Read-only Administrator is enough).".into()],
                rate_limits: "Okta limits each endpoint per minute per org (`/api/v1/users`: a few hundred to \
                              a few thousand a minute, by plan) and reports it in `X-Rate-Limit-Limit`, \
                              `-Remaining` and `-Reset` (epoch seconds). corral paces at `requests_per_minute` \
                              (default 600), slows down as `-Remaining` runs low, and waits a 429 out until \
                              `X-Rate-Limit-Reset`."
                    .into(),
            },
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(OktaAdapter::from_config(connection, config)?))
    }
}

/// A configured `okta` connection.
#[derive(Debug)]
pub struct OktaAdapter {
    connection: String,
    info: AdapterInfo,
    http: HttpClient,
    page_size: u32,
    max_in_flight: usize,
    keep_raw: bool,
}

impl OktaAdapter {
    /// Parse and validate `config` and build the HTTP client. Sends nothing.
    pub fn from_config(connection: &str, config: serde_json::Value) -> Result<Self, ConfigError> {
        Self::new(connection, Settings::parse(config)?)
    }

    pub fn new(connection: &str, s: Settings) -> Result<Self, ConfigError> {
        let rate = RateConfig::per_minute(s.requests_per_minute)
            .with_max_in_flight(s.max_in_flight)
            .with_header_adaptation(true);
        let timeouts = Timeouts { total: s.timeout, ..Timeouts::default() };
        let http = HttpConfig::new(s.base_url.as_str())
            .with_connection(connection)
            .with_auth(Auth::okta_ssws(&s.token))
            .with_header("Accept", "application/json")
            .with_rate(rate)
            .with_timeouts(timeouts);
        let http = HttpClient::new(http, Arc::default()).map_err(|e| match e {
            // The base URL was validated already: what is left is the token's header encoding.
            HttpError::Config(msg) => ConfigError::field("token", msg),
            other => ConfigError::Invalid(other.to_string()),
        })?;
        Ok(OktaAdapter {
            connection: connection.into(),
            info: OktaFactory.info(),
            http,
            page_size: s.page_size,
            max_in_flight: s.max_in_flight,
            keep_raw: s.keep_raw,
        })
    }

    /// The first page's path.
    fn first_page(&self) -> String {
        format!("{USERS_PATH}?limit={}", self.page_size)
    }

    /// The URL a checkpoint says to resume from, if it is one this adapter
    /// wrote for this org (same origin, the users listing), with `limit` set
    /// to this run's page size.
    fn resume_url(&self, checkpoint: &Checkpoint) -> Option<Url> {
        let next = checkpoint.0.get("next")?.as_str()?;
        let mut url = Url::parse(next).ok()?;
        if url.origin() != self.http.base_url().origin() || url.path() != USERS_PATH {
            return None;
        }
        let keep: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| k != "limit").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.query_pairs_mut().clear().extend_pairs(keep).append_pair("limit", &self.page_size.to_string());
        Some(url)
    }
}

#[async_trait]
impl Adapter for OktaAdapter {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    async fn check_within(&self, limit: std::time::Duration) -> CheckOutcome {
        self.http.check_within(&format!("{USERS_PATH}?limit=1"), limit).await
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        if ctx.stream.name != USERS {
            return Err(FetchError::UnknownStream(ctx.stream.name));
        }
        let client = self.http.with_metrics(ctx.requests.clone()).with_stream(USERS);
        let conn = &self.connection;
        let resume = ctx.checkpoint.as_ref().and_then(|c| {
            let url = self.resume_url(c);
            match &url {
                Some(u) => {
                    tracing::info!(connection = %conn, stream = USERS, url = %redact_url(u), "resuming from the checkpoint")
                }
                None => {
                    tracing::info!(connection = %conn, stream = USERS, "the checkpoint is not a page of this org; fetching from the start");
                    ctx.fetching_from_start();
                }
            }
            url
        });
        // Links must stay on the org (credentials are never sent elsewhere) and move on.
        let mut links = NextLinks::new(self.http.base_url(), "the Link rel=\"next\" URL");
        let mut resuming = resume.is_some();
        let mut url = resume.map_or_else(|| self.first_page(), String::from);
        let mut page_no: u64 = 0;
        loop {
            let resp = match client.get(&url).send_bytes().await {
                Ok(resp) => resp,
                // Okta refuses a cursor it no longer knows with 400: start over.
                Err(e) if resuming && e.status() == Some(400) => {
                    tracing::warn!(connection = %conn, stream = USERS, error = %e, "the checkpoint's cursor was refused; fetching from the start");
                    ctx.fetching_from_start();
                    resuming = false;
                    url = self.first_page();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            resuming = false;
            page_no += 1;
            let next = links.from_link_header(&resp);
            let locator = format!("page {page_no} ({})", resp.endpoint());
            tracing::debug!(connection = %conn, stream = USERS, page = page_no, bytes = resp.body.len(), "page fetched");
            let mut page = RawPage::new(USERS, resp.body, locator);
            if let Ok(Some(n)) = &next {
                page = page.with_checkpoint(Checkpoint(serde_json::json!({ "next": n })));
            }
            // The page itself is good even when its Link header is not: pass it on, then fail.
            ctx.sink.send(page).await?;
            match next? {
                Some(n) => url = n,
                None => return Ok(()),
            }
        }
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        normalize::normalize_page(page, self.keep_raw)
    }

    /// One pooled connection per request in flight, and one spare (a retry
    /// may open a new connection while the broken one is being closed).
    fn max_open_files(&self) -> usize {
        self.max_in_flight + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_documents_the_stream_and_config() {
        let info = OktaFactory.info();
        assert_eq!(info.name, "okta");
        assert_eq!(info.streams.len(), 1);
        let users = &info.streams[0];
        assert_eq!((users.name.as_str(), users.kind, users.key.as_str()), (USERS, AssetKind::User, "id"));
        let names: Vec<&str> = info.config.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["base_url", "token", "page_size", "requests_per_minute", "max_in_flight", "timeout_secs", "keep_raw"]
        );
        assert!(info.config.iter().all(|f| f.secret == (f.name == "token")));
        assert!(info.config.iter().all(|f| f.required == matches!(f.name.as_str(), "base_url" | "token")));
    }

    #[test]
    fn build_sends_nothing_and_debug_hides_the_token() {
        // Nothing listens on port 9: building must not try.
        let cfg = serde_json::json!({ "base_url": "http://127.0.0.1:9", "token": "hunter2-secret-token" });
        let adapter = OktaAdapter::from_config("c", cfg).expect("valid config");
        assert!(!format!("{adapter:?}").contains("hunter2"));
        assert!(OktaFactory.build("c", serde_json::json!({ "base_url": "https://a.okta.com" })).is_err());
    }

    #[test]
    fn open_files_follow_the_configured_concurrency() {
        let build = |n: u64| {
            let cfg = serde_json::json!({ "base_url": "https://acme.okta.com", "token": "t", "max_in_flight": n });
            OktaAdapter::from_config("c", cfg).expect("valid config").max_open_files()
        };
        assert_eq!(build(4), 5);
        assert_eq!(build(75), 76);
        assert_eq!(build(1), 2);
    }

    #[test]
    fn resume_url_keeps_the_cursor_and_takes_this_runs_page_size() {
        let cfg = serde_json::json!({ "base_url": "https://acme.okta.com", "token": "t", "page_size": 50 });
        let adapter = OktaAdapter::from_config("c", cfg).expect("valid config");
        let resume = |v: serde_json::Value| adapter.resume_url(&Checkpoint(v)).map(String::from);
        assert_eq!(
            resume(serde_json::json!({ "next": "https://acme.okta.com/api/v1/users?after=00u1&limit=200" })).as_deref(),
            Some("https://acme.okta.com/api/v1/users?after=00u1&limit=50")
        );
        assert_eq!(resume(serde_json::json!({ "next": "https://evil.example/api/v1/users?after=00u1" })), None);
        assert_eq!(resume(serde_json::json!({ "next": "https://acme.okta.com/api/v1/groups?after=1" })), None);
        assert_eq!(resume(serde_json::json!({ "cursor": "x" })), None);
    }
}
