//! The CrowdStrike adapter's config: parsed with [`corral_core::parse_config`],
//! then validated into [`Settings`]. Every error names the offending field and
//! never quotes a value.

use std::time::Duration;

use corral_core::{ConfigError, ConfigField, FieldType};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The public CrowdStrike cloud (US-1). Other clouds: `https://api.us-2.crowdstrike.com`,
/// `https://api.eu-1.crowdstrike.com`, `https://api.laggar.gcw.crowdstrike.com`.
pub const DEFAULT_BASE_URL: &str = "https://api.crowdstrike.com";
/// The scroll endpoint accepts up to 10,000 ids per page.
pub const MAX_IDS_PAGE_SIZE: u32 = 10_000;
pub const DEFAULT_IDS_PAGE_SIZE: u32 = 5_000;
/// `POST /devices/entities/devices/v2` takes up to 5,000 ids per call.
pub const MAX_DETAILS_BATCH: u32 = 5_000;
pub const DEFAULT_DETAILS_BATCH: u32 = 5_000;
pub const DEFAULT_DETAILS_CONCURRENCY: u32 = 4;
pub const MAX_DETAILS_CONCURRENCY: u32 = 64;
/// Listed host ids held in memory while details catch up; the rest wait in a temp file.
pub const DEFAULT_IDS_IN_MEMORY: u32 = 100_000;
/// The vendor's documented limit: 6,000 requests per minute per customer.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 6_000;
/// The window `X-Ratelimit-Limit` counts over (CrowdStrike: one minute, sliding).
pub const DEFAULT_RATE_WINDOW_SECS: u64 = 60;

/// The config table of a `crowdstrike` connection, as written by the operator.
///
/// `Debug` is safe: the secret prints as `[REDACTED]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrowdStrikeConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// An FQL filter for the host listing (`platform_name:'Windows'`).
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default = "default_ids_page_size")]
    pub ids_page_size: u32,
    #[serde(default = "default_details_batch")]
    pub details_batch: u32,
    #[serde(default = "default_details_concurrency")]
    pub details_concurrency: u32,
    #[serde(default = "default_ids_in_memory")]
    pub ids_in_memory: u32,
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    #[serde(default = "default_rate_window_secs")]
    pub rate_window_secs: u64,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub keep_raw: bool,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_ids_page_size() -> u32 {
    DEFAULT_IDS_PAGE_SIZE
}
fn default_details_batch() -> u32 {
    DEFAULT_DETAILS_BATCH
}
fn default_details_concurrency() -> u32 {
    DEFAULT_DETAILS_CONCURRENCY
}
fn default_ids_in_memory() -> u32 {
    DEFAULT_IDS_IN_MEMORY
}
fn default_requests_per_minute() -> u32 {
    DEFAULT_REQUESTS_PER_MINUTE
}
fn default_rate_window_secs() -> u64 {
    DEFAULT_RATE_WINDOW_SECS
}
fn default_timeout_secs() -> u64 {
    300
}

/// A validated config.
#[derive(Debug)]
pub struct Settings {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub filter: Option<String>,
    pub ids_page_size: usize,
    pub details_batch: usize,
    pub details_concurrency: usize,
    pub ids_in_memory: usize,
    pub requests_per_minute: u32,
    pub rate_window: Duration,
    /// Whole-request timeout: a hung answer is cut after it and retried.
    pub timeout: Duration,
    pub keep_raw: bool,
}

/// Parse and validate a connection's config table. No I/O.
pub fn parse(value: serde_json::Value) -> Result<Settings, ConfigError> {
    let c: CrowdStrikeConfig = corral_core::parse_config(value)?;
    let base_url = c.base_url.trim().trim_end_matches('/').to_string();
    if base_url.is_empty() {
        return Err(ConfigError::field("base_url", "must not be empty"));
    }
    let client_id = c.client_id.trim().to_string();
    if client_id.is_empty() {
        return Err(ConfigError::field("client_id", "must not be empty"));
    }
    if c.client_secret.expose_secret().trim().is_empty() {
        return Err(ConfigError::field("client_secret", "must not be empty"));
    }
    let filter = c.filter.map(|f| f.trim().to_string()).filter(|f| !f.is_empty());
    let in_range = |field: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(ConfigError::field(field, format!("must be between {lo} and {hi}")))
        }
    };
    in_range("ids_page_size", c.ids_page_size.into(), 1, MAX_IDS_PAGE_SIZE.into())?;
    in_range("details_batch", c.details_batch.into(), 1, MAX_DETAILS_BATCH.into())?;
    in_range("details_concurrency", c.details_concurrency.into(), 1, MAX_DETAILS_CONCURRENCY.into())?;
    in_range("ids_in_memory", c.ids_in_memory.into(), 1, 10_000_000)?;
    in_range("requests_per_minute", c.requests_per_minute.into(), 1, 1_000_000)?;
    in_range("rate_window_secs", c.rate_window_secs, 1, 3600)?;
    in_range("timeout_secs", c.timeout_secs, 1, 3600)?;
    Ok(Settings {
        base_url,
        client_id,
        client_secret: c.client_secret,
        filter,
        ids_page_size: c.ids_page_size as usize,
        details_batch: c.details_batch as usize,
        details_concurrency: c.details_concurrency as usize,
        ids_in_memory: c.ids_in_memory as usize,
        requests_per_minute: c.requests_per_minute,
        rate_window: Duration::from_secs(c.rate_window_secs),
        timeout: Duration::from_secs(c.timeout_secs),
        keep_raw: c.keep_raw,
    })
}

/// Every config field, as `corral adapters` documents it.
pub fn fields() -> Vec<ConfigField> {
    vec![
        ConfigField::optional(
            "base_url",
            FieldType::Url,
            "API base URL of the tenant's cloud. Default https://api.crowdstrike.com (US-1); \
             https://api.us-2.crowdstrike.com, https://api.eu-1.crowdstrike.com, https://api.laggar.gcw.crowdstrike.com.",
        ),
        ConfigField::required("client_id", FieldType::String, "OAuth2 API client id (scope Hosts: Read)."),
        ConfigField::required("client_secret", FieldType::String, "OAuth2 API client secret.").secret(),
        ConfigField::optional(
            "filter",
            FieldType::String,
            "FQL filter for the host listing, e.g. \"platform_name:'Windows'\". Default: every host. \
             Stale handling then covers only the hosts the filter matches.",
        ),
        ConfigField::optional(
            "ids_page_size",
            FieldType::Integer,
            "Host ids per scroll page (GET /devices/queries/devices-scroll/v1), 1..=10000. Default 5000.",
        ),
        ConfigField::optional(
            "details_batch",
            FieldType::Integer,
            "Host ids per details call (POST /devices/entities/devices/v2), 1..=5000. Default 5000.",
        ),
        ConfigField::optional(
            "details_concurrency",
            FieldType::Integer,
            "Details calls in flight at once, 1..=64. Default 4.",
        ),
        ConfigField::optional(
            "ids_in_memory",
            FieldType::Integer,
            "Listed host ids kept in memory while the details calls catch up, 1..=10000000. The scroll never \
             waits (its offset expires after two minutes): ids beyond this wait in a temporary file. Default 100000.",
        ),
        ConfigField::optional(
            "requests_per_minute",
            FieldType::Integer,
            "The API rate limit of the tenant (CrowdStrike: 6000 per minute, shared by every client of the tenant). \
             The client paces itself at 95 % of it and also slows down when X-Ratelimit-Remaining runs low. Default 6000.",
        ),
        ConfigField::optional(
            "rate_window_secs",
            FieldType::Integer,
            "Window the vendor's X-Ratelimit-Limit counts over, in seconds (CrowdStrike: 60, sliding). \
             Change only for a proxy or simulator with another window. Default 60.",
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
            "Keep each host record as received on its asset. Default false.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"client_id": "cid", "client_secret": "hunter2-secret"})
    }

    #[test]
    fn defaults() {
        let s = parse(base()).expect("valid");
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert_eq!(s.ids_page_size, 5000);
        assert_eq!(s.details_batch, 5000);
        assert_eq!(s.details_concurrency, 4);
        assert_eq!(s.requests_per_minute, 6000);
        assert_eq!(s.rate_window, Duration::from_secs(60));
        assert!(!s.keep_raw);
        assert_eq!(s.filter, None);
    }

    #[test]
    fn errors_name_the_field_and_never_the_secret() {
        let cases = [
            (json!({"client_secret": "hunter2-secret"}), "client_id"),
            (json!({"client_id": "cid"}), "client_secret"),
            (json!({"client_id": "cid", "client_secret": " "}), "client_secret"),
            (json!({"client_id": " ", "client_secret": "hunter2-secret"}), "client_id"),
            (json!({"client_id": "cid", "client_secret": 12345678}), "client_secret"),
            (json!({"client_id": "cid", "client_secret": "hunter2-secret", "ids_page_size": 10001}), "ids_page_size"),
            (json!({"client_id": "cid", "client_secret": "hunter2-secret", "ids_page_size": 0}), "ids_page_size"),
            (json!({"client_id": "cid", "client_secret": "hunter2-secret", "details_batch": 5001}), "details_batch"),
            (
                json!({"client_id": "cid", "client_secret": "hunter2-secret", "details_concurrency": 0}),
                "details_concurrency",
            ),
            (
                json!({"client_id": "cid", "client_secret": "hunter2-secret", "requests_per_minute": 0}),
                "requests_per_minute",
            ),
            (json!({"client_id": "cid", "client_secret": "hunter2-secret", "rate_window_secs": 0}), "rate_window_secs"),
            (json!({"client_id": "cid", "client_secret": "hunter2-secret", "base_url": ""}), "base_url"),
        ];
        for (cfg, field) in cases {
            let e = parse(cfg.clone()).expect_err("invalid");
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{field}`")), "{cfg} -> {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut cfg = base();
        cfg["page_size"] = json!(10);
        let msg = parse(cfg).expect_err("unknown field").to_string();
        assert!(msg.contains("page_size"), "{msg}");
    }

    #[test]
    fn debug_redacts_the_secret() {
        let s = parse(base()).expect("valid");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn blank_filter_is_none() {
        let mut cfg = base();
        cfg["filter"] = json!("  ");
        assert_eq!(parse(cfg).expect("valid").filter, None);
    }
}
