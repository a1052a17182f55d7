//! Qualys VMDR: XML listings truncated and continued through the WARNING
//! URL, X-Requested-With, 409s for rate and concurrency limits, streaming.

use std::time::Duration;

use corral_sim::data::qualys::{QualysData, STATUSES};
use corral_sim::{Behavior, Faults, SimConfig, SimHandle, Vendor};

use crate::common::{client, header};

const SEED: u64 = 31;
const DETECTIONS: &str = "/api/2.0/fo/asset/host/vm/detection/";

async fn start(config: SimConfig) -> SimHandle {
    corral_sim::start(Vendor::Qualys, config).await.expect("the Qualys simulator starts")
}

async fn get(sim: &SimHandle, url: &str) -> reqwest::Response {
    let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", sim.base_url) };
    let c = &sim.config.credentials;
    client()
        .get(url)
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .header("X-Requested-With", "corral-test")
        .send()
        .await
        .expect("send")
}

/// A strict little XML reader: the element tree as (path, text) leaves;
/// panics on a document that is not well formed.
fn leaves(xml: &str) -> Vec<(String, String)> {
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut rest = xml;
    let mut text = String::new();
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").expect("CDATA closes");
            text.push_str(&after[..end]);
            rest = &after[end + 3..];
            continue;
        }
        let gt = rest.find('>').expect("a tag closes");
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.last().cloned().expect("an element is open");
            assert_eq!(open, name, "mismatched end tag");
            let t = text.trim();
            if !t.is_empty() {
                out.push((stack.join("/"), t.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")));
            }
            stack.pop();
        } else {
            stack.push(tag.to_string());
        }
        text.clear();
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    out
}

fn values<'a>(leaves: &'a [(String, String)], suffix: &str) -> Vec<&'a str> {
    leaves.iter().filter(|(p, _)| p.ends_with(suffix)).map(|(_, v)| v.as_str()).collect()
}

#[tokio::test]
async fn truncated_detection_lists_continue_through_the_warning_url_to_the_exact_dataset() {
    let size = 57;
    let sim = start(SimConfig::new(SEED, size)).await;
    let mut url = format!("{DETECTIONS}?action=list&truncation_limit=10&show_results=0");
    let mut got: Vec<(u64, u64)> = Vec::new();
    let mut pages = 0;
    loop {
        let resp = get(&sim, &url).await;
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(header(&resp, "content-length"), None, "the answer is streamed");
        assert!(header(&resp, "x-ratelimit-limit").is_some() && header(&resp, "x-concurrency-limit-limit").is_some());
        let xml = resp.text().await.expect("body");
        let l = leaves(&xml);
        assert!(values(&l, "RESULTS").is_empty(), "show_results=0 leaves RESULTS out");
        // Pair each detection's QID with its host ID, in document order.
        let mut host = 0;
        let mut hosts = 0;
        for (path, v) in &l {
            if path.ends_with("HOST_LIST/HOST/ID") {
                host = v.parse().expect("a host ID");
                hosts += 1;
            } else if path.ends_with("DETECTION_LIST/DETECTION/QID") {
                got.push((host, v.parse().expect("a QID")));
            }
        }
        pages += 1;
        let warning = values(&l, "RESPONSE/WARNING/URL");
        match warning.first() {
            Some(next) => {
                assert_eq!(hosts, 10, "a truncated page holds truncation_limit hosts");
                assert_eq!(values(&l, "RESPONSE/WARNING/CODE"), ["1980"]);
                assert!(
                    next.contains("id_min=") && next.contains("show_results=0") && next.contains("truncation_limit=10"),
                    "{next}"
                );
                url = next.to_string();
            }
            None => break,
        }
    }
    let data = QualysData::new(SEED, size, 0, 4);
    let expected: Vec<(u64, u64)> = data.detection_keys(&STATUSES).collect();
    assert_eq!(got, expected, "every detection once, in order");
    let with_detections = (0..size as u64).filter(|i| !data.detections(*i).is_empty()).count();
    assert!(with_detections < size, "some hosts have no detection and are not listed");
    assert_eq!(pages, with_detections.div_ceil(10));
    assert!(sim.counters.snapshot().bytes_served > 0);
}

#[tokio::test]
async fn host_list_lists_every_host_and_status_filters_detections() {
    let size = 25;
    let sim = start(SimConfig::new(SEED, size)).await;
    let resp = get(&sim, "/api/2.0/fo/asset/host/?action=list&truncation_limit=0&details=All").await;
    let l = leaves(&resp.text().await.expect("body"));
    let ids: Vec<u64> =
        values(&l, "HOST_LIST_OUTPUT/RESPONSE/HOST_LIST/HOST/ID").iter().map(|v| v.parse().expect("id")).collect();
    let data = QualysData::new(SEED, size, 0, 4);
    assert_eq!(ids, data.host_ids().collect::<Vec<_>>());
    assert!(values(&l, "WARNING/URL").is_empty(), "truncation_limit=0: everything at once");

    let resp = get(&sim, &format!("{DETECTIONS}?action=list&status=Fixed&truncation_limit=0")).await;
    let l = leaves(&resp.text().await.expect("body"));
    let statuses = values(&l, "DETECTION/STATUS");
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == "Fixed"), "{statuses:?}");
    assert_eq!(statuses.len(), data.detection_keys(&["Fixed"]).count());
    assert!(!values(&l, "DETECTION/RESULTS").is_empty(), "RESULTS by default");

    let kb = get(&sim, "/api/2.0/fo/knowledge_base/vuln/?action=list&ids=376157,6").await;
    let l = leaves(&kb.text().await.expect("body"));
    assert_eq!(values(&l, "VULN/QID"), ["376157", "6"]);
    assert_eq!(values(&l, "CVE_LIST/CVE/ID"), ["CVE-2021-44228"]);
}

#[tokio::test]
async fn x_requested_with_and_basic_auth_are_both_required() {
    let sim = start(SimConfig::new(SEED, 5)).await;
    let c = sim.config.credentials.clone();
    let url = format!("{}{DETECTIONS}?action=list", sim.base_url);
    let without = client().get(&url).basic_auth(&c.client_id, Some(&c.client_secret)).send().await.expect("send");
    assert_eq!(without.status(), 400);
    let body = without.text().await.expect("body");
    assert!(body.contains("SIMPLE_RETURN") && body.contains("X-Requested-With"), "{body}");
    let bad = client()
        .get(&url)
        .basic_auth(&c.client_id, Some("nope"))
        .header("X-Requested-With", "t")
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 401);
    let no_action = get(&sim, DETECTIONS).await;
    assert_eq!(no_action.status(), 400);
    assert!(no_action.text().await.expect("body").contains("<CODE>1903</CODE>"));
    let post = client()
        .post(format!("{}{DETECTIONS}", sim.base_url))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .header("X-Requested-With", "t")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=list&truncation_limit=2")
        .send()
        .await
        .expect("send");
    assert_eq!(post.status(), 200, "parameters in a POST form");
    assert!(post.text().await.expect("body").contains("<CODE>1980</CODE>"));
}

#[tokio::test]
async fn over_the_limits_qualys_answers_409_with_the_wait() {
    let sim = start(SimConfig::new(SEED, 5).rate_limit(2, Duration::from_secs(4))).await;
    let ok = get(&sim, &format!("{DETECTIONS}?action=list")).await;
    assert_eq!(header(&ok, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&ok, "x-ratelimit-window-sec"), Some("4"));
    assert_eq!(header(&ok, "x-ratelimit-remaining"), Some("1"));
    assert_eq!(header(&ok, "x-ratelimit-towait-sec"), Some("0"));
    let _ = ok.text().await;
    let _ = get(&sim, &format!("{DETECTIONS}?action=list")).await.text().await;
    let limited = get(&sim, &format!("{DETECTIONS}?action=list")).await;
    assert_eq!(limited.status(), 409, "Qualys refuses with 409, not 429");
    let wait: u64 = header(&limited, "x-ratelimit-towait-sec").expect("ToWait").parse().expect("seconds");
    assert!((1..=4).contains(&wait), "{wait}");
    assert!(limited.text().await.expect("body").contains("<CODE>1965</CODE>"));
    let c = sim.counters.snapshot();
    assert_eq!(c.rate_limited, 1);
    assert_eq!(c.fault("rate_limit_409"), 1);
    let event = sim.counters.events().into_iter().find(|e| e.status == 409).expect("the 409's event");
    assert!(event.retry_after.is_some_and(|w| w >= Duration::from_secs(1)), "{event:?}");

    let behavior = Behavior { qualys_concurrency: 2, ..Behavior::default() };
    let sim = start(SimConfig::new(SEED, 5).latency_ms(600).behavior(behavior)).await;
    let c = sim.config.credentials.clone();
    let url = format!("{}{DETECTIONS}?action=list", sim.base_url);
    let http = client();
    let reqs = (0..3).map(|_| {
        http.get(&url).basic_auth(&c.client_id, Some(&c.client_secret)).header("X-Requested-With", "t").send()
    });
    let mut statuses: Vec<u16> =
        futures::future::join_all(reqs).await.into_iter().map(|r| r.expect("send").status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 409], "a third call at once is refused");
    assert_eq!(sim.counters.snapshot().fault("concurrency_409"), 1);
}

#[tokio::test]
async fn a_truncation_fault_cuts_the_streamed_xml() {
    let faults = Faults { truncate_requests: vec![1], ..Faults::default() };
    let sim = start(SimConfig::new(SEED, 300).faults(faults)).await;
    let url = format!("{DETECTIONS}?action=list&truncation_limit=0");
    let cut = get(&sim, &url).await.text().await.expect("the body ends early but cleanly");
    let whole = get(&sim, &url).await.text().await.expect("body");
    assert!(cut.len() < whole.len() / 2, "{} vs {}", cut.len(), whole.len());
    assert!(!cut.contains("</HOST_LIST_VM_DETECTION_OUTPUT>"));
    assert!(std::panic::catch_unwind(|| leaves(&cut)).is_err(), "the cut document is not well formed");
    leaves(&whole);
    assert_eq!(sim.counters.snapshot().fault("truncate"), 1);
}
