use std::collections::HashSet;
use std::time::Duration;

use corral_sim::{Behavior, SimConfig, Vendor};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn auth_issues_tokens_and_rejects_bad_credentials() {
    let sim = sim(Vendor::CrowdStrike, SimConfig::new(1, 10)).await;
    let base = &sim.base_url;
    let creds = &sim.config.credentials;

    let resp = post_form(
        base,
        "/oauth2/token",
        form(&[("client_id", &creds.client_id), ("client_secret", &creds.client_secret)]),
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert!(header(&resp, "x-ratelimit-limit").is_some());
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 1799);

    let bad =
        post_form(base, "/oauth2/token", form(&[("client_id", &creds.client_id), ("client_secret", "wrong")])).await;
    assert_eq!(bad.status(), 401);
    let v: Value = bad.json().await.expect("json");
    assert_eq!(v["errors"][0]["code"], 401);

    let url = format!("{base}/devices/queries/devices/v1");
    let none = client().get(&url).send().await.expect("send");
    assert_eq!(none.status(), 401);
    assert_eq!(get_bearer(&url, "bogus").await.status(), 401);
    let token = cs_token(base, creds).await;
    let ok = get_bearer(&url, &token).await;
    assert_eq!(ok.status(), 200);
    assert!(header(&ok, "x-ratelimit-remaining").is_some());
    assert_eq!(sim.counters.snapshot().tokens_issued, 2);
}

#[tokio::test]
async fn offset_scroll_and_details_walk_the_dataset_exactly_once() {
    let size = 6_500;
    let sim = sim(Vendor::CrowdStrike, SimConfig::new(42, size)).await;
    let base = &sim.base_url;
    let token = cs_token(base, &sim.config.credentials).await;
    let expected = corral_sim::crowdstrike_device_ids(42, size, 0);

    // Offset paging: capped at 10,000 results.
    let q = |o: usize, l: usize| format!("{base}/devices/queries/devices/v1?offset={o}&limit={l}");
    let first: Value = get_bearer(&q(0, 5000), &token).await.json().await.expect("json");
    assert_eq!(first["meta"]["pagination"]["total"], size);
    assert_eq!(first["resources"].as_array().map(Vec::len), Some(5000));
    assert_eq!(first["resources"][0], expected[0]);
    assert_eq!(get_bearer(&q(5000, 5000), &token).await.status(), 200);
    assert_eq!(get_bearer(&q(5001, 5000), &token).await.status(), 400);
    assert_eq!(get_bearer(&q(0, 5001), &token).await.status(), 400);
    assert_eq!(get_bearer(&q(0, 0), &token).await.status(), 400);
    assert_eq!(get_bearer(&format!("{base}/devices/queries/devices/v1?limit=abc"), &token).await.status(), 400);

    // Scroll: walk every id.
    let mut ids: Vec<String> = Vec::new();
    let mut offset = String::new();
    for _ in 0..10 {
        let url = format!("{base}/devices/queries/devices-scroll/v1?limit=5000&offset={}", enc(&offset));
        let resp = get_bearer(&url, &token).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        let page: Vec<String> = serde_json::from_value(v["resources"].clone()).expect("ids");
        if page.is_empty() {
            assert!(v["meta"]["pagination"].get("offset").is_none());
            break;
        }
        ids.extend(page);
        offset = v["meta"]["pagination"]["offset"].as_str().expect("offset").to_string();
    }
    assert_eq!(ids, expected);
    let too_big = format!("{base}/devices/queries/devices-scroll/v1?limit=10001");
    assert_eq!(get_bearer(&too_big, &token).await.status(), 400);
    let garbage = format!("{base}/devices/queries/devices-scroll/v1?offset=nonsense");
    assert_eq!(get_bearer(&garbage, &token).await.status(), 400);

    // Details in batches of 5000 equal the dataset function.
    let hosts = corral_sim::crowdstrike_hosts(42, size, 0);
    let c = client();
    let mut got = Vec::new();
    for batch in ids.chunks(5000) {
        let resp = c
            .post(format!("{base}/devices/entities/devices/v2"))
            .bearer_auth(&token)
            .json(&json!({ "ids": batch }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["errors"], json!([]));
        got.extend(v["resources"].as_array().expect("resources").iter().cloned());
    }
    assert_eq!(got, hosts);

    let over: Vec<&String> = ids.iter().take(5001).collect();
    let resp = c
        .post(format!("{base}/devices/entities/devices/v2"))
        .bearer_auth(&token)
        .json(&json!({ "ids": over }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(format!("{base}/devices/entities/devices/v2"))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(format!("{base}/devices/entities/devices/v2"))
        .bearer_auth(&token)
        .json(&json!({ "ids": [ids[0], "0123456789abcdef0123456789abcdef"] }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["resources"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["errors"][0]["code"], 404);
    let get_form = format!("{base}/devices/entities/devices/v2?ids={}&ids={}", ids[1], ids[2]);
    let v: Value = get_bearer(&get_form, &token).await.json().await.expect("json");
    assert_eq!(v["resources"][1], hosts[2]);
}

#[tokio::test]
async fn scroll_offsets_expire() {
    let config =
        SimConfig::new(3, 100).behavior(Behavior { scroll_ttl: Duration::from_millis(300), ..Behavior::default() });
    let sim = sim(Vendor::CrowdStrike, config).await;
    let base = &sim.base_url;
    let token = cs_token(base, &sim.config.credentials).await;
    let v: Value = get_bearer(&format!("{base}/devices/queries/devices-scroll/v1?limit=10"), &token)
        .await
        .json()
        .await
        .expect("json");
    let offset = v["meta"]["pagination"]["offset"].as_str().expect("offset").to_string();
    assert!(v["meta"]["pagination"]["expires_at"].as_u64().is_some());
    let next = format!("{base}/devices/queries/devices-scroll/v1?limit=10&offset={}", enc(&offset));
    assert_eq!(get_bearer(&next, &token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = get_bearer(&next, &token).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert!(v["errors"][0]["message"].as_str().unwrap_or("").contains("expired"));
}

#[tokio::test]
async fn rate_limit_answers_429_with_epoch_retryafter() {
    let config = SimConfig::new(1, 10).rate_limit(5, Duration::from_secs(2));
    let sim = sim(Vendor::CrowdStrike, config).await;
    let base = &sim.base_url;
    let token = cs_token(base, &sim.config.credentials).await;
    let url = format!("{base}/devices/queries/devices/v1");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let resp = get_bearer(&url, &token).await;
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some("5"));
        if resp.status() == 429 {
            let at: u64 = header(&resp, "x-ratelimit-retryafter").expect("retryafter").parse().expect("epoch seconds");
            let now = now_epoch();
            assert!(at >= now && at <= now + 3, "retryafter {at} is an instant near {now}");
            assert_eq!(header(&resp, "x-ratelimit-remaining"), Some("0"));
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let snap = sim.counters.snapshot();
    assert_eq!(snap.rate_limited, 3);
    assert_eq!(snap.max_in_window, 8);
    assert_eq!(snap.endpoint("cs.token"), 1, "token endpoint is not rate limited");
}

#[tokio::test]
async fn filter_selects_matching_hosts() {
    let sim = sim(Vendor::CrowdStrike, SimConfig::new(5, 400)).await;
    let base = &sim.base_url;
    let token = cs_token(base, &sim.config.credentials).await;
    let hosts = corral_sim::crowdstrike_hosts(5, 400, 0);
    let want: Vec<&Value> = hosts.iter().filter(|h| h["platform_name"] == "Mac").map(|h| &h["device_id"]).collect();
    let filter = enc("platform_name:'Mac'");
    let url = format!("{base}/devices/queries/devices/v1?limit=500&filter={filter}");
    let v: Value = get_bearer(&url, &token).await.json().await.expect("json");
    let got: Vec<&Value> = v["resources"].as_array().expect("ids").iter().collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    let bad = format!("{base}/devices/queries/devices/v1?filter={}", enc("nope:'x'"));
    assert_eq!(get_bearer(&bad, &token).await.status(), 400);
}

#[tokio::test]
async fn malformed_pages_and_token_expiry() {
    let mut config = SimConfig::new(9, 50).malformed_pages([1]);
    config.faults.token_ttl = Some(Duration::from_millis(400));
    let sim = sim(Vendor::CrowdStrike, config).await;
    let base = &sim.base_url;
    let token = cs_token(base, &sim.config.credentials).await;
    let q = |o: usize| format!("{base}/devices/queries/devices/v1?offset={o}&limit=10");
    let page0 = get_bearer(&q(0), &token).await.bytes().await.expect("body");
    assert!(is_json(&page0));
    let resp = get_bearer(&q(10), &token).await;
    assert_eq!(resp.status(), 200);
    assert!(!is_json(&resp.bytes().await.expect("body")));
    // Still malformed on retry (malformed_pages_once is off).
    assert!(!is_json(&get_bearer(&q(10), &token).await.bytes().await.expect("body")));
    let ids = corral_sim::crowdstrike_device_ids(9, 50, 0);
    let resp = client()
        .post(format!("{base}/devices/entities/devices/v2"))
        .bearer_auth(&token)
        .json(&json!({ "ids": &ids[10..20] }))
        .send()
        .await
        .expect("send");
    assert!(!is_json(&resp.bytes().await.expect("body")), "details batch 1 is page 1");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_bearer(&q(0), &token).await.status(), 401);
    let fresh = cs_token(base, &sim.config.credentials).await;
    assert_eq!(get_bearer(&q(0), &fresh).await.status(), 200);
    let snap = sim.counters.snapshot();
    assert_eq!(snap.fault("malformed_page"), 3);
    assert_eq!(snap.fault("token_expired"), 1);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "CrowdStrike device ids are unique");
}
