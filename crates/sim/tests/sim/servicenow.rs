//! ServiceNow's Table API on the simulator kit: offset pages with a Link
//! header and X-Total-Count, display values, rate limits, Basic or OAuth.

use std::time::Duration;

use corral_sim::kit::{self, servicenow};
use corral_sim::{SimConfig, SimHandle};
use serde_json::Value;

use crate::common::{client, header};

const SEED: u64 = 12;

async fn start(auth: servicenow::Auth, config: SimConfig) -> SimHandle {
    kit::start(servicenow::spec(SEED, auth), config).await.expect("the ServiceNow simulator starts")
}

async fn get(sim: &SimHandle, url: &str) -> reqwest::Response {
    let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", sim.base_url) };
    let c = &sim.config.credentials;
    client().get(url).basic_auth(&c.client_id, Some(&c.client_secret)).send().await.expect("send")
}

/// `rel` → URL of a ServiceNow Link header.
fn links(resp: &reqwest::Response) -> Vec<(String, String)> {
    let all: Vec<&str> = resp.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(all.len(), 1, "one comma-joined Link header");
    all[0]
        .split(",<")
        .map(|part| {
            let part = part.trim_start_matches('<');
            let (url, rel) = part.split_once(">;rel=").expect("<url>;rel=\"x\"");
            (rel.trim_matches('"').to_string(), url.to_string())
        })
        .collect()
}

fn rel<'a>(links: &'a [(String, String)], name: &str) -> Option<&'a str> {
    links.iter().find(|(r, _)| r == name).map(|(_, u)| u.as_str())
}

#[tokio::test]
async fn the_link_header_walk_reaches_exactly_the_dataset() {
    let size = 23;
    let sim = start(servicenow::Auth::Basic, SimConfig::new(SEED, size)).await;
    let mut url = format!("{}?sysparm_limit=7&sysparm_query=ORDERBYsys_id", servicenow::LIST_PATH);
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let resp = get(&sim, &url).await;
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(header(&resp, "x-total-count"), Some("23"));
        let l = links(&resp);
        assert!(rel(&l, "first").is_some_and(|u| u.contains("sysparm_offset=0")), "{l:?}");
        assert!(rel(&l, "last").is_some_and(|u| u.contains("sysparm_offset=21")), "{l:?}");
        assert_eq!(rel(&l, "prev").is_some(), pages > 0, "prev on every page but the first: {l:?}");
        let next = rel(&l, "next").map(str::to_string);
        if let Some(n) = &next {
            assert!(n.contains("sysparm_query=ORDERBYsys_id"), "links keep the request's parameters: {n}");
        }
        let v: Value = resp.json().await.expect("json");
        got.extend(
            v["result"].as_array().expect("result").iter().map(|r| r["sys_id"].as_str().expect("sys_id").to_string()),
        );
        pages += 1;
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(got, servicenow::ids(SEED, size, 0), "exactly the dataset, in order");
    let past = get(&sim, &format!("{}?sysparm_offset=100", servicenow::LIST_PATH)).await;
    let v: Value = past.json().await.expect("json");
    assert_eq!(v["result"].as_array().map(Vec::len), Some(0), "past the end: an empty page");
}

#[tokio::test]
async fn display_values_change_references_choices_and_dates() {
    let sim = start(servicenow::Auth::Basic, SimConfig::new(SEED, 40)).await;
    let page = |q: &'static str| {
        let sim = &sim;
        async move {
            let v: Value =
                get(sim, &format!("{}?sysparm_limit=40&{q}", servicenow::LIST_PATH)).await.json().await.expect("json");
            v["result"].as_array().expect("result").clone()
        }
    };
    let values = page("").await;
    let shown = page("sysparm_display_value=true").await;
    let all = page("sysparm_display_value=all").await;
    let bare = page("sysparm_display_value=true&sysparm_exclude_reference_link=true").await;
    let i = values.iter().position(|r| r["assigned_to"].is_object()).expect("an assigned record");

    let user = &values[i]["assigned_to"];
    let sys_id = user["value"].as_str().expect("value");
    assert_eq!(sys_id.len(), 32, "a reference's value is a sys_id: {user}");
    let link = user["link"].as_str().expect("link");
    assert!(link.starts_with(&sim.base_url) && link.ends_with(&format!("/api/now/table/sys_user/{sys_id}")), "{link}");
    assert!(user.get("display_value").is_none());

    let name = shown[i]["assigned_to"]["display_value"].as_str().expect("a display value");
    assert!(name.contains(' '), "a person's name: {name}");
    assert!(shown[i]["assigned_to"].get("value").is_none());
    assert_eq!(bare[i]["assigned_to"], name, "without links a reference is a bare string");

    assert_eq!(all[i]["assigned_to"]["value"], sys_id);
    assert_eq!(all[i]["assigned_to"]["display_value"], name);
    assert!(all[i]["assigned_to"]["link"].is_string());
    assert_eq!(all[i]["name"]["value"], values[i]["name"], "all: every field is an object");
    assert_eq!(all[i]["sys_id"]["display_value"], values[i]["sys_id"]);

    assert!(values[i]["install_status"].as_str().is_some_and(|s| s.parse::<u32>().is_ok()));
    assert!(shown[i]["install_status"].as_str().is_some_and(|s| s.parse::<u32>().is_err()), "a choice label");
    assert_ne!(values[i]["sys_updated_on"], shown[i]["sys_updated_on"], "dates shown in the user's zone");
    assert_eq!(values[i]["company"]["value"].as_str().map(str::len), Some(32));

    let empty = values.iter().position(|r| r["assigned_to"] == "").expect("some computer is unassigned");
    assert_eq!(all[empty]["assigned_to"], serde_json::json!({"display_value": "", "value": ""}));

    let fields = page("sysparm_fields=sys_id,name").await;
    // Only the fields asked for (key order is not part of JSON's meaning, and
    // serde_json keeps insertion order when a crate of the build asks it to).
    let mut keys: Vec<&String> = fields[0].as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["name", "sys_id"]);

    let bad = get(&sim, &format!("{}?sysparm_display_value=yes", servicenow::LIST_PATH)).await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body["status"], "failure", "ServiceNow's error shape: {body}");
    let desc = get(&sim, &format!("{}?sysparm_query=ORDERBYDESCsys_id", servicenow::LIST_PATH)).await;
    assert_eq!(desc.status(), 400, "queries that are not simulated are refused, not ignored");
}

#[tokio::test]
async fn rate_limited_answers_carry_retry_after_and_epoch_reset() {
    let sim = start(servicenow::Auth::Basic, SimConfig::new(SEED, 5).rate_limit(2, Duration::from_secs(3))).await;
    let url = servicenow::LIST_PATH;
    let ok = get(&sim, url).await;
    assert_eq!(header(&ok, "x-ratelimit-limit"), Some("2"));
    let reset: u64 = header(&ok, "x-ratelimit-reset").expect("reset").parse().expect("epoch");
    let now = crate::common::now_epoch();
    assert!(reset >= now && reset <= now + 4, "epoch seconds: {reset} vs {now}");
    assert_eq!(header(&ok, "x-ratelimit-remaining"), None, "ServiceNow sends no remaining count");
    assert_eq!(get(&sim, url).await.status(), 200);
    let limited = get(&sim, url).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = header(&limited, "retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=3).contains(&wait), "{wait}");
    assert_eq!(sim.counters.snapshot().rate_limited, 1);
}

#[tokio::test]
async fn basic_or_oauth_both_work_on_an_instance_that_takes_either() {
    let sim = start(servicenow::Auth::Either, SimConfig::new(SEED, 3)).await;
    let url = format!("{}{}", sim.base_url, servicenow::LIST_PATH);
    assert_eq!(get(&sim, &url).await.status(), 200, "Basic");
    let c = sim.config.credentials.clone();
    let resp = client()
        .post(format!("{}{}", sim.base_url, servicenow::TOKEN_PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::common::form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
        ]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await.expect("json");
    assert_eq!(t["expires_in"], 1800);
    let bearer = t["access_token"].as_str().expect("token");
    assert_eq!(client().get(&url).bearer_auth(bearer).send().await.expect("send").status(), 200, "OAuth");
    let wrong = client().get(&url).basic_auth(&c.client_id, Some("nope")).send().await.expect("send");
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["status"], "failure");

    let basic_only = start(servicenow::Auth::Basic, SimConfig::new(SEED, 3)).await;
    let url = format!("{}{}", basic_only.base_url, servicenow::LIST_PATH);
    assert_eq!(client().get(&url).bearer_auth(bearer).send().await.expect("send").status(), 401);
}
