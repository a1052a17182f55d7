use super::*;
use reqwest::header::HeaderValue;

fn link_headers(values: &[&'static str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(LINK, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn next_link_from_separate_header_lines() {
    // Okta: one Link line per relation.
    let h = link_headers(&[
        r#"<https://x.okta.com/api/v1/users?limit=200>; rel="self""#,
        r#"<https://x.okta.com/api/v1/users?after=00u1&limit=200>; rel="next""#,
    ]);
    assert_eq!(next_link(&h).as_deref(), Some("https://x.okta.com/api/v1/users?after=00u1&limit=200"));
}

#[test]
fn next_link_from_comma_joined_value() {
    // ServiceNow: first/prev/next/last in one header, URLs containing commas.
    let h = link_headers(&[
        r#"<https://i.service-now.com/api/now/table/x?sysparm_offset=0&q=a,b>;rel="first", <https://i.service-now.com/api/now/table/x?sysparm_offset=100&q=a,b> ; rel = "next" ,<https://i.service-now.com/api/now/table/x?sysparm_offset=900>;rel="last""#,
    ]);
    assert_eq!(next_link(&h).as_deref(), Some("https://i.service-now.com/api/now/table/x?sysparm_offset=100&q=a,b"));
    assert_eq!(
        link_with_rel(&h, "last").as_deref(),
        Some("https://i.service-now.com/api/now/table/x?sysparm_offset=900")
    );
}

#[test]
fn link_params_quoting_and_rel_lists() {
    let links = parse_link_header(
        r#"<a>; title="x, \"y\"; z"; rel="prev", <b>; REL="Next last"; type=text/html, <c>; rel=next"#,
    );
    assert_eq!(links.len(), 3);
    assert_eq!(links[0].params[0], ("title".to_string(), r#"x, "y"; z"#.to_string()));
    assert!(links[1].has_rel("next") && links[1].has_rel("last"));
    assert!(links[2].has_rel("NEXT"));
    let h = link_headers(&[r#"<a>; title="rel=\"next\""; rel="prev""#, "<b>; rel=next"]);
    assert_eq!(next_link(&h).as_deref(), Some("b"));
}

#[test]
fn link_parser_is_tolerant() {
    assert!(parse_link_header("").is_empty());
    assert!(parse_link_header("garbage, more garbage").is_empty());
    let l = parse_link_header(r#"junk "with, quote", <ok>; rel="next", <unterminated"#);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].uri, "ok");
    assert_eq!(parse_link_header(r#"<x>; rel="unterminated"#)[0].params[0].1, "unterminated");
    assert_eq!(next_link(&HeaderMap::new()), None);
    assert_eq!(next_link(&link_headers(&[r#"<x>; rel="self""#])), None);
}

#[test]
fn extracts_top_level_and_nested_fields() {
    let graph = br#"{"@odata.context":"c","value":[{"id":"1","nested":{"@odata.nextLink":"no"}}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/users?$skiptoken=X\u0026y"}"#;
    assert_eq!(
        extract_json_string(graph, &["@odata.nextLink"]).as_deref(),
        Some("https://graph.microsoft.com/v1.0/users?$skiptoken=X&y")
    );
    let s1 = br#"{"data":[{"pagination":{"nextCursor":"wrong"}}],"pagination":{"totalItems":3,"nextCursor":"abc=="}}"#;
    assert_eq!(extract_json_string(s1, &["pagination", "nextCursor"]).as_deref(), Some("abc=="));
    assert_eq!(extract_json_string(s1, &["pagination", "totalItems"]).as_deref(), Some("3"));
    let cs = br#"{"meta":{"pagination":{"offset":"FQluY2x1ZGU","limit":5000,"total":12}},"resources":["a"]}"#;
    assert_eq!(extract_json_string(cs, &["meta", "pagination", "offset"]).as_deref(), Some("FQluY2x1ZGU"));
}

#[test]
fn extraction_misses_give_none() {
    let last = br#"{"data":[],"pagination":{"nextCursor":null}}"#;
    assert_eq!(extract_json_string(last, &["pagination", "nextCursor"]), None);
    assert_eq!(extract_json_string(br#"{"value":[]}"#, &["@odata.nextLink"]), None);
    assert_eq!(extract_json_string(br#"[{"a":"b"}]"#, &["a"]), None);
    assert_eq!(extract_json_string(br#"{"a":{"b":1}}"#, &["a"]), None);
    assert_eq!(extract_json_string(br#"{"a":"x"}"#, &["a", "b"]), None);
    assert_eq!(extract_json_string(b"not json", &["a"]), None);
    assert_eq!(extract_json_string(br#"{"a":"x"}"#, &[]), None);
}

#[test]
fn extraction_stops_at_the_field() {
    // Everything after the field is never looked at, even if broken.
    let body = br#"{"@odata.nextLink":"n","value":[{"id": TRUNCATED"#;
    assert_eq!(extract_json_string(body, &["@odata.nextLink"]).as_deref(), Some("n"));
}

#[tokio::test]
async fn offloaded_extraction_matches() {
    let mut big = String::from(r#"{"value":["#);
    for i in 0..40_000 {
        big.push_str(&format!(r#"{{"id":"{i}"}},"#));
    }
    big.push_str(r#"{"id":"last"}],"@odata.nextLink":"next-url"}"#);
    let got = extract_json_string_offloaded(Bytes::from(big), &["@odata.nextLink"]).await;
    assert_eq!(got.as_deref(), Some("next-url"));
}

#[tokio::test]
async fn even_a_tiny_body_is_scanned_off_the_runtime() {
    let before = crate::offloaded_on_this_thread();
    let got =
        extract_json_string_offloaded(Bytes::from_static(br#"{"@odata.nextLink":"n"}"#), &["@odata.nextLink"]).await;
    assert_eq!(got.as_deref(), Some("n"));
    assert_eq!(crate::offloaded_on_this_thread(), before + 1);
}

#[test]
fn offset_pager_without_total_ends_on_short_page() {
    let mut p = OffsetPager::new(100);
    assert_eq!(p.params("offset", "limit"), [("offset", "0".to_string()), ("limit", "100".to_string())]);
    p.advance(100);
    assert!(!p.done());
    assert_eq!(p.offset, 100);
    p.advance(40);
    assert!(p.done());
    assert_eq!(p.offset, 140);
}

#[test]
fn offset_pager_with_total_tolerates_short_pages() {
    let mut p = OffsetPager::new(100);
    p.set_total(250);
    p.advance(90); // ACL-filtered short page
    assert!(!p.done());
    p.advance(100);
    p.advance(60);
    assert!(p.done());
    let mut empty = OffsetPager::new(10);
    empty.set_total(0);
    assert!(empty.done());
    let mut stuck = OffsetPager::new(10);
    stuck.set_total(50);
    stuck.advance(0);
    assert!(stuck.done());
}

#[test]
fn page_pager() {
    let mut p = PagePager::new(0, 2);
    p.set_total(5);
    p.advance(2);
    p.advance(2);
    assert!(!p.done());
    assert_eq!(p.page, 2);
    p.advance(1);
    assert!(p.done());
    let mut q = PagePager::new(1, 10);
    q.advance(10);
    q.advance(3);
    assert!(q.done());
    assert_eq!(q.page, 3);
}

#[test]
fn total_count_header() {
    let mut h = HeaderMap::new();
    h.insert("X-Total-Count", HeaderValue::from_static("1234"));
    assert_eq!(total_count(&h), Some(1234));
}
