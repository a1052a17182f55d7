//! `corral serve` as an operator runs it: it refuses to listen beyond
//! loopback without a token; SIGTERM during a run lets it finish within
//! the grace period or interrupts it after (nothing lost, nothing wrongly
//! stale: the rerun completes the dataset exactly), and exits 0; SIGHUP
//! reloads corral.toml, refusing a bad file and keeping the one in force.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_sim::{Credentials, SimConfig, Vendor};

const USERS: usize = 3_000;
const TOKEN: &str = "serve-test-token-0123456789";

fn corral(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("OKTA_TOKEN", Credentials::default().token)
        .env("CORRAL_API_TOKEN", TOKEN);
    c
}

fn write_config(dir: &Path, base_url: &str, page_size: u32, grace: &str) {
    std::fs::write(
        dir.join("corral.toml"),
        format!(
            "[serve]\ntoken = \"${{CORRAL_API_TOKEN}}\"\ngrace_period = \"{grace}\"\n\n\
             [[connection]]\nname = \"okta\"\nadapter = \"okta\"\nschedule = {{ manual = true }}\n\
             stale = {{ mode = \"mark\", delete_after = \"1d\" }}\n\
             [connection.config]\nbase_url = \"{base_url}\"\ntoken = \"${{OKTA_TOKEN}}\"\npage_size = {page_size}\n"
        ),
    )
    .expect("config");
}

/// A running `corral serve`, its address, and its stderr collected on a thread.
struct Serve {
    child: Child,
    addr: String,
    stderr: std::thread::JoinHandle<String>,
}

fn start_serve(dir: &Path) -> Serve {
    let mut child = corral(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral serve");
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the listening line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Serve { child, addr, stderr }
}

impl Serve {
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(ok.success(), "kill {signal}");
    }

    /// Wait for the process to exit; its exit code and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "corral serve did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.code(), self.stderr.join().expect("stderr thread"))
    }

    fn request(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        http(&self.addr, method, path, Some(TOKEN))
    }
}

/// One HTTP/1.1 request over a plain socket: the status and the JSON body (Null if not JSON).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("corral.toml"),
        "[[connection]]\nname = \"x\"\nadapter = \"file\"\nconfig = { path = \"x.csv\", columns = { source_id = \"id\" } }\n",
    )
    .expect("config");
    let out = corral(dir.path()).args(["serve", "--listen", "0.0.0.0:0"]).output().expect("corral serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no API token is configured"), "{stderr}");
}

/// SIGTERM in the middle of a run, with no grace left: the run is
/// interrupted as `corral sync` interrupts one (what was fetched is stored,
/// checkpoints only behind it, nothing marked stale), corral serve exits 0,
/// and the next run completes the dataset exactly. With a grace period long
/// enough, SIGTERM lets the run finish.
#[test]
fn sigterm_during_a_run_loses_nothing_and_the_rerun_completes_the_dataset() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let sim = rt
        .block_on(corral_sim::start(Vendor::Okta, SimConfig::new(21, USERS).latency_ms(50)))
        .expect("start the Okta simulator");
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. Everything stored once.
    write_config(dir.path(), &sim.base_url, 200, "0s");
    let out = corral(dir.path()).args(["sync", "--json"]).output().expect("corral sync");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // 2. A run of 60 pages, 50 ms each, interrupted by SIGTERM after 10.
    write_config(dir.path(), &sim.base_url, 50, "0s");
    let serve = start_serve(dir.path());
    let before = sim.counters.snapshot().requests;
    assert_eq!(serve.request("POST", "/api/connections/okta/sync").0, 202);
    wait_until("10 pages", || sim.counters.snapshot().requests >= before + 10);
    serve.signal("-TERM");
    let (code, stderr) = serve.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("grace period over: interrupting"), "{stderr}");
    assert!(!stderr.contains(TOKEN) && !stderr.contains(&Credentials::default().token), "a secret in the log");
    let runs = json_of(&corral(dir.path()).args(["runs", "--json"]).output().expect("runs"));
    let stopped = runs[0].clone();
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert!(stopped["errors"].to_string().contains("interrupted"), "{stopped}");
    assert_eq!(stopped["stale_marked"], 0, "{stopped}");
    let fetched = stopped["records_fetched"].as_u64().expect("fetched");
    assert!(fetched > 0 && fetched < USERS as u64, "stopped part-way: {stopped}");
    let loaded: u64 = ["inserted", "updated", "unchanged"].iter().filter_map(|k| stopped[k].as_u64()).sum();
    assert_eq!(loaded, fetched, "everything fetched was stored: {stopped}");
    let counts = json_of(&corral(dir.path()).args(["assets", "--json", "--include-stale"]).output().expect("assets"));
    assert_eq!((counts[0]["count"].as_u64(), counts[0]["stale"].as_u64()), (Some(USERS as u64), Some(0)), "{counts}");
    let stopped_id = stopped["sync_id"].as_str().expect("id").to_string();

    // 3. The rerun, through a new corral serve: it resumes behind stored data
    //    and completes the dataset: exactly the vendor's users, none stale.
    let serve = start_serve(dir.path());
    assert_eq!(serve.request("POST", "/api/connections/okta/sync").0, 202);
    let mut rerun = serde_json::Value::Null;
    wait_until("the rerun", || {
        let (_, c) = serve.request("GET", "/api/connections/okta");
        let done = c.get("running").is_none() && c["last_run"]["sync_id"].as_str().is_some_and(|id| id != stopped_id);
        if done {
            rerun = c["last_run"].clone();
        }
        done
    });
    assert_eq!(rerun["status"], "success", "{rerun}");
    assert!(rerun["records_fetched"].as_u64().unwrap_or(0) < USERS as u64, "it resumed from the checkpoint: {rerun}");
    let rerun_id = rerun["sync_id"].as_str().expect("id").to_string();
    serve.signal("-TERM");
    let (code, stderr) = serve.wait();
    assert_eq!(code, Some(0), "{stderr}");
    let out = corral(dir.path())
        .args(["assets", "--list", "--json", "--include-stale", "--limit", "100000"])
        .output()
        .expect("assets --list");
    let assets = json_of(&out);
    let assets = assets.as_array().expect("assets");
    let stored: BTreeSet<String> = assets.iter().map(|a| a["source_id"].as_str().expect("id").to_string()).collect();
    let expected: BTreeSet<String> =
        corral_sim::okta_users(21, USERS, 0).iter().filter_map(|u| u["id"].as_str().map(str::to_string)).collect();
    assert_eq!(assets.len(), expected.len());
    assert_eq!(stored, expected, "exactly the vendor's users");
    assert!(assets.iter().all(|a| a.get("stale_since").is_none()), "nothing stale");
    let behind = assets
        .iter()
        .filter(|a| a["last_sync_id"] != stopped_id.as_str() && a["last_sync_id"] != rerun_id.as_str())
        .count();
    assert_eq!(behind, 0, "every user was seen by the interrupted run or the rerun");

    // 4. A grace period long enough: SIGTERM lets the run finish, then exits 0.
    write_config(dir.path(), &sim.base_url, 50, "2m");
    let serve = start_serve(dir.path());
    let before = sim.counters.snapshot().requests;
    assert_eq!(serve.request("POST", "/api/connections/okta/sync").0, 202);
    wait_until("5 pages", || sim.counters.snapshot().requests >= before + 5);
    serve.signal("-TERM");
    let (code, stderr) = serve.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("waiting for running syncs to finish"), "{stderr}");
    let runs = json_of(&corral(dir.path()).args(["runs", "--json"]).output().expect("runs"));
    assert_eq!(runs[0]["status"], "success", "the run finished within the grace period: {}", runs[0]);
    assert_eq!(runs[0]["records_fetched"], USERS, "{}", runs[0]);
    rt.block_on(sim.shutdown());
}

#[test]
fn sighup_reloads_and_a_bad_file_is_refused_and_the_old_one_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.csv"), "id,host\n1,alpha\n").expect("csv");
    let conn = |name: &str| {
        format!(
            "[[connection]]\nname = \"{name}\"\nadapter = \"file\"\nconfig = {{ path = \"a.csv\", columns = {{ source_id = \"id\", hostname = \"host\" }} }}\n"
        )
    };
    let head = "[serve]\ntoken = \"${CORRAL_API_TOKEN}\"\n\n";
    std::fs::write(dir.path().join("corral.toml"), format!("{head}{}", conn("one"))).expect("config");
    let serve = start_serve(dir.path());
    let names = |serve: &Serve| -> Vec<String> {
        let (_, v) = serve.request("GET", "/api/connections");
        v["connections"].as_array().expect("list").iter().map(|c| c["name"].as_str().expect("n").to_string()).collect()
    };
    assert_eq!(names(&serve), ["one"]);
    // Without the token: 401.
    assert_eq!(http(&serve.addr, "GET", "/api/connections", None).0, 401);

    // A broken file: refused, the error visible, the old configuration kept.
    std::fs::write(dir.path().join("corral.toml"), format!("{head}{}[[connection]]\nname = ", conn("one")))
        .expect("bad");
    serve.signal("-HUP");
    wait_until("the refusal", || serve.request("GET", "/api/status").1["config"]["error"].is_string());
    let (_, status) = serve.request("GET", "/api/status");
    assert!(status["config"]["error"].as_str().is_some_and(|e| e.contains("corral.toml")), "{status}");
    assert_eq!(names(&serve), ["one"]);
    let (code, body) = serve.request("POST", "/api/reload");
    assert_eq!(code, 422, "{body}");

    // A good file with another connection: applied.
    std::fs::write(dir.path().join("corral.toml"), format!("{head}{}{}", conn("one"), conn("two"))).expect("good");
    serve.signal("-HUP");
    wait_until("the reload", || names(&serve) == ["one", "two"]);
    assert!(serve.request("GET", "/api/status").1["config"]["error"].is_null());
    serve.signal("-TERM");
    let (code, stderr) = serve.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("configuration reload refused"), "the refusal is in the log: {stderr}");
    assert!(!stderr.contains(TOKEN), "the token is in the log");
}
