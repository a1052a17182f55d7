//! The `corral-sim` binary as documented: `serve` driven by a plain HTTP
//! client, `dump` streaming its records.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{client, enc, form};

/// A child process killed (by its own handle) when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the binary with `args`; the child and its stdout lines, as they come.
fn run(args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("corral-sim starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Running(child), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_from_the_command_line_works_with_any_http_client() {
    let (_child, lines) = run(&[
        "serve",
        "--vendor",
        "crowdstrike",
        "--port",
        "0",
        "--seed",
        "3",
        "--size",
        "1200",
        "--latency-ms",
        "30",
        "--rate-limit",
        "100/s",
    ]);
    let first = lines.recv_timeout(Duration::from_secs(30)).expect("the banner");
    let base = first.split("serving at ").nth(1).expect("the base URL in the banner").trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");

    let c = client();
    let creds = corral_sim::Credentials::default();
    let t = Instant::now();
    let token: Value = c
        .post(format!("{base}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("client_id", &creds.client_id), ("client_secret", &creds.client_secret)]))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    assert!(t.elapsed() >= Duration::from_millis(30), "--latency-ms applies: {:?}", t.elapsed());
    let token = token["access_token"].as_str().expect("access_token").to_string();
    let mut ids: Vec<String> = Vec::new();
    let mut offset = String::new();
    loop {
        let url = format!("{base}/devices/queries/devices-scroll/v1?limit=500&offset={}", enc(&offset));
        let resp = c.get(url).bearer_auth(&token).send().await.expect("ids page");
        assert_eq!(resp.headers().get("x-ratelimit-limit").and_then(|v| v.to_str().ok()), Some("100"));
        let v: Value = resp.json().await.expect("json");
        let page: Vec<String> = serde_json::from_value(v["resources"].clone()).expect("ids");
        if page.is_empty() {
            break;
        }
        ids.extend(page);
        offset = v["meta"]["pagination"]["offset"].as_str().expect("offset").to_string();
    }
    assert_eq!(ids, corral_sim::crowdstrike_device_ids(3, 1200, 0), "--seed and --size choose the dataset");
    let details: Value = c
        .post(format!("{base}/devices/entities/devices/v2"))
        .bearer_auth(&token)
        .json(&json!({ "ids": &ids[..2] }))
        .send()
        .await
        .expect("details")
        .json()
        .await
        .expect("json");
    let want = corral_sim::crowdstrike_hosts(3, 2, 0);
    assert_eq!(details["resources"], Value::from(want));
    // The admin endpoint moves the dataset on.
    let g: Value = c.post(format!("{base}/_sim/generation")).send().await.expect("admin").json().await.expect("json");
    assert_eq!(g["generation"], 1);
}

#[test]
fn dump_streams_records_without_building_the_dataset() {
    // Two million hosts would be gigabytes in memory; streamed, the first
    // lines come at once and the process stays small.
    let (child, lines) = run(&["dump", "--vendor", "crowdstrike", "--seed", "1", "--size", "2000000"]);
    let want = corral_sim::crowdstrike_hosts(1, 50, 0);
    for (i, w) in want.iter().enumerate() {
        let line = lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|e| panic!("line {i}: {e}"));
        let got: Value = serde_json::from_str(&line).expect("one JSON record per line");
        assert_eq!(&got, w, "record {i}: a prefix of a bigger dataset is the smaller one");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!("dump: peak RSS {peak_kb} KiB");
    if !status.is_empty() {
        assert!(peak_kb > 0 && peak_kb < 100 * 1024, "peak RSS {peak_kb} KiB while dumping 2,000,000 hosts");
    }
    // Okta and Graph too, in listing order.
    for (vendor, users, want) in [
        ("okta", false, corral_sim::okta_users(4, 30, 2)),
        ("msgraph", true, corral_sim::msgraph_users(4, 30, 2)),
        ("msgraph", false, corral_sim::msgraph_devices(4, 30, 2)),
    ] {
        let mut args = vec!["dump", "--vendor", vendor, "--seed", "4", "--size", "30", "--generation", "2"];
        if users {
            args.push("--users");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_corral-sim")).args(&args).output().expect("dump runs");
        assert!(out.status.success());
        let got: Vec<Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        assert_eq!(got, want, "{vendor} users={users}");
    }
}
