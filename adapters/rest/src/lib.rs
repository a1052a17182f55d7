//! corral adapter `rest`: declarative REST integrations.
//!
//! A spec file (TOML; docs/DECLARATIVE.md documents every key) describes a
//! vendor's REST API: the connection config it needs, base URL, auth, rate
//! limits, streams with their paging, and how records map onto corral's
//! asset model. [`load_str`]/[`load_file`] check a spec and compile it into
//! a [`Plan`]; [`RestFactory`] turns a plan into an adapter like any other,
//! registered under the spec's name.
//!
//! The specs shipped with corral are in `specs/` of this crate, compiled
//! in ([`SHIPPED`]); [`register`] registers them. A user's own specs are
//! loaded from the folders `[adapters] spec_dirs` names in corral.toml
//! ([`load_dir`]).
//!
//! Guarantees, as for a Rust adapter: fetch does only HTTP and sends raw
//! page bytes; decoding and mapping run in `normalize` on the engine's pool;
//! the mapping is compiled once per spec (paths pre-split, transforms and
//! targets resolved to enums), never interpreted by name per record;
//! secrets live in `secrecy` types, may only be used in `[auth]`, and never
//! reach a URL, a log line or an error.

pub mod engine;
pub mod load;
pub mod map;
pub mod path;
pub mod spec;

pub use engine::{RestAdapter, RestFactory};
pub use load::{Plan, SpecError, load_file, load_str};

/// The specs shipped with corral: (file name, text).
pub const SHIPPED: &[(&str, &str)] = &[
    ("sentinelone.toml", include_str!("../specs/sentinelone.toml")),
    ("okta-spec.toml", include_str!("../specs/okta-spec.toml")),
    ("jamf.toml", include_str!("../specs/jamf.toml")),
    ("servicenow.toml", include_str!("../specs/servicenow.toml")),
];

/// The shipped specs, loaded. A shipped spec that does not load is a bug
/// (a test loads them all); it is left out, with an error logged.
pub fn shipped() -> Vec<RestFactory> {
    let mut out = Vec::new();
    for (file, text) in SHIPPED {
        let stem = file.trim_end_matches(".toml");
        match load_str(text, &format!("adapters/rest/specs/{file}"), Some(stem)) {
            Ok(plan) => out.push(RestFactory::new(plan)),
            Err(e) => tracing::error!(error = %e, "a shipped spec does not load"),
        }
    }
    out
}

/// Registers the shipped spec adapters: what the `corral` binary's build
/// script calls for every adapter crate it includes.
pub fn register(registry: &mut corral_core::Registry) {
    for f in shipped() {
        registry.register(f);
    }
}

/// Every `*.toml` spec in `dir`, in name order; all problems, not just the first.
pub fn load_dir(dir: &std::path::Path) -> Result<Vec<RestFactory>, Vec<SpecError>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![SpecError::Read { file: dir.display().to_string(), detail: format!("cannot read the spec folder: {e}") }]
    })?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load_file(&f) {
            Ok(plan) => ok.push(RestFactory::new(plan)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(ok) } else { Err(errors) }
}

/// The JSON Schema of the spec format (for editors), as committed in
/// docs/rest-spec.schema.json.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(spec::Spec);
    // Keys sorted: the same text whether or not another crate of the build
    // turns on serde_json's `preserve_order` (which keeps schemars' order).
    let sorted = sort_keys(serde_json::to_value(&schema).unwrap_or_default());
    let mut text = serde_json::to_string_pretty(&sorted).unwrap_or_default();
    text.push('\n');
    text
}

fn sort_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}
