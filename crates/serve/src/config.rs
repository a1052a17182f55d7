//! The `[serve]` table of corral.toml and what it resolves to.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:8080"         # default; beyond loopback only with a token
//! token = "${CORRAL_API_TOKEN}"     # a secret reference, resolved by the binary
//! schedule = { every = "4h" }       # connections without a schedule of their own
//! time_zone = "UTC"                 # cron schedules' default time zone
//! jitter = "1m"                     # the most a cron occurrence is delayed by, per connection
//! grace_period = "5m"               # SIGTERM: how long running syncs may finish before they are interrupted
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::schedule::{ScheduleDefaults, ScheduleSpec, parse_duration, parse_time_zone};

/// The `[serve]` table as written. Its `token` is still a secret
/// reference (`${ENV}`, `${file:...}`): the binary resolves it only when
/// serving, so `corral sync` never needs it. `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    #[serde(default = "default_jitter")]
    pub jitter: String,
    #[serde(default = "default_grace")]
    pub grace_period: String,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "[hidden]"))
            .field("schedule", &self.schedule)
            .field("time_zone", &self.time_zone)
            .field("jitter", &self.jitter)
            .field("grace_period", &self.grace_period)
            .finish()
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            token: None,
            schedule: None,
            time_zone: default_time_zone(),
            jitter: default_jitter(),
            grace_period: default_grace(),
        }
    }
}

/// Where `corral serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_time_zone() -> String {
    "UTC".to_string()
}
fn default_jitter() -> String {
    "1m".to_string()
}
fn default_grace() -> String {
    "5m".to_string()
}

/// The service's settings, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Every route but `/healthz` requires it when set.
    pub token: Option<SecretString>,
    /// For connections without a schedule of their own (None: they run on demand only).
    pub default_schedule: Option<ScheduleSpec>,
    pub defaults: ScheduleDefaults,
    pub grace_period: Duration,
}

/// Tokens shorter than this are refused: guessable.
pub const MIN_TOKEN_LEN: usize = 16;

impl ServeConfig {
    /// Check the table; `token` is the resolved value of its `token` (if any).
    pub fn settings(&self, token: Option<SecretString>) -> Result<Settings, String> {
        use secrecy::ExposeSecret;
        let listen: SocketAddr = self.listen.trim().parse().map_err(|_| {
            format!("serve.listen: `{}` is not an address and port like 127.0.0.1:8080 or [::1]:8080", self.listen)
        })?;
        if let Some(t) = &token
            && t.expose_secret().chars().count() < MIN_TOKEN_LEN
        {
            return Err(format!("serve.token: the API token must be at least {MIN_TOKEN_LEN} characters long"));
        }
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(format!(
                "serve.listen: {listen} is reachable beyond this machine, but no API token is configured: set \
                 serve.token (e.g. token = \"${{CORRAL_API_TOKEN}}\"), or listen on 127.0.0.1"
            ));
        }
        let time_zone = parse_time_zone(&self.time_zone).map_err(|e| format!("serve.time_zone: {e}"))?;
        let jitter = parse_duration("serve.jitter", &self.jitter).map_err(|e| e.to_string())?;
        let grace_period = parse_duration("serve.grace_period", &self.grace_period).map_err(|e| e.to_string())?;
        if let Some(spec) = &self.schedule {
            // Checked here once so that the error names the table.
            let defaults = ScheduleDefaults { time_zone, jitter };
            crate::schedule::Schedule::parse(spec, &defaults, "").map_err(|e| format!("serve.schedule: {e}"))?;
        }
        Ok(Settings {
            listen,
            token,
            default_schedule: self.schedule.clone(),
            defaults: ScheduleDefaults { time_zone, jitter },
            grace_period,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml_text: &str) -> ServeConfig {
        serde_json::from_value(toml_to_json(toml_text)).expect("serve table")
    }

    /// A tiny TOML subset for tests: `key = "value"` lines.
    fn toml_to_json(text: &str) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').expect("key = value");
            map.insert(k.trim().to_string(), serde_json::Value::String(v.trim().trim_matches('"').to_string()));
        }
        serde_json::Value::Object(map)
    }

    #[test]
    fn defaults_listen_on_loopback_without_a_token() {
        let s = ServeConfig::default().settings(None).expect("defaults");
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert!(s.token.is_none());
        assert_eq!(s.grace_period, Duration::from_secs(300));
        assert_eq!(s.defaults.jitter, Duration::from_secs(60));
    }

    #[test]
    fn beyond_loopback_needs_a_token_and_a_long_one() {
        let c = table("listen = \"0.0.0.0:8080\"");
        let err = c.settings(None).expect_err("no token");
        assert!(err.contains("no API token") && err.contains("0.0.0.0:8080"), "{err}");
        let err = c.settings(Some(SecretString::from("short"))).expect_err("short token");
        assert!(err.contains("at least 16") && !err.contains("short\""), "{err}");
        assert!(c.settings(Some(SecretString::from("a-long-enough-api-token"))).is_ok());
        assert!(table("listen = \"[::1]:9000\"").settings(None).is_ok(), "IPv6 loopback needs no token");
    }

    #[test]
    fn bad_values_name_their_setting_and_debug_hides_the_token() {
        let err = table("listen = \"localhost\"").settings(None).expect_err("no port");
        assert!(err.contains("serve.listen"), "{err}");
        let err = table("time_zone = \"Moon/Base\"").settings(None).expect_err("tz");
        assert!(err.contains("serve.time_zone"), "{err}");
        let err = table("grace_period = \"a while\"").settings(None).expect_err("grace");
        assert!(err.contains("serve.grace_period"), "{err}");
        let c = ServeConfig { token: Some("${CORRAL_API_TOKEN}".into()), ..Default::default() };
        assert!(!format!("{c:?}").contains("CORRAL_API_TOKEN"));
    }
}
