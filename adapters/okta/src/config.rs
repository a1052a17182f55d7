//! The `okta` connection config: parsed with [`corral_core::parse_config`],
//! validated into [`Settings`]. Errors name the field and never quote a value.

use corral_core::{ConfigError, ConfigField, FieldType};
use corral_http::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Okta's default and largest page for `/api/v1/users`.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Okta's documented limit for `/api/v1/users` on paid orgs.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 600;
/// Requests in flight at once (Okta allows about 75 per org, shared by every client).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Upper bound for `max_in_flight`: Okta's per-org concurrency limit.
pub const MAX_IN_FLIGHT: usize = 75;
/// Whole-request timeout (connect, send, read the body), in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// The config table of an `okta` connection, as the operator writes it.
///
/// ```toml
/// base_url = "https://acme.okta.com"
/// token = "${OKTA_TOKEN}"
/// page_size = 200              # 1..=200
/// requests_per_minute = 600    # 0: no fixed quota, pace from X-Rate-Limit-* headers only
/// max_in_flight = 4
/// timeout_secs = 300
/// keep_raw = false
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaConfig {
    /// The org URL, e.g. `https://acme.okta.com` (no path).
    pub base_url: String,
    /// An Okta API token, sent as `Authorization: SSWS <token>`.
    pub token: SecretString,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub keep_raw: bool,
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}
fn default_requests_per_minute() -> u32 {
    DEFAULT_REQUESTS_PER_MINUTE
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

/// A validated config.
#[derive(Debug)]
pub struct Settings {
    /// Scheme, host and port of the org (`https://acme.okta.com`), no trailing slash.
    pub base_url: Url,
    pub token: SecretString,
    pub page_size: u32,
    /// 0: no fixed quota.
    pub requests_per_minute: u32,
    pub max_in_flight: usize,
    /// Whole-request timeout: a hung answer is cut after it and retried.
    pub timeout: std::time::Duration,
    pub keep_raw: bool,
}

impl Settings {
    /// Parse and validate a connection's config table. No I/O.
    pub fn parse(config: serde_json::Value) -> Result<Self, ConfigError> {
        let cfg: OktaConfig = corral_core::parse_config(config)?;
        Self::validate(cfg)
    }

    pub fn validate(cfg: OktaConfig) -> Result<Self, ConfigError> {
        let base_url = parse_base_url(&cfg.base_url)?;
        let token = parse_token(&cfg.token)?;
        if !(1..=MAX_PAGE_SIZE).contains(&cfg.page_size) {
            return Err(ConfigError::field("page_size", format!("must be 1..={MAX_PAGE_SIZE}")));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&cfg.max_in_flight) {
            return Err(ConfigError::field("max_in_flight", format!("must be 1..={MAX_IN_FLIGHT}")));
        }
        if !(1..=3600).contains(&cfg.timeout_secs) {
            return Err(ConfigError::field("timeout_secs", "must be 1..=3600"));
        }
        Ok(Settings {
            base_url,
            token,
            page_size: cfg.page_size,
            requests_per_minute: cfg.requests_per_minute,
            max_in_flight: cfg.max_in_flight,
            timeout: std::time::Duration::from_secs(cfg.timeout_secs),
            keep_raw: cfg.keep_raw,
        })
    }
}

/// The org URL: http(s), a host, no path beyond `/`, no query, no credentials.
fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    let bad = |msg: &str| ConfigError::field("base_url", msg);
    let url = Url::parse(raw.trim()).map_err(|_| bad("is not a valid URL (expected e.g. https://acme.okta.com)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http(s) URL with a host, e.g. https://acme.okta.com"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain credentials; put the API token in `token`"));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(bad("must be the org URL without a path, e.g. https://acme.okta.com"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url)
}

/// The API token, without an `SSWS ` prefix an operator may have pasted with it.
fn parse_token(token: &SecretString) -> Result<SecretString, ConfigError> {
    let t = token.expose_secret().trim();
    let t = match t.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ssws") => rest.trim_start(),
        _ if t.eq_ignore_ascii_case("ssws") => "",
        _ => t,
    };
    if t.is_empty() {
        return Err(ConfigError::field("token", "is empty"));
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::field("token", "contains whitespace or control characters"));
    }
    Ok(SecretString::from(t.to_owned()))
}

/// The fields `corral adapters` documents.
pub fn config_fields() -> Vec<ConfigField> {
    vec![
        ConfigField::required("base_url", FieldType::Url, "The Okta org URL, e.g. https://acme.okta.com (no path)."),
        ConfigField::required("token", FieldType::String, "An Okta API token (sent as `Authorization: SSWS <token>`).")
            .secret(),
        ConfigField::optional("page_size", FieldType::Integer, "Users per request (`limit`), 1..=200. Default 200."),
        ConfigField::optional(
            "requests_per_minute",
            FieldType::Integer,
            "Fixed request quota for this connection. Default 600 (Okta's /api/v1/users limit on paid orgs); \
             0 = no fixed quota. The client also paces itself from Okta's X-Rate-Limit-* headers and waits \
             out 429s until X-Rate-Limit-Reset.",
        ),
        ConfigField::optional(
            "max_in_flight",
            FieldType::Integer,
            "Requests in flight at once, 1..=75. Default 4 (paging is sequential; Okta allows ~75 per org).",
        ),
        ConfigField::optional(
            "timeout_secs",
            FieldType::Integer,
            "Whole-request timeout in seconds (connect, send, read the answer), 1..=3600. A request that \
             takes longer is cut and retried. Default 300.",
        ),
        ConfigField::optional(
            "keep_raw",
            FieldType::Boolean,
            "Keep each Okta user record on its asset. Default false.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Settings, String> {
        Settings::parse(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let s = parse(json!({"base_url": "https://acme.okta.com", "token": "abc"})).expect("valid");
        assert_eq!(s.page_size, 200);
        assert_eq!(s.requests_per_minute, 600);
        assert_eq!(s.max_in_flight, 4);
        assert_eq!(s.timeout, std::time::Duration::from_secs(300));
        assert!(!s.keep_raw);
        assert_eq!(s.base_url.as_str(), "https://acme.okta.com/");
    }

    #[test]
    fn errors_name_the_field_and_never_the_value() {
        let cases = [
            (json!({"token": "hunter2-secret"}), "config field `base_url`: is required"),
            (json!({"base_url": "https://a.okta.com"}), "config field `token`: is required"),
            (json!({"base_url": "not a url", "token": "hunter2-secret"}), "config field `base_url`"),
            (json!({"base_url": "ftp://a.okta.com", "token": "hunter2-secret"}), "config field `base_url`"),
            (json!({"base_url": "https://a.okta.com/api/v1", "token": "hunter2-secret"}), "without a path"),
            (json!({"base_url": "https://u:hunter2-secret@a.okta.com", "token": "x"}), "must not contain credentials"),
            (json!({"base_url": "https://a.okta.com", "token": "  "}), "config field `token`: is empty"),
            (json!({"base_url": "https://a.okta.com", "token": "SSWS "}), "config field `token`: is empty"),
            (json!({"base_url": "https://a.okta.com", "token": "hunter2\nsecret"}), "config field `token`"),
            (json!({"base_url": "https://a.okta.com", "token": 12345678}), "config field `token`"),
            (json!({"base_url": "https://a.okta.com", "token": "hunter2-secret", "page_size": 0}), "page_size"),
            (json!({"base_url": "https://a.okta.com", "token": "hunter2-secret", "page_size": 201}), "page_size"),
            (json!({"base_url": "https://a.okta.com", "token": "hunter2-secret", "max_in_flight": 0}), "max_in_flight"),
            (json!({"base_url": "https://a.okta.com", "token": "hunter2-secret", "timeout_secs": 0}), "timeout_secs"),
            (json!({"base_url": "https://a.okta.com", "token": "hunter2-secret", "limit": 5}), "unknown field `limit`"),
        ];
        for (cfg, want) in cases {
            let err = parse(cfg.clone()).err().unwrap_or_else(|| panic!("{cfg} should be rejected"));
            assert!(err.contains(want), "{cfg}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn ssws_prefix_is_stripped_and_debug_redacts_the_token() {
        let s = parse(json!({"base_url": "http://127.0.0.1:8080/", "token": "SSWS hunter2-secret"})).expect("valid");
        assert_eq!(s.token.expose_secret(), "hunter2-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        let zero = parse(json!({"base_url": "https://a.okta.com", "token": "t", "requests_per_minute": 0}));
        assert_eq!(zero.map(|s| s.requests_per_minute).ok(), Some(0));
    }
}
