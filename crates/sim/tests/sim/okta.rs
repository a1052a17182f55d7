use std::time::Duration;

use corral_sim::{Behavior, SimConfig, Vendor};
use serde_json::Value;

use crate::common::*;

async fn okta_get(url: &str, auth: &str) -> reqwest::Response {
    client().get(url).header("authorization", auth).send().await.expect("send")
}

/// Next link from the Link header(s), whichever form they take.
fn next_link(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(", <"))
        .find(|l| l.contains("rel=\"next\""))
        .map(|l| l.trim_start_matches('<').split('>').next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn auth_accepts_ssws_and_bearer_and_rejects_bad_tokens() {
    let sim = sim(Vendor::Okta, SimConfig::new(1, 10)).await;
    let base = &sim.base_url;
    let token = &sim.config.credentials.token;
    let me = format!("{base}/api/v1/users/me");
    let resp = okta_get(&me, &format!("SSWS {token}")).await;
    assert_eq!(resp.status(), 200);
    for h in ["x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"] {
        assert!(header(&resp, h).is_some(), "{h}");
    }
    let v: Value = resp.json().await.expect("json");
    assert!(v["id"].as_str().is_some_and(|id| id.starts_with("00u") && id.len() == 20));
    assert_eq!(okta_get(&me, &format!("Bearer {token}")).await.status(), 200);
    let bad = okta_get(&format!("{base}/api/v1/users"), "SSWS nope").await;
    assert_eq!(bad.status(), 401);
    let v: Value = bad.json().await.expect("json");
    assert_eq!(v["errorCode"], "E0000011");
    assert_eq!(client().get(&me).send().await.expect("send").status(), 401);
}

#[tokio::test]
async fn paging_follows_separate_link_headers_over_the_whole_dataset() {
    let size = 1_050;
    let sim = sim(Vendor::Okta, SimConfig::new(11, size)).await;
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let mut url = Some(format!("{}/api/v1/users?limit=500", sim.base_url));
    let mut users: Vec<Value> = Vec::new();
    let mut pages = 0;
    while let Some(u) = url {
        let resp = okta_get(&u, &auth).await;
        assert_eq!(resp.status(), 200);
        let links = resp.headers().get_all("link").iter().count();
        url = next_link(&resp);
        assert_eq!(links, if url.is_some() { 2 } else { 1 }, "self and next are separate lines");
        let page: Vec<Value> = resp.json().await.expect("json");
        assert!(page.len() <= 200, "limit is capped at 200");
        users.extend(page);
        pages += 1;
    }
    assert_eq!(pages, 6);
    assert_eq!(users, corral_sim::okta_users(11, size, 0));
    let one =
        okta_get(&format!("{}/api/v1/users/{}", sim.base_url, users[7]["id"].as_str().unwrap_or("")), &auth).await;
    assert_eq!(one.json::<Value>().await.expect("json"), users[7]);
    let bad_after = okta_get(&format!("{}/api/v1/users?after=zzz", sim.base_url), &auth).await;
    assert_eq!(bad_after.status(), 400);
}

#[tokio::test]
async fn joined_link_knob_sends_one_header() {
    let config = SimConfig::new(2, 30).behavior(Behavior { okta_joined_link: true, ..Behavior::default() });
    let sim = sim(Vendor::Okta, config).await;
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let resp = okta_get(&format!("{}/api/v1/users?limit=10", sim.base_url), &auth).await;
    let links: Vec<&str> = resp.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(links.len(), 1);
    assert!(links[0].contains("rel=\"self\", <") && links[0].contains("rel=\"next\""));
    assert!(next_link(&resp).is_some_and(|n| n.contains("after=00u")));
}

#[tokio::test]
async fn rate_limit_answers_e0000047_with_reset_epoch() {
    let config = SimConfig::new(1, 10).rate_limit(3, Duration::from_secs(2));
    let sim = sim(Vendor::Okta, config).await;
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let url = format!("{}/api/v1/users", sim.base_url);
    let mut limited = 0;
    for i in 0..5 {
        let resp = okta_get(&url, &auth).await;
        assert_eq!(header(&resp, "x-rate-limit-limit"), Some("3"));
        let reset: u64 = header(&resp, "x-rate-limit-reset").expect("reset").parse().expect("epoch");
        let now = now_epoch();
        assert!(reset >= now && reset <= now + 3);
        if i >= 3 {
            assert_eq!(resp.status(), 429);
            assert_eq!(header(&resp, "x-rate-limit-remaining"), Some("0"));
            let v: Value = resp.json().await.expect("json");
            assert_eq!(v["errorCode"], "E0000047");
            limited += 1;
        } else {
            assert_eq!(resp.status(), 200);
            assert_eq!(header(&resp, "x-rate-limit-remaining"), Some((2 - i).to_string().as_str()));
        }
    }
    assert_eq!(limited, 2);
    assert_eq!(sim.counters.snapshot().rate_limited, 2);
}

#[tokio::test]
async fn error_rate_and_malformed_pages() {
    let mut config = SimConfig::new(4, 100).malformed_pages([2]);
    config.faults.malformed_pages_once = true;
    let sim = sim(Vendor::Okta, config).await;
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let users = corral_sim::okta_users(4, 100, 0);
    let after = users[19]["id"].as_str().unwrap_or("").to_string();
    let url = format!("{}/api/v1/users?limit=10&after={after}", sim.base_url);
    let first = okta_get(&url, &auth).await;
    assert_eq!(first.status(), 200);
    assert!(!is_json(&first.bytes().await.expect("body")), "page 2 is malformed");
    let retry = okta_get(&url, &auth).await.bytes().await.expect("body");
    assert!(is_json(&retry), "malformed_pages_once: a retry succeeds");

    let failing = sim_with_errors().await;
    let auth = format!("SSWS {}", failing.config.credentials.token);
    let resp = okta_get(&format!("{}/api/v1/users", failing.base_url), &auth).await;
    assert!(resp.status().is_server_error());
    let me = okta_get(&format!("{}/api/v1/users/me", failing.base_url), &auth).await;
    assert_eq!(me.status(), 200, "faults hit data endpoints only");
}

async fn sim_with_errors() -> corral_sim::SimHandle {
    sim(Vendor::Okta, SimConfig::new(4, 100).error_rate(1.0)).await
}
