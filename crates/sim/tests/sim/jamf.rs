//! Jamf Pro on the simulator kit: Basic-to-bearer tokens that expire and
//! renew, zero-based pages with sections, and the 5-connection limit.

use std::time::Duration;

use corral_sim::kit::{self, jamf};
use corral_sim::{Faults, SimConfig, SimHandle};
use serde_json::Value;

use crate::common::client;

const SEED: u64 = 11;

async fn start(config: SimConfig) -> SimHandle {
    kit::start(jamf::spec(SEED), config).await.expect("the Jamf simulator starts")
}

async fn login(sim: &SimHandle) -> reqwest::Response {
    let c = &sim.config.credentials;
    client()
        .post(format!("{}{}", sim.base_url, jamf::TOKEN_PATH))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .send()
        .await
        .expect("send")
}

async fn token(sim: &SimHandle) -> String {
    let resp = login(sim).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["token"].as_str().expect("token").to_string()
}

async fn list(sim: &SimHandle, token: &str, query: &str) -> reqwest::Response {
    client().get(format!("{}{}?{query}", sim.base_url, jamf::LIST_PATH)).bearer_auth(token).send().await.expect("send")
}

async fn keep_alive(sim: &SimHandle, token: &str) -> reqwest::Response {
    client().post(format!("{}{}", sim.base_url, jamf::KEEP_ALIVE_PATH)).bearer_auth(token).send().await.expect("send")
}

fn expires_in_secs(v: &Value) -> i64 {
    let expires = v["expires"].as_str().expect("expires");
    let at = chrono::DateTime::parse_from_rfc3339(expires).expect("expires is an ISO-8601 instant");
    at.timestamp() - chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn tokens_last_20_minutes_by_default_and_basic_is_not_a_data_credential() {
    let sim = start(SimConfig::new(SEED, 5)).await;
    let resp = login(&sim).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    let left = expires_in_secs(&v);
    assert!((1195..=1201).contains(&left), "expires about 20 minutes from now: {left}");
    let c = &sim.config.credentials;
    let basic_on_data = client()
        .get(format!("{}{}", sim.base_url, jamf::LIST_PATH))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .send()
        .await
        .expect("send");
    assert_eq!(basic_on_data.status(), 401, "data requests take the bearer token only");
    let body: Value = basic_on_data.json().await.expect("json");
    assert_eq!(body["httpStatus"], 401, "Jamf's error shape: {body}");
    let wrong = client()
        .post(format!("{}{}", sim.base_url, jamf::TOKEN_PATH))
        .basic_auth(&c.client_id, Some("wrong"))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    assert_eq!(sim.counters.snapshot().tokens_issued, 1);
}

#[tokio::test]
async fn expired_tokens_are_refused_everywhere_and_keep_alive_retires_the_old_token() {
    let faults = Faults { token_ttl: Some(Duration::from_millis(600)), ..Faults::default() };
    let sim = start(SimConfig::new(SEED, 5).faults(faults)).await;
    let resp = login(&sim).await;
    let v: Value = resp.json().await.expect("json");
    assert!(expires_in_secs(&v) <= 1, "token_ttl shortens the announced expiry: {v}");
    let first = v["token"].as_str().expect("token").to_string();
    assert_eq!(list(&sim, &first, "page=0").await.status(), 200);

    let renewed = keep_alive(&sim, &first).await;
    assert_eq!(renewed.status(), 200);
    let renewed: Value = renewed.json().await.expect("json");
    let second = renewed["token"].as_str().expect("a new token").to_string();
    assert_ne!(second, first);
    assert_eq!(list(&sim, &first, "page=0").await.status(), 401, "keep-alive retires the old token");
    assert_eq!(list(&sim, &second, "page=0").await.status(), 200);

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(list(&sim, &second, "page=0").await.status(), 401, "the token expired");
    assert_eq!(keep_alive(&sim, &second).await.status(), 401, "an expired token cannot be renewed");
    let third = token(&sim).await;
    assert_eq!(list(&sim, &third, "page=0").await.status(), 200, "a Basic login again works");

    let invalidated = client()
        .post(format!("{}{}", sim.base_url, jamf::INVALIDATE_PATH))
        .bearer_auth(&third)
        .send()
        .await
        .expect("send");
    assert_eq!(invalidated.status(), 204);
    assert_eq!(list(&sim, &third, "page=0").await.status(), 401, "an invalidated token is refused");

    let c = sim.counters.snapshot();
    assert_eq!(c.tokens_issued, 3);
    assert_eq!(c.fault("token_expired"), 2, "the data request and the keep-alive: {c:?}");
    assert_eq!(c.endpoint("kit.keep_alive"), 2);
    assert_eq!(c.endpoint("kit.token"), 2);
}

#[tokio::test]
async fn zero_based_pages_walk_to_exactly_the_dataset_with_a_total() {
    let size = 23;
    let sim = start(SimConfig::new(SEED, size)).await;
    let t = token(&sim).await;
    let mut got = Vec::new();
    for page in 0.. {
        let resp = list(&sim, &t, &format!("page={page}&page-size=10&sort=id%3Aasc")).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["totalCount"], size);
        let results = v["results"].as_array().expect("results");
        if results.is_empty() {
            assert_eq!(page, 3, "pages 0, 1 and 2 hold the records");
            break;
        }
        got.extend(results.iter().map(|r| r["id"].as_str().expect("a string id").to_string()));
    }
    assert_eq!(got, jamf::ids(SEED, size, 0));
    let over = list(&sim, &t, "page-size=0").await;
    assert_eq!(over.status(), 400);
}

#[tokio::test]
async fn sections_pick_the_parts_of_each_record() {
    let sim = start(SimConfig::new(SEED, 4)).await;
    let t = token(&sim).await;
    let first = |v: &Value| v["results"][0].clone();

    let v: Value = list(&sim, &t, "page=0").await.json().await.expect("json");
    let r = first(&v);
    assert!(r["general"]["name"].is_string(), "GENERAL by default: {r}");
    assert!(r["general"]["lastContactTime"].is_string());
    assert!(r["hardware"].is_null() && r["operatingSystem"].is_null() && r["userAndLocation"].is_null(), "{r}");
    assert!(r["udid"].is_string(), "udid is always there");

    let v: Value =
        list(&sim, &t, "section=HARDWARE&section=OPERATING_SYSTEM,USER_AND_LOCATION").await.json().await.expect("json");
    let r = first(&v);
    assert!(r["general"].is_null(), "GENERAL was not asked for: {r}");
    let mac = r["hardware"]["macAddress"].as_str().expect("macAddress");
    assert_eq!(mac.len(), 17);
    assert_eq!(mac, mac.to_ascii_uppercase(), "upper-case colon MACs: {mac}");
    assert!(r["hardware"]["serialNumber"].is_string());
    assert_eq!(r["operatingSystem"]["name"], "macOS");
    assert!(r["userAndLocation"]["email"].is_string());

    let bad = list(&sim, &t, "section=APPLICATIONS").await;
    assert_eq!(bad.status(), 400, "sections that are not simulated are refused");
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body["httpStatus"], 400);
}

#[tokio::test]
async fn a_sixth_concurrent_request_is_refused_and_counted() {
    let sim = start(SimConfig::new(SEED, 5).latency_ms(800)).await;
    let t = token(&sim).await;
    let burst = |n: usize| {
        let sim_url = format!("{}{}?page=0", sim.base_url, jamf::LIST_PATH);
        let t = t.clone();
        async move {
            let c = client();
            let reqs = (0..n).map(|_| c.get(&sim_url).bearer_auth(&t).send());
            futures::future::join_all(reqs)
                .await
                .into_iter()
                .map(|r| r.expect("send").status().as_u16())
                .collect::<Vec<_>>()
        }
    };
    let five = burst(5).await;
    assert_eq!(five, [200; 5], "five at once are fine");
    let mut six = burst(6).await;
    six.sort_unstable();
    assert_eq!(six, [200, 200, 200, 200, 200, 503], "the sixth at once is refused");
    let c = sim.counters.snapshot();
    assert_eq!(c.fault("over_concurrency"), 1);
    assert_eq!(c.status(503), 1);
    assert!(c.max_in_flight >= 6, "{c:?}");
}

#[tokio::test]
async fn over_the_limit_can_be_slow_instead_of_refused() {
    let spec = jamf::spec_with(SEED, kit::OverLimit::Slow(Duration::from_millis(400)));
    let sim = kit::start(spec, SimConfig::new(SEED, 5).latency_ms(300)).await.expect("start");
    let t = token(&sim).await;
    let url = format!("{}{}?page=0", sim.base_url, jamf::LIST_PATH);
    let c = client();
    let started = std::time::Instant::now();
    let statuses: Vec<u16> = futures::future::join_all((0..6).map(|_| c.get(&url).bearer_auth(&t).send()))
        .await
        .into_iter()
        .map(|r| r.expect("send").status().as_u16())
        .collect();
    assert_eq!(statuses, [200; 6]);
    assert!(started.elapsed() >= Duration::from_millis(700), "the sixth was slowed: {:?}", started.elapsed());
    assert_eq!(sim.counters.snapshot().fault("over_concurrency"), 1);
}
