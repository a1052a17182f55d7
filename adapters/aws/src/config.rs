//! The AWS adapter's config: parsed with [`corral_core::parse_config`], then
//! validated into [`Settings`]. Every error names the offending field and
//! never quotes a value.

use std::time::Duration;

use corral_core::{ConfigError, ConfigField, FieldType};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// EC2's regional endpoints.
pub const DEFAULT_ENDPOINT: &str = "https://ec2.{region}.amazonaws.com";
/// STS's global endpoint (signed for `us-east-1`).
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.amazonaws.com";
pub const DEFAULT_STS_REGION: &str = "us-east-1";
/// Instances per `DescribeInstances` answer (EC2 allows 5..=1000).
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Calls per second per (account, region): under EC2's refill of 20 per
/// second for non-mutating actions, so the bucket is never emptied by us.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 10;
/// Scopes (account × region) a stream reads at once.
pub const DEFAULT_CONCURRENCY: u32 = 4;
/// An assumed role's session: an hour.
pub const DEFAULT_ROLE_SESSION_SECS: u64 = 3600;

/// One account to read: the key's own (no `role_arn`), or a role assumed in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// `arn:aws:iam::ACCOUNT:role/NAME`; absent: the access key's own account.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for, if any.
    #[serde(default)]
    pub external_id: Option<SecretString>,
}

/// The config table of an `aws` connection, as written by the operator.
///
/// `Debug` is safe: the secret key, session token and external ids print as `[REDACTED]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    #[serde(default)]
    pub session_token: Option<SecretString>,
    pub regions: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_sts_endpoint")]
    pub sts_endpoint: String,
    #[serde(default = "default_sts_region")]
    pub sts_region: String,
    #[serde(default = "default_role_session_name")]
    pub role_session_name: String,
    #[serde(default = "default_role_session_secs")]
    pub role_session_secs: u64,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.into()
}
fn default_sts_endpoint() -> String {
    DEFAULT_STS_ENDPOINT.into()
}
fn default_sts_region() -> String {
    DEFAULT_STS_REGION.into()
}
fn default_role_session_name() -> String {
    "corral".into()
}
fn default_role_session_secs() -> u64 {
    DEFAULT_ROLE_SESSION_SECS
}
fn default_page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}
fn default_rps() -> u32 {
    DEFAULT_REQUESTS_PER_SECOND
}
fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}
fn default_timeout_secs() -> u64 {
    60
}

/// How an account is reached.
#[derive(Debug, Clone)]
pub enum AccountAccess {
    /// The access key's own account (its id learnt from the answers' `ownerId`).
    Own,
    /// A role assumed with the access key.
    Role { arn: String, account: String, external_id: Option<SecretString> },
}

impl AccountAccess {
    /// For messages: `account 444455556666` or `the access key's account`.
    pub fn label(&self) -> String {
        match self {
            AccountAccess::Own => "the access key's account".into(),
            AccountAccess::Role { account, .. } => format!("account {account}"),
        }
    }
}

/// A validated config.
#[derive(Debug)]
pub struct Settings {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    pub regions: Vec<String>,
    pub accounts: Vec<AccountAccess>,
    /// The endpoint template, `{region}` in it.
    pub endpoint: String,
    pub sts_endpoint: String,
    pub sts_region: String,
    pub role_session_name: String,
    pub role_session: Duration,
    pub page_size: usize,
    pub requests_per_second: u32,
    pub concurrency: usize,
    pub timeout: Duration,
}

impl Settings {
    /// The endpoint of `region`.
    pub fn endpoint_of(&self, region: &str) -> String {
        self.endpoint.replace("{region}", region)
    }
}

fn valid_region(r: &str) -> bool {
    // `us-east-1`, `ap-southeast-2`, `us-gov-west-1`, `cn-north-1`.
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Parse and validate a connection's config table. No I/O.
pub fn parse(value: serde_json::Value) -> Result<Settings, ConfigError> {
    let c: AwsConfig = corral_core::parse_config(value)?;
    let key = c.access_key_id.trim();
    if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ConfigError::field("access_key_id", "must be an access key id (16 or more letters and digits)"));
    }
    if c.secret_access_key.expose_secret().trim().is_empty() {
        return Err(ConfigError::field("secret_access_key", "must not be empty"));
    }
    if c.session_token.as_ref().is_some_and(|t| t.expose_secret().trim().is_empty()) {
        return Err(ConfigError::field("session_token", "must not be empty when given"));
    }
    if c.regions.is_empty() {
        return Err(ConfigError::field("regions", "must name at least one region"));
    }
    let mut regions: Vec<String> = Vec::new();
    for r in &c.regions {
        let r = r.trim().to_string();
        if !valid_region(&r) {
            return Err(ConfigError::field("regions", "each must be a region name such as us-east-1"));
        }
        if regions.contains(&r) {
            return Err(ConfigError::field("regions", "names a region twice"));
        }
        regions.push(r);
    }
    let mut accounts = Vec::new();
    for a in c.accounts.iter() {
        match &a.role_arn {
            None => {
                if a.external_id.is_some() {
                    return Err(ConfigError::field("accounts", "external_id is only for an account with a role_arn"));
                }
                accounts.push(AccountAccess::Own);
            }
            Some(arn) => {
                let account = arn
                    .trim()
                    .strip_prefix("arn:aws:iam::")
                    .and_then(|r| r.split_once(":role/"))
                    .filter(|(acct, name)| {
                        acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
                    })
                    .map(|(acct, _)| acct.to_string());
                let Some(account) = account else {
                    return Err(ConfigError::field("accounts", "role_arn must be arn:aws:iam::ACCOUNT:role/NAME"));
                };
                accounts.push(AccountAccess::Role {
                    arn: arn.trim().into(),
                    account,
                    external_id: a.external_id.clone(),
                });
            }
        }
    }
    if accounts.is_empty() {
        accounts.push(AccountAccess::Own);
    }
    if accounts.iter().filter(|a| matches!(a, AccountAccess::Own)).count() > 1 {
        return Err(ConfigError::field("accounts", "names the access key's own account twice"));
    }
    let endpoint = c.endpoint.trim().trim_end_matches('/').to_string();
    if !endpoint.contains("{region}") {
        return Err(ConfigError::field("endpoint", "must contain {region}"));
    }
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
        return Err(ConfigError::field("endpoint", "must be an http(s) URL template"));
    }
    let sts_endpoint = c.sts_endpoint.trim().trim_end_matches('/').to_string();
    if !(sts_endpoint.starts_with("https://") || sts_endpoint.starts_with("http://")) {
        return Err(ConfigError::field("sts_endpoint", "must be an http(s) URL"));
    }
    if !valid_region(c.sts_region.trim()) {
        return Err(ConfigError::field("sts_region", "must be a region name such as us-east-1"));
    }
    let name = c.role_session_name.trim();
    if !(2..=64).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)) {
        return Err(ConfigError::field("role_session_name", "must be 2 to 64 letters, digits or _+=,.@-"));
    }
    let in_range = |field: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(ConfigError::field(field, format!("must be between {lo} and {hi}")))
        }
    };
    in_range("role_session_secs", c.role_session_secs, 900, 43_200)?;
    in_range("page_size", c.page_size.into(), 5, 1000)?;
    in_range("requests_per_second", c.requests_per_second.into(), 1, 1000)?;
    in_range("concurrency", c.concurrency.into(), 1, 64)?;
    in_range("timeout_secs", c.timeout_secs, 1, 3600)?;
    Ok(Settings {
        access_key_id: key.to_string(),
        secret_access_key: c.secret_access_key,
        session_token: c.session_token,
        regions,
        accounts,
        endpoint,
        sts_endpoint,
        sts_region: c.sts_region.trim().to_string(),
        role_session_name: name.to_string(),
        role_session: Duration::from_secs(c.role_session_secs),
        page_size: c.page_size as usize,
        requests_per_second: c.requests_per_second,
        concurrency: c.concurrency as usize,
        timeout: Duration::from_secs(c.timeout_secs),
    })
}

/// Every config field, as `corral adapters` documents it.
pub fn fields() -> Vec<ConfigField> {
    vec![
        ConfigField::required(
            "access_key_id",
            FieldType::String,
            "Access key id of the IAM user (or role session) corral signs with.",
        ),
        ConfigField::required("secret_access_key", FieldType::String, "Its secret access key.").secret(),
        ConfigField::optional(
            "session_token",
            FieldType::String,
            "Session token, when the access key is temporary (an STS session made outside corral).",
        )
        .secret(),
        ConfigField::required(
            "regions",
            FieldType::List,
            "Regions to list instances in, e.g. [\"us-east-1\", \"eu-west-1\"]; each is read in every account.",
        ),
        ConfigField::optional(
            "accounts",
            FieldType::List,
            "Accounts to read: a list of tables, each `{ role_arn = \"arn:aws:iam::ACCOUNT:role/NAME\", external_id = \
             \"...\" }` (a role corral assumes with the access key, sessions of role_session_secs renewed before they \
             end) or `{}` (the access key's own account). Default: the access key's own account only.",
        ),
        ConfigField::optional(
            "endpoint",
            FieldType::String,
            "EC2 endpoint template, `{region}` replaced by each region. Default https://ec2.{region}.amazonaws.com.",
        ),
        ConfigField::optional(
            "sts_endpoint",
            FieldType::Url,
            "STS endpoint for AssumeRole. Default https://sts.amazonaws.com.",
        ),
        ConfigField::optional(
            "sts_region",
            FieldType::String,
            "Region STS requests are signed for (us-east-1 for the global endpoint, else the regional endpoint's). Default us-east-1.",
        ),
        ConfigField::optional(
            "role_session_name",
            FieldType::String,
            "RoleSessionName of assumed-role sessions. Default corral.",
        ),
        ConfigField::optional(
            "role_session_secs",
            FieldType::Integer,
            "Lifetime asked for assumed-role sessions (DurationSeconds), 900..=43200, at most the role's maximum. Default 3600.",
        ),
        ConfigField::optional(
            "page_size",
            FieldType::Integer,
            "Instances per DescribeInstances answer (MaxResults), 5..=1000. Default 1000.",
        ),
        ConfigField::optional(
            "requests_per_second",
            FieldType::Integer,
            "Calls per second per account and region (EC2 throttles each with its own token bucket), 1..=1000. Default 10.",
        ),
        ConfigField::optional(
            "concurrency",
            FieldType::Integer,
            "Account/region pairs a stream reads at once, 1..=64. Default 4.",
        ),
        ConfigField::optional(
            "timeout_secs",
            FieldType::Integer,
            "Whole-request timeout in seconds, 1..=3600. Default 60.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalr-hunter2", "regions": ["us-east-1"]})
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut cfg = base();
        if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        cfg
    }

    #[test]
    fn defaults_and_accounts() {
        let s = parse(base()).expect("valid");
        assert_eq!(s.endpoint_of("eu-west-1"), "https://ec2.eu-west-1.amazonaws.com");
        assert!(matches!(s.accounts.as_slice(), [AccountAccess::Own]));
        assert_eq!((s.page_size, s.concurrency, s.role_session), (1000, 4, Duration::from_secs(3600)));
        let s = parse(with(json!({"accounts": [{}, {"role_arn": "arn:aws:iam::444455556666:role/Reader"}]})))
            .expect("valid");
        assert!(matches!(&s.accounts[1], AccountAccess::Role { account, .. } if account == "444455556666"));
    }

    #[test]
    fn errors_name_the_field_and_never_the_secret() {
        let cases = [
            (json!({"secret_access_key": "wJalr-hunter2", "regions": ["us-east-1"]}), "access_key_id"),
            (with(json!({"regions": []})), "regions"),
            (with(json!({"regions": ["moon-1"]})), "regions"),
            (with(json!({"regions": ["us-east-1", "us-east-1"]})), "regions"),
            (with(json!({"secret_access_key": ""})), "secret_access_key"),
            (with(json!({"page_size": 4})), "page_size"),
            (with(json!({"page_size": 1001})), "page_size"),
            (with(json!({"endpoint": "https://ec2.amazonaws.com"})), "endpoint"),
            (with(json!({"accounts": [{"role_arn": "arn:aws:iam::12:role/x"}]})), "accounts"),
            (with(json!({"accounts": [{}, {}]})), "accounts"),
            (with(json!({"role_session_secs": 60})), "role_session_secs"),
        ];
        for (cfg, field) in cases {
            let msg = parse(cfg.clone()).expect_err("invalid").to_string();
            assert!(msg.contains(&format!("`{field}`")), "{cfg} -> {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = parse(with(json!({"session_token": "tok-hunter2"}))).expect("valid");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
