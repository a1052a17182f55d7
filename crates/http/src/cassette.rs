//! Cassettes: a recorded sync's HTTP exchanges, redacted, in a directory,
//! so that an adapter can be tested against what a real tenant returned
//! (`corral record` writes them, corral-testkit's replay server serves them).
//!
//! - `exchanges.ndjson`: one exchange per line, in the order received:
//!   method, URL, the request body when it selects the answer, status, the
//!   headers that matter to an adapter (content type, `Link`, rate-limit
//!   and retry headers), and the body (text, or `body_base64`).
//! - `cassette.json`: what was recorded (connection, adapter, when) and the
//!   connection's config with its secret fields replaced, to replay with.
//!
//! Redaction, before anything is written: every secret the CLI resolved
//! (and its encoded forms) is scrubbed from URLs, headers and bodies; tokens
//! in token answers are replaced; credentials headers are never kept; JSON
//! fields the user names (`--redact-field email`) get a stable stand-in
//! (`redacted-` and a hash of the value, so equal values stay equal and ids
//! still join); each origin the sync talked to becomes `{{origin:N}}`, so a
//! replay serves the cassette from wherever it listens and nothing says
//! which tenant it came from.

use std::collections::BTreeSet;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use corral_core::Redactor;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::Exchange;

pub const EXCHANGES_FILE: &str = "exchanges.ndjson";
pub const META_FILE: &str = "cassette.json";
/// The assets the recorded sync stored ([`RecordedAsset`] per line).
pub const ASSETS_FILE: &str = "assets.ndjson";
/// What a secret config field holds in a cassette's config.
pub const REPLAYED_SECRET: &str = "replayed-secret";
/// What a token in a recorded token answer becomes.
pub const REPLAYED_TOKEN: &str = "replayed-token";

/// Response headers kept: those whose (lowercase) name starts with one of these.
const KEPT_HEADERS: &[&str] =
    &["content-type", "link", "retry-after", "x-ratelimit-", "x-rate-limit-", "ratelimit", "x-total-count"];

#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: already exists and is not an empty directory; choose another --out")]
    Exists { path: PathBuf },
    #[error("{path}, line {line}: {detail}")]
    Format { path: PathBuf, line: usize, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CassetteError + '_ {
    move |source| CassetteError::Io { path: path.to_path_buf(), source }
}

/// One recorded exchange as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub method: String,
    /// `{{origin:N}}/path?query`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

impl Entry {
    /// The URL's path and query, and the index of its origin.
    pub fn target(&self) -> (usize, &str) {
        origin_index(&self.url).unwrap_or((0, self.url.as_str()))
    }

    /// The body as served from `origin` (`http://127.0.0.1:PORT`).
    pub fn body_for(&self, origin: &str) -> Vec<u8> {
        match (&self.body, &self.body_base64) {
            (Some(text), _) => fill_origins(text, origin).into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    /// The headers as served from `origin`.
    pub fn headers_for(&self, origin: &str) -> Vec<(String, String)> {
        self.headers.iter().map(|(k, v)| (k.clone(), fill_origins(v, origin))).collect()
    }
}

/// What a cassette holds besides its exchanges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    pub connection: String,
    pub adapter: String,
    pub recorded_at: DateTime<Utc>,
    pub exchanges: u64,
    /// How many origins the sync talked to (`{{origin:0}}` ...).
    pub origins: usize,
    /// The JSON fields given stand-ins.
    pub redacted_fields: Vec<String>,
    /// The connection's config: secret fields are [`REPLAYED_SECRET`],
    /// recorded origins are `{{origin:N}}` (see [`Meta::config_for`]).
    pub config: Value,
}

impl Meta {
    /// The config to replay with: every origin is `origin`.
    pub fn config_for(&self, origin: &str) -> Value {
        fill_value(&self.config, origin)
    }
}

/// Writes a cassette: [`CassetteWriter::write`] each exchange, then [`CassetteWriter::finish`].
pub struct CassetteWriter {
    dir: PathBuf,
    out: BufWriter<std::fs::File>,
    redactor: Redactor,
    fields: BTreeSet<String>,
    origins: Vec<String>,
    written: u64,
}

impl CassetteWriter {
    /// Start a cassette in `dir`, which must not exist or be empty.
    pub fn create(dir: &Path, redactor: Redactor, redact_fields: &[String]) -> Result<Self, CassetteError> {
        if dir.exists() {
            let empty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_none();
            if !dir.is_dir() || !empty {
                return Err(CassetteError::Exists { path: dir.to_path_buf() });
            }
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(EXCHANGES_FILE);
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        Ok(CassetteWriter {
            dir: dir.to_path_buf(),
            out: BufWriter::new(file),
            redactor,
            fields: redact_fields.iter().cloned().collect(),
            origins: Vec::new(),
            written: 0,
        })
    }

    /// Note an origin before any exchange names it (a connection's base
    /// URLs from its config), so that text naming it is replaced too.
    pub fn know_origin(&mut self, url: &str) {
        if let Ok(u) = Url::parse(url) {
            self.origin_index(&u);
        }
    }

    fn origin_index(&mut self, url: &Url) -> usize {
        let origin = url.origin().ascii_serialization();
        match self.origins.iter().position(|o| *o == origin) {
            Some(i) => i,
            None => {
                self.origins.push(origin);
                self.origins.len() - 1
            }
        }
    }

    /// Text with secrets scrubbed and known origins replaced.
    fn clean(&self, text: &str) -> String {
        let mut t = self.redactor.redact(text);
        // Longest first: `http://h:80` before a prefix of it.
        let mut by_len: Vec<(usize, &String)> = self.origins.iter().enumerate().collect();
        by_len.sort_by_key(|(_, o)| std::cmp::Reverse(o.len()));
        for (i, o) in by_len {
            t = t.replace(o.as_str(), &format!("{{{{origin:{i}}}}}"));
        }
        t
    }

    /// Redact and append one exchange.
    pub fn write(&mut self, ex: Exchange) -> Result<(), CassetteError> {
        self.origin_index(&ex.url);
        let mut url = ex.url.clone();
        url.set_fragment(None);
        let url = self.clean(url.as_str());
        let request_body = ex.request_body.as_ref().map(|b| self.clean(&String::from_utf8_lossy(b)));
        let headers = ex
            .headers
            .iter()
            .filter(|(name, _)| KEPT_HEADERS.iter().any(|k| name.as_str().starts_with(k)))
            .filter_map(|(name, v)| v.to_str().ok().map(|v| (name.as_str().to_string(), self.clean(v))))
            .collect();
        let (body, body_base64) = match std::str::from_utf8(&ex.body) {
            Ok(text) => {
                let text = if ex.token_request {
                    replace_json_fields(text, &mut |key, _| {
                        // `token`: a token bought from another call (Jamf Pro's `{"token", "expires"}`).
                        matches!(key, "access_token" | "refresh_token" | "id_token" | "token")
                            .then(|| REPLAYED_TOKEN.to_string())
                    })
                } else if self.fields.is_empty() {
                    text.to_string()
                } else {
                    let fields = &self.fields;
                    replace_json_fields(text, &mut |key, value| fields.contains(key).then(|| stand_in(value)))
                };
                (Some(self.clean(&text)), None)
            }
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&ex.body))),
        };
        let entry = Entry { method: ex.method, url, request_body, status: ex.status, headers, body, body_base64 };
        let path = self.dir.join(EXCHANGES_FILE);
        serde_json::to_writer(&mut self.out, &entry).map_err(|e| io(&path)(e.into()))?;
        self.out.write_all(b"\n").map_err(io(&path))?;
        self.written += 1;
        Ok(())
    }

    /// The connection's config with its secret fields (`secret_fields`)
    /// replaced and known origins written as placeholders.
    pub fn config_template(&self, config: &Value, secret_fields: &[String]) -> Value {
        let mut c = config.clone();
        if let Value::Object(map) = &mut c {
            for f in secret_fields {
                if map.contains_key(f) {
                    map.insert(f.clone(), Value::String(REPLAYED_SECRET.into()));
                }
            }
        }
        self.clean_value(&c)
    }

    fn clean_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.clean(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.clean_value(i)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), self.clean_value(v))).collect()),
            other => other.clone(),
        }
    }

    /// Flush the exchanges and write `cassette.json`; `meta.exchanges` and
    /// `meta.origins` are filled in. Returns the exchanges written.
    pub fn finish(mut self, mut meta: Meta) -> Result<u64, CassetteError> {
        let path = self.dir.join(EXCHANGES_FILE);
        self.out.flush().map_err(io(&path))?;
        meta.exchanges = self.written;
        meta.origins = self.origins.len();
        meta.redacted_fields = self.fields.iter().cloned().collect();
        let path = self.dir.join(META_FILE);
        let text = serde_json::to_string_pretty(&meta).map_err(|e| io(&path)(e.into()))?;
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(self.written)
    }
}

/// An asset the recorded sync stored: what a replay must store too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordedAsset {
    pub kind: corral_core::AssetKind,
    pub source_id: String,
    /// [`corral_core::asset::stable_hash`] of the stored fields, as hex.
    pub fields_hash: String,
}

impl RecordedAsset {
    pub fn of(a: &corral_core::store::StoredAsset) -> RecordedAsset {
        RecordedAsset {
            kind: a.kind,
            source_id: a.source_id.clone(),
            fields_hash: format!("{:016x}", corral_core::asset::stable_hash(a.fields.to_string().as_bytes())),
        }
    }
}

/// A cassette read back.
#[derive(Debug, Clone)]
pub struct Cassette {
    pub meta: Meta,
    pub entries: Vec<Entry>,
    /// `assets.ndjson`, if the cassette has one.
    pub assets: Option<Vec<RecordedAsset>>,
}

impl Cassette {
    /// Read the cassette in `dir`; a missing or malformed file is an error naming it (and the line).
    pub fn load(dir: &Path) -> Result<Cassette, CassetteError> {
        let meta_path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| CassetteError::Format {
            path: meta_path.clone(),
            line: e.line(),
            detail: e.to_string(),
        })?;
        let path = dir.join(EXCHANGES_FILE);
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        let mut entries = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io(&path))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(&line).map_err(|e| CassetteError::Format {
                path: path.clone(),
                line: i + 1,
                detail: e.to_string(),
            })?;
            entries.push(entry);
        }
        let path = dir.join(ASSETS_FILE);
        let assets = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        serde_json::from_str(l).map_err(|e| CassetteError::Format {
                            path: path.clone(),
                            line: i + 1,
                            detail: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<RecordedAsset>, _>>()?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Cassette { meta, entries, assets })
    }
}

/// A stand-in for a redacted value: equal values get equal stand-ins.
fn stand_in(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("redacted-{:016x}", corral_core::asset::stable_hash(text.as_bytes()))
}

/// `text` as JSON with the values `replace(key, value)` returns put in
/// place (anywhere in the document); not JSON: unchanged.
fn replace_json_fields(text: &str, replace: &mut dyn FnMut(&str, &Value) -> Option<String>) -> String {
    fn walk(v: &mut Value, replace: &mut dyn FnMut(&str, &Value) -> Option<String>) {
        match v {
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    if !item.is_object()
                        && !item.is_array()
                        && !item.is_null()
                        && let Some(new) = replace(k, item)
                    {
                        *item = Value::String(new);
                    } else {
                        walk(item, replace);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, replace)),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            walk(&mut v, replace);
            v.to_string()
        }
        Err(_) => text.to_string(),
    }
}

/// `{{origin:N}}/rest` -> (N, "/rest").
fn origin_index(url: &str) -> Option<(usize, &str)> {
    let rest = url.strip_prefix("{{origin:")?;
    let (n, rest) = rest.split_once("}}")?;
    Some((n.parse().ok()?, rest))
}

/// Every `{{origin:N}}` in `text` as `origin`.
fn fill_origins(text: &str, origin: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{origin:") {
        out.push_str(&rest[..i]);
        match rest[i..].find("}}") {
            Some(j) if rest[i + 9..i + j].chars().all(|c| c.is_ascii_digit()) => {
                out.push_str(origin);
                rest = &rest[i + j + 2..];
            }
            _ => {
                out.push_str("{{origin:");
                rest = &rest[i + 9..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn fill_value(v: &Value, origin: &str) -> Value {
    match v {
        Value::String(s) => Value::String(fill_origins(s, origin)),
        Value::Array(items) => Value::Array(items.iter().map(|i| fill_value(i, origin)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill_value(v, origin))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn exchange(url: &str, headers: &[(&'static str, &str)], body: &str, token: bool) -> Exchange {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        Exchange {
            method: "GET".into(),
            url: Url::parse(url).expect("url"),
            request_body: None,
            token_request: token,
            status: 200,
            headers: h,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn secrets_tokens_fields_and_origins_are_redacted_and_come_back_as_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("c");
        let redactor = Redactor::default();
        redactor.add("s3cr3t-TOKEN~value");
        let mut w = CassetteWriter::create(&out, redactor, &["email".into()]).expect("create");
        w.write(exchange(
            "https://acme.okta.com/oauth2/token",
            &[("content-type", "application/json"), ("set-cookie", "sid=1")],
            r#"{"access_token":"eyJ-live-token","token":"jamf-live-token","expires_in":1800}"#,
            true,
        ))
        .expect("write");
        w.write(exchange(
            "https://acme.okta.com/api/v1/users?limit=2",
            &[
                ("link", "<https://acme.okta.com/api/v1/users?after=u2&limit=2>; rel=\"next\""),
                ("x-rate-limit-remaining", "599"),
                ("www-authenticate", "SSWS s3cr3t-TOKEN~value"),
            ],
            r#"[{"id":"u1","profile":{"email":"ann@acme.com"},"note":"token s3cr3t-TOKEN~value"},{"id":"u2","profile":{"email":"ann@acme.com"}}]"#,
            false,
        ))
        .expect("write");
        let config = serde_json::json!({"base_url": "https://acme.okta.com", "token": "s3cr3t-TOKEN~value"});
        let template = w.config_template(&config, &["token".into()]);
        let meta = Meta {
            version: 1,
            connection: "okta".into(),
            adapter: "okta".into(),
            recorded_at: Utc::now(),
            exchanges: 0,
            origins: 0,
            redacted_fields: vec![],
            config: template,
        };
        assert_eq!(w.finish(meta).expect("finish"), 2);

        let raw = std::fs::read_to_string(out.join(EXCHANGES_FILE)).expect("read")
            + &std::fs::read_to_string(out.join(META_FILE)).expect("read");
        for leaked in ["s3cr3t", "eyJ-live-token", "ann@acme.com", "acme.okta.com", "sid=1"] {
            assert!(!raw.contains(leaked), "{leaked} in the cassette:\n{raw}");
        }
        let c = Cassette::load(&out).expect("load");
        assert_eq!((c.meta.exchanges, c.meta.origins, c.entries.len()), (2, 1, 2));
        assert_eq!(c.meta.config_for("http://127.0.0.1:9")["base_url"], "http://127.0.0.1:9");
        assert_eq!(c.meta.config_for("http://x")["token"], REPLAYED_SECRET);
        let users = &c.entries[1];
        assert_eq!(users.target(), (0, "/api/v1/users?limit=2"));
        let body: Value = serde_json::from_slice(&users.body_for("http://127.0.0.1:9")).expect("json");
        let (e1, e2) = (&body[0]["profile"]["email"], &body[1]["profile"]["email"]);
        assert!(e1.as_str().is_some_and(|e| e.starts_with("redacted-")) && e1 == e2, "stable stand-ins: {body}");
        assert_eq!(body[0]["id"], "u1", "other fields are kept");
        let headers = users.headers_for("http://127.0.0.1:9");
        assert!(headers.iter().any(|(k, v)| k == "link" && v.starts_with("<http://127.0.0.1:9/api/v1/users?after=u2")));
        assert!(headers.iter().any(|(k, _)| k == "x-rate-limit-remaining"));
        assert!(!headers.iter().any(|(k, _)| k == "www-authenticate"));
        let token: Value = serde_json::from_slice(&c.entries[0].body_for("http://x")).expect("json");
        assert_eq!(token["access_token"], REPLAYED_TOKEN);
        assert_eq!(token["token"], REPLAYED_TOKEN, "a token-call answer's token");
        assert_eq!(token["expires_in"], 1800);
    }

    #[test]
    fn an_existing_directory_with_files_is_refused_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("x"), "y").expect("write");
        let e = CassetteWriter::create(dir.path(), Redactor::default(), &[]).err().expect("refused");
        assert!(e.to_string().contains("not an empty directory"), "{e}");
        let c = dir.path().join("c");
        std::fs::create_dir(&c).expect("mkdir");
        std::fs::write(c.join(META_FILE), "{}").expect("write");
        assert!(Cassette::load(&c).expect_err("bad meta").to_string().contains(META_FILE));
    }

    #[test]
    fn origins_fill_in_and_other_braces_stay() {
        assert_eq!(
            fill_origins("{{origin:0}}/a {{origin:12}}/b {{x}}", "http://h:1"),
            "http://h:1/a http://h:1/b {{x}}"
        );
        assert_eq!(fill_origins("{{origin:zz}}", "o"), "{{origin:zz}}");
    }
}
