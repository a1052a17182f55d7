//! `corral new-adapter NAME`: a new adapter crate under `adapters/NAME` from
//! the templates in `crates/cli/templates/new-adapter/` (a REST adapter with
//! a bearer token and a cursor in the body, and its testkit test against a
//! kit simulator), added to the `corral` binary by one edit of
//! `crates/cli/Cargo.toml` (an optional dependency and its name in the
//! `default` features), made with `toml_edit` so its comments and layout stay.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const CARGO_TEMPLATE: &str = include_str!("../templates/new-adapter/Cargo.toml.tmpl");
const LIB_TEMPLATE: &str = include_str!("../templates/new-adapter/lib.rs.tmpl");
const TESTKIT_TEMPLATE: &str = include_str!("../templates/new-adapter/testkit.rs.tmpl");

/// The longest adapter name accepted.
const MAX_NAME_LEN: usize = 40;

/// Names whose generated type names would clash with names the templates import
/// (`HttpConfig`, `RateConfig`, `SimConfig`, `AdapterFactory`).
const RESERVED: &[&str] = &["adapter", "http", "rate", "sim"];

/// What `new-adapter` did.
#[derive(Debug)]
pub struct Created {
    pub root: PathBuf,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub manifest: PathBuf,
}

/// Check `name`: lowercase letters, digits and '-', starting with a letter.
pub fn validate_name(name: &str) -> Result<()> {
    let rule = "an adapter name is lowercase letters, digits and '-', starting with a letter (e.g. acme or acme-edr)";
    if name.is_empty() {
        bail!("the adapter name is empty: {rule}");
    }
    if name.len() > MAX_NAME_LEN {
        bail!("adapter name `{name}` is longer than {MAX_NAME_LEN} characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!("adapter name `{name}` does not start with a lowercase letter: {rule}");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        bail!("adapter name `{name}` contains {c:?}: {rule}");
    }
    if name.ends_with('-') || name.contains("--") {
        bail!("adapter name `{name}` has a '-' at the end or two in a row: {rule}");
    }
    if RESERVED.contains(&name) {
        bail!("adapter name `{name}` is reserved (its type names would clash with corral's); pick another");
    }
    Ok(())
}

/// The nearest directory at or above `start` with a Cargo.toml that has a `[workspace]` table.
pub fn find_workspace_root(start: &Path) -> Result<PathBuf> {
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let doc: toml_edit::DocumentMut =
            text.parse().with_context(|| format!("{} is not valid TOML", manifest.display()))?;
        if doc.contains_key("workspace") {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "no Cargo.toml with a [workspace] table in {} or any directory above it: run this inside the corral \
         repository, or give it with --root DIR",
        start.display()
    )
}

/// `acme-edr` -> `AcmeEdr`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

fn render(template: &str, name: &str) -> String {
    let snake = name.replace('-', "_");
    template
        .replace("@name@", name)
        .replace("@crate@", &snake)
        .replace("@Type@", &type_name(name))
        .replace("@ENV@", &snake.to_ascii_uppercase())
}

/// Add `corral-adapter-NAME = { path = "../../adapters/NAME", optional = true }`
/// after the last `corral-adapter-*` dependency, and the name to the `default`
/// features, keeping the manifest's comments and layout.
pub fn add_to_cli_manifest(text: &str, name: &str) -> Result<String> {
    let dep = format!("corral-adapter-{name}");
    let mut doc: toml_edit::DocumentMut = text.parse().context("crates/cli/Cargo.toml is not valid TOML")?;
    let deps = doc
        .get_mut("dependencies")
        .and_then(toml_edit::Item::as_table_mut)
        .context("crates/cli/Cargo.toml has no [dependencies] table")?;
    if deps.contains_key(&dep) {
        bail!("crates/cli/Cargo.toml already depends on {dep}");
    }
    let keys: Vec<String> = deps.iter().map(|(k, _)| k.to_string()).collect();
    let last_adapter = keys.iter().rposition(|k| k.starts_with("corral-adapter-"));
    // Entries after the last adapter are moved behind the new one (their decor kept).
    let after: Vec<(toml_edit::Key, toml_edit::Item)> = match last_adapter {
        Some(i) => keys[i + 1..].iter().filter_map(|k| deps.remove_entry(k)).collect(),
        None => Vec::new(),
    };
    let mut spec = toml_edit::InlineTable::new();
    spec.insert("path", format!("../../adapters/{name}").into());
    spec.insert("optional", true.into());
    deps.insert(&dep, toml_edit::Item::Value(toml_edit::Value::InlineTable(spec)));
    for (k, v) in after {
        deps.insert_formatted(&k, v);
    }

    let features = doc
        .get_mut("features")
        .and_then(toml_edit::Item::as_table_mut)
        .context("crates/cli/Cargo.toml has no [features] table")?;
    let default = features
        .get_mut("default")
        .and_then(toml_edit::Item::as_array_mut)
        .context("crates/cli/Cargo.toml has no `default` features list")?;
    if !default.iter().any(|v| v.as_str() == Some(dep.as_str())) {
        // One name a line if the list is written so, else on the line.
        let last_prefix = default.iter().last().and_then(|v| v.decor().prefix()).and_then(|p| p.as_str());
        match last_prefix.filter(|p| p.contains('\n')).map(str::to_string) {
            Some(prefix) => {
                let mut value = toml_edit::Value::from(dep.as_str());
                value.decor_mut().set_prefix(prefix);
                default.push_formatted(value);
                default.set_trailing_comma(true);
            }
            None => default.push(dep.as_str()),
        }
    }
    Ok(doc.to_string())
}

/// Create `adapters/NAME` under the workspace root and add it to the binary.
pub fn create(name: &str, root: Option<&Path>) -> Result<Created> {
    validate_name(name)?;
    let root = match root {
        Some(r) => {
            let r = r.to_path_buf();
            find_workspace_root(&r).and_then(|found| {
                if found == r {
                    Ok(found)
                } else {
                    bail!("--root {}: it has no Cargo.toml with a [workspace] table", r.display())
                }
            })?
        }
        None => find_workspace_root(&std::env::current_dir().context("reading the current directory")?)?,
    };
    let dir = root.join("adapters").join(name);
    if dir.exists() {
        bail!("{} already exists: adapter `{name}` is taken (pick another name or remove it)", dir.display());
    }
    let manifest = root.join("crates").join("cli").join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {} (the corral binary's manifest)", manifest.display()))?;
    // Edit in memory first: a manifest we cannot edit leaves nothing behind.
    let edited = add_to_cli_manifest(&text, name)?;
    let files = [
        (dir.join("Cargo.toml"), render(CARGO_TEMPLATE, name)),
        (dir.join("src").join("lib.rs"), render(LIB_TEMPLATE, name)),
        (dir.join("tests").join("testkit.rs"), render(TESTKIT_TEMPLATE, name)),
    ];
    let mut written = Vec::new();
    for (path, content) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
        written.push(path.clone());
    }
    std::fs::write(&manifest, edited).with_context(|| format!("writing {}", manifest.display()))?;
    Ok(Created { root, dir, files: written, manifest })
}

/// The subcommand: create, then (with `build`) format the new crate and
/// build corral with it to write its docs page and the schema, so that the
/// workspace's tests pass as they are; say what was done and what is next.
pub fn run(name: &str, root: Option<&Path>, build: bool) -> Result<u8> {
    let c = create(name, root)?;
    let rel = |p: &Path| p.strip_prefix(&c.root).unwrap_or(p).display().to_string();
    println!("created adapter `{name}` in {}:", rel(&c.dir));
    for f in &c.files {
        println!("  {}", rel(f));
    }
    println!("added corral-adapter-{name} to {} (dependency and default feature)", rel(&c.manifest));
    if build {
        let package = format!("corral-adapter-{name}");
        cargo(&c.root, &["fmt", "-p", &package])?;
        println!("formatted {package} (cargo fmt)");
        println!("building corral with `{name}` to write docs/adapters/{name}.md and docs/SCHEMA.md ...");
        cargo(&c.root, &["run", "--quiet", "-p", "corral", "--", "docs"])?;
    }
    let mut next = vec![
        (
            format!("cargo test -p corral-adapter-{name}"),
            "unit tests and the testkit against a kit simulator".to_string(),
        ),
        ("cargo run -p corral -- adapters".to_string(), format!("lists `{name}`")),
    ];
    if !build {
        next.push((
            "cargo run -p corral -- docs".to_string(),
            format!("writes docs/adapters/{name}.md and docs/SCHEMA.md"),
        ));
    }
    let width = next.iter().map(|(cmd, _)| cmd.len()).max().unwrap_or(0);
    println!("next:");
    for (cmd, what) in next {
        println!("  {cmd:<width$}   # {what}");
    }
    Ok(0)
}

/// Run cargo (the one that runs us, if any) in `root`; a failure names the command.
fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let shown = format!("cargo {}", args.join(" "));
    let status = std::process::Command::new(&program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("running `{shown}` in {}", root.display()))?;
    if !status.success() {
        bail!(
            "`{shown}` in {} failed ({status}); the adapter's files are written: fix what it says, then run \
             `cargo run -p corral -- docs`",
            root.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["acme", "acme-edr", "a1", "s1-agents2"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "1acme", "acme_edr", "acme-", "a--b", "-a", "acmé", "http", &"a".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("acme-edr2"), "AcmeEdr2");
    }

    #[test]
    fn the_manifest_edit_keeps_comments_and_places_the_adapter_with_the_others() {
        let text = "[features]\ndefault = [\"corral-adapter-file\"]\n\n[dependencies]\ncorral-core.workspace = true\n\
                    # Adapters: optional.\ncorral-adapter-file = { workspace = true, optional = true }\n\
                    anyhow.workspace = true # the binary's errors\n";
        let out = add_to_cli_manifest(text, "acme").expect("edited");
        assert!(out.contains("# Adapters: optional.\ncorral-adapter-file"), "{out}");
        let acme = out.find("corral-adapter-acme = { path = \"../../adapters/acme\", optional = true }").expect(&out);
        let anyhow = out.find("anyhow.workspace = true # the binary's errors").expect(&out);
        assert!(out.find("corral-adapter-file =").is_some_and(|f| f < acme) && acme < anyhow, "{out}");
        assert!(out.contains("default = [\"corral-adapter-file\", \"corral-adapter-acme\"]"), "{out}");
        assert!(add_to_cli_manifest(&out, "acme").is_err(), "twice is an error");
    }
}
