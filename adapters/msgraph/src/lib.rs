//! corral adapter `msgraph`: Microsoft Graph, Intune managed devices and Entra ID users.
//!
//! ```toml
//! [[connection]]
//! name = "intune-eu"
//! adapter = "msgraph"
//! [connection.config]
//! tenant_id = "contoso.onmicrosoft.com"
//! client_id = "00000000-0000-0000-0000-000000000000"
//! client_secret = "${GRAPH_CLIENT_SECRET}"
//! ```
//!
//! Streams:
//! - `managed_devices` (devices, key `id`): `GET /v1.0/deviceManagement/managedDevices`;
//! - `users` (users, key `id`): `GET /v1.0/users`.
//!
//! Auth is OAuth2 client credentials against
//! `{login_base_url}/{tenant_id}/oauth2/v2.0/token` with scope
//! `https://graph.microsoft.com/.default`; the toolkit caches the token,
//! refreshes it before expiry and once after a 401.
//!
//! [`Adapter::fetch`] follows `@odata.nextLink` (the whole URL as Graph sent it)
//! until it is absent. The link is pulled out of each body with the toolkit's
//! single-field scan (off the runtime, like every check of a body here); the
//! body goes on undecoded. A body without a link ends the stream only when it is well-formed
//! JSON: an HTML error page or a cut body served with 200 is fetched again, and
//! if it stays unreadable the stream fails rather than claiming it is complete.
//! [`Adapter::normalize`] decodes a page and maps its records (see [`normalize`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, AssetKind, AttrType, CheckOutcome, ConfigError, FetchContext,
    FetchError, NormalizedPage, RawPage, StreamInfo,
};
use corral_http::{Auth, BodyCursor, CursorPage, HttpClient, HttpConfig, OAuth2Config, RateConfig, Timeouts, Url};

pub mod config;
pub mod normalize;

pub use config::{MsGraphConfig, Settings};

/// The body field that links to the next page.
pub const NEXT_LINK: &str = "@odata.nextLink";
/// Intune managed devices.
pub const DEVICES_PATH: &str = "/v1.0/deviceManagement/managedDevices";
/// Entra ID users.
pub const USERS_PATH: &str = "/v1.0/users";
/// The `managedDevice` properties normalize maps.
pub const DEVICE_SELECT: &str = "id,deviceName,serialNumber,wiFiMacAddress,ethernetMacAddress,operatingSystem,\
osVersion,manufacturer,model,enrolledDateTime,lastSyncDateTime,userPrincipalName,emailAddress,complianceState,\
managedDeviceOwnerType,azureADDeviceId,userId,deviceRegistrationState";
/// The `user` properties normalize maps. `GET /users` without `$select`
/// returns a default set that lacks `accountEnabled`, `userType` and `createdDateTime`.
pub const USER_SELECT: &str =
    "id,userPrincipalName,mail,displayName,givenName,surname,accountEnabled,userType,createdDateTime";
/// The rest of Graph's default user property set, added with `keep_raw`.
const USER_SELECT_DEFAULT_REST: &str = ",businessPhones,jobTitle,mobilePhone,officeLocation,preferredLanguage";
/// Each stream is one chain of links, so at most one request per stream is in flight.
const MAX_IN_FLIGHT: usize = 4;
/// Attempts at a page whose body is unreadable and carries no next link.
pub const UNREADABLE_PAGE_ATTEMPTS: u32 = 3;

/// The streams this adapter offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    ManagedDevices,
    Users,
}

impl Stream {
    pub const ALL: [Stream; 2] = [Stream::ManagedDevices, Stream::Users];

    pub fn name(self) -> &'static str {
        match self {
            Stream::ManagedDevices => "managed_devices",
            Stream::Users => "users",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn path(self) -> &'static str {
        match self {
            Stream::ManagedDevices => DEVICES_PATH,
            Stream::Users => USERS_PATH,
        }
    }

    /// The stream's declaration: what it fills and the attributes it declares.
    pub fn info(self) -> StreamInfo {
        match self {
            Stream::ManagedDevices => StreamInfo::new(
                self.name(),
                AssetKind::Device,
                "id",
                "Intune managed devices (GET /v1.0/deviceManagement/managedDevices)",
            )
            .fills("hostname", "`deviceName` (`fields::hostname`)")
            .fills("domain", "the domain of `deviceName` (`CORP\\name`, an FQDN)")
            .fills("mac_addresses", "`wiFiMacAddress`, `ethernetMacAddress`")
            .fills("serial_number", "`serialNumber`")
            .fills("os.family", "from `operatingSystem` and `osVersion`")
            .fills("os.name", "`operatingSystem`")
            .fills("os.version", "`osVersion`")
            .fills("manufacturer", "`manufacturer`")
            .fills("model", "`model`")
            .fills("first_seen", "`enrolledDateTime`")
            .fills("last_seen", "`lastSyncDateTime`")
            .fills("owner", "`userPrincipalName`, else `emailAddress`")
            .fills("owner_ref", "`userId`: the Entra user (this connection's `users` stream)")
            .fills("entra_device_id", "`azureADDeviceId`, lowercase (the all-zero id dropped)")
            .fills("tags", "`compliance:<complianceState>`, `ownership:<managedDeviceOwnerType>`")
            .attribute(
                "compliance_state",
                AttrType::String,
                "`complianceState` (compliant, noncompliant, inGracePeriod, ...).",
            )
            .attribute("owner_type", AttrType::String, "`managedDeviceOwnerType` (company, personal).")
            .attribute(
                "registration_state",
                AttrType::String,
                "`deviceRegistrationState` (registered, ...).",
            ),
            Stream::Users => StreamInfo::new(self.name(), AssetKind::User, "id", "Entra ID users (GET /v1.0/users)")
                .fills("username", "`userPrincipalName`")
                .fills("email", "`mail`")
                .fills("display_name", "`displayName`")
                .fills("first_name", "`givenName`")
                .fills("last_name", "`surname`")
                .fills("active", "`accountEnabled`")
                .fills("status", "`enabled` / `disabled` from `accountEnabled`")
                .fills("created", "`createdDateTime`")
                .fills("tags", "`user_type:<userType>`")
                .attribute("user_type", AttrType::String, "`userType` (Member, Guest)."),
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Builds `msgraph` adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct MsGraphFactory;

/// Registers this adapter: what the `corral` binary's build script calls for
/// every adapter crate it includes.
pub fn register(registry: &mut corral_core::Registry) {
    registry.register(MsGraphFactory);
}

impl AdapterFactory for MsGraphFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "msgraph".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Microsoft Graph: Intune managed devices and Entra ID users".into(),
            streams: Stream::ALL.iter().map(|s| s.info()).collect(),
            config: config::fields(),
            notes: AdapterNotes {
                auth: "OAuth2 client credentials of an Entra app registration at \
                       `{login_base_url}/{tenant_id}/oauth2/v2.0/token`, scope \
                       `https://graph.microsoft.com/.default`; the token is cached and renewed before it \
                       expires and once after a 401."
                    .into(),
                permissions: vec![
                    "Application permission DeviceManagementManagedDevices.Read.All (managed_devices), \
                     with admin consent."
                        .into(),
                    "Application permission User.Read.All (users), with admin consent.".into(),
                ],
                rate_limits: "Intune allows 2,000 requests per 20 s per app and tenant (Entra's user listing \
                              more); throttled requests get 429 with `Retry-After` in seconds. corral paces at \
                              90 % of `requests_per_second` (default 100) and waits out every Retry-After."
                    .into(),
            },
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        Ok(Arc::new(MsGraphAdapter::from_config(connection, config)?))
    }
}

/// A configured `msgraph` connection.
pub struct MsGraphAdapter {
    connection: String,
    settings: Settings,
    http: HttpClient,
    graph_base: Url,
    info: AdapterInfo,
}

impl fmt::Debug for MsGraphAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsGraphAdapter")
            .field("connection", &self.connection)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl MsGraphAdapter {
    /// Parse and validate `config` and build the HTTP client. Sends nothing.
    pub fn from_config(connection: &str, config: serde_json::Value) -> Result<Self, ConfigError> {
        Self::new(connection, config::parse(config)?)
    }

    pub fn new(connection: &str, settings: Settings) -> Result<Self, ConfigError> {
        let graph_base = Url::parse(&settings.graph_base_url)
            .map_err(|e| ConfigError::field("graph_base_url", format!("not a valid URL ({e})")))?;
        let oauth = OAuth2Config::new(&settings.token_url, &settings.client_id, settings.client_secret.clone())
            .scope(config::SCOPE);
        let http = HttpClient::new(
            HttpConfig::new(&settings.graph_base_url)
                .with_connection(connection)
                .with_auth(Auth::OAuth2ClientCredentials(oauth))
                .with_rate(
                    RateConfig::from_rps(settings.requests_per_second * config::PACING)
                        .with_max_in_flight(MAX_IN_FLIGHT),
                )
                .with_timeouts(Timeouts { total: settings.timeout, ..Timeouts::default() })
                .with_header("Accept", "application/json"),
            Arc::default(),
        )
        .map_err(|e| ConfigError::Invalid(format!("cannot build the Graph client: {e}")))?;
        Ok(MsGraphAdapter { connection: connection.into(), settings, http, graph_base, info: MsGraphFactory.info() })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The first page's path and query (`$` and `,` are valid in a query and sent as is).
    pub fn first_url(&self, stream: Stream) -> String {
        let s = &self.settings;
        match stream {
            Stream::ManagedDevices if s.keep_raw => format!("{DEVICES_PATH}?$top={}", s.device_page_size),
            Stream::ManagedDevices => format!("{DEVICES_PATH}?$top={}&$select={DEVICE_SELECT}", s.device_page_size),
            Stream::Users => {
                let rest = if s.keep_raw { USER_SELECT_DEFAULT_REST } else { "" };
                format!("{USERS_PATH}?$top={}&$select={USER_SELECT}{rest}", s.user_page_size)
            }
        }
    }
}

#[async_trait]
impl Adapter for MsGraphAdapter {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// A token, then `GET /v1.0/users?$top=1&$select=id`. Refused credentials
    /// are an auth error naming the token endpoint and its status; never retried.
    async fn check(&self) -> CheckOutcome {
        self.check_within(corral_http::CHECK_TIMEOUT).await
    }

    async fn check_within(&self, limit: std::time::Duration) -> CheckOutcome {
        self.http.check_within(&format!("{USERS_PATH}?$top=1&$select=id"), limit).await
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        let stream =
            Stream::from_name(&ctx.stream.name).ok_or_else(|| FetchError::UnknownStream(ctx.stream.name.clone()))?;
        let client = self.http.with_metrics(ctx.requests.clone()).with_stream(&ctx.stream.name);
        let mut url = self.first_url(stream);
        let mut page: u64 = 0;
        // The link exactly as Graph sent it, only on the Graph origin the token
        // belongs to, never in a loop; a page without one is the last only when
        // it is well-formed JSON (a cut page is fetched again).
        let mut pages =
            BodyCursor::next_url(&self.graph_base, &[NEXT_LINK]).unreadable_attempts(UNREADABLE_PAGE_ATTEMPTS);
        loop {
            match pages.get(&client, &url).await? {
                CursorPage::Page { resp, next } => {
                    let locator = format!("{stream} page {page} ({})", resp.endpoint());
                    tracing::debug!(connection = %self.connection, %stream, page, bytes = resp.body.len(), last = next.is_none(), "page fetched");
                    ctx.sink.send(RawPage::new(stream.name(), resp.body, locator)).await?;
                    match next {
                        Some(n) => url = n,
                        None => return Ok(()),
                    }
                }
                CursorPage::Unreadable { resp, attempts } => {
                    let endpoint = resp.endpoint();
                    let locator = format!("{stream} page {page} ({endpoint})");
                    // Passed on so the page is counted and kept as a malformed_page reject.
                    ctx.sink.send(RawPage::new(stream.name(), resp.body, locator)).await?;
                    return Err(FetchError::Protocol {
                        endpoint,
                        detail: format!(
                            "page {page} is not valid JSON after {attempts} attempts and carries no {NEXT_LINK}: \
                             cannot tell whether more pages follow, so the stream is incomplete"
                        ),
                    });
                }
            }
            page += 1;
        }
    }

    /// Requests in flight on Graph, one more while a finished request's
    /// connection returns to the pool ([`Adapter::max_open_files`]), and the
    /// token endpoint (another host in production).
    fn max_open_files(&self) -> usize {
        MAX_IN_FLIGHT + 2
    }

    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        match Stream::from_name(&page.stream) {
            Some(stream) => normalize::page(stream, page, self.settings.keep_raw),
            None => NormalizedPage::page_failed(format!("unknown stream `{}`", page.stream)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn adapter(extra: serde_json::Value) -> MsGraphAdapter {
        let mut cfg = json!({"tenant_id": "t1", "client_id": "c", "client_secret": "hunter2-secret"});
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        MsGraphAdapter::from_config("conn", cfg).expect("valid config")
    }

    #[test]
    fn info_lists_streams_and_fields() {
        let info = MsGraphFactory.info();
        assert_eq!(info.name, "msgraph");
        let streams: Vec<(&str, AssetKind, &str)> =
            info.streams.iter().map(|s| (s.name.as_str(), s.kind, s.key.as_str())).collect();
        assert_eq!(streams, [("managed_devices", AssetKind::Device, "id"), ("users", AssetKind::User, "id")]);
        let secret: Vec<&str> = info.config.iter().filter(|f| f.secret).map(|f| f.name.as_str()).collect();
        assert_eq!(secret, ["client_secret"]);
        let required: Vec<&str> = info.config.iter().filter(|f| f.required).map(|f| f.name.as_str()).collect();
        assert_eq!(required, ["tenant_id", "client_id", "client_secret"]);
    }

    #[test]
    fn first_urls() {
        let a = adapter(json!({}));
        assert_eq!(a.first_url(Stream::ManagedDevices), format!("{DEVICES_PATH}?$top=1000&$select={DEVICE_SELECT}"));
        assert_eq!(a.first_url(Stream::Users), format!("{USERS_PATH}?$top=999&$select={USER_SELECT}"));
        let a = adapter(json!({"keep_raw": true, "page_size": 10}));
        assert_eq!(a.first_url(Stream::ManagedDevices), format!("{DEVICES_PATH}?$top=10"));
        assert!(a.first_url(Stream::Users).ends_with(",preferredLanguage"));
        assert_eq!(
            a.http
                .url(&a.first_url(Stream::Users))
                .map(String::from)
                .ok()
                .as_deref()
                .map(|u| u.contains("$select=id,")),
            Some(true),
            "the query is sent as written"
        );
    }

    #[test]
    fn next_links_are_taken_as_given_and_kept_on_the_graph_origin() {
        let a = adapter(json!({}));
        let mut links = corral_http::NextLinks::new(&a.graph_base, NEXT_LINK);
        let cur = Url::parse("https://graph.microsoft.com/v1.0/users?$top=999").expect("url");
        let link = "https://graph.microsoft.com/v1.0/users?$top=999&$skiptoken=RFNwdAIAAQAAAD8%3d";
        assert_eq!(links.next(&cur, Some(link)).ok().flatten().as_deref(), Some(link));
        let e = links.next(&cur, Some("https://evil.example/v1.0/users?$skiptoken=x")).expect_err("other origin");
        assert!(e.to_string().contains("https://evil.example"), "{e}");
        let e = links.next(&cur, Some("https://graph.microsoft.com/v1.0/users?$top=999")).expect_err("loop");
        assert!(e.to_string().contains("loop"), "{e}");
    }

    #[test]
    fn open_files_are_the_requests_in_flight_one_returning_and_the_token_endpoint() {
        let a = adapter(json!({}));
        assert_eq!(a.max_open_files(), MAX_IN_FLIGHT + 2);
        assert_eq!(a.max_open_files(), 6);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let a = adapter(json!({}));
        let d = format!("{a:?} {a:#?}");
        assert!(!d.contains("hunter2"), "{d}");
    }
}
