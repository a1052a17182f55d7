//! Scenario S3 as a test: 300 connections across the simulated CrowdStrike,
//! Okta and Microsoft Graph APIs, synced by one `corral sync` process running
//! under `ulimit -n 1024`.
//!
//! The simulators run in this test process; `corral` runs as a child whose
//! open file descriptors are sampled from /proc while it works. Every tenth
//! connection of each vendor is broken on purpose (a flaky API answering 5xx,
//! one malformed page, wrong credentials, nothing listening), and each
//! connection's result must be exactly its own: the healthy ones load their
//! whole dataset no matter what their neighbours do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_sim::{Credentials, SimConfig, SimHandle, Vendor};

const CONNECTIONS: usize = 300;
/// Records per simulated tenant (S3 uses 2,000; the test keeps the load stage short).
const SIZE: usize = 400;
const SEED: u64 = 33;
const FD_LIMIT: u64 = 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    Healthy,
    /// 10% of requests answer 5xx: retried to success.
    Flaky,
    /// One page of each listing is not JSON: status partial, the rest loads.
    Malformed,
    /// Wrong secret: failed, and never retried.
    BadCredentials,
    /// Nothing listens on the port: failed.
    Unreachable,
}

fn case_of(i: usize) -> Case {
    match (i / 3) % 10 {
        0..=5 => Case::Healthy,
        6 | 7 => Case::Flaky,
        8 => Case::Malformed,
        _ if (i / 30).is_multiple_of(2) => Case::BadCredentials,
        _ => Case::Unreachable,
    }
}

struct Sims {
    healthy: SimHandle,
    flaky: SimHandle,
    malformed: SimHandle,
}

async fn sims(vendor: Vendor, malformed_page: usize) -> Sims {
    let base = || SimConfig::new(SEED, SIZE).latency_ms(20).threads(1);
    let start = |cfg| async move { corral_sim::start(vendor, cfg).await.expect("start simulator") };
    Sims {
        healthy: start(base()).await,
        flaky: start(base().error_rate(0.1)).await,
        malformed: start(base().malformed_pages([malformed_page])).await,
    }
}

/// Distinct assets a complete sync of one tenant must load.
fn expected_assets(vendor: Vendor) -> usize {
    let ids = |v: Vec<serde_json::Value>| -> BTreeSet<String> {
        v.iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect()
    };
    match vendor {
        Vendor::CrowdStrike => {
            corral_sim::crowdstrike_device_ids(SEED, SIZE, 0).into_iter().collect::<BTreeSet<_>>().len()
        }
        Vendor::Okta => ids(corral_sim::okta_users(SEED, SIZE, 0)).len(),
        Vendor::MsGraph => {
            ids(corral_sim::msgraph_devices(SEED, SIZE, 0)).len() + ids(corral_sim::msgraph_users(SEED, SIZE, 0)).len()
        }
        Vendor::Kit | Vendor::Tenable | Vendor::Qualys | Vendor::Aws => {
            unreachable!("this test starts no kit or Tenable simulator")
        }
    }
}

fn connection_toml(out: &mut String, name: &str, vendor: Vendor, base_url: &str, case: Case) {
    let secret = if case == Case::BadCredentials { "${WRONG_SECRET}" } else { "${SIM_SECRET}" };
    let token = if case == Case::BadCredentials { "${WRONG_SECRET}" } else { "${SIM_TOKEN}" };
    let c = Credentials::default();
    let _ = writeln!(out, "[[connection]]\nname = \"{name}\"");
    let _ = match vendor {
        Vendor::CrowdStrike => writeln!(
            out,
            "adapter = \"crowdstrike\"\n[connection.config]\nbase_url = \"{base_url}\"\nclient_id = \"{}\"\n\
             client_secret = \"{secret}\"\nids_page_size = 200\ndetails_batch = 100\n",
            c.client_id
        ),
        Vendor::Okta => writeln!(
            out,
            "adapter = \"okta\"\n[connection.config]\nbase_url = \"{base_url}\"\ntoken = \"{token}\"\npage_size = 100\n"
        ),
        Vendor::MsGraph => writeln!(
            out,
            "adapter = \"msgraph\"\n[connection.config]\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
             client_secret = \"{secret}\"\nlogin_base_url = \"{base_url}\"\ngraph_base_url = \"{base_url}\"\n\
             page_size = 100\n",
            c.tenant, c.client_id
        ),
        Vendor::Kit | Vendor::Tenable | Vendor::Qualys | Vendor::Aws => {
            unreachable!("this test starts no kit or Tenable simulator")
        }
    };
}

/// Records a complete sync of one tenant fetches and loads (a repeated record is loaded twice).
fn records(vendor: Vendor) -> usize {
    match vendor {
        Vendor::MsGraph => 2 * SIZE, // Intune devices and Entra users
        _ => SIZE,
    }
}

/// Open descriptors of a running process, or None once it is gone.
fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64)
}

fn soft_fd_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn three_hundred_connections_under_ulimit_1024_keep_their_own_results() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let vendors = [Vendor::CrowdStrike, Vendor::Okta, Vendor::MsGraph];
    // CrowdStrike: details batches of 100 are pages 0..=3; page 3 is the malformed one.
    let [cs, okta, graph] = vendors.map(|v| rt.block_on(sims(v, if v == Vendor::CrowdStrike { 3 } else { 1 })));
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };

    let dir = tempfile::tempdir().expect("tempdir");
    // All 300 at once would need more descriptors than the limit allows:
    // corral must budget them itself and say so.
    let mut config = String::from("[engine]\nmax_connections = 300\n\n");
    let mut plan = BTreeMap::new();
    for i in 0..CONNECTIONS {
        let vendor = vendors[i % 3];
        let sims = match vendor {
            Vendor::CrowdStrike => &cs,
            Vendor::Okta => &okta,
            Vendor::MsGraph => &graph,
            Vendor::Kit | Vendor::Tenable | Vendor::Qualys | Vendor::Aws => {
                unreachable!("this test starts no kit or Tenable simulator")
            }
        };
        let case = case_of(i);
        let url = match case {
            Case::Healthy | Case::BadCredentials => sims.healthy.base_url.clone(),
            Case::Flaky => sims.flaky.base_url.clone(),
            Case::Malformed => sims.malformed.base_url.clone(),
            Case::Unreachable => unreachable.clone(),
        };
        let name = format!("{}-{i:03}", vendor.name());
        connection_toml(&mut config, &name, vendor, &url, case);
        plan.insert(name, (vendor, case));
    }
    std::fs::write(dir.path().join("corral.toml"), config).expect("write config");

    let creds = Credentials::default();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" sync --json"))
        .arg(env!("CARGO_BIN_EXE_corral"))
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_CONFIG")
        .env("SIM_SECRET", &creds.client_secret)
        .env("SIM_TOKEN", &creds.token)
        .env("WRONG_SECRET", "not-the-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corral");
    let pid = child.id();
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut s).map(|_| s)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut s).map(|_| s)
    });

    let (mut peak_fds, mut limit) = (0, None);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for corral") {
            break status;
        }
        if let Some(n) = open_fds(pid) {
            peak_fds = peak_fds.max(n);
        }
        // The last reading wins: the first may come before the shell's `ulimit`.
        limit = soft_fd_limit(pid).or(limit);
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().expect("stdout thread").expect("read stdout");
    let stderr = String::from_utf8_lossy(&err_reader.join().expect("stderr thread").expect("read stderr")).into_owned();

    assert_eq!(limit, Some(FD_LIMIT), "corral must run under the lowered limit");
    assert!(peak_fds > 0 && peak_fds < FD_LIMIT, "peak open descriptors {peak_fds}");
    for needle in ["Too many open files", "os error 24", "not-the-secret", &creds.client_secret, &creds.token] {
        assert!(!stderr.contains(needle), "stderr shows {needle:?}:\n{stderr}");
        assert!(!String::from_utf8_lossy(&stdout).contains(needle), "stdout shows {needle:?}");
    }
    assert!(
        stderr.contains("fewer connections will sync at once than engine.max_connections allows"),
        "no warning about the open-file limit:\n{stderr}"
    );
    // Some connections failed on purpose: the run as a whole exits 4.
    assert_eq!(status.code(), Some(4), "{stderr}");

    let runs: serde_json::Value = serde_json::from_slice(&stdout).expect("JSON summaries on stdout");
    let runs = runs.as_array().expect("an array of summaries");
    assert_eq!(runs.len(), CONNECTIONS);
    let expected: BTreeMap<&str, usize> = vendors.iter().map(|v| (v.name(), expected_assets(*v))).collect();
    let mut seen = BTreeMap::<String, usize>::new();
    for run in runs {
        let name = run["connection"].as_str().expect("connection name");
        let (vendor, case) = plan[name];
        *seen.entry(format!("{case:?}")).or_default() += 1;
        let loaded = ["inserted", "updated", "unchanged"].iter().map(|k| run[k].as_u64().unwrap_or(0)).sum::<u64>();
        let status = run["status"].as_str().unwrap_or_default();
        let errors = run["errors"].to_string();
        match case {
            Case::Healthy | Case::Flaky => {
                assert_eq!(status, "success", "{name} ({case:?}): {errors}");
                assert_eq!(loaded as usize, records(vendor), "{name} ({case:?})");
                assert_eq!(run["records_rejected"], 0, "{name}");
                if case == Case::Healthy {
                    assert_eq!(run["requests"]["retries"], 0, "{name}: a healthy tenant needed retries: {run}");
                }
            }
            Case::Malformed => {
                assert_eq!(status, "partial", "{name}: {errors}");
                assert!(run["rejects"]["malformed_page"]["count"].as_u64().unwrap_or(0) >= 1, "{name}: {run}");
                assert!(loaded > 0 && (loaded as usize) < records(vendor), "{name}: loaded {loaded}");
            }
            Case::BadCredentials => {
                assert_eq!(status, "failed", "{name}");
                assert_eq!(loaded, 0, "{name}");
                assert!(errors.contains("401") || errors.to_lowercase().contains("auth"), "{name}: {errors}");
            }
            Case::Unreachable => {
                assert_eq!(status, "failed", "{name}");
                assert_eq!(loaded, 0, "{name}");
            }
        }
    }
    // Every case was exercised for every vendor.
    assert_eq!(seen.get("Healthy"), Some(&180), "{seen:?}");
    assert_eq!(seen.get("Flaky"), Some(&60), "{seen:?}");
    assert_eq!(seen.get("Malformed"), Some(&30), "{seen:?}");
    assert_eq!(seen.get("BadCredentials").copied().unwrap_or(0) + seen.get("Unreachable").copied().unwrap_or(0), 30);
    assert!(cs.flaky.counters.snapshot().fault("5xx") > 0, "the flaky simulator injected no 5xx");
    // The store holds each healthy tenant's distinct assets, once.
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["assets", "--json"])
        .current_dir(dir.path())
        .env_remove("CORRAL_CONFIG")
        .output()
        .expect("corral assets");
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON counts ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let mut stored = BTreeMap::<String, u64>::new();
    for c in counts.as_array().expect("array") {
        *stored.entry(c["connection"].as_str().unwrap_or_default().to_string()).or_default() +=
            c["count"].as_u64().unwrap_or(0);
    }
    for (name, (vendor, case)) in &plan {
        if matches!(case, Case::Healthy | Case::Flaky) {
            assert_eq!(stored.get(name).copied(), Some(expected[vendor.name()] as u64), "{name}");
        }
    }
    eprintln!("300 connections: peak {peak_fds} open descriptors under a limit of {FD_LIMIT}");

    rt.block_on(async move {
        for s in [cs, okta, graph] {
            for h in [s.healthy, s.flaky, s.malformed] {
                h.shutdown().await;
            }
        }
    });
}
