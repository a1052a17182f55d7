//! The `corral` binary as an operator uses it: exit codes, output, secrets.

use std::path::Path;
use std::process::{Command, Output};

fn corral(dir: &Path, args: &[&str]) -> Output {
    corral_with_env(dir, args, &[])
}

/// `corral` with these environment variables set (`RUST_LOG` among them, or none).
fn corral_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run corral")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn demo_loads_assets_that_assets_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = corral(dir.path(), &["demo", "--devices", "3000", "--users", "500", "--vendor-size", "300"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("demo-devices") && stdout.contains("success"), "{stdout}");
    assert!(dir.path().join("corral.db").exists());

    let out = corral(dir.path(), &["assets", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json counts");
    let count = |name: &str| -> u64 {
        counts
            .as_array()
            .expect("array")
            .iter()
            .filter(|c| c["connection"] == name)
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(count("demo-devices"), 3000);
    assert_eq!(count("demo-users"), 500);
    assert_eq!(count("demo-crowdstrike"), 300);
    assert_eq!(count("demo-okta"), 300);
    // Graph serves 300 Intune devices and 300 Entra users, with the duplicate
    // records real tenants have: each distinct id is stored once.
    let graph = corral_sim::msgraph_asset_count(42, 300, 0);
    assert!(graph > 300, "Intune devices and Entra users");
    assert_eq!(count("demo-msgraph"), graph as u64, "{counts}");

    let out = corral(dir.path(), &["assets", "--list", "--kind", "device", "--limit", "3", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(rows.as_array().map(Vec::len), Some(3));
    assert_eq!(rows[0]["kind"], "device");

    let out = corral(dir.path(), &["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json runs");
    assert_eq!(runs.as_array().map(Vec::len), Some(5));
}

fn write_config(dir: &Path, body: &str) {
    std::fs::write(dir.join("corral.toml"), body).expect("write config");
}

#[test]
fn partial_sync_exits_3_and_keeps_rejects_for_inspection() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("devices.csv"),
        "id,host\n1,alpha\n2,\"unterminated\n3,gamma,extra,fields\n4,delta\n",
    )
    .expect("csv");
    write_config(
        dir.path(),
        r#"
        [[connection]]
        name = "csv"
        adapter = "file"
        [connection.config]
        path = "devices.csv"
        [connection.config.columns]
        source_id = "id"
        hostname = "host"
        "#,
    );
    let out = corral(dir.path(), &["sync", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(runs[0]["status"], "partial");
    assert!(runs[0]["records_rejected"].as_u64().unwrap_or(0) >= 1, "{runs}");
    let sync_id = runs[0]["sync_id"].as_str().expect("sync id").to_string();
    let out = corral(dir.path(), &["runs", "--rejects", &sync_id]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("line "), "{}", text(&out));
}

#[test]
fn failed_connection_exits_4_and_others_still_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ok.csv"), "id,host\n1,alpha\n").expect("csv");
    write_config(
        dir.path(),
        r#"
        [[connection]]
        name = "good"
        adapter = "file"
        config = { path = "ok.csv", columns = { source_id = "id", hostname = "host" } }

        [[connection]]
        name = "missing-file"
        adapter = "file"
        config = { path = "nope.csv", columns = { source_id = "id" } }
        "#,
    );
    let out = corral(dir.path(), &["sync", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(runs[0]["status"], "success");
    assert_eq!(runs[0]["inserted"], 1);
    assert_eq!(runs[1]["status"], "failed");
    assert!(runs[1]["errors"].to_string().contains("nope.csv"), "{runs}");
}

#[test]
fn invalid_config_names_the_connection_and_field_and_never_prints_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret.txt"), "hunter2-very-secret\n").expect("secret");
    write_config(
        dir.path(),
        r#"
        [[connection]]
        name = "hr-export"
        adapter = "file"
        [connection.config]
        path = "x.csv"
        page_records = "${file:secret.txt}"
        [connection.config.columns]
        source_id = "id"
        "#,
    );
    let out = corral(dir.path(), &["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("hr-export") && all.contains("page_records"), "{all}");
    assert!(!all.contains("hunter2"), "a secret reached the output: {all}");

    write_config(dir.path(), "[[connection]]\nname = \"x\"\nadapter = \"nosuch\"\n");
    let out = corral(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("unknown adapter `nosuch`"), "{}", text(&out));
}

#[test]
fn adapters_lists_streams_and_config_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = corral(dir.path(), &["adapters", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let infos: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let file = infos.as_array().and_then(|a| a.iter().find(|i| i["name"] == "file")).expect("file adapter listed");
    assert!(file["streams"].to_string().contains("devices"));
    assert!(file["config"].to_string().contains("path"));
}

/// A secret that reaches an error (here: through a file path that embeds it)
/// is scrubbed from the log lines, the printed summary, the stored run and
/// the rejects kept for inspection.
#[test]
fn a_secret_inside_an_error_never_reaches_logs_summaries_or_the_store() {
    let secret = "tok-8f3k2j9d7s";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join(secret)).expect("dir");
    // A line the adapter rejects, quoting the secret in its raw input.
    std::fs::write(dir.path().join(secret).join("ok.csv"), format!("id,host\n1,alpha\n2,{secret},extra\n"))
        .expect("csv");
    write_config(
        dir.path(),
        r#"
        [[connection]]
        name = "present"
        adapter = "file"
        config = { path = "${CORRAL_TEST_DIR_SECRET}/ok.csv", columns = { source_id = "id", hostname = "host" } }

        [[connection]]
        name = "absent"
        adapter = "file"
        config = { path = "${CORRAL_TEST_DIR_SECRET}/missing.csv", columns = { source_id = "id" } }
        "#,
    );
    let run =
        |args: &[&str]| corral_with_env(dir.path(), args, &[("RUST_LOG", "debug"), ("CORRAL_TEST_DIR_SECRET", secret)]);
    let out = run(&["sync", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("missing.csv"), "the error itself is still reported: {all}");
    assert!(all.contains("[redacted]"), "{all}");
    assert!(!all.contains(secret), "a secret reached the output: {all}");

    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let sync_id = runs[0]["sync_id"].as_str().expect("sync id").to_string();
    for args in [vec!["runs", "--json"], vec!["runs"], vec!["runs", "--rejects", &sync_id]] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(!text(&out).contains(secret), "a secret was stored: {}", text(&out));
    }
    let out = run(&["runs", "--rejects", &sync_id, "--json"]);
    assert!(text(&out).contains("[redacted]"), "the reject is kept, scrubbed: {}", text(&out));
}
