//! The Qualys adapter's config: parsed with [`corral_core::parse_config`],
//! then validated into [`Settings`]. Every error names the offending field and
//! never quotes a value.

use std::time::Duration;

use corral_core::{ConfigError, ConfigField, FieldType};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Qualys's US1 platform; every other platform (EU, IN, private) has its own.
pub const DEFAULT_BASE_URL: &str = "https://qualysapi.qualys.com";
/// Hosts per answer (`truncation_limit`): Qualys's own default.
pub const DEFAULT_TRUNCATION_LIMIT: u32 = 1_000;
/// Hosts per raw page handed to the pipeline.
pub const DEFAULT_HOSTS_PER_PAGE: u32 = 100;
/// API calls at once: the concurrency limit of most subscriptions.
pub const DEFAULT_CONCURRENCY: u32 = 2;
/// The window of Qualys's per-user API rate limit (`X-RateLimit-Window-Sec`).
pub const DEFAULT_RATE_WINDOW_SECS: u64 = 3_600;
pub const DEFAULT_RESULTS_MAX_CHARS: u32 = 2_000;

/// The config table of a `qualys` connection, as written by the operator.
///
/// `Debug` is safe: the password prints as `[REDACTED]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualysConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    pub username: String,
    pub password: SecretString,
    #[serde(default = "default_truncation_limit")]
    pub truncation_limit: u32,
    #[serde(default = "default_hosts_per_page")]
    pub hosts_per_page: u32,
    #[serde(default)]
    pub show_results: bool,
    #[serde(default = "default_results_max_chars")]
    pub results_max_chars: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default)]
    pub requests_per_hour: Option<u32>,
    #[serde(default = "default_rate_window_secs")]
    pub rate_window_secs: u64,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_truncation_limit() -> u32 {
    DEFAULT_TRUNCATION_LIMIT
}
fn default_hosts_per_page() -> u32 {
    DEFAULT_HOSTS_PER_PAGE
}
fn default_results_max_chars() -> u32 {
    DEFAULT_RESULTS_MAX_CHARS
}
fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}
fn default_rate_window_secs() -> u64 {
    DEFAULT_RATE_WINDOW_SECS
}
fn default_timeout_secs() -> u64 {
    600
}

/// A validated config.
#[derive(Debug)]
pub struct Settings {
    pub base_url: String,
    pub username: String,
    pub password: SecretString,
    /// Hosts per answer (`truncation_limit`, never 0: an untruncated answer has no bound).
    pub truncation_limit: u32,
    /// Hosts per raw page (also capped by the engine's `max_page_records`).
    pub hosts_per_page: usize,
    /// Ask for detections' `RESULTS` (`show_results=1`), kept cut to `results_max_chars`.
    pub show_results: bool,
    pub results_max_chars: usize,
    /// API calls in flight at once (both streams together).
    pub concurrency: usize,
    pub requests_per_hour: Option<u32>,
    /// The rate-limit window assumed until the vendor's answers say otherwise.
    pub rate_window: Duration,
    /// Whole-request timeout (a whole answer read): a hung answer is cut and retried.
    pub timeout: Duration,
}

/// Parse and validate a connection's config table. No I/O.
pub fn parse(value: serde_json::Value) -> Result<Settings, ConfigError> {
    let c: QualysConfig = corral_core::parse_config(value)?;
    let base_url = c.base_url.trim().trim_end_matches('/').to_string();
    if base_url.is_empty() {
        return Err(ConfigError::field("base_url", "must not be empty"));
    }
    if c.username.trim().is_empty() {
        return Err(ConfigError::field("username", "must not be empty"));
    }
    if c.password.expose_secret().is_empty() {
        return Err(ConfigError::field("password", "must not be empty"));
    }
    let in_range = |field: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(ConfigError::field(field, format!("must be between {lo} and {hi}")))
        }
    };
    in_range("truncation_limit", c.truncation_limit.into(), 1, 1_000_000)?;
    in_range("hosts_per_page", c.hosts_per_page.into(), 1, 10_000)?;
    in_range("results_max_chars", c.results_max_chars.into(), 0, 1_000_000)?;
    in_range("concurrency", c.concurrency.into(), 1, 16)?;
    if let Some(n) = c.requests_per_hour {
        in_range("requests_per_hour", n.into(), 1, 1_000_000)?;
    }
    in_range("rate_window_secs", c.rate_window_secs, 1, 24 * 3600)?;
    in_range("timeout_secs", c.timeout_secs, 1, 3600)?;
    Ok(Settings {
        base_url,
        username: c.username.trim().to_string(),
        password: c.password,
        truncation_limit: c.truncation_limit,
        hosts_per_page: c.hosts_per_page as usize,
        show_results: c.show_results,
        results_max_chars: c.results_max_chars as usize,
        concurrency: c.concurrency as usize,
        requests_per_hour: c.requests_per_hour,
        rate_window: Duration::from_secs(c.rate_window_secs),
        timeout: Duration::from_secs(c.timeout_secs),
    })
}

/// Every config field, as `corral adapters` documents it.
pub fn fields() -> Vec<ConfigField> {
    vec![
        ConfigField::optional(
            "base_url",
            FieldType::Url,
            "API server of the subscription's platform. Default https://qualysapi.qualys.com (US1); EU1 is \
             https://qualysapi.qualys.eu, others are listed in the Qualys platform identification page.",
        ),
        ConfigField::required("username", FieldType::String, "Qualys user corral syncs as (HTTP Basic)."),
        ConfigField::required("password", FieldType::String, "That user's password.").secret(),
        ConfigField::optional(
            "truncation_limit",
            FieldType::Integer,
            "Hosts per answer (`truncation_limit`), 1..=1000000; further hosts are fetched through the \
             answer's WARNING URL (`id_min`). An answer is held in memory once while its pages are in the \
             pipeline: lower it when hosts carry many detections. Default 1000.",
        ),
        ConfigField::optional(
            "hosts_per_page",
            FieldType::Integer,
            "Hosts per page handed to the normalize pool, 1..=10000 (at most the engine's max_page_records). \
             Default 100.",
        ),
        ConfigField::optional(
            "show_results",
            FieldType::Boolean,
            "Ask for each detection's scan RESULTS (`show_results=1`; much larger answers) and keep them, cut \
             to results_max_chars, as the `results` attribute. Default false (`show_results=0`).",
        ),
        ConfigField::optional(
            "results_max_chars",
            FieldType::Integer,
            "Characters of RESULTS kept per detection when show_results is on (0..=1000000); longer results \
             are cut and flagged `results_truncated`. Default 2000.",
        ),
        ConfigField::optional(
            "concurrency",
            FieldType::Integer,
            "Most API calls in flight at once, both streams together, 1..=16. Until Qualys's first answer \
             announces the subscription's limit (`X-Concurrency-Limit-Limit`) one call at a time, then the \
             lower of the two. Default 2.",
        ),
        ConfigField::optional(
            "requests_per_hour",
            FieldType::Integer,
            "Pace calls at this many per hour. Default: paced by Qualys's `X-RateLimit-*` headers; a 409 \
             over the limit waits `X-RateLimit-ToWait-Sec`.",
        ),
        ConfigField::optional(
            "rate_window_secs",
            FieldType::Integer,
            "The rate-limit window assumed for the `X-RateLimit-Remaining` budget (the subscription's \
             `X-RateLimit-Window-Sec`), 1..=86400. Default 3600.",
        ),
        ConfigField::optional(
            "timeout_secs",
            FieldType::Integer,
            "Whole-request timeout in seconds (reading a whole answer included), 1..=3600: a hung answer is cut \
             after it and retried. Default 600.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"username": "corral_api", "password": "pw-hunter2"})
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut cfg = base();
        if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        cfg
    }

    #[test]
    fn defaults() {
        let s = parse(base()).expect("valid");
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert_eq!(s.truncation_limit, 1000);
        assert_eq!(s.hosts_per_page, 100);
        assert_eq!(s.concurrency, 2);
        assert!(!s.show_results);
        assert_eq!(s.rate_window, Duration::from_secs(3600));
    }

    #[test]
    fn errors_name_the_field_and_never_the_secret() {
        let cases = [
            (json!({"password": "pw-hunter2"}), "username"),
            (json!({"username": "u"}), "password"),
            (json!({"username": " ", "password": "pw-hunter2"}), "username"),
            (json!({"username": "u", "password": 12345678}), "password"),
            (with(json!({"truncation_limit": 0})), "truncation_limit"),
            (with(json!({"hosts_per_page": 0})), "hosts_per_page"),
            (with(json!({"concurrency": 0})), "concurrency"),
            (with(json!({"requests_per_hour": 0})), "requests_per_hour"),
            (with(json!({"base_url": ""})), "base_url"),
        ];
        for (cfg, field) in cases {
            let msg = parse(cfg.clone()).expect_err("invalid").to_string();
            assert!(msg.contains(&format!("`{field}`")), "{cfg} -> {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let s = parse(base()).expect("valid");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
