//! The simulator kit: every pagination style walked plainly returns exactly
//! the generated ids; auth styles; faults and rate limits show in the counters.

use std::time::Duration;

use corral_sim::kit::{self, KitAuth, KitSpec, Pagination, RateHeaders, ResetStyle};
use corral_sim::{Faults, SimConfig, SimHandle};
use serde_json::Value;

use crate::common::{client, header};

const SEED: u64 = 5;
const SIZE: usize = 25;

fn spec(pagination: Pagination) -> KitSpec {
    KitSpec::new("/api/v1/devices", kit::devices(SEED)).pagination(pagination).page_size(10, 10)
}

async fn start(spec: KitSpec, config: SimConfig) -> SimHandle {
    kit::start(spec, config).await.expect("kit simulator starts")
}

fn token(sim: &SimHandle) -> String {
    sim.config.credentials.token.clone()
}

async fn get(sim: &SimHandle, url: &str) -> (reqwest::header::HeaderMap, Value) {
    let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", sim.base_url) };
    let resp = client().get(&url).bearer_auth(token(sim)).send().await.expect("send");
    assert_eq!(resp.status(), 200, "GET {url}");
    let headers = resp.headers().clone();
    (headers, resp.json().await.expect("a JSON page"))
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn ids_in(page: &Value, path: &[&str]) -> Vec<String> {
    at(page, path)
        .as_array()
        .expect("records array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// Walk `spec`'s listing the way its pagination style says; every id seen.
async fn walk(sim: &SimHandle, spec: &KitSpec) -> Vec<String> {
    let mut ids = Vec::new();
    let path = "/api/v1/devices";
    match &spec.pagination {
        Pagination::BodyCursor { .. } => {
            let mut url = format!("{path}?limit=10");
            loop {
                let (_, page) = get(sim, &url).await;
                ids.extend(ids_in(&page, &["data"]));
                match page["pagination"]["nextCursor"].as_str() {
                    Some(c) => url = format!("{path}?limit=10&cursor={}", crate::common::enc(c)),
                    None => break,
                }
            }
        }
        Pagination::LinkHeader { .. } => {
            let mut url = format!("{path}?limit=10");
            loop {
                let (headers, page) = get(sim, &url).await;
                ids.extend(ids_in(&page, &[]));
                let next = headers
                    .get_all("link")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find(|l| l.contains("rel=\"next\""))
                    .map(|l| l.trim_start_matches('<').split('>').next().unwrap_or_default().to_string());
                match next {
                    Some(n) => url = n,
                    None => break,
                }
            }
        }
        Pagination::OffsetLimit { .. } => {
            let mut offset = 0;
            loop {
                let (_, page) = get(sim, &format!("{path}?offset={offset}&limit=10")).await;
                assert_eq!(page["meta"]["total"], SIZE, "the total is where the spec put it");
                let got = ids_in(&page, &["data"]);
                offset += got.len();
                ids.extend(got);
                if offset >= SIZE {
                    break;
                }
            }
        }
        Pagination::PageNumber { .. } => {
            for page_no in 1.. {
                let (_, page) = get(sim, &format!("{path}?page={page_no}&limit=10")).await;
                let got = ids_in(&page, &["data"]);
                let short = got.len() < 10;
                ids.extend(got);
                if short {
                    break;
                }
            }
        }
        Pagination::NextLink { .. } => {
            let mut url = format!("{path}?limit=10");
            loop {
                let (_, page) = get(sim, &url).await;
                ids.extend(ids_in(&page, &["value"]));
                match page["@odata.nextLink"].as_str() {
                    Some(n) => url = n.to_string(),
                    None => break,
                }
            }
        }
        Pagination::IdsThenDetails { .. } => {
            let mut listed = Vec::new();
            let mut offset = 0;
            loop {
                let (_, page) = get(sim, &format!("{path}?offset={offset}&limit=10")).await;
                let got: Vec<String> = page["resources"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_str().expect("an id").to_string())
                    .collect();
                offset += got.len();
                let done = got.len() < 10;
                listed.extend(got);
                if done {
                    break;
                }
            }
            for batch in listed.chunks(4) {
                let q: Vec<String> = batch.iter().map(|id| format!("ids={id}")).collect();
                let (_, page) = get(sim, &format!("/api/v1/devices/details?{}", q.join("&"))).await;
                ids.extend(ids_in(&page, &["resources"]));
            }
        }
        Pagination::Export { .. } => {
            let resp = client()
                .post(format!("{}{path}", sim.base_url))
                .bearer_auth(token(sim))
                .json(&serde_json::json!({"chunk_size": 7}))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200);
            let job: Value = resp.json().await.expect("json");
            let job = job["export_uuid"].as_str().expect("export_uuid").to_string();
            let mut fetched = std::collections::BTreeSet::new();
            let mut polls = 0;
            loop {
                polls += 1;
                let (_, status) = get(sim, &format!("{path}/{job}/status")).await;
                for n in status["chunks_available"].as_array().expect("chunks") {
                    let n = n.as_u64().expect("chunk number");
                    if fetched.insert(n) {
                        let (_, chunk) = get(sim, &format!("{path}/{job}/chunks/{n}")).await;
                        ids.extend(ids_in(&chunk, &[]));
                    }
                }
                if status["status"] == "FINISHED" {
                    break;
                }
                assert!(polls < 10, "the export never finished");
            }
            assert_eq!(polls, 3, "the export finishes after the polls the spec says");
            assert_eq!(fetched.len(), SIZE.div_ceil(7));
        }
    }
    ids
}

fn styles() -> Vec<(&'static str, KitSpec)> {
    vec![
        ("cursor in body", spec(Pagination::body_cursor(&["pagination", "nextCursor"], "cursor"))),
        ("Link header", spec(Pagination::link_header("after")).records_at(&[])),
        ("offset/limit", spec(Pagination::offset_limit("offset")).total_at(&["meta", "total"])),
        ("page number", spec(Pagination::page_number("page", 1))),
        ("nextLink", spec(Pagination::next_link(&["@odata.nextLink"])).records_at(&["value"])),
        (
            "ids then details",
            spec(Pagination::ids_then_details("offset", "/api/v1/devices/details", "ids", 4))
                .records_at(&["resources"]),
        ),
        ("export job", spec(Pagination::export(3)).records_at(&[])),
    ]
}

#[tokio::test]
async fn every_pagination_style_walks_to_exactly_the_generated_ids() {
    for (style, spec) in styles() {
        let expected = spec.ids(SIZE, 0);
        assert_eq!(expected.len(), SIZE);
        let sim = start(spec.clone(), SimConfig::new(SEED, SIZE)).await;
        let got = walk(&sim, &spec).await;
        assert_eq!(got, expected, "{style}: the walk returns exactly the generated ids, in order");
        let c = sim.counters.snapshot();
        assert!(c.endpoint("kit.list") + c.endpoint("kit.export") >= 1, "{style}: {c:?}");
        sim.shutdown().await;
    }
}

/// A next link carries the request's own parameters (a filter, a field
/// choice), as Okta's `Link` headers and Graph's `@odata.nextLink` do: a
/// client that follows links as sent keeps its filter on every page.
#[tokio::test]
async fn next_links_keep_the_requests_other_parameters() {
    for (style, spec) in [
        ("Link header", spec(Pagination::link_header("after")).records_at(&[])),
        ("nextLink", spec(Pagination::next_link(&["@odata.nextLink"])).records_at(&["value"])),
    ] {
        let sim = start(spec.clone(), SimConfig::new(SEED, SIZE)).await;
        let mut url = "/api/v1/devices?search=os%20eq%20%22mac%22&limit=10".to_string();
        let mut pages = 0;
        loop {
            let (headers, page) = get(&sim, &url).await;
            pages += 1;
            let next = match style {
                "Link header" => headers
                    .get_all("link")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find(|l| l.contains("rel=\"next\""))
                    .map(|l| l.trim_start_matches('<').split('>').next().unwrap_or_default().to_string()),
                _ => page["@odata.nextLink"].as_str().map(str::to_string),
            };
            let Some(next) = next else { break };
            assert!(next.contains("search=os%20eq%20%22mac%22"), "{style}: the filter is kept: {next}");
            assert_eq!(next.matches("limit=10").count(), 1, "{style}: the page size once: {next}");
            assert_eq!(next.matches("search=").count(), 1, "{style}: the filter once: {next}");
            url = next;
        }
        assert_eq!(pages, 3, "{style}: 25 records in pages of 10");
    }
}

#[tokio::test]
async fn ids_then_details_finds_records_by_index_of_too() {
    let spec = spec(Pagination::ids_then_details("offset", "/api/v1/devices/details", "ids", 4))
        .records_at(&["resources"])
        .index_of(kit::record_index_of(SEED, SIZE));
    let sim = start(spec.clone(), SimConfig::new(SEED, SIZE)).await;
    let expected = spec.ids(SIZE, 0);
    // Details for ids never listed: found by the spec's index_of.
    let (_, page) = get(&sim, &format!("/api/v1/devices/details?ids={},{}", expected[20], expected[3])).await;
    assert_eq!(ids_in(&page, &["resources"]), vec![expected[20].clone(), expected[3].clone()]);
    let resp = client()
        .get(format!("{}/api/v1/devices/details?ids=a,b,c,d,e", sim.base_url))
        .bearer_auth(token(&sim))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400, "more ids than max_ids is refused");
}

#[tokio::test]
async fn page_sizes_are_capped_and_a_new_generation_replaces_some_ids() {
    let size = 200;
    let spec = spec(Pagination::body_cursor(&["pagination", "nextCursor"], "cursor")).page_size(10, 50);
    let sim = start(spec.clone(), SimConfig::new(SEED, size)).await;
    let g0 = spec.ids(size, 0);
    let (_, page) = get(&sim, "/api/v1/devices?limit=1000").await;
    assert_eq!(ids_in(&page, &["data"]), g0[..50], "a page size over the maximum is capped");
    let (_, page) = get(&sim, "/api/v1/devices").await;
    assert_eq!(ids_in(&page, &["data"]).len(), 10, "the default page size");
    let changed = (1..=8).find(|g| spec.ids(size, *g) != g0).expect("some generation replaces an id");
    sim.set_generation(changed);
    let mut got = Vec::new();
    let mut url = "/api/v1/devices?limit=50".to_string();
    loop {
        let (_, page) = get(&sim, &url).await;
        got.extend(ids_in(&page, &["data"]));
        match page["pagination"]["nextCursor"].as_str() {
            Some(c) => url = format!("/api/v1/devices?limit=50&cursor={}", crate::common::enc(c)),
            None => break,
        }
    }
    assert_eq!(got, spec.ids(size, changed));
    assert!(g0.iter().any(|id| !got.contains(id)), "an id of generation 0 is gone");
    assert_eq!(kit::record_index(SEED, &got[7], size, changed), Some(7), "record ids decode to their index");
}

#[tokio::test]
async fn auth_styles_accept_the_configured_credentials_and_refuse_others() {
    let base = || spec(Pagination::offset_limit("offset"));
    let config = SimConfig::new(SEED, SIZE);
    let creds = config.credentials.clone();
    let c = client();

    let sim = start(base().auth(KitAuth::header("Authorization", "ApiToken ")), config.clone()).await;
    let url = format!("{}/api/v1/devices", sim.base_url);
    let ok = c.get(&url).header("Authorization", format!("ApiToken {}", creds.token)).send().await.expect("send");
    assert_eq!(ok.status(), 200);
    let bad = c.get(&url).header("Authorization", "ApiToken nope").send().await.expect("send");
    assert_eq!(bad.status(), 401);
    let bearer = c.get(&url).bearer_auth(&creds.token).send().await.expect("send");
    assert_eq!(bearer.status(), 401, "the prefix is part of the credential");

    let sim = start(base().auth(KitAuth::Basic), config.clone()).await;
    let url = format!("{}/api/v1/devices", sim.base_url);
    let ok = c.get(&url).basic_auth(&creds.client_id, Some(&creds.client_secret)).send().await.expect("send");
    assert_eq!(ok.status(), 200);
    let bad = c.get(&url).basic_auth(&creds.client_id, Some("wrong")).send().await.expect("send");
    assert_eq!(bad.status(), 401);

    let sim = start(base().auth(KitAuth::None), config.clone()).await;
    let ok = c.get(format!("{}/api/v1/devices", sim.base_url)).send().await.expect("send");
    assert_eq!(ok.status(), 200);
}

async fn oauth_token(sim: &SimHandle, secret: &str) -> reqwest::Response {
    let creds = &sim.config.credentials;
    client()
        .post(format!("{}/oauth/token", sim.base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::common::form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &creds.client_id),
            ("client_secret", secret),
        ]))
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn oauth2_tokens_are_issued_expire_and_show_in_counters() {
    let spec =
        spec(Pagination::offset_limit("offset")).auth(KitAuth::oauth2("/oauth/token", Duration::from_secs(1800)));
    let config = SimConfig::new(SEED, SIZE).token_ttl(Duration::from_millis(300));
    let sim = start(spec, config).await;
    let secret = sim.config.credentials.client_secret.clone();
    let resp = oauth_token(&sim, &secret).await;
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await.expect("json");
    assert_eq!(t["expires_in"], 1, "token_ttl shortens the announced lifetime (rounded up)");
    let access = t["access_token"].as_str().expect("access_token").to_string();
    let url = format!("{}/api/v1/devices", sim.base_url);
    assert_eq!(client().get(&url).bearer_auth(&access).send().await.expect("send").status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client().get(&url).bearer_auth(&access).send().await.expect("send").status(), 401);
    assert_eq!(oauth_token(&sim, "wrong").await.status(), 401);
    let c = sim.counters.snapshot();
    assert_eq!(c.tokens_issued, 1);
    assert_eq!(c.fault("token_expired"), 1);
    assert_eq!(c.endpoint("kit.token"), 2);
}

#[tokio::test]
async fn refused_credentials_are_echoed_only_when_asked() {
    let faults = Faults { echo_credentials: true, ..Faults::default() };
    let sim = start(
        spec(Pagination::offset_limit("offset")).auth(KitAuth::header("Authorization", "ApiToken ")),
        SimConfig::new(SEED, SIZE).faults(faults),
    )
    .await;
    let resp = client()
        .get(format!("{}/api/v1/devices", sim.base_url))
        .header("Authorization", "ApiToken planted-xyz")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.expect("body").contains("planted-xyz"));
    let sim = start(spec(Pagination::offset_limit("offset")), SimConfig::new(SEED, SIZE)).await;
    let resp =
        client().get(format!("{}/api/v1/devices", sim.base_url)).bearer_auth("planted-xyz").send().await.expect("send");
    assert_eq!(resp.status(), 401);
    assert!(!resp.text().await.expect("body").contains("planted-xyz"));
}

#[tokio::test]
async fn faults_are_injected_and_counted() {
    let faults = Faults {
        error_5xx_rate: 0.5,
        malformed_pages: vec![1],
        hang_requests: vec![1],
        hang: Duration::from_millis(50),
        ..Faults::default()
    };
    let sim = start(spec(Pagination::offset_limit("offset")), SimConfig::new(SEED, SIZE).faults(faults)).await;
    let (mut ok, mut errors, mut malformed) = (0, 0, 0);
    for offset in [0, 10, 0, 10, 0, 10, 0, 10, 0, 10] {
        let resp = client()
            .get(format!("{}/api/v1/devices?offset={offset}&limit=10", sim.base_url))
            .bearer_auth(token(&sim))
            .send()
            .await
            .expect("send");
        match resp.status().as_u16() {
            200 => {
                ok += 1;
                let body = resp.bytes().await.expect("body");
                if offset == 10 {
                    assert!(!crate::common::is_json(&body), "page 1 is always malformed");
                    malformed += 1;
                } else {
                    assert!(crate::common::is_json(&body));
                }
            }
            s => {
                assert!(s >= 500, "{s}");
                errors += 1;
            }
        }
    }
    let c = sim.counters.snapshot();
    assert_eq!(c.fault("5xx"), errors);
    assert!(errors > 0 && ok > 0, "a 50 % rate over ten requests gives both: {c:?}");
    assert_eq!(c.fault("malformed_page"), malformed);
    assert_eq!(c.fault("hang"), 1, "the first data request hung");
    assert_eq!(c.endpoint("kit.list"), 10);
}

#[tokio::test]
async fn rate_limit_headers_and_retry_after_in_the_specs_style() {
    for reset in [ResetStyle::Seconds, ResetStyle::Epoch] {
        let spec = spec(Pagination::offset_limit("offset")).rate_headers(RateHeaders::x_ratelimit(reset));
        let sim = start(spec, SimConfig::new(SEED, SIZE).rate_limit(3, Duration::from_secs(2))).await;
        let url = format!("{}/api/v1/devices", sim.base_url);
        let first = client().get(&url).bearer_auth(token(&sim)).send().await.expect("send");
        assert_eq!(header(&first, "x-ratelimit-limit"), Some("3"));
        assert_eq!(header(&first, "x-ratelimit-remaining"), Some("2"));
        let reset_value: u64 = header(&first, "x-ratelimit-reset").expect("reset").parse().expect("a number");
        match reset {
            ResetStyle::Seconds => assert!((1..=2).contains(&reset_value), "{reset_value}"),
            ResetStyle::Epoch => assert!(reset_value >= crate::common::now_epoch(), "{reset_value}"),
        }
        assert_eq!(sim.spend(2), 2, "another client spends the rest");
        let limited = client().get(&url).bearer_auth(token(&sim)).send().await.expect("send");
        assert_eq!(limited.status(), 429);
        let wait: u64 = header(&limited, "retry-after").expect("Retry-After").parse().expect("seconds");
        assert!((1..=2).contains(&wait), "{wait}");
        let c = sim.counters.snapshot();
        assert_eq!(c.rate_limited, 1);
        let event = sim.counters.events().into_iter().find(|e| e.status == 429).expect("the 429's event");
        assert!(event.retry_after.is_some_and(|w| w <= Duration::from_secs(2)), "{event:?}");
    }
    let spec = spec(Pagination::offset_limit("offset")).rate_headers(RateHeaders::None).retry_after(false);
    let sim = start(spec, SimConfig::new(SEED, SIZE).rate_limit(1, Duration::from_secs(5))).await;
    let url = format!("{}/api/v1/devices", sim.base_url);
    let first = client().get(&url).bearer_auth(token(&sim)).send().await.expect("send");
    assert_eq!(header(&first, "x-ratelimit-limit"), None);
    let limited = client().get(&url).bearer_auth(token(&sim)).send().await.expect("send");
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), None);
}

#[tokio::test]
async fn static_tokens_can_be_revoked_after_n_requests() {
    let faults = Faults { token_revoked_after: Some(2), ..Faults::default() };
    let sim = start(spec(Pagination::offset_limit("offset")), SimConfig::new(SEED, SIZE).faults(faults)).await;
    let url = format!("{}/api/v1/devices", sim.base_url);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(client().get(&url).bearer_auth(token(&sim)).send().await.expect("send").status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 401]);
    assert_eq!(sim.counters.snapshot().fault("token_revoked"), 1);
}

#[tokio::test]
async fn bad_specs_and_bad_cursors_are_refused_clearly() {
    let err = kit::start(KitSpec::new("api/devices", kit::devices(1)), SimConfig::new(1, 5))
        .await
        .expect_err("relative path");
    assert!(err.to_string().contains("api/devices"), "{err}");
    let err = kit::start(KitSpec::new("/x", kit::devices(1)).records_at(&[]), SimConfig::new(1, 5))
        .await
        .expect_err("no room for the cursor");
    assert!(err.to_string().contains("records path"), "{err}");
    let err = kit::start(
        KitSpec::new("/x", kit::devices(1)).auth(KitAuth::oauth2("/x", Duration::from_secs(60))),
        SimConfig::new(1, 5),
    )
    .await
    .expect_err("two endpoints on one path");
    assert!(err.to_string().contains("both"), "{err}");
    assert!(corral_sim::start(corral_sim::Vendor::Kit, SimConfig::new(1, 5)).await.is_err(), "a kit needs its spec");

    let sim =
        start(spec(Pagination::body_cursor(&["pagination", "nextCursor"], "cursor")), SimConfig::new(SEED, SIZE)).await;
    let resp = client()
        .get(format!("{}/api/v1/devices?cursor=forged", sim.base_url))
        .bearer_auth(token(&sim))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let resp = client()
        .get(format!("{}/api/v1/devices?limit=0", sim.base_url))
        .bearer_auth(token(&sim))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
}
