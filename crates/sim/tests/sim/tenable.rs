//! Tenable Vulnerability Management: export jobs, chunks out of order,
//! filters, conflicts, failed jobs, expired chunks, 429s.

use std::collections::BTreeSet;
use std::time::Duration;

use corral_sim::data::tenable::{FindingState, TenableData, VulnFilter, generation_time};
use corral_sim::{Behavior, Faults, SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

use crate::common::{client, header};

const SEED: u64 = 21;

async fn start(config: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::Tenable, config).await.expect("the Tenable simulator starts")
}

fn keys(sim: &SimHandle) -> String {
    let c = &sim.config.credentials;
    format!("accessKey={};secretKey={}", c.client_id, c.client_secret)
}

async fn post(sim: &SimHandle, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", sim.base_url))
        .header("X-ApiKeys", keys(sim))
        .json(&body)
        .send()
        .await
        .expect("send")
}

async fn get(sim: &SimHandle, path: &str) -> reqwest::Response {
    client().get(format!("{}{path}", sim.base_url)).header("X-ApiKeys", keys(sim)).send().await.expect("send")
}

async fn get_json(sim: &SimHandle, path: &str) -> Value {
    let resp = get(sim, path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.expect("json")
}

async fn export(sim: &SimHandle, kind: &str, body: Value) -> String {
    let resp = post(sim, &format!("/{kind}/export"), body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["export_uuid"].as_str().expect("export_uuid").to_string()
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array().expect("an array").iter().map(|n| n.as_u64().expect("a chunk id")).collect()
}

/// Poll until the job ends; every chunk listed is fetched as soon as it
/// appears, the newest first. Returns the records by chunk id, the statuses
/// seen, and the final status body.
async fn drain(
    sim: &SimHandle,
    kind: &str,
    job: &str,
) -> (std::collections::BTreeMap<u64, Vec<Value>>, Vec<String>, Value) {
    let mut chunks = std::collections::BTreeMap::new();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let status = get_json(sim, &format!("/{kind}/export/{job}/status")).await;
        let s = status["status"].as_str().expect("status").to_string();
        statuses.push(s.clone());
        for n in numbers(&status["chunks_available"]).into_iter().rev() {
            if let std::collections::btree_map::Entry::Vacant(e) = chunks.entry(n) {
                let records = get_json(sim, &format!("/{kind}/export/{job}/chunks/{n}")).await;
                e.insert(records.as_array().expect("a chunk is an array").clone());
            }
        }
        if !matches!(s.as_str(), "QUEUED" | "PROCESSING") {
            return (chunks, statuses, status);
        }
    }
    panic!("the export never ended: {statuses:?}");
}

#[tokio::test]
async fn asset_export_serves_every_asset_in_chunks_that_appear_out_of_order() {
    let size = 550;
    let sim = start(SimConfig::new(SEED, size)).await;
    let job = export(&sim, "assets", json!({"chunk_size": 100})).await;
    let early = get(&sim, &format!("/assets/export/{job}/chunks/1")).await;
    assert_eq!(early.status(), 404, "no chunk before it is available");

    let first = get_json(&sim, &format!("/assets/export/{job}/status")).await;
    assert_eq!(first["status"], "QUEUED");
    assert_eq!(numbers(&first["chunks_available"]), Vec::<u64>::new());
    let second = get_json(&sim, &format!("/assets/export/{job}/status")).await;
    assert_eq!(second["status"], "PROCESSING");
    let part = numbers(&second["chunks_available"]);
    assert_eq!(part.len(), 3, "half of the six chunks: {part:?}");
    assert_ne!(part, [1, 2, 3], "chunks do not appear in order");

    let (chunks, statuses, last) = drain(&sim, "assets", &job).await;
    assert_eq!(statuses.last().map(String::as_str), Some("FINISHED"));
    assert_eq!(last["total_chunks"], 6);
    assert_eq!(chunks.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    let ids: Vec<String> =
        chunks.values().flatten().map(|a| a["id"].as_str().expect("an asset id").to_string()).collect();
    let expected: Vec<String> = TenableData::new(SEED, size, 0, 4).asset_ids().collect();
    assert_eq!(ids, expected, "chunks in id order hold the assets in order, each once");

    let with_software =
        chunks.values().flatten().filter(|a| !a["installed_software"].as_array().expect("array").is_empty());
    let mut n = 0;
    for a in with_software {
        n += 1;
        for cpe in a["installed_software"].as_array().expect("array") {
            assert!(cpe.as_str().is_some_and(|s| s.starts_with("cpe:/a:")), "{cpe}");
        }
        assert!(a["ipv4s"].is_array() && a["hostnames"].is_array() && a["mac_addresses"].is_array());
    }
    assert!(n > size / 2, "most assets list installed software: {n}");

    let bad = post(&sim, "/assets/export", json!({"chunk_size": 50})).await;
    assert_eq!(bad.status(), 400, "chunk_size below 100");
    let missing = post(&sim, "/assets/export", json!({})).await;
    assert_eq!(missing.status(), 400, "chunk_size is required");
}

#[tokio::test]
async fn vuln_export_findings_reference_the_assets_and_follow_the_state_filter() {
    let size = 130;
    let sim = start(SimConfig::new(SEED, size)).await;
    let data = TenableData::new(SEED, size, 0, 4);
    let assets: BTreeSet<String> = data.asset_ids().collect();

    let job = export(&sim, "vulns", json!({"num_assets": 50})).await;
    let (chunks, _, last) = drain(&sim, "vulns", &job).await;
    assert_eq!(last["status"], "FINISHED");
    assert_eq!(last["num_assets_per_chunk"], 50);
    assert_eq!(chunks.len(), 3);
    let findings: Vec<&Value> = chunks.values().flatten().collect();
    let ids: Vec<String> = findings.iter().map(|f| f["finding_id"].as_str().expect("finding_id").to_string()).collect();
    assert_eq!(ids, data.finding_ids(&VulnFilter::default()).collect::<Vec<_>>());
    for f in &findings {
        assert!(assets.contains(f["asset"]["uuid"].as_str().expect("asset uuid")), "a finding on an unknown asset");
        assert!(matches!(f["state"].as_str(), Some("OPEN" | "REOPENED")), "default states only: {}", f["state"]);
        assert!(f["plugin"]["id"].is_u64() && f["plugin"]["cve"].is_array());
        assert!(f["severity_id"].as_u64().is_some_and(|s| s <= 4));
        assert!(f["port"]["protocol"].is_string() && f["first_found"].is_string() && f["last_found"].is_string());
    }
    assert!(findings.iter().any(|f| !f["plugin"]["cve"].as_array().expect("cve").is_empty()));

    let fixed_job = export(
        &sim,
        "vulns",
        json!({"num_assets": 50, "filters": {"state": ["fixed"], "severity": ["high", "critical"]}}),
    )
    .await;
    let (chunks, _, _) = drain(&sim, "vulns", &fixed_job).await;
    let fixed: Vec<&Value> = chunks.values().flatten().collect();
    let filter = VulnFilter { states: vec![FindingState::Fixed], severities: vec![3, 4], since: None };
    assert_eq!(fixed.len() as u64, data.finding_count(&filter));
    assert!(!fixed.is_empty());
    assert!(
        fixed
            .iter()
            .all(|f| f["state"] == "FIXED" && f["severity_id"].as_u64() >= Some(3) && f["last_fixed"].is_string())
    );

    let bad = post(&sim, "/vulns/export", json!({"num_assets": 10})).await;
    assert_eq!(bad.status(), 400);
    let unknown = post(&sim, "/vulns/export", json!({"filters": {"plugin_family": ["Windows"]}})).await;
    assert_eq!(unknown.status(), 400, "filters that are not simulated are refused");
}

#[tokio::test]
async fn since_returns_exactly_what_changed_in_the_next_generation() {
    let size = 300;
    let sim = start(SimConfig::new(SEED, size)).await;
    sim.set_generation(3);
    let since = generation_time(2) + 1;
    let job = export(
        &sim,
        "vulns",
        json!({"num_assets": 100, "filters": {"since": since, "state": ["OPEN", "REOPENED", "FIXED"]}}),
    )
    .await;
    let (chunks, _, last) = drain(&sim, "vulns", &job).await;
    assert_eq!(last["created"], generation_time(3) * 1000, "created is on the data's clock");
    let got: Vec<String> =
        chunks.values().flatten().map(|f| f["finding_id"].as_str().expect("id").to_string()).collect();
    let filter = VulnFilter { since: Some(since), ..VulnFilter::all() };
    let expected: Vec<String> = TenableData::new(SEED, size, 3, 4).finding_ids(&filter).collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
    let everything = TenableData::new(SEED, size, 3, 4).finding_count(&VulnFilter::all());
    assert!((got.len() as u64) < everything / 3, "since returns the changes, not everything");
}

#[tokio::test]
async fn too_many_running_exports_and_duplicates_are_409() {
    let sim = start(SimConfig::new(SEED, 200)).await;
    let a = export(&sim, "vulns", json!({"num_assets": 50})).await;
    let dup = post(&sim, "/vulns/export", json!({"num_assets": 50})).await;
    assert_eq!(dup.status(), 409, "the same request while it runs");
    let dup: Value = dup.json().await.expect("json");
    assert!(dup["message"].as_str().is_some_and(|m| m.contains("Duplicate")), "{dup}");
    let _b = export(&sim, "vulns", json!({"num_assets": 60})).await;
    assert_eq!(post(&sim, "/vulns/export", json!({"num_assets": 70})).await.status(), 409, "a third one at once");
    assert_eq!(export(&sim, "assets", json!({"chunk_size": 100})).await.len(), 36, "asset exports count apart");
    let cancelled = post(&sim, &format!("/vulns/export/{a}/cancel"), json!({})).await;
    let cancelled: Value = cancelled.json().await.expect("json");
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(post(&sim, "/vulns/export", json!({"num_assets": 70})).await.status(), 200, "a slot is free again");
    let c = sim.counters.snapshot();
    assert_eq!(c.fault("export_duplicate"), 1);
    assert_eq!(c.fault("export_too_many"), 1);
    assert_eq!(c.status(409), 2);
}

#[tokio::test]
async fn jobs_that_end_cancelled_or_in_error_and_chunks_that_expired() {
    let faults =
        Faults { cancel_exports: vec![1], error_exports: vec![2], expired_chunks: vec![(3, 2)], ..Faults::default() };
    let behavior = Behavior { export_polls: 5, ..Behavior::default() };
    let sim = start(SimConfig::new(SEED, 600).faults(faults).behavior(behavior)).await;
    for (number, end, list) in [(1, "CANCELLED", "chunks_cancelled"), (2, "ERROR", "chunks_failed")] {
        let job = export(&sim, "assets", json!({"chunk_size": 100 + number})).await;
        let (chunks, statuses, last) = drain(&sim, "assets", &job).await;
        assert_eq!(last["status"], end, "{statuses:?}");
        let stopped = numbers(&last[list]);
        assert!(!stopped.is_empty(), "{last}");
        let got: BTreeSet<u64> = chunks.keys().copied().collect();
        assert_eq!(got.len() + stopped.len(), 6, "every chunk is either served or listed as stopped: {last}");
        let resp = get(&sim, &format!("/assets/export/{job}/chunks/{}", stopped[0])).await;
        assert_eq!(resp.status(), 404, "a stopped chunk is never served");
    }
    let job = export(&sim, "assets", json!({"chunk_size": 100})).await;
    for _ in 0..5 {
        get_json(&sim, &format!("/assets/export/{job}/status")).await;
    }
    let expired = get(&sim, &format!("/assets/export/{job}/chunks/2")).await;
    assert_eq!(expired.status(), 404);
    assert_eq!(get(&sim, &format!("/assets/export/{job}/chunks/3")).await.status(), 200);
    let c = sim.counters.snapshot();
    assert_eq!(c.fault("export_cancelled"), 1);
    assert_eq!(c.fault("export_error"), 1);
    assert_eq!(c.fault("chunk_expired"), 1);

    let faults = Faults { chunk_ttl: Some(Duration::from_millis(300)), ..Faults::default() };
    let sim = start(SimConfig::new(SEED, 150).faults(faults)).await;
    let job = export(&sim, "assets", json!({"chunk_size": 100})).await;
    for _ in 0..3 {
        get_json(&sim, &format!("/assets/export/{job}/status")).await;
    }
    assert_eq!(get(&sim, &format!("/assets/export/{job}/chunks/1")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&sim, &format!("/assets/export/{job}/chunks/1")).await.status(), 404, "expired after its ttl");
    assert_eq!(sim.counters.snapshot().fault("chunk_expired"), 1);
}

#[tokio::test]
async fn api_keys_are_checked_and_429s_carry_retry_after_with_an_html_body() {
    let sim = start(SimConfig::new(SEED, 10).rate_limit(2, Duration::from_secs(3))).await;
    let wrong = client()
        .get(format!("{}/session", sim.base_url))
        .header("X-ApiKeys", "accessKey=nope;secretKey=nope")
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["statusCode"], 401);
    let c = &sim.config.credentials;
    let spaced = client()
        .get(format!("{}/session", sim.base_url))
        .header("X-ApiKeys", format!("secretKey={}; accessKey={}", c.client_secret, c.client_id))
        .send()
        .await
        .expect("send");
    assert_eq!(spaced.status(), 200, "either order, spaces allowed");
    let limited = get(&sim, "/session").await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = header(&limited, "retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=3).contains(&wait), "{wait}");
    assert_eq!(header(&limited, "content-type"), Some("text/html"));
    assert!(serde_json::from_slice::<Value>(&limited.bytes().await.expect("body")).is_err(), "not JSON");
    assert_eq!(sim.counters.snapshot().rate_limited, 1);
}

#[tokio::test]
async fn ten_million_findings_are_served_chunk_by_chunk_without_generating_the_rest() {
    // 2.5M assets x 4 findings on average: about 10M findings.
    let size = 2_500_000;
    let behavior = Behavior { export_polls: 1, ..Behavior::default() };
    let sim = start(SimConfig::new(SEED, size).behavior(behavior)).await;
    let started = std::time::Instant::now();
    let job =
        export(&sim, "vulns", json!({"num_assets": 50, "filters": {"state": ["OPEN", "REOPENED", "FIXED"]}})).await;
    let status = get_json(&sim, &format!("/vulns/export/{job}/status")).await;
    assert_eq!(status["status"], "FINISHED");
    assert_eq!(status["total_chunks"], 50_000);
    let last = get_json(&sim, &format!("/vulns/export/{job}/chunks/50000")).await;
    let data = TenableData::new(SEED, size, 0, 4);
    let expected: Vec<String> =
        data.findings_in(2_499_950..2_500_000, &VulnFilter::all()).map(|f| data.finding_id(f.asset, f.slot)).collect();
    let got: Vec<&str> = last.as_array().expect("array").iter().filter_map(|f| f["finding_id"].as_str()).collect();
    assert_eq!(got, expected, "the last chunk holds the last 50 assets' findings");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no work proportional to the dataset: {:?}",
        started.elapsed()
    );
}
