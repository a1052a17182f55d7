//! The msgraph adapter's config: parsed with [`corral_core::parse_config`],
//! then validated into [`Settings`]. Every error names the offending field and
//! never quotes a value (the secret least of all).

use corral_core::{ConfigError, ConfigField, FieldType};
use corral_http::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Microsoft identity platform (public cloud).
pub const DEFAULT_LOGIN_BASE_URL: &str = "https://login.microsoftonline.com";
/// Microsoft Graph (public cloud).
pub const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.microsoft.com";
/// The one scope the client-credentials flow accepts for Graph.
pub const SCOPE: &str = "https://graph.microsoft.com/.default";
/// Largest `$top` Intune accepts on `managedDevices` (also its default).
pub const MAX_DEVICE_PAGE: u32 = 1000;
/// Largest `$top` Entra accepts on `users` (its default is only 100).
pub const MAX_USER_PAGE: u32 = 999;
/// Default request budget: Intune's documented 2,000 requests per 20 s per app
/// and tenant (Entra's limits for listing users are higher).
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 100.0;
/// The share of `requests_per_second` the client actually paces at. Requests
/// evenly spaced at exactly the vendor's rate fill its sliding window to the
/// last slot, so a few milliseconds of network or scheduling jitter would push
/// a window over the limit and cost a whole `Retry-After`; 10 % headroom
/// absorbs a tenth of the window (2 s of Intune's 20 s) of jitter.
pub const PACING: f64 = 0.9;
/// Upper bound for `requests_per_second` (far above anything Graph allows).
pub const MAX_REQUESTS_PER_SECOND: f64 = 10_000.0;

/// The config table of an `msgraph` connection, as written by the operator.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsGraphConfig {
    /// Directory (tenant) id: a GUID or a verified domain (`contoso.onmicrosoft.com`).
    pub tenant_id: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    /// Client secret of the app registration.
    pub client_secret: SecretString,
    #[serde(default = "default_login")]
    pub login_base_url: String,
    #[serde(default = "default_graph")]
    pub graph_base_url: String,
    /// `$top`; default: the largest each endpoint allows.
    #[serde(default)]
    pub page_size: Option<u32>,
    #[serde(default = "default_rps")]
    pub requests_per_second: f64,
    /// Whole-request timeout in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub keep_raw: bool,
}

fn default_login() -> String {
    DEFAULT_LOGIN_BASE_URL.into()
}
fn default_graph() -> String {
    DEFAULT_GRAPH_BASE_URL.into()
}
fn default_rps() -> f64 {
    DEFAULT_REQUESTS_PER_SECOND
}
fn default_timeout_secs() -> u64 {
    300
}

/// A validated config.
pub struct Settings {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// `{login_base_url}/{tenant_id}/oauth2/v2.0/token`.
    pub token_url: String,
    /// Graph base URL without a trailing slash.
    pub graph_base_url: String,
    pub device_page_size: u32,
    pub user_page_size: u32,
    pub requests_per_second: f64,
    /// Whole-request timeout: a hung answer is cut after it and retried.
    pub timeout: std::time::Duration,
    pub keep_raw: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("token_url", &self.token_url)
            .field("graph_base_url", &self.graph_base_url)
            .field("device_page_size", &self.device_page_size)
            .field("user_page_size", &self.user_page_size)
            .field("requests_per_second", &self.requests_per_second)
            .field("timeout", &self.timeout)
            .field("keep_raw", &self.keep_raw)
            .finish()
    }
}

/// Parse and validate a connection's config table. No I/O.
pub fn parse(value: serde_json::Value) -> Result<Settings, ConfigError> {
    let cfg: MsGraphConfig = corral_core::parse_config(value)?;
    Settings::try_from(cfg)
}

impl TryFrom<MsGraphConfig> for Settings {
    type Error = ConfigError;

    fn try_from(cfg: MsGraphConfig) -> Result<Self, ConfigError> {
        let tenant_id = cfg.tenant_id.trim().to_string();
        if tenant_id.is_empty() {
            return Err(ConfigError::field("tenant_id", "must not be empty"));
        }
        // It becomes a path segment of the token URL.
        if !tenant_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
            return Err(ConfigError::field(
                "tenant_id",
                "must be a tenant GUID or domain (letters, digits, '-', '.', '_')",
            ));
        }
        let client_id = cfg.client_id.trim().to_string();
        if client_id.is_empty() {
            return Err(ConfigError::field("client_id", "must not be empty"));
        }
        if cfg.client_secret.expose_secret().trim().is_empty() {
            return Err(ConfigError::field("client_secret", "must not be empty"));
        }
        let login = base_url("login_base_url", &cfg.login_base_url)?;
        let graph = base_url("graph_base_url", &cfg.graph_base_url)?;
        let (device_page_size, user_page_size) = match cfg.page_size {
            None => (MAX_DEVICE_PAGE, MAX_USER_PAGE),
            Some(n) if (1..=MAX_DEVICE_PAGE).contains(&n) => (n, n.min(MAX_USER_PAGE)),
            Some(_) => {
                return Err(ConfigError::field(
                    "page_size",
                    format!("must be 1..={MAX_DEVICE_PAGE} (users use at most {MAX_USER_PAGE})"),
                ));
            }
        };
        let rps = cfg.requests_per_second;
        if !(rps.is_finite() && rps > 0.0 && rps <= MAX_REQUESTS_PER_SECOND) {
            return Err(ConfigError::field(
                "requests_per_second",
                format!("must be a number above 0 and at most {MAX_REQUESTS_PER_SECOND}"),
            ));
        }
        if !(1..=3600).contains(&cfg.timeout_secs) {
            return Err(ConfigError::field("timeout_secs", "must be 1..=3600"));
        }
        Ok(Settings {
            token_url: format!("{login}/{tenant_id}/oauth2/v2.0/token"),
            tenant_id,
            client_id,
            client_secret: cfg.client_secret,
            graph_base_url: graph,
            device_page_size,
            user_page_size,
            requests_per_second: rps,
            timeout: std::time::Duration::from_secs(cfg.timeout_secs),
            keep_raw: cfg.keep_raw,
        })
    }
}

/// An http(s) URL with a host, no query or fragment; returned without a trailing slash.
fn base_url(field: &str, raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|e| ConfigError::field(field, format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::field(field, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::field(field, "must not carry credentials, a query or a fragment"));
    }
    Ok(trimmed.to_string())
}

/// Every config field, as `corral adapters` prints them.
pub fn fields() -> Vec<ConfigField> {
    vec![
        ConfigField::required("tenant_id", FieldType::String, "Directory (tenant) id: a GUID or a verified domain."),
        ConfigField::required("client_id", FieldType::String, "Application (client) id of the app registration."),
        ConfigField::required(
            "client_secret",
            FieldType::String,
            "Client secret of the app registration. Application permissions needed: \
             DeviceManagementManagedDevices.Read.All (managed_devices), User.Read.All (users).",
        )
        .secret(),
        ConfigField::optional(
            "login_base_url",
            FieldType::Url,
            "Identity platform; the token URL is {login_base_url}/{tenant_id}/oauth2/v2.0/token. \
             Default https://login.microsoftonline.com (national clouds: login.microsoftonline.us, login.chinacloudapi.cn).",
        ),
        ConfigField::optional(
            "graph_base_url",
            FieldType::Url,
            "Microsoft Graph. Default https://graph.microsoft.com (national clouds: graph.microsoft.us, \
             microsoftgraph.chinacloudapi.cn). @odata.nextLink must stay on this origin.",
        ),
        ConfigField::optional(
            "page_size",
            FieldType::Integer,
            "$top, 1..=1000. Default: the largest each endpoint allows (managed devices 1000, users 999); \
             users never ask for more than 999.",
        ),
        ConfigField::optional(
            "requests_per_second",
            FieldType::Integer,
            "Graph's request budget for this app and tenant, per second (fractions allowed); the whole \
             connection paces evenly at 90 % of it so that jitter never trips the vendor's sliding window. \
             Default 100: Intune's 2,000 requests per 20 s. Lower it when other tools share the app registration.",
        ),
        ConfigField::optional(
            "timeout_secs",
            FieldType::Integer,
            "Whole-request timeout in seconds (connect, send, read the body), 1..=3600: a hung answer is cut \
             after it and retried. Default 300.",
        ),
        ConfigField::optional(
            "keep_raw",
            FieldType::Boolean,
            "Keep each Graph record on its asset. Devices are then fetched with every property \
             (no $select); users with the default property set plus the ones corral maps. Default false.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"tenant_id": "contoso.onmicrosoft.com", "client_id": "cid", "client_secret": "hunter2-secret"})
    }

    fn with(k: &str, v: serde_json::Value) -> serde_json::Value {
        let mut b = base();
        b[k] = v;
        b
    }

    #[test]
    fn defaults() {
        let s = parse(base()).expect("valid");
        assert_eq!(s.token_url, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert_eq!(s.graph_base_url, "https://graph.microsoft.com");
        assert_eq!((s.device_page_size, s.user_page_size), (1000, 999));
        assert_eq!(s.requests_per_second, DEFAULT_REQUESTS_PER_SECOND);
        assert!(!s.keep_raw);
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn page_size_applies_to_both_streams_within_their_limits() {
        let s = parse(with("page_size", json!(1000))).expect("valid");
        assert_eq!((s.device_page_size, s.user_page_size), (1000, 999));
        let s = parse(with("page_size", json!(50))).expect("valid");
        assert_eq!((s.device_page_size, s.user_page_size), (50, 50));
        for bad in [json!(0), json!(1001), json!(-1), json!("ten")] {
            let e = parse(with("page_size", bad)).expect_err("invalid");
            assert!(e.to_string().contains("`page_size`"), "{e}");
        }
    }

    #[test]
    fn urls_are_validated_and_trailing_slashes_dropped() {
        let s = parse(with("login_base_url", json!("http://127.0.0.1:9/"))).expect("valid");
        assert_eq!(s.token_url, "http://127.0.0.1:9/contoso.onmicrosoft.com/oauth2/v2.0/token");
        let s = parse(with("graph_base_url", json!("https://graph.microsoft.us/"))).expect("valid");
        assert_eq!(s.graph_base_url, "https://graph.microsoft.us");
        for bad in ["not a url", "ftp://x", "https://h/?a=b", "https://u:p@h"] {
            let e = parse(with("graph_base_url", json!(bad))).expect_err(bad);
            assert!(e.to_string().contains("`graph_base_url`"), "{e}");
        }
    }

    #[test]
    fn errors_name_the_field_never_the_secret() {
        let e = parse(json!({"tenant_id": "t", "client_id": "c"})).expect_err("missing secret");
        assert_eq!(e.to_string(), "config field `client_secret`: is required");
        let e = parse(with("client_secret", json!(12345678))).expect_err("wrong type");
        assert!(e.to_string().contains("`client_secret`"), "{e}");
        let e = parse(with("client_secret", json!("  "))).expect_err("empty");
        assert!(e.to_string().contains("`client_secret`"), "{e}");
        let e = parse(with("tenant_id", json!("a/b"))).expect_err("slash");
        assert!(e.to_string().contains("`tenant_id`"), "{e}");
        let e = parse(with("colour", json!("hunter2-secret"))).expect_err("unknown field");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        for bad in [json!(0), json!(-3.5), json!(1e9)] {
            let e = parse(with("requests_per_second", bad)).expect_err("bad rate");
            assert!(e.to_string().contains("`requests_per_second`"), "{e}");
        }
        assert_eq!(parse(with("requests_per_second", json!(0.5))).expect("fraction").requests_per_second, 0.5);
        assert_eq!(parse(with("requests_per_second", json!(20))).expect("integer").requests_per_second, 20.0);
    }
}
