//! docs/rest-spec.schema.json is the JSON Schema generated from the spec
//! format's serde structs; regenerate it with
//! `CORRAL_UPDATE_SCHEMA=1 cargo test -p corral-adapter-rest --test schema`.

use std::path::PathBuf;

#[test]
fn the_committed_json_schema_is_up_to_date() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/rest-spec.schema.json");
    let schema = corral_adapter_rest::json_schema();
    if std::env::var_os("CORRAL_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &schema).expect("write docs/rest-spec.schema.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == schema,
        "docs/rest-spec.schema.json is out of date with the spec format: regenerate it with \
         `CORRAL_UPDATE_SCHEMA=1 cargo test -p corral-adapter-rest --test schema` and commit it"
    );
    // It describes the format: the top-level sections and a stream's keys.
    let v: serde_json::Value = serde_json::from_str(&schema).expect("JSON");
    for key in ["adapter", "config", "http", "auth", "rate_limit", "errors", "streams"] {
        assert!(v["properties"].get(key).is_some(), "{key}");
    }
    assert_eq!(v["additionalProperties"], false, "unknown keys are errors, as when loaded");
}
