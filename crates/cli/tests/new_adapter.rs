//! `corral new-adapter NAME` against a temporary workspace holding only the
//! files it reads (a root Cargo.toml with [workspace] and crates/cli/Cargo.toml):
//! it writes the crate and edits the manifest, keeping its comments; bad
//! input is an error naming the problem, with a non-zero exit code. Nothing
//! is compiled here (`cargo test -p corral-adapter-NAME` is what compiles it).

use std::path::Path;
use std::process::{Command, Output};

/// `corral ARGS --no-build`: the temporary workspace has no crates to build.
fn corral(cwd: &Path, args: &[&str]) -> Output {
    corral_building(cwd, &[args, &["--no-build"]].concat())
}

fn corral_building(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral")).current_dir(cwd).args(args).output().expect("run corral")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A workspace root with the real crates/cli/Cargo.toml. The adapters made
/// here have names nobody picks (`probe-*`): the real manifest may already
/// hold a user's `acme`.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\nmembers = [\"crates/*\", \"adapters/*\"]\n")
        .expect("write root manifest");
    std::fs::create_dir_all(dir.path().join("crates/cli")).expect("mkdir");
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    std::fs::copy(real, dir.path().join("crates/cli/Cargo.toml")).expect("copy the cli manifest");
    dir
}

#[test]
fn creates_the_crate_and_adds_it_to_the_binary() {
    let ws = workspace();
    let root = ws.path().to_str().expect("utf-8 path");
    let before = std::fs::read_to_string(ws.path().join("crates/cli/Cargo.toml")).expect("read");
    let out = corral(ws.path(), &["new-adapter", "probe-edr", "--root", root]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cargo test -p corral-adapter-probe-edr"), "{stdout}");

    let dir = ws.path().join("adapters/probe-edr");
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml written");
    assert!(cargo.contains("name = \"corral-adapter-probe-edr\""), "{cargo}");
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib.rs written");
    assert!(lib.contains("pub struct ProbeEdrFactory") && lib.contains("name: \"probe-edr\".into()"));
    assert!(lib.contains("pub fn register(registry: &mut corral_core::Registry)"));
    let test = std::fs::read_to_string(dir.join("tests/testkit.rs")).expect("testkit.rs written");
    assert!(test.contains("use corral_adapter_probe_edr::") && test.contains("SimEnv::start_kit"), "{test}");
    for text in [&cargo, &lib, &test] {
        assert!(!["@name@", "@crate@", "@Type@", "@ENV@"].iter().any(|p| text.contains(p)), "a placeholder is left");
    }

    let after = std::fs::read_to_string(ws.path().join("crates/cli/Cargo.toml")).expect("read");
    assert!(after.contains("corral-adapter-probe-edr = { path = \"../../adapters/probe-edr\", optional = true }"));
    // The default features list one name a line: the new one is a line of its own.
    assert!(after.contains("\n    \"corral-adapter-probe-edr\",\n]"), "{after}");
    // Only the two additions: every line of the old manifest is still there, comments included.
    for line in before.lines() {
        assert!(after.contains(line), "line {line:?} was lost:\n{after}");
    }
    assert!(after.contains("# Adapters: each an optional dependency"), "the comment is kept");
    assert_eq!(after.lines().count(), before.lines().count() + 2, "two lines added:\n{after}");

    // Again: the directory is taken.
    let again = corral(ws.path(), &["new-adapter", "probe-edr", "--root", root]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));

    // Without --root: found by walking up from a subdirectory.
    let out = corral(&dir.join("src"), &["new-adapter", "probe-zeta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ws.path().join("adapters/probe-zeta/src/lib.rs").is_file());
}

#[test]
fn bad_names_are_refused_naming_the_problem_and_nothing_is_written() {
    let ws = workspace();
    let root = ws.path().to_str().expect("utf-8 path");
    let before = std::fs::read_to_string(ws.path().join("crates/cli/Cargo.toml")).expect("read");
    for (name, says) in [
        ("Acme", "does not start with a lowercase letter"),
        ("1acme", "does not start with a lowercase letter"),
        ("probe_edr", "contains '_'"),
        ("acme-", "'-' at the end"),
        ("http", "reserved"),
    ] {
        let out = corral(ws.path(), &["new-adapter", name, "--root", root]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = stderr(&out);
        assert!(err.contains(&format!("`{name}`")) && err.contains(says), "{name}: {err}");
    }
    assert!(!ws.path().join("adapters").exists(), "nothing written");
    assert_eq!(std::fs::read_to_string(ws.path().join("crates/cli/Cargo.toml")).expect("read"), before);
}

#[test]
fn no_workspace_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = corral(dir.path(), &["new-adapter", "acme", "--root", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no Cargo.toml with a [workspace] table"), "{}", stderr(&out));

    // A workspace without the binary's manifest.
    std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").expect("write");
    let out = corral(dir.path(), &["new-adapter", "acme", "--root", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("crates/cli/Cargo.toml"), "{}", stderr(&out));
    assert!(!dir.path().join("adapters/acme").exists(), "nothing written");
}

/// Without --no-build, corral formats the new crate and builds itself to
/// write the docs; where that cannot work (this workspace holds no crate
/// sources) it is an error naming the command, and the files stay written.
#[test]
fn a_failed_build_step_is_an_error_naming_the_command() {
    let ws = workspace();
    let root = ws.path().to_str().expect("utf-8 path");
    let out = corral_building(ws.path(), &["new-adapter", "probe-build", "--root", root]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`cargo fmt -p corral-adapter-probe-build`") && err.contains("failed"), "{err}");
    assert!(err.contains("cargo run -p corral -- docs"), "{err}");
    assert!(ws.path().join("adapters/probe-build/src/lib.rs").is_file(), "the files are kept");
}
