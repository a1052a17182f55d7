//! docs/SCHEMA.md is generated from the code: the field tables in
//! `corral_core::schema` and the `AdapterInfo` of every adapter this binary
//! ships. This test fails when the committed file is out of date.

#[test]
fn schema_md_is_up_to_date() {
    let infos = crate::commands::registry().infos();
    for info in &infos {
        assert!(info.problems().is_empty(), "{:?}", info.problems());
    }
    let rendered = corral_core::schema::render_markdown(&infos);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SCHEMA.md");
    if std::env::var_os("CORRAL_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &rendered).expect("write docs/SCHEMA.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/SCHEMA.md is out of date with the code (corral_core::schema and the adapters' AdapterInfo): \
         regenerate it with `cargo run -p corral -- docs` (or `CORRAL_UPDATE_SCHEMA=1 cargo test -p corral schema_md`) and commit it"
    );
}
