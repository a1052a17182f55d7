//! The Tenable adapter's config: parsed with [`corral_core::parse_config`],
//! then validated into [`Settings`]. Every error names the offending field and
//! never quotes a value.

use std::time::Duration;

use corral_core::{ConfigError, ConfigField, FieldType};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Tenable Vulnerability Management (tenable.io).
pub const DEFAULT_BASE_URL: &str = "https://cloud.tenable.com";
/// Assets per asset-export chunk: Tenable accepts 100..=10000.
pub const DEFAULT_ASSETS_CHUNK_SIZE: u32 = 1_000;
/// Assets whose findings make one vulnerability-export chunk: Tenable accepts 50..=5000.
pub const DEFAULT_VULNS_NUM_ASSETS: u32 = 50;
pub const DEFAULT_CHUNK_CONCURRENCY: u32 = 2;
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 2_000;
pub const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_EXPORT_TIMEOUT_SECS: u64 = 6 * 3600;
pub const DEFAULT_CONFLICT_WAIT_SECS: u64 = 3600;
pub const DEFAULT_FULL_RESYNC_EVERY: u32 = 24;

/// The config table of a `tenable` connection, as written by the operator.
///
/// `Debug` is safe: the keys print as `[REDACTED]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenableConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    pub access_key: SecretString,
    pub secret_key: SecretString,
    #[serde(default = "default_assets_chunk_size")]
    pub assets_chunk_size: u32,
    #[serde(default = "default_vulns_num_assets")]
    pub vulns_num_assets: u32,
    #[serde(default = "default_chunk_concurrency")]
    pub chunk_concurrency: u32,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_max_poll_interval_ms")]
    pub max_poll_interval_ms: u64,
    #[serde(default = "default_export_timeout_secs")]
    pub export_timeout_secs: u64,
    #[serde(default = "default_conflict_wait_secs")]
    pub conflict_wait_secs: u64,
    #[serde(default = "default_full_resync_every")]
    pub full_resync_every: u32,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub keep_raw: bool,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_assets_chunk_size() -> u32 {
    DEFAULT_ASSETS_CHUNK_SIZE
}
fn default_vulns_num_assets() -> u32 {
    DEFAULT_VULNS_NUM_ASSETS
}
fn default_chunk_concurrency() -> u32 {
    DEFAULT_CHUNK_CONCURRENCY
}
fn default_poll_interval_ms() -> u64 {
    DEFAULT_POLL_INTERVAL_MS
}
fn default_max_poll_interval_ms() -> u64 {
    DEFAULT_MAX_POLL_INTERVAL_MS
}
fn default_export_timeout_secs() -> u64 {
    DEFAULT_EXPORT_TIMEOUT_SECS
}
fn default_conflict_wait_secs() -> u64 {
    DEFAULT_CONFLICT_WAIT_SECS
}
fn default_full_resync_every() -> u32 {
    DEFAULT_FULL_RESYNC_EVERY
}
fn default_timeout_secs() -> u64 {
    300
}

/// A validated config.
#[derive(Debug)]
pub struct Settings {
    pub base_url: String,
    pub access_key: SecretString,
    pub secret_key: SecretString,
    pub assets_chunk_size: u32,
    pub vulns_num_assets: u32,
    pub chunk_concurrency: usize,
    /// First wait between status polls (doubled while nothing new appears).
    pub poll_interval: Duration,
    /// The longest wait between status polls.
    pub max_poll_interval: Duration,
    /// An export not finished after this long is cancelled and fails its stream.
    pub export_timeout: Duration,
    /// How long a refused export (409: too many running, or a duplicate) is retried.
    pub conflict_wait: Duration,
    /// Every n-th vulnerabilities run is a full export (1: every run).
    pub full_resync_every: u32,
    pub requests_per_minute: Option<u32>,
    /// Whole-request timeout: a hung answer is cut after it and retried.
    pub timeout: Duration,
    pub keep_raw: bool,
}

/// Parse and validate a connection's config table. No I/O.
pub fn parse(value: serde_json::Value) -> Result<Settings, ConfigError> {
    let c: TenableConfig = corral_core::parse_config(value)?;
    let base_url = c.base_url.trim().trim_end_matches('/').to_string();
    if base_url.is_empty() {
        return Err(ConfigError::field("base_url", "must not be empty"));
    }
    if c.access_key.expose_secret().trim().is_empty() {
        return Err(ConfigError::field("access_key", "must not be empty"));
    }
    if c.secret_key.expose_secret().trim().is_empty() {
        return Err(ConfigError::field("secret_key", "must not be empty"));
    }
    let in_range = |field: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(ConfigError::field(field, format!("must be between {lo} and {hi}")))
        }
    };
    in_range("assets_chunk_size", c.assets_chunk_size.into(), 100, 10_000)?;
    in_range("vulns_num_assets", c.vulns_num_assets.into(), 50, 5_000)?;
    in_range("chunk_concurrency", c.chunk_concurrency.into(), 1, 16)?;
    in_range("poll_interval_ms", c.poll_interval_ms, 10, 600_000)?;
    in_range("max_poll_interval_ms", c.max_poll_interval_ms, 10, 600_000)?;
    if c.max_poll_interval_ms < c.poll_interval_ms {
        return Err(ConfigError::field("max_poll_interval_ms", "must not be below poll_interval_ms"));
    }
    in_range("export_timeout_secs", c.export_timeout_secs, 1, 7 * 24 * 3600)?;
    in_range("conflict_wait_secs", c.conflict_wait_secs, 0, 24 * 3600)?;
    in_range("full_resync_every", c.full_resync_every.into(), 1, 10_000)?;
    if let Some(rpm) = c.requests_per_minute {
        in_range("requests_per_minute", rpm.into(), 1, 1_000_000)?;
    }
    in_range("timeout_secs", c.timeout_secs, 1, 3600)?;
    Ok(Settings {
        base_url,
        access_key: c.access_key,
        secret_key: c.secret_key,
        assets_chunk_size: c.assets_chunk_size,
        vulns_num_assets: c.vulns_num_assets,
        chunk_concurrency: c.chunk_concurrency as usize,
        poll_interval: Duration::from_millis(c.poll_interval_ms),
        max_poll_interval: Duration::from_millis(c.max_poll_interval_ms),
        export_timeout: Duration::from_secs(c.export_timeout_secs),
        conflict_wait: Duration::from_secs(c.conflict_wait_secs),
        full_resync_every: c.full_resync_every,
        requests_per_minute: c.requests_per_minute,
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
            "API base URL. Default https://cloud.tenable.com (Tenable Vulnerability Management).",
        ),
        ConfigField::required("access_key", FieldType::String, "API access key of the user corral syncs as.").secret(),
        ConfigField::required("secret_key", FieldType::String, "API secret key of that user.").secret(),
        ConfigField::optional(
            "assets_chunk_size",
            FieldType::Integer,
            "Assets per chunk of the asset export (`chunk_size`, used by the assets and software streams), \
             100..=10000. Default 1000.",
        ),
        ConfigField::optional(
            "vulns_num_assets",
            FieldType::Integer,
            "Assets whose findings make one chunk of the vulnerability export (`num_assets`), 50..=5000. \
             A chunk is held in memory whole: keep it small when assets carry many findings. Default 50.",
        ),
        ConfigField::optional(
            "chunk_concurrency",
            FieldType::Integer,
            "Chunks downloaded at once per export, 1..=16; at most this many chunks per stream are held in \
             memory. Default 2.",
        ),
        ConfigField::optional(
            "poll_interval_ms",
            FieldType::Integer,
            "First wait between export status polls, in milliseconds; doubled while no new chunk appears, \
             up to max_poll_interval_ms. Default 2000.",
        ),
        ConfigField::optional(
            "max_poll_interval_ms",
            FieldType::Integer,
            "Longest wait between export status polls, in milliseconds. Default 30000.",
        ),
        ConfigField::optional(
            "export_timeout_secs",
            FieldType::Integer,
            "An export not finished after this many seconds is cancelled and its stream fails. Default 21600 (6 h).",
        ),
        ConfigField::optional(
            "conflict_wait_secs",
            FieldType::Integer,
            "How long an export Tenable refuses with 409 (too many exports running, or a duplicate of one \
             running) is retried, with backoff, before the stream fails. Default 3600.",
        ),
        ConfigField::optional(
            "full_resync_every",
            FieldType::Integer,
            "Every n-th run of the vulnerabilities stream exports every finding (and marks the ones no longer \
             exported stale); the runs between ask only for findings changed since the last complete export \
             started. 1: every run is a full export. Default 24.",
        ),
        ConfigField::optional(
            "requests_per_minute",
            FieldType::Integer,
            "Pace requests at this many per minute. Default: no pacing; 429 answers are waited out as their \
             Retry-After says.",
        ),
        ConfigField::optional(
            "timeout_secs",
            FieldType::Integer,
            "Whole-request timeout in seconds (a chunk download included), 1..=3600: a hung answer is cut \
             after it and retried. Default 300.",
        ),
        ConfigField::optional(
            "keep_raw",
            FieldType::Boolean,
            "Keep each record as received on its asset. Default false.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"access_key": "ak-hunter2", "secret_key": "sk-hunter2"})
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
        assert_eq!(s.assets_chunk_size, 1000);
        assert_eq!(s.vulns_num_assets, 50);
        assert_eq!(s.chunk_concurrency, 2);
        assert_eq!(s.full_resync_every, 24);
        assert_eq!(s.requests_per_minute, None);
        assert!(!s.keep_raw);
    }

    #[test]
    fn errors_name_the_field_and_never_the_secret() {
        let cases = [
            (json!({"secret_key": "sk-hunter2"}), "access_key"),
            (json!({"access_key": "ak-hunter2"}), "secret_key"),
            (json!({"access_key": " ", "secret_key": "sk-hunter2"}), "access_key"),
            (json!({"access_key": "ak-hunter2", "secret_key": 12345678}), "secret_key"),
            (with(json!({"assets_chunk_size": 99})), "assets_chunk_size"),
            (with(json!({"assets_chunk_size": 10_001})), "assets_chunk_size"),
            (with(json!({"vulns_num_assets": 49})), "vulns_num_assets"),
            (with(json!({"chunk_concurrency": 0})), "chunk_concurrency"),
            (with(json!({"poll_interval_ms": 5000, "max_poll_interval_ms": 1000})), "max_poll_interval_ms"),
            (with(json!({"full_resync_every": 0})), "full_resync_every"),
            (with(json!({"requests_per_minute": 0})), "requests_per_minute"),
            (with(json!({"base_url": ""})), "base_url"),
        ];
        for (cfg, field) in cases {
            let msg = parse(cfg.clone()).expect_err("invalid").to_string();
            assert!(msg.contains(&format!("`{field}`")), "{cfg} -> {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn debug_redacts_the_keys() {
        let s = parse(base()).expect("valid");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
