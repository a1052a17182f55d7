//! Token endpoint limits, real truncation, token revocation, generations
//! changed at run time, Graph's nextLink position, request events.

use std::time::Duration;

use corral_sim::{Behavior, Faults, RateLimit, SimConfig, TokenRateLimit, Truncation, Vendor};
use serde_json::Value;

use crate::common::*;

async fn cs_token_status(base: &str, creds: &corral_sim::Credentials) -> reqwest::Response {
    post_form(base, "/oauth2/token", form(&[("client_id", &creds.client_id), ("client_secret", &creds.client_secret)]))
        .await
}

#[tokio::test]
async fn crowdstrike_token_endpoint_allows_300_a_minute_by_default() {
    let sim = sim(Vendor::CrowdStrike, SimConfig::new(1, 10)).await;
    let creds = sim.config.credentials.clone();
    let c = client();
    let base = sim.base_url.clone();
    let reqs = (0..300).map(|_| {
        let (c, base, creds) = (c.clone(), base.clone(), creds.clone());
        async move {
            let body = form(&[("client_id", &creds.client_id), ("client_secret", &creds.client_secret)]);
            let r = c.post(format!("{base}/oauth2/token")).header("content-type", "application/x-www-form-urlencoded");
            r.body(body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    });
    let statuses: Vec<u16> =
        futures::StreamExt::collect(futures::StreamExt::buffer_unordered(futures::stream::iter(reqs), 16)).await;
    assert!(statuses.iter().all(|s| *s == 201), "the first 300 are issued");
    let refused = cs_token_status(&base, &creds).await;
    assert_eq!(refused.status(), 429);
    let retry_at: u64 = header(&refused, "x-ratelimit-retryafter").and_then(|v| v.parse().ok()).expect("epoch seconds");
    assert!(retry_at > now_epoch() && retry_at <= now_epoch() + 61, "{retry_at}");
    assert_eq!(header(&refused, "x-ratelimit-limit"), Some("300"), "the token endpoint's own limit");
    let v: Value = refused.json().await.expect("json");
    assert_eq!(v["errors"][0]["code"], 429);
    // Data endpoints are not limited by it.
    let snap = sim.counters.snapshot();
    assert_eq!(snap.tokens_issued, 300);
    assert_eq!(snap.rate_limited, 1);
}

#[tokio::test]
async fn token_limit_is_a_knob_with_the_vendors_429() {
    let limit = TokenRateLimit::Limit(RateLimit { requests: 1, per: Duration::from_secs(2) });
    let config = SimConfig::new(1, 10).behavior(Behavior { token_rate_limit: limit, ..Behavior::default() });
    let sim = sim(Vendor::MsGraph, config).await;
    let creds = &sim.config.credentials;
    let _ = graph_token(&sim.base_url, creds).await;
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &creds.client_id),
        ("client_secret", &creds.client_secret),
        ("scope", "https://graph.microsoft.com/.default"),
    ]);
    let refused = post_form(&sim.base_url, &format!("/{}/oauth2/v2.0/token", creds.tenant), body).await;
    assert_eq!(refused.status(), 429);
    let secs: u64 = header(&refused, "retry-after").and_then(|v| v.parse().ok()).expect("Retry-After seconds");
    assert!((1..=2).contains(&secs), "{secs}");
    let v: Value = refused.json().await.expect("json");
    assert_eq!(v["error"], "temporarily_unavailable");
    // Off: no limit at all, even for CrowdStrike.
    let config =
        SimConfig::new(1, 10).behavior(Behavior { token_rate_limit: TokenRateLimit::Off, ..Behavior::default() });
    let sim = crate::common::sim(Vendor::CrowdStrike, config).await;
    for _ in 0..310 {
        assert_eq!(cs_token_status(&sim.base_url, &sim.config.credentials).await.status(), 201);
    }
}

#[tokio::test]
async fn connection_truncation_announces_the_whole_body_and_cuts_it() {
    let faults = Faults { truncation: Truncation::Connection, truncate_requests: vec![2], ..Faults::default() };
    let sim = sim(Vendor::Okta, SimConfig::new(1, 30).faults(faults)).await;
    let url = format!("{}/api/v1/users?limit=10", sim.base_url);
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let whole = client().get(&url).header("authorization", &auth).send().await.expect("send");
    let full = whole.bytes().await.expect("first answer complete").len();
    let cut = client().get(&url).header("authorization", &auth).send().await.expect("headers arrive");
    assert_eq!(cut.status(), 200);
    assert_eq!(cut.content_length(), Some(full as u64), "Content-Length announces the whole body");
    let err = cut.bytes().await.expect_err("the body stops short");
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    // The next request is whole again.
    let again = client().get(&url).header("authorization", &auth).send().await.expect("send");
    assert_eq!(again.bytes().await.expect("complete").len(), full);
    assert_eq!(sim.counters.snapshot().fault("truncate"), 1);
}

#[tokio::test]
async fn okta_token_revoked_after_n_requests_and_by_the_admin_endpoint() {
    let faults = Faults { token_revoked_after: Some(2), ..Faults::default() };
    let sim = sim(Vendor::Okta, SimConfig::new(1, 30).faults(faults)).await;
    let url = format!("{}/api/v1/users?limit=10", sim.base_url);
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let status = || async { client().get(&url).header("authorization", &auth).send().await.expect("send") };
    assert_eq!(status().await.status(), 200);
    assert_eq!(status().await.status(), 200);
    let revoked = status().await;
    assert_eq!(revoked.status(), 401);
    let v: Value = revoked.json().await.expect("json");
    assert_eq!(v["errorCode"], "E0000011");
    assert_eq!(status().await.status(), 401, "revoked for good");

    // CrowdStrike: the admin endpoint revokes every token issued so far.
    let sim = crate::common::sim(Vendor::CrowdStrike, SimConfig::new(1, 10)).await;
    let token = cs_token(&sim.base_url, &sim.config.credentials).await;
    let q = format!("{}/devices/queries/devices/v1", sim.base_url);
    assert_eq!(get_bearer(&q, &token).await.status(), 200);
    let r = client().post(format!("{}/_sim/revoke", sim.base_url)).send().await.expect("send");
    assert_eq!(r.status(), 204);
    assert_eq!(get_bearer(&q, &token).await.status(), 401);
    let fresh = cs_token(&sim.base_url, &sim.config.credentials).await;
    assert_eq!(get_bearer(&q, &fresh).await.status(), 200, "a new token works");
}

#[tokio::test]
async fn the_generation_moves_while_the_simulator_runs() {
    let sim = sim(Vendor::Okta, SimConfig::new(5, 200)).await;
    let auth = format!("SSWS {}", sim.config.credentials.token);
    let users = || async {
        let r = client()
            .get(format!("{}/api/v1/users?limit=200", sim.base_url))
            .header("authorization", &auth)
            .send()
            .await
            .expect("send");
        r.json::<Vec<Value>>().await.expect("json")
    };
    assert_eq!(users().await, corral_sim::okta_users(5, 200, 0));
    let admin = format!("{}/_sim/generation", sim.base_url);
    let bumped: Value = client().post(&admin).send().await.expect("send").json().await.expect("json");
    assert_eq!(bumped["generation"], 1);
    assert_eq!(sim.generation(), 1);
    assert_eq!(users().await, corral_sim::okta_users(5, 200, 1));
    assert_ne!(corral_sim::okta_users(5, 200, 0), corral_sim::okta_users(5, 200, 1));
    let set: Value =
        client().post(&admin).body(r#"{"generation": 4}"#).send().await.expect("send").json().await.expect("json");
    assert_eq!(set["generation"], 4);
    assert_eq!(users().await, corral_sim::okta_users(5, 200, 4));
    let bad = client().post(&admin).body("{\"generation\": -1}").send().await.expect("send");
    assert_eq!(bad.status(), 400);
    sim.set_generation(0);
    assert_eq!(users().await, corral_sim::okta_users(5, 200, 0));
    // Admin calls are not vendor requests.
    let snap = sim.counters.snapshot();
    assert_eq!(snap.requests, 4, "{snap:?}");
    let counters: Value =
        client().get(format!("{}/_sim/counters", sim.base_url)).send().await.expect("send").json().await.expect("json");
    assert_eq!(counters["requests"], 4);
}

#[tokio::test]
async fn graph_next_link_can_come_after_value() {
    for after in [false, true] {
        let config =
            SimConfig::new(2, 30).behavior(Behavior { graph_next_link_after_value: after, ..Behavior::default() });
        let sim = sim(Vendor::MsGraph, config).await;
        let token = graph_token(&sim.base_url, &sim.config.credentials).await;
        let resp = get_bearer(&format!("{}/v1.0/users?$top=10", sim.base_url), &token).await;
        let body = String::from_utf8(resp.bytes().await.expect("body").to_vec()).expect("utf-8");
        let (link, value) =
            (body.find("\"@odata.nextLink\"").expect("a next link"), body.find("\"value\"").expect("value"));
        assert_eq!(link > value, after, "{body}");
        assert!(body.starts_with("{\"@odata.context\""), "{body}");
        assert!(is_json(body.as_bytes()));
    }
}

#[tokio::test]
async fn events_record_each_request_and_announced_waits() {
    let config = SimConfig::new(1, 10).rate_limit(1, Duration::from_secs(2));
    let sim = sim(Vendor::MsGraph, config).await;
    let token = graph_token(&sim.base_url, &sim.config.credentials).await;
    let url = format!("{}/v1.0/users", sim.base_url);
    assert_eq!(get_bearer(&url, &token).await.status(), 200);
    assert_eq!(get_bearer(&url, &token).await.status(), 429);
    let events = sim.counters.events();
    let labels: Vec<(&str, u16)> = events.iter().map(|e| (e.endpoint.as_str(), e.status)).collect();
    assert_eq!(labels, [("graph.token", 200), ("graph.users", 200), ("graph.users", 429)]);
    let wait = events[2].retry_after.expect("announced");
    assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2), "{wait:?}");
    assert!(events.windows(2).all(|w| w[0].arrived <= w[1].arrived && w[0].finished <= w[1].finished));
    assert_eq!(sim.counters.snapshot().max_in_flight_at("graph.users"), 1);
}
