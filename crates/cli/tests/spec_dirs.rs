//! Declarative adapters from a user's spec folder (`[adapters] spec_dirs`):
//! no rebuild, the real `corral` binary syncs from a spec written into a
//! temporary folder; a spec with a mistake stops `sync` and `check` with the
//! file, the line and the problem.

use std::path::Path;
use std::process::{Command, Output};

use corral_sim::SimConfig;
use corral_sim::kit::{self, KitSpec};

fn corral(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("ACME_TOKEN", "")
        .output()
        .expect("run corral")
}

async fn corral_async(dir: &Path, args: &[&str]) -> Output {
    let (dir, args): (std::path::PathBuf, Vec<String>) =
        (dir.to_path_buf(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        corral(&dir, &args)
    })
    .await
    .expect("corral ran")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const SPEC: &str = r#"
[adapter]
name = "acme-devices"
description = "Acme inventory devices (a user's own spec)"
[adapter.notes]
auth = "A bearer token."

[[config]]
name = "base_url"
type = "url"
required = true
description = "The API URL"

[[config]]
name = "token"
type = "string"
required = true
secret = true
description = "An API token"

[http]
base_url = "{config.base_url}"

[auth]
type = "bearer"
token = "{config.token}"

[[streams]]
name = "devices"
kind = "device"
description = "Devices"
path = "/api/v1/devices"
query = { limit = "25" }
records = "data"
key = "id"
pagination = { type = "body_cursor", cursor = "pagination.nextCursor", param = "cursor" }

[streams.fields]
hostname = "hostname"
serial_number = "serial_number"
mac_addresses = "mac_address"
ip_addresses = "ip_address"
"os.name" = "os"
last_seen = "last_seen"
"#;

fn write_setup(dir: &Path, spec: &str, base_url: &str, token: &str) {
    std::fs::create_dir_all(dir.join("specs")).expect("specs dir");
    std::fs::write(dir.join("specs/acme-devices.toml"), spec).expect("spec");
    let config = format!(
        r#"
[store]
kind = "sqlite"
path = "corral.db"

[adapters]
spec_dirs = ["./specs"]

[[connection]]
name = "acme"
adapter = "acme-devices"
[connection.config]
base_url = "{base_url}"
token = "{token}"
"#
    );
    std::fs::write(dir.join("corral.toml"), config).expect("corral.toml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_in_the_users_folder_syncs_with_the_corral_binary() {
    let seed = 5;
    let spec = KitSpec::new("/api/v1/devices", kit::devices(seed)).page_size(25, 100);
    let ids = spec.ids(130, 0);
    let sim = kit::start(spec, SimConfig::new(seed, 130)).await.expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    write_setup(dir.path(), SPEC, &sim.base_url, &sim.config.credentials.token);

    // The config is found from elsewhere: spec_dirs is relative to the config file.
    let config_path = dir.path().join("corral.toml");
    let config = config_path.to_str().expect("utf-8 path");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = corral_async(elsewhere.path(), &["--config", config, "adapters"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme-devices"), "{}", text(&out));

    let out = corral_async(elsewhere.path(), &["--config", config, "check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = corral_async(dir.path(), &["sync", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = corral_async(dir.path(), &["assets", "--json"]).await;
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json counts");
    let n: u64 = counts.as_array().expect("array").iter().map(|c| c["count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(n, 130, "{counts}");

    let first = spec_record(seed);
    let host = first["hostname"].as_str().expect("hostname").to_lowercase();
    let out = corral_async(dir.path(), &["assets", "--list", "--where", &format!("hostname={host}"), "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json list");
    let row = &rows[0];
    assert_eq!(row["source_id"], ids[0], "{rows}");
    assert_eq!(row["fields"]["serial_number"], first["serial_number"], "{row}");
    assert_eq!(row["fields"]["ip_addresses"][0], first["ip_address"], "{row}");
    assert!(row["fields"]["os"]["family"].is_string(), "{row}");

    // And `corral docs` writes its page.
    let docs = dir.path().join("docs");
    let out = corral_async(dir.path(), &["docs", "--out", docs.to_str().expect("utf-8")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(docs.join("acme-devices.md")).expect("a page for the spec adapter");
    assert!(page.contains("### `devices`"), "{page}");
    sim.shutdown().await;
}

fn spec_record(seed: u64) -> serde_json::Value {
    kit::devices(seed)(0, 0)
}

#[test]
fn a_spec_with_a_mistake_stops_sync_and_check_with_file_line_and_problem() {
    let cases = [
        ("records = \"data\"", "records = \"data\"\nrecords_path = \"x\"", "unknown field `records_path`"),
        (
            "hostname = \"hostname\"",
            "hostname = { path = \"hostname\", transform = \"fqdn\" }",
            "unknown transform `fqdn`",
        ),
        ("path = \"/api/v1/devices\"", "path = \"/api/v1/{config.token}/devices\"", "secret config field"),
    ];
    for (from, to, problem) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = SPEC.replacen(from, to, 1);
        write_setup(dir.path(), &spec, "http://127.0.0.1:9", "t0ken-hunter2");
        let changed = to.lines().last().unwrap_or(to);
        let line = spec[..spec.find(changed).expect("changed line")].matches('\n').count() + 1;
        for cmd in ["sync", "check"] {
            let out = corral(dir.path(), &[cmd]);
            let msg = text(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd}: {msg}");
            let want = format!("specs/acme-devices.toml:{line}: ");
            assert!(msg.contains(&want), "{cmd}: wants `{want}`: {msg}");
            assert!(msg.contains(problem), "{cmd}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }
}
