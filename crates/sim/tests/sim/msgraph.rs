use std::collections::HashSet;
use std::time::Duration;

use corral_sim::{Faults, SimConfig, Vendor};
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn auth_client_credentials_and_rejections() {
    let sim = sim(Vendor::MsGraph, SimConfig::new(1, 10)).await;
    let base = &sim.base_url;
    let c = &sim.config.credentials;
    let path = format!("/{}/oauth2/v2.0/token", c.tenant);
    let good = post_form(
        base,
        &path,
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ]),
    )
    .await;
    assert_eq!(good.status(), 200);
    let v: Value = good.json().await.expect("json");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);

    let bad_secret = post_form(
        base,
        &path,
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", "nope"),
            ("scope", "https://graph.microsoft.com/.default"),
        ]),
    )
    .await;
    assert_eq!(bad_secret.status(), 401);
    let v: Value = bad_secret.json().await.expect("json");
    assert_eq!(v["error"], "invalid_client");
    let bad_scope = post_form(
        base,
        &path,
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
            ("scope", "User.Read"),
        ]),
    )
    .await;
    assert_eq!(bad_scope.status(), 400);
    let users = format!("{base}/v1.0/users");
    let resp = client().get(&users).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(get_bearer(&users, "forged").await.status(), 401);
}

async fn walk(start: String, token: &str, base: &str) -> (Vec<Value>, usize) {
    let mut url = Some(start);
    let mut all = Vec::new();
    let mut pages = 0;
    while let Some(u) = url {
        let resp = get_bearer(&u, token).await;
        assert_eq!(resp.status(), 200, "{u}");
        let v: Value = resp.json().await.expect("json");
        assert!(v["@odata.context"].as_str().is_some());
        url = v["@odata.nextLink"].as_str().map(str::to_string);
        if let Some(next) = &url {
            assert!(next.starts_with(base) && next.contains("$skiptoken="), "{next}");
        }
        all.extend(v["value"].as_array().expect("value").iter().cloned());
        pages += 1;
    }
    (all, pages)
}

#[tokio::test]
async fn users_and_devices_walk_the_dataset_exactly_once() {
    let size = 2_500;
    let sim = sim(Vendor::MsGraph, SimConfig::new(21, size)).await;
    let base = &sim.base_url;
    let token = graph_token(base, &sim.config.credentials).await;

    // Users: default page 100, default property set (no accountEnabled).
    let (users, pages) = walk(format!("{base}/v1.0/users"), &token, base).await;
    assert_eq!(pages, 25);
    let expected = corral_sim::msgraph_users(21, size, 0);
    let ids = |v: &[Value]| v.iter().map(|u| u["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&users), ids(&expected));
    assert!(users[0].get("accountEnabled").is_none());
    assert_eq!(users[0]["userPrincipalName"], expected[0]["userPrincipalName"]);

    let (selected, pages) = walk(format!("{base}/v1.0/users?$top=999&$select=id,accountEnabled"), &token, base).await;
    assert_eq!(pages, 3);
    assert_eq!(selected[5]["accountEnabled"], expected[5]["accountEnabled"]);
    assert_eq!(selected[5].as_object().map(|o| o.len()), Some(2));

    for bad in ["$top=1000", "$top=0", "$skip=10", "$select=nosuch", "$skiptoken=forged"] {
        let resp = get_bearer(&format!("{base}/v1.0/users?{bad}"), &token).await;
        assert_eq!(resp.status(), 400, "{bad}");
    }

    // Devices: default page 1000, full records, documented repeats.
    let (devices, pages) = walk(format!("{base}/v1.0/deviceManagement/managedDevices"), &token, base).await;
    assert_eq!(pages, 3);
    assert_eq!(devices, corral_sim::msgraph_devices(21, size, 0));
    let distinct: HashSet<&Value> = devices.iter().map(|d| &d["id"]).collect();
    assert!(distinct.len() < size, "a few positions repeat an earlier device");
    assert!(distinct.len() > size * 98 / 100);
}

#[tokio::test]
async fn throttling_answers_retry_after_seconds() {
    let config = SimConfig::new(1, 10).rate_limit(2, Duration::from_secs(3));
    let sim = sim(Vendor::MsGraph, config).await;
    let token = graph_token(&sim.base_url, &sim.config.credentials).await;
    let url = format!("{}/v1.0/users", sim.base_url);
    assert_eq!(get_bearer(&url, &token).await.status(), 200);
    assert_eq!(get_bearer(&url, &token).await.status(), 200);
    let resp = get_bearer(&url, &token).await;
    assert_eq!(resp.status(), 429);
    let secs: u64 = header(&resp, "retry-after").expect("retry-after").parse().expect("seconds");
    assert!((1..=3).contains(&secs), "Retry-After is a delay in seconds: {secs}");
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "TooManyRequests");
}

#[tokio::test]
async fn truncation_and_malformed_pages_break_the_json_but_not_http() {
    let config = SimConfig::new(1, 30).faults(Faults { truncate_rate: 1.0, ..Faults::default() });
    let sim = sim(Vendor::MsGraph, config).await;
    let token = graph_token(&sim.base_url, &sim.config.credentials).await;
    let resp = get_bearer(&format!("{}/v1.0/users", sim.base_url), &token).await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.expect("complete body");
    assert!(!body.is_empty() && !is_json(&body));
    assert_eq!(sim.counters.snapshot().fault("truncate"), 1);

    let sim = crate::common::sim(Vendor::MsGraph, SimConfig::new(1, 30).malformed_pages([0])).await;
    let token = graph_token(&sim.base_url, &sim.config.credentials).await;
    let resp = get_bearer(&format!("{}/v1.0/users?$top=10", sim.base_url), &token).await;
    assert_eq!(resp.status(), 200);
    assert!(!is_json(&resp.bytes().await.expect("body")));
}
