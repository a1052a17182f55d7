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
    let of_kind = |name: &str, kind: &str| -> u64 {
        counts
            .as_array()
            .expect("array")
            .iter()
            .filter(|c| c["connection"] == name && c["kind"] == kind)
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum()
    };
    // Tenable: every exported asset, and every finding of the export (all states).
    let sim = corral_sim::SimConfig::new(42, 300);
    let tenable = corral_sim::data::tenable::TenableData::new(42, 300, 0, sim.behavior.findings_per_asset);
    let findings = tenable.finding_ids(&corral_sim::data::tenable::VulnFilter::all()).count() as u64;
    assert_eq!(of_kind("demo-tenable", "device"), 300, "{counts}");
    assert_eq!(of_kind("demo-tenable", "vulnerability"), findings, "{counts}");
    assert!(of_kind("demo-tenable", "software") > 0, "{counts}");
    // Qualys: every host of the host list, and their detections.
    assert_eq!(of_kind("demo-qualys", "device"), 300, "{counts}");
    assert!(of_kind("demo-qualys", "vulnerability") > 0, "{counts}");
    // AWS: every instance of both accounts in the three regions, as a cloud
    // resource and as a device.
    let instances = aws_demo_instances(300);
    assert!(instances > 150, "{instances}");
    assert_eq!(of_kind("demo-aws", "cloud_resource"), instances, "{counts}");
    assert_eq!(of_kind("demo-aws", "device"), instances, "{counts}");
    // All five kinds are in the store.
    for kind in ["device", "user", "vulnerability", "software", "cloud_resource"] {
        let n: u64 = counts
            .as_array()
            .expect("array")
            .iter()
            .filter(|c| c["kind"] == kind)
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum();
        assert!(n > 0, "no {kind}: {counts}");
    }

    let out = corral(dir.path(), &["assets", "--list", "--kind", "device", "--limit", "3", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(rows.as_array().map(Vec::len), Some(3));
    assert_eq!(rows[0]["kind"], "device");

    let out = corral(dir.path(), &["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json runs");
    assert_eq!(runs.as_array().map(Vec::len), Some(8));
    assert!(runs.as_array().expect("runs").iter().all(|r| r["status"] == "success"), "{runs}");
}

/// The instances the demo's AWS connection reads with `--vendor-size N`
/// (as src/demo.rs sets it up: seed 42, two accounts, three regions, a
/// simulator of size N / 6).
fn aws_demo_instances(vendor_size: usize) -> u64 {
    let accounts = corral_sim::data::aws::accounts(42);
    let size = (vendor_size / 6).max(1);
    let mut n = 0;
    for account in &accounts[..2] {
        for region in ["us-east-1", "eu-west-1", "ap-southeast-2"] {
            n += corral_sim::data::aws::AwsData::new(42, size, 0, account, region).count();
        }
    }
    n
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
    // Streams say what they fill and the attributes they declare, with their types.
    let graph = infos.as_array().and_then(|a| a.iter().find(|i| i["name"] == "msgraph")).expect("msgraph listed");
    let devices = &graph["streams"][0];
    assert_eq!(devices["name"], "managed_devices");
    let attrs = devices["attributes"].as_array().expect("attributes");
    assert!(attrs.iter().any(|a| a["name"] == "compliance_state" && a["type"] == "string"), "{devices}");
    assert!(devices["fills"].to_string().contains("entra_device_id"), "{devices}");
    let out = corral(dir.path(), &["adapters"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("attribute compliance_state"), "{}", text(&out));
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

/// RFC 4648 base64 (standard alphabet, padded), as HTTP Basic credentials carry it.
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() { char::from(T[((n >> (18 - 6 * i)) & 63) as usize]) } else { '=' });
        }
    }
    out
}

/// `secret` inside a JSON string, ASCII only (`\u00fc`, `\"`, `\\`, `\/`), as PHP or Python write it.
fn ascii_json(secret: &str) -> String {
    secret
        .chars()
        .map(|c| match c {
            '"' => "\\\"".to_string(),
            '\\' => "\\\\".to_string(),
            '/' => "\\/".to_string(),
            c if c.is_ascii() => c.to_string(),
            c => c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04x}")).collect(),
        })
        .collect()
}

/// `secret` form-encoded (`application/x-www-form-urlencoded`).
fn form_encoded(secret: &str) -> String {
    secret
        .bytes()
        .map(|b| match b {
            b' ' => "+".to_string(),
            b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A vendor that answers a token request with an error quoting it back.
/// Paths (the Graph tenant picks the style): `/oauth2/token` (CrowdStrike)
/// echoes the form body as plain text, with `%20` and lower-case hex too;
/// `t-form` the form body inside a JSON OAuth error; `t-json` the secret
/// JSON-escaped (ASCII only: `\u00fc`, `\"`, `\\`, `\/`) in a JSON body of
/// another shape; `t-basic` the Basic credentials of `id:secret`; `t-html`
/// an HTML page with the secret HTML-escaped.
fn start_echoing_vendor(rt: &tokio::runtime::Runtime, secret: &'static str, client_id: &'static str) -> String {
    use axum::extract::Path as UrlPath;
    use axum::http::{StatusCode, header};
    use axum::routing::post;

    fn lower_hex_with_20(form: &str) -> String {
        let mut out = String::new();
        let mut chars = form.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '+' => out.push_str("%20"),
                '%' => {
                    out.push('%');
                    for _ in 0..2 {
                        if let Some(h) = chars.next() {
                            out.push(h.to_ascii_lowercase());
                        }
                    }
                }
                c => out.push(c),
            }
        }
        out
    }
    let ascii_json = ascii_json(secret);
    let html: String = secret
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c if !c.is_ascii() => format!("&#{};", u32::from(c)),
            c => c.to_string(),
        })
        .collect();
    let basic = base64(format!("{client_id}:{secret}").as_bytes());
    let oauth_error = |description: String| {
        serde_json::json!({ "error": "invalid_client", "error_description": description }).to_string()
    };
    let app = axum::Router::new()
        .route(
            "/oauth2/token",
            post(move |body: String| async move {
                let text = format!("access denied for {body} ({})", lower_hex_with_20(&body));
                (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/plain")], text)
            }),
        )
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(move |UrlPath(tenant): UrlPath<String>, body: String| {
                let (ascii_json, html, basic) = (ascii_json.clone(), html.clone(), basic.clone());
                async move {
                    let (kind, text) = match tenant.as_str() {
                        "t-form" => ("application/json", oauth_error(format!("bad request: {body}"))),
                        "t-json" => {
                            ("application/json", format!(r#"{{"errors":[{{"client_secret":"{ascii_json}"}}]}}"#))
                        }
                        "t-basic" => ("application/json", oauth_error(format!("refused Authorization: Basic {basic}"))),
                        _ => ("text/html", format!("<html><body><p>refused: {html}</p></body></html>")),
                    };
                    (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, kind)], text)
                }
            }),
        );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind the echoing vendor");
    let addr = listener.local_addr().expect("address");
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Issue 9 item 4: a vendor that echoes the token request in its error puts
/// the secret into the error form-encoded, JSON-escaped, HTML-escaped or as
/// Basic credentials; an export quotes it the same ways in records it
/// rejects. No form of it reaches the printed summary (table or JSON), the
/// log (text or JSON), `corral check`, `corral runs` or the stored runs and
/// rejects; the errors and rejects themselves are still reported, scrubbed
/// (`***` by the HTTP toolkit, `[redacted]` by the engine's redactor).
#[test]
fn encoded_secrets_echoed_by_a_vendor_never_reach_output_logs_or_the_store() {
    const SECRET: &str = "s3cr3t-ZZ~TOP+/=& \"q\"\\\u{fc}-3nd-xyzzy";
    const CLIENT_ID: &str = "client-id-7";
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let vendor = start_echoing_vendor(&rt, SECRET, CLIENT_ID);
    let dir = tempfile::tempdir().expect("tempdir");
    let basic = base64(format!("{CLIENT_ID}:{SECRET}").as_bytes());
    // Records without an id, each quoting the secret in another form: rejected, kept with their raw input.
    let records = [
        serde_json::json!({ "host": "a", "note": SECRET }).to_string(),
        format!(r#"{{"host":"b","note":"{}"}}"#, ascii_json(SECRET)),
        format!(r#"{{"host":"c","note":"client_secret={}"}}"#, form_encoded(SECRET)),
        format!(r#"{{"host":"d","note":"Authorization: Basic {basic}"}}"#),
        r#"{"id":"1","host":"alpha"}"#.to_string(),
    ];
    std::fs::write(dir.path().join("export.ndjson"), records.join("\n") + "\n").expect("export");
    let mut config = format!(
        "[[connection]]\nname = \"export\"\nadapter = \"file\"\n[connection.config]\npath = \"export.ndjson\"\n\
         format = \"ndjson\"\ncolumns = {{ source_id = \"id\", hostname = \"host\" }}\n\n\
         [[connection]]\nname = \"falcon\"\nadapter = \"crowdstrike\"\n[connection.config]\nbase_url = \"{vendor}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret = \"${{CORRAL_TEST_SECRET}}\"\n"
    );
    for tenant in ["t-form", "t-json", "t-basic", "t-html"] {
        config.push_str(&format!(
            "\n[[connection]]\nname = \"graph-{tenant}\"\nadapter = \"msgraph\"\n[connection.config]\n\
             tenant_id = \"{tenant}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"${{CORRAL_TEST_SECRET}}\"\n\
             login_base_url = \"{vendor}\"\ngraph_base_url = \"{vendor}/graph\"\n"
        ));
    }
    write_config(dir.path(), &config);
    let run =
        |args: &[&str]| corral_with_env(dir.path(), args, &[("RUST_LOG", "debug"), ("CORRAL_TEST_SECRET", SECRET)]);
    // What is left of the secret in any form: every form keeps its letters
    // and digits in the clear, except base64, whose stretch for the secret is checked too.
    let leaks = |text: &str| -> Vec<&str> {
        ["s3cr3t", "xyzzy", "ZZ~TOP", "3nd", &basic[16..28]].into_iter().filter(|s| text.contains(s)).collect()
    };

    let mut export_runs = Vec::new();
    for args in [&["sync", "--json"][..], &["sync", "--log-json", "--json"], &["sync"]] {
        let out = run(args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(4), "{all}");
        assert_eq!(leaks(&all), Vec::<&str>::new(), "{args:?}: a form of the secret reached the output: {all}");
        assert!(all.contains("***"), "{args:?}: {all}");
        if args.contains(&"--json") {
            let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let runs = runs.as_array().expect("runs");
            assert_eq!(runs.len(), 6);
            for r in runs.iter().filter(|r| r["connection"] != "export") {
                assert_eq!(r["status"], "failed", "{r}");
                // The vendor's answer is still reported, without the secret.
                assert!(r.to_string().contains("401") && r.to_string().contains("***"), "{r}");
            }
            let export = runs.iter().find(|r| r["connection"] == "export").expect("export run");
            assert_eq!(export["records_rejected"], 4, "{export}");
            export_runs.push(export["sync_id"].as_str().expect("sync id").to_string());
        }
    }
    for args in [&["check"][..], &["check", "--json"], &["runs"], &["runs", "--json", "--limit", "100"]] {
        let out = run(args);
        let all = text(&out);
        assert_eq!(leaks(&all), Vec::<&str>::new(), "{args:?}: a form of the secret was shown: {all}");
    }
    for sync_id in &export_runs {
        for json in [false, true] {
            let mut args = vec!["runs", "--rejects", sync_id.as_str()];
            if json {
                args.push("--json");
            }
            let out = run(&args);
            let all = text(&out);
            assert_eq!(out.status.code(), Some(0), "{all}");
            assert_eq!(leaks(&all), Vec::<&str>::new(), "{args:?}: a kept reject shows the secret: {all}");
            assert_eq!(all.matches("[redacted]").count(), 4, "the rejects are kept, scrubbed: {all}");
        }
    }

    // The stored runs and rejects, as they are in the database.
    let db = rusqlite::Connection::open(dir.path().join("corral.db")).expect("open the store");
    let mut stored = String::new();
    for sql in ["SELECT summary FROM runs", "SELECT record || detail || coalesce(raw, '') FROM rejects"] {
        let mut stmt = db.prepare(sql).expect("query");
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect("rows");
        for row in rows {
            stored.push_str(&row.expect("row"));
        }
    }
    assert!(stored.contains("[redacted]") && stored.contains("***"), "{stored}");
    assert_eq!(leaks(&stored), Vec::<&str>::new(), "a form of the secret was stored: {stored}");
}

/// Runs `corral` with a stdout whose reading end is already closed: every
/// write to it fails with EPIPE, as under `corral ... | head -0`.
fn corral_with_closed_stdout(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run corral")
}

/// Issue 9 item 7: `corral assets --list | head -1` must not panic. Every
/// command whose stdout is closed stops quietly with exit code 141 (what a
/// shell reports for a process SIGPIPE killed); a sync's run is stored all
/// the same.
#[test]
fn a_closed_stdout_ends_every_command_quietly_with_141() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hosts.csv"), "id,host\n1,alpha\n2,beta\n").expect("csv");
    write_config(
        dir.path(),
        "[[connection]]\nname = \"csv\"\nadapter = \"file\"\n\
         config = { path = \"hosts.csv\", columns = { source_id = \"id\", hostname = \"host\" } }\n",
    );
    let out = corral_with_closed_stdout(dir.path(), &["sync", "--json"]);
    let quiet = |args: &[&str], out: &Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        for noise in ["panicked", "Broken pipe", "failed printing", "error:"] {
            assert!(!stderr.contains(noise), "{args:?} said {noise:?}: {stderr}");
        }
    };
    quiet(&["sync", "--json"], &out);
    let runs = corral(dir.path(), &["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).expect("runs json");
    assert_eq!(runs[0]["status"], "success", "the sync itself completed: {runs}");
    let sync_id = runs[0]["sync_id"].as_str().expect("sync id").to_string();
    for args in [
        &["sync"][..],
        &["check"],
        &["adapters"],
        &["adapters", "--json"],
        &["assets"],
        &["assets", "--json"],
        &["assets", "--list"],
        &["assets", "--list", "--json"],
        &["runs"],
        &["runs", "--json"],
        &["runs", "--rejects", &sync_id],
    ] {
        quiet(args, &corral_with_closed_stdout(dir.path(), args));
    }
    // Help and usage go through clap, which ignores a closed stdout.
    let out = corral_with_closed_stdout(dir.path(), &["--help"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", text(&out));
}

/// Issue 9 item 9: `corral runs --rejects` with a sync id no run has is an
/// error; a run without rejects is not.
#[test]
fn rejects_of_an_unknown_sync_id_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hosts.csv"), "id,host\n1,alpha\n").expect("csv");
    write_config(
        dir.path(),
        "[[connection]]\nname = \"csv\"\nadapter = \"file\"\n\
         config = { path = \"hosts.csv\", columns = { source_id = \"id\", hostname = \"host\" } }\n",
    );
    let out = corral(dir.path(), &["sync", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let sync_id = runs[0]["sync_id"].as_str().expect("sync id").to_string();

    let out = corral(dir.path(), &["runs", "--rejects", &sync_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("no rejected records kept for sync {sync_id}")), "{}", text(&out));
    let out = corral(dir.path(), &["runs", "--rejects", &sync_id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"), serde_json::json!([]));

    for json in [false, true] {
        let mut args = vec!["runs", "--rejects", "no-such-sync"];
        if json {
            args.push("--json");
        }
        let out = corral(dir.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no run with sync id no-such-sync"), "{}", text(&out));
        assert!(out.stdout.is_empty(), "{}", text(&out));
    }
}

/// The database file's bytes and modification time, and the files beside it.
fn db_state(dir: &Path) -> (Vec<u8>, std::time::SystemTime, Vec<String>) {
    let db = dir.join("corral.db");
    let mut files: Vec<String> =
        std::fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    files.sort();
    let modified = std::fs::metadata(&db).and_then(|m| m.modified()).expect("mtime");
    (std::fs::read(&db).expect("read db"), modified, files)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn journal_mode(db: &Path, mode: &str) {
    let conn = rusqlite::Connection::open(db).expect("open");
    let got: String = conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| r.get(0)).expect("pragma");
    assert_eq!(got, mode.to_lowercase());
}

/// Under root (as in CI) file modes stop nothing: when `setpriv` is there,
/// the read commands also run as `nobody`, for whom they do.
fn setpriv_to_nobody() -> Option<Command> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    let available = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    (String::from_utf8_lossy(&uid.stdout).trim() == "0" && available).then(|| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_corral")]);
        c
    })
}

/// Issue 9 item 9: `corral assets` and `corral runs` read a database they
/// may not write (file and directory read-only), never write it, and never
/// create one: without a database they say so. (Root ignores file modes:
/// under root the checks that matter are that nothing is created or written,
/// the file's bytes, its mtime and the directory listing stay the same; the
/// commands also run as `nobody` when `setpriv` can drop to it.)
#[test]
fn read_commands_never_write_the_database_nor_create_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    set_mode(dir.path(), 0o755);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let db = data.join("corral.db");
    std::fs::write(dir.path().join("hosts.csv"), "id,host\n1,alpha\n2,beta\n").expect("csv");
    write_config(
        dir.path(),
        &format!(
            "[store]\nkind = \"sqlite\"\npath = \"{}\"\n\n[[connection]]\nname = \"csv\"\nadapter = \"file\"\n\
             config = {{ path = \"hosts.csv\", columns = {{ source_id = \"id\", hostname = \"host\" }} }}\n",
            db.display()
        ),
    );
    for args in [&["assets"][..], &["assets", "--list"], &["runs"], &["runs", "--rejects", "x"]] {
        let out = corral(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("no database at {}", db.display())), "{args:?}: {stderr}");
        assert!(stderr.contains("corral sync"), "{args:?}: {stderr}");
        assert!(!db.exists(), "{args:?} created a database");
    }

    let out = corral(dir.path(), &["sync", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let sync_id = runs[0]["sync_id"].as_str().expect("sync id").to_string();
    let read_everything = |what: &str| {
        for args in [
            &["assets", "--json"][..],
            &["assets", "--list", "--json"],
            &["runs", "--json"],
            &["runs"],
            &["runs", "--rejects", &sync_id],
        ] {
            let as_nobody = setpriv_to_nobody().map(|mut c| {
                c.args(args).current_dir(dir.path()).env_remove("RUST_LOG").env_remove("CORRAL_CONFIG");
                c.output().expect("run corral as nobody")
            });
            for (who, out) in
                std::iter::once(("", corral(dir.path(), args))).chain(as_nobody.map(|o| (" as nobody", o)))
            {
                assert_eq!(out.status.code(), Some(0), "{what}, {args:?}{who}: {}", text(&out));
                if args[0] == "assets" && args[1] == "--json" {
                    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
                    assert_eq!(counts[0]["count"], 2, "{what}{who}: {counts}");
                }
            }
        }
    };

    // A WAL database (as sync leaves it) in a read-only file: read, its bytes untouched.
    set_mode(&db, 0o444);
    let (bytes, modified, _) = db_state(&data);
    read_everything("WAL database, read-only file");
    let (after, modified_after, _) = db_state(&data);
    assert!(after == bytes && modified_after == modified, "the database file was written");

    // A rollback-journal database (a copy, a backup) in a read-only file and
    // directory: read, and nothing created or changed beside it either.
    set_mode(&db, 0o644);
    journal_mode(&db, "DELETE");
    set_mode(&db, 0o444);
    set_mode(&data, 0o555);
    let before = db_state(&data);
    read_everything("rollback-journal database, read-only file and directory");
    let after = db_state(&data);
    set_mode(&data, 0o755);
    assert!(after.0 == before.0, "the database file's bytes changed");
    assert_eq!(after.1, before.1, "the database file was written");
    assert_eq!(after.2, before.2, "files were created beside the database");

    // A WAL database in a read-only directory, without its -shm index (for a
    // user who may not write there: read as an immutable file).
    set_mode(&db, 0o644);
    journal_mode(&db, "WAL");
    set_mode(&db, 0o444);
    set_mode(&data, 0o555);
    let (bytes, modified, _) = db_state(&data);
    read_everything("WAL database, read-only file and directory");
    let (after, modified_after, _) = db_state(&data);
    set_mode(&data, 0o755);
    assert!(after == bytes && modified_after == modified, "the database file was written");
}

/// `corral assets` on a store holding all five kinds: `--where` finds them by
/// canonical field (keyed or not, list elements, cloud tags) and by attribute
/// (declared by an adapter, or by a file connection's config), `--points-at`
/// by reference; counts show stale assets apart; a bad `--where` exits 2
/// with a message naming it.
#[test]
fn assets_where_finds_every_kind_by_field_and_attribute() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("devices.csv"), "id,host,rack,cores,owner\n1,cmdb-1,R-12,8,u-1\n2,cmdb-2,R-3,4,\n")
        .expect("csv");
    write_config(
        dir.path(),
        r#"
        [[connection]]
        name = "cmdb"
        adapter = "file"
        [connection.config]
        path = "devices.csv"
        owner_connection = "okta"
        [connection.config.columns]
        source_id = "id"
        hostname = "host"
        owner_id = "owner"
        [connection.config.attributes]
        rack = "rack"
        cores = { column = "cores", type = "integer" }
        "#,
    );
    let out = corral(dir.path(), &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Every kind, with attributes and references, from the conformance fixtures.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use corral_core::Store;
        let store = corral_store::sqlite::SqliteStore::open(dir.path().join("corral.db")).expect("open");
        let batch = corral_store::conformance::batch(
            "conn-a",
            "seed",
            chrono::Utc::now(),
            corral_store::conformance::model_assets(),
        );
        let out = store.upsert(batch).await.expect("seed");
        assert_eq!(out.inserted, 5);
    });

    let find = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["assets", "--list", "--json"];
        all.extend_from_slice(args);
        let out = corral(dir.path(), &all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        rows.as_array()
            .expect("array")
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["connection"].as_str().unwrap_or(""),
                    r["kind"].as_str().unwrap_or(""),
                    r["source_id"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let arn = "conn-a cloud_resource arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc";
    assert_eq!(find(&["--where", "hostname=WEB-01"]), ["conn-a device dev-1"]);
    assert_eq!(find(&["--where", "serial_number=5cg1234xyz"]), ["conn-a device dev-1"]);
    assert_eq!(find(&["--where", "mac_addresses=AA-BB-CC-DD-EE-02"]), ["conn-a device dev-1"]);
    assert_eq!(find(&["--where", "os.family=windows"]), ["conn-a device dev-1"]);
    assert_eq!(find(&["--where", "username=ann.lee@example.com"]), ["conn-a user usr-1"]);
    assert_eq!(find(&["--where", "severity=critical", "--where", "port=22"]), ["conn-a vulnerability vuln-1"]);
    assert_eq!(find(&["--where", "cves=cve-2024-3094"]), ["conn-a vulnerability vuln-1"]);
    assert_eq!(find(&["--kind", "software", "--where", "name=OpenSSH"]), ["conn-a software sw-1"]);
    assert_eq!(find(&["--where", "tags.env=prod"]), [arn]);
    assert_eq!(find(&["--where", "resource_id=i-0abc"]), [arn]);
    // Attributes: declared by the crowdstrike adapter, and by the cmdb connection's config.
    assert_eq!(find(&["--where", "attributes.agent_version=7.14.18408.0"]), ["conn-a device dev-1"]);
    assert_eq!(find(&["--where", "attributes.rack=R-12"]), ["cmdb device 1"]);
    assert_eq!(find(&["--where", "attributes.cores=4", "--connection", "cmdb"]), ["cmdb device 2"]);
    // References.
    assert_eq!(
        find(&["--points-at", "conn-a", "device", "dev-1"]),
        ["conn-a software sw-1", "conn-a vulnerability vuln-1"]
    );
    assert_eq!(find(&["--points-at", "okta", "user", "u-1"]), ["cmdb device 1"]);

    // Bad input: exit 2, a message naming what is wrong, nothing on stdout.
    for (args, says) in [
        (&["--where", "colour=red"][..], "unknown field of any kind `colour`"),
        (&["--where", "hostname"][..], "expected FIELD=VALUE"),
        (&["--where", "attributes.cores=many"][..], "`many` is not an integer"),
        (&["--where", "attributes.ghost=1"][..], "unknown attribute `ghost`"),
        (&["--kind", "user", "--where", "severity=high"][..], "unknown user field `severity`"),
        (&["--where", "severity=urgent"][..], "not one of info, low, medium, high, critical"),
        (&["--points-at", "conn-a", "printer", "x"][..], "unknown asset kind `printer`"),
    ] {
        let mut all = vec!["assets"];
        all.extend_from_slice(args);
        let out = corral(dir.path(), &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    // A device gone from the export goes stale: counted apart without --include-stale.
    std::fs::write(dir.path().join("devices.csv"), "id,host,rack,cores,owner\n1,cmdb-1,R-12,8,u-1\n").expect("csv");
    let out = corral(dir.path(), &["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = corral(dir.path(), &["assets", "--connection", "cmdb"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = table.lines().find(|l| l.starts_with("cmdb")).expect("cmdb row").split_whitespace().collect();
    assert_eq!(row, ["cmdb", "device", "1", "1"], "{table}");
    let out = corral(dir.path(), &["assets", "--json"]);
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let kinds: Vec<&str> = counts.as_array().expect("array").iter().filter_map(|c| c["kind"].as_str()).collect();
    assert_eq!(kinds, ["device", "cloud_resource", "device", "software", "user", "vulnerability"]);
    assert_eq!((counts[0]["count"].as_u64(), counts[0]["stale"].as_u64()), (Some(1), Some(1)));
    // `corral adapters` shows the attributes streams declare.
    let out = corral(dir.path(), &["adapters"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("attribute agent_version"), "{}", text(&out));
}

/// `corral docs` writes an index and a page per adapter and the schema,
/// `--check` says whether they are current, and bad input is a clear error with a
/// non-zero exit code.
#[test]
fn docs_writes_pages_checks_them_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let out = corral(dir, &["docs", "--out", "pages"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for page in ["README.md", "okta.md", "crowdstrike.md", "msgraph.md", "file.md"] {
        assert!(dir.join("pages").join(page).is_file(), "{page} written");
    }
    let schema = std::fs::read_to_string(dir.join("docs/SCHEMA.md")).expect("the schema is written");
    assert!(schema.contains("| `hostname` |") && schema.contains("okta"), "{schema}");
    let out = corral(dir, &["docs", "--out", "pages", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::write(dir.join("docs/SCHEMA.md"), "edited by hand").expect("edit");
    let out = corral(dir, &["docs", "--out", "pages", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("docs/SCHEMA.md"), "names the stale schema: {}", text(&out));
    let out = corral(dir, &["docs", "--out", "pages"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::write(dir.join("pages/okta.md"), "edited by hand").expect("edit");
    let out = corral(dir, &["docs", "--out", "pages", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("okta.md"), "names the stale page: {}", text(&out));
    std::fs::write(dir.join("a-file"), "x").expect("file");
    let out = corral(dir, &["docs", "--out", "a-file"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("a-file: not a directory"), "{}", text(&out));
    let out = corral(dir, &["docs", "--colour"]);
    assert_eq!(out.status.code(), Some(2), "unknown flag: a usage error");
}
