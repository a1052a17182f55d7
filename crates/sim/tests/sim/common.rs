//! Helpers shared by the simulator tests.

use std::time::Duration;

use corral_sim::{Credentials, SimConfig, SimHandle, Vendor};
use serde_json::Value;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("reqwest client")
}

pub async fn sim(vendor: Vendor, config: SimConfig) -> SimHandle {
    corral_sim::start(vendor, config).await.expect("start simulator")
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn post_form(base: &str, path: &str, body: String) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("send")
}

pub async fn cs_token(base: &str, creds: &Credentials) -> String {
    let resp = post_form(
        base,
        "/oauth2/token",
        form(&[("client_id", &creds.client_id), ("client_secret", &creds.client_secret)]),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("token json");
    v["access_token"].as_str().expect("access_token").to_string()
}

pub async fn graph_token(base: &str, creds: &Credentials) -> String {
    let resp = post_form(
        base,
        &format!("/{}/oauth2/v2.0/token", creds.tenant),
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &creds.client_id),
            ("client_secret", &creds.client_secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("token json");
    v["access_token"].as_str().expect("access_token").to_string()
}

pub async fn get_bearer(url: &str, token: &str) -> reqwest::Response {
    client().get(url).bearer_auth(token).send().await.expect("send")
}

pub fn now_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok()
}
