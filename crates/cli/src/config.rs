//! corral.toml: the store, engine limits and connections.
//!
//! String values may reference secrets as `${ENV_VAR}` or `${file:/path/to/secret}`.
//! Resolved secret values are remembered by a [`Redactor`]; the engine scrubs
//! them from run summaries and kept rejects, the log writer from every log
//! line, and `main` from the error it prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
pub use corral_core::Redactor;
use corral_core::{EngineConfig, StalePolicy};
use corral_serve::{ScheduleSpec, ServeConfig};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    /// `corral serve`'s settings. Its `token` stays a secret reference
    /// until `corral serve` resolves it ([`Config::serve_settings`]).
    #[serde(default)]
    pub serve: ServeConfig,
    /// Where more adapters come from: `spec_dirs`, folders of declarative
    /// adapter specs (relative to this file).
    #[serde(default)]
    pub adapters: AdaptersConfig,
    #[serde(default, rename = "connection")]
    pub connections: Vec<ConnectionConfig>,
    /// A hash of the `[store]` table as written (references unresolved):
    /// `corral serve` refuses a reload that changes it.
    #[serde(skip)]
    pub store_fingerprint: u64,
}

/// `[adapters]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptersConfig {
    /// Folders of declarative adapter specs (`*.toml`, docs/DECLARATIVE.md),
    /// relative to the config file; each spec is an adapter named after its file.
    #[serde(default)]
    pub spec_dirs: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    Sqlite {
        #[serde(default = "default_db_path")]
        path: PathBuf,
        /// Page cache per connection, in MiB (default 32): the store's
        /// memory, whatever the size of the database.
        #[serde(default)]
        cache_mib: Option<u32>,
        /// Rows of the lookup log merged into the lookup index at once
        /// (default 500,000; see docs/ARCHITECTURE.md).
        #[serde(default)]
        lookup_log_rows: Option<u64>,
    },
    /// `uri` (usually `${MONGODB_URI}`; TLS and credentials go in the URI),
    /// `database` (default `corral`), `collections` (each name optional).
    Mongodb(corral_store::mongo::MongoConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite { path: default_db_path(), cache_mib: None, lookup_log_rows: None }
    }
}

impl StoreConfig {
    /// The SQLite store's tuning from `[store]`: defaults for what is not
    /// set; zero is refused, naming the field.
    pub fn sqlite_options(
        cache_mib: Option<u32>,
        lookup_log_rows: Option<u64>,
    ) -> anyhow::Result<corral_store::sqlite::SqliteOptions> {
        let mut options = corral_store::sqlite::SqliteOptions::default();
        if let Some(mib) = cache_mib {
            anyhow::ensure!(mib > 0, "[store] cache_mib must be at least 1 (MiB of page cache)");
            options.cache_mib = mib;
        }
        if let Some(rows) = lookup_log_rows {
            anyhow::ensure!(rows > 0, "[store] lookup_log_rows must be at least 1");
            options.lookup_log_rows = rows;
        }
        Ok(options)
    }
}

fn default_db_path() -> PathBuf {
    PathBuf::from("corral.db")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    pub name: String,
    pub adapter: String,
    /// Streams to sync; empty or absent: all of the adapter's streams.
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default)]
    pub stale: StaleConfig,
    /// When `corral serve` syncs it: `{ every = "4h" }`, `{ cron = "0 2 * * *",
    /// time_zone = "Europe/Berlin" }`, `{ manual = true }`; absent: `[serve] schedule`.
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// The adapter's own settings, validated by the adapter. Secret references in
    /// it are still unresolved: see [`ConnectionConfig::resolved_config`].
    #[serde(default = "empty_table")]
    pub config: toml::Value,
    /// Position in the file, for error messages.
    #[serde(skip)]
    pub index: usize,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(Default::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaleConfig {
    /// `mark` (default): flag assets a clean sync no longer returned; `keep`: do nothing.
    #[serde(default = "default_stale_mode")]
    pub mode: String,
    /// Delete assets stale for longer than this (`30d`, `12h`); absent: never delete.
    #[serde(default)]
    pub delete_after: Option<String>,
}

impl Default for StaleConfig {
    fn default() -> Self {
        StaleConfig { mode: default_stale_mode(), delete_after: None }
    }
}

fn default_stale_mode() -> String {
    "mark".into()
}

impl StaleConfig {
    pub fn policy(&self, connection: &str) -> Result<StalePolicy> {
        let delete_after = match &self.delete_after {
            None => None,
            Some(s) => Some(humantime::parse_duration(s).with_context(|| {
                format!("connection `{connection}`: config field `stale.delete_after`: `{s}` is not a duration like 30d or 12h")
            })?),
        };
        match self.mode.as_str() {
            "mark" => Ok(StalePolicy::Mark { delete_after }),
            "keep" if delete_after.is_none() => Ok(StalePolicy::Keep),
            "keep" => bail!("connection `{connection}`: `stale.delete_after` needs `stale.mode = \"mark\"`"),
            other => bail!("connection `{connection}`: config field `stale.mode`: `{other}` is not one of mark, keep"),
        }
    }
}

impl Config {
    pub fn load(path: &Path, redactor: &Redactor) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text, path, redactor)
    }

    /// The config at `path`, or defaults (the embedded store ./corral.db) when that file does not exist.
    pub fn load_or_default(path: &Path, redactor: &Redactor) -> Result<Config> {
        if path.exists() {
            Self::load(path, redactor)
        } else {
            Ok(Config {
                store: StoreConfig::default(),
                engine: EngineConfig::default(),
                serve: ServeConfig::default(),
                adapters: AdaptersConfig::default(),
                connections: Vec::new(),
                store_fingerprint: 0,
            })
        }
    }

    pub fn parse(text: &str, path: &Path, redactor: &Redactor) -> Result<Config> {
        Self::parse_with_env(text, path, redactor, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::parse`], with environment lookups through `env`.
    pub fn parse_with_env(text: &str, path: &Path, redactor: &Redactor, env: &Env<'_>) -> Result<Config> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        let store_fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            value.get("store").map(toml::Value::to_string).hash(&mut h);
            h.finish()
        };
        // Secrets in a connection's adapter config are resolved only when that
        // connection is built: `corral runs` needs no vendor credentials, and
        // `corral sync --connection a` none of connection b's.
        if let toml::Value::Table(top) = &mut value {
            for (key, v) in top.iter_mut() {
                match (key.as_str(), v) {
                    // `serve.token` is resolved only by `corral serve`.
                    ("serve", _) => {}
                    ("connection", toml::Value::Array(conns)) => {
                        for (i, c) in conns.iter_mut().enumerate() {
                            let toml::Value::Table(c) = c else { continue };
                            for (k, v) in c.iter_mut().filter(|(k, _)| k.as_str() != "config") {
                                resolve_secrets(v, &format!("connection[{i}].{k}"), redactor, env)?;
                            }
                        }
                    }
                    (key, v) => resolve_secrets(v, key, redactor, env)?,
                }
            }
        }
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            anyhow::anyhow!(
                "{}: config field `{field}`: {}",
                path.display(),
                redactor.redact(&e.into_inner().to_string())
            )
        })?;
        // A driver error may quote the password alone, not the whole URI.
        if let StoreConfig::Mongodb(m) = &config.store {
            add_uri_password(redactor, &m.uri);
        }
        config.store_fingerprint = store_fingerprint;
        // Spec folders are relative to the config file.
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for d in &mut config.adapters.spec_dirs {
            if d.is_relative() {
                *d = dir.join(&*d);
            }
        }
        config.engine.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in config.connections.iter_mut().enumerate() {
            c.index = i;
            if c.name.trim().is_empty() {
                bail!("{}: a connection has an empty `name`", path.display());
            }
            if !names.insert(c.name.as_str()) {
                bail!("{}: two connections are named `{}`", path.display(), c.name);
            }
        }
        Ok(config)
    }
}

impl Config {
    /// `corral serve`'s settings: the `[serve]` table checked, its token
    /// resolved (and registered with the redactor), `listen` overridden by
    /// `--listen`.
    pub fn serve_settings(
        &self,
        listen: Option<&str>,
        redactor: &Redactor,
        env: &Env<'_>,
    ) -> Result<corral_serve::Settings> {
        let mut serve = self.serve.clone();
        if let Some(l) = listen {
            serve.listen = l.to_string();
        }
        let token = match &serve.token {
            Some(t) => Some(secrecy::SecretString::from(substitute(t, "serve.token", redactor, env)?)),
            None => None,
        };
        serve.settings(token).map_err(|e| anyhow::anyhow!(redactor.redact(&e)))
    }
}

impl ConnectionConfig {
    /// The adapter config as JSON, with its `${VAR}` and `${file:PATH}` references resolved.
    pub fn resolved_config(&self, redactor: &Redactor, env: &Env<'_>) -> Result<serde_json::Value> {
        let mut value = self.config.clone();
        resolve_secrets(&mut value, &format!("connection[{}].config", self.index), redactor, env)?;
        serde_json::to_value(&value).with_context(|| format!("connection `{}`: config", self.name))
    }
}

/// Register the password of a `scheme://user:password@host` URI with the
/// redactor, as written and percent-decoded (`p%40ss` is the password `p@ss`).
pub fn add_uri_password(redactor: &Redactor, uri: &str) {
    if let Some(password) = uri_password(uri) {
        redactor.add(password);
        redactor.add(&percent_decoded(password));
    }
}

/// The password in a `scheme://user:password@host` URI, if any.
fn uri_password(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let userinfo = rest.split(['/', '?']).next()?.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p).filter(|p| !p.is_empty())
}

fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Looks up an environment variable.
pub type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Replace `${VAR}` and `${file:PATH}` in every string of the config.
fn resolve_secrets(value: &mut toml::Value, path: &str, redactor: &Redactor, env: &Env<'_>) -> Result<()> {
    match value {
        toml::Value::String(s) if s.contains("${") => *s = substitute(s, path, redactor, env)?,
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                resolve_secrets(v, &format!("{path}[{i}]"), redactor, env)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                resolve_secrets(v, &p, redactor, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn substitute(s: &str, field: &str, redactor: &Redactor, env: &Env<'_>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { bail!("config field `{field}`: unterminated `${{`") };
        let reference = &after[..end];
        let resolved = if let Some(file) = reference.strip_prefix("file:") {
            std::fs::read_to_string(file)
                .with_context(|| format!("config field `{field}`: reading secret file {file}"))?
                .trim_end_matches(['\n', '\r'])
                .to_string()
        } else {
            env(reference)
                .with_context(|| format!("config field `{field}`: environment variable {reference} is not set"))?
        };
        redactor.add(&resolved);
        out.push_str(&resolved);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn secrets_resolve_from_env_and_file_and_are_redacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "file-secret-value\n").expect("write");
        let toml = format!(
            r#"
            [[connection]]
            name = "okta"
            adapter = "file"
            [connection.config]
            token = "SSWS ${{CORRAL_TEST_TOKEN_1}}"
            key = "${{file:{}}}"
            "#,
            file.display()
        );
        let r = Redactor::default();
        let env = |name: &str| (name == "CORRAL_TEST_TOKEN_1").then(|| "env-secret-value".to_string());
        let cfg = Config::parse_with_env(&toml, Path::new("t.toml"), &r, &env).expect("parse");
        let c = cfg.connections[0].resolved_config(&r, &env).expect("resolve");
        assert_eq!(c["token"].as_str(), Some("SSWS env-secret-value"));
        assert_eq!(c["key"].as_str(), Some("file-secret-value"));
        assert_eq!(r.redact("bad token env-secret-value and file-secret-value"), "bad token [redacted] and [redacted]");
    }

    #[test]
    fn mongodb_store_with_uri_from_the_environment_and_collection_names() {
        let toml = r#"
            [store]
            kind = "mongodb"
            uri = "${CORRAL_TEST_MONGO_URI}"
            collections = { assets = "inventory" }
        "#;
        let r = Redactor::default();
        let env = |name: &str| (name == "CORRAL_TEST_MONGO_URI").then(|| "mongodb://app:pw-123456@db/x".to_string());
        let cfg = Config::parse_with_env(toml, Path::new("t.toml"), &r, &env).expect("parse");
        let StoreConfig::Mongodb(m) = &cfg.store else { panic!("not mongodb: {:?}", cfg.store) };
        assert_eq!(m.uri, "mongodb://app:pw-123456@db/x");
        assert_eq!(m.database, "corral");
        assert_eq!(m.collections.assets, "inventory");
        assert_eq!(m.collections.runs, corral_store::mongo::CollectionNames::default().runs);
        assert!(!format!("{cfg:?}").contains("pw-123456"), "Debug shows the URI");
        assert_eq!(r.redact("connect mongodb://app:pw-123456@db/x failed"), "connect [redacted] failed");
        let err =
            Config::parse("[store]\nkind = \"mongodb\"\nuri = \"mongodb://h\"\ndb = \"x\"\n", Path::new("t.toml"), &r)
                .expect_err("unknown field");
        assert!(format!("{err:#}").contains("db"), "{err:#}");
    }

    #[test]
    fn uri_password_is_found_and_registered_decoded_too() {
        assert_eq!(uri_password("mongodb://app:s3cret@db:27017/?tls=true"), Some("s3cret"));
        assert_eq!(uri_password("mongodb+srv://app:p@ss@cluster.example/x"), Some("p@ss"));
        assert_eq!(uri_password("mongodb://db:27017"), None);
        assert_eq!(uri_password("mongodb://app@db:27017"), None);
        let toml = "[store]\nkind = \"mongodb\"\nuri = \"${CORRAL_TEST_MONGO_URI_2}\"\n";
        let r = Redactor::default();
        let env =
            |name: &str| (name == "CORRAL_TEST_MONGO_URI_2").then(|| "mongodb://app:pw%40db-2024@h/x".to_string());
        Config::parse_with_env(toml, Path::new("t.toml"), &r, &env).expect("parse");
        assert_eq!(r.redact("auth failed for pw@db-2024 / pw%40db-2024"), "auth failed for [redacted] / [redacted]");
    }

    #[test]
    fn the_serve_token_is_resolved_only_for_serve_and_never_shown() {
        let toml = r#"
            [serve]
            token = "${CORRAL_TEST_API_TOKEN}"
            schedule = { every = "4h" }

            [[connection]]
            name = "x"
            adapter = "file"
            schedule = { cron = "0 2 * * *", time_zone = "Europe/Berlin" }
            config = { path = "x.csv" }
        "#;
        let r = Redactor::default();
        // `corral sync` and `corral runs` need no API token.
        let cfg = Config::parse_with_env(toml, Path::new("t.toml"), &r, &|_| None).expect("parse without the token");
        assert_eq!(cfg.connections[0].schedule.as_ref().and_then(|s| s.cron.as_deref()), Some("0 2 * * *"));
        let err = cfg.serve_settings(None, &r, &|_| None).expect_err("serve needs it");
        assert!(format!("{err:#}").contains("serve.token"), "{err:#}");
        let env = |name: &str| (name == "CORRAL_TEST_API_TOKEN").then(|| "api-token-0123456789abcdef".to_string());
        let settings = cfg.serve_settings(Some("0.0.0.0:9000"), &r, &env).expect("settings");
        assert_eq!(settings.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(r.redact("token api-token-0123456789abcdef"), "token [redacted]", "registered with the redactor");
        // A store change is seen; the same store is not.
        let other =
            Config::parse_with_env("[store]\nkind = \"sqlite\"\npath = \"b.db\"\n", Path::new("t.toml"), &r, &|_| None)
                .expect("parse");
        assert_ne!(cfg.store_fingerprint, other.store_fingerprint);
        let same = Config::parse_with_env(toml, Path::new("t.toml"), &r, &|_| None).expect("parse");
        assert_eq!(cfg.store_fingerprint, same.store_fingerprint);
    }

    #[test]
    fn sqlite_tuning_comes_from_the_store_table() {
        let r = Redactor::default();
        let parse = |body: &str| Config::parse_with_env(body, Path::new("t.toml"), &r, &|_| None);
        let cfg = parse("[store]\nkind = \"sqlite\"\ncache_mib = 64\nlookup_log_rows = 1000\n").expect("parse");
        let StoreConfig::Sqlite { cache_mib, lookup_log_rows, .. } = cfg.store else { panic!("sqlite") };
        let options = StoreConfig::sqlite_options(cache_mib, lookup_log_rows).expect("options");
        assert_eq!((options.cache_mib, options.lookup_log_rows), (64, 1000));
        let cfg = parse("[store]\nkind = \"sqlite\"\n").expect("parse");
        let StoreConfig::Sqlite { cache_mib, lookup_log_rows, .. } = cfg.store else { panic!("sqlite") };
        let options = StoreConfig::sqlite_options(cache_mib, lookup_log_rows).expect("defaults");
        assert_eq!(options, corral_store::sqlite::SqliteOptions::default());
        let err = StoreConfig::sqlite_options(Some(0), None).expect_err("no cache");
        assert!(err.to_string().contains("cache_mib"), "{err}");
        let err = parse("[store]\nkind = \"sqlite\"\ncache_mb = 64\n").expect_err("unknown field");
        assert!(format!("{err:#}").contains("cache_mb"), "{err:#}");
    }

    #[test]
    fn missing_env_var_names_the_field() {
        let toml = r#"
            [[connection]]
            name = "x"
            adapter = "file"
            config = { client_secret = "${CORRAL_TEST_SURELY_UNSET_VAR}" }
        "#;
        // The config parses (`corral runs` needs no vendor secrets); building the connection fails.
        let r = Redactor::default();
        let cfg = Config::parse(toml, Path::new("t.toml"), &r).expect("parse");
        let err = cfg.connections[0].resolved_config(&r, &|_| None).expect_err("unset var");
        let msg = format!("{err:#}");
        assert!(msg.contains("connection[0].config.client_secret"), "{msg}");
        assert!(msg.contains("CORRAL_TEST_SURELY_UNSET_VAR"), "{msg}");
    }

    #[test]
    fn bad_engine_and_stale_settings_are_named() {
        let err = Config::parse("[engine]\nbatch_max_records = 0\n", Path::new("t.toml"), &Redactor::default())
            .expect_err("zero batch");
        assert!(format!("{err:#}").contains("engine.batch_max_records"));
        let err = Config::parse("[engine]\nbatch_size = 3\n", Path::new("t.toml"), &Redactor::default())
            .expect_err("unknown field");
        assert!(format!("{err:#}").contains("batch_size"), "{err:#}");
        let stale = StaleConfig { mode: "mark".into(), delete_after: Some("soon".into()) };
        assert!(format!("{:#}", stale.policy("c").expect_err("bad age")).contains("stale.delete_after"));
        let stale = StaleConfig { mode: "mark".into(), delete_after: Some("30d".into()) };
        assert_eq!(
            stale.policy("c").expect("30d"),
            StalePolicy::Mark { delete_after: Some(Duration::from_secs(30 * 86400)) }
        );
    }
}
