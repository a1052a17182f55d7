//! BodyCursor end to end: a cursor token sent back as a parameter, a
//! next-page URL in the body, a page cut short (fetched again, then given up
//! on), a cursor that does not move, a link off the origin.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use common::{Counter, client, quick_retry, serve};
use corral_http::{BodyCursor, CursorPage, HttpClient, HttpConfig, Url};

/// SentinelOne-like agents: pages of two, the cursor in `pagination.nextCursor`.
/// `cut` says how many times page 2 (cursor `c2`) arrives cut short.
#[derive(Default)]
struct Agents {
    cut: usize,
    cut_served: Counter,
    stuck: bool,
}

async fn agents(State(s): State<Arc<Agents>>, Query(q): Query<BTreeMap<String, String>>) -> String {
    assert_eq!(q.get("limit").map(String::as_str), Some("2"), "the other parameters are kept");
    match q.get("cursor").map(String::as_str) {
        None => r#"{"data":[{"id":"a1"},{"id":"a2"}],"pagination":{"nextCursor":"c2","totalItems":5}}"#.into(),
        Some("c2") if s.cut_served.get() < s.cut => {
            s.cut_served.bump();
            // A page cut off mid-body: no cursor to be found in it.
            r#"{"data":[{"id":"a3"},{"id":"a4"}],"pagin"#.into()
        }
        Some("c2") if s.stuck => r#"{"data":[{"id":"a3"}],"pagination":{"nextCursor":"c2"}}"#.into(),
        Some("c2") => r#"{"data":[{"id":"a3"},{"id":"a4"}],"pagination":{"nextCursor":"c3+/="}}"#.into(),
        Some("c3+/=") => r#"{"data":[{"id":"a5"}],"pagination":{"nextCursor":null,"totalItems":5}}"#.into(),
        Some(other) => panic!("unexpected cursor {other}"),
    }
}

async fn start(state: Agents) -> (HttpClient, Url, Arc<corral_core::metrics::RequestMetrics>) {
    let base = serve(Router::new().route("/web/api/v2.1/agents", get(agents)).with_state(Arc::new(state))).await;
    let (c, m) = client(HttpConfig::new(&base));
    let url = c.base_url().clone();
    (c, url, m)
}

/// Walk every page; the bodies' ids, and how it ended.
async fn walk(c: &HttpClient, pages: &mut BodyCursor) -> (Vec<String>, Result<Option<u32>, String>) {
    let mut ids = Vec::new();
    let mut url = Some("/web/api/v2.1/agents?limit=2".to_string());
    while let Some(u) = url.take() {
        assert!(ids.len() < 50, "runaway paging");
        match pages.get(c, &u).await {
            Ok(CursorPage::Page { resp, next }) => {
                let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("a page handed on is JSON");
                ids.extend(
                    body["data"].as_array().expect("data").iter().map(|d| d["id"].as_str().expect("id").to_string()),
                );
                url = next;
            }
            Ok(CursorPage::Unreadable { attempts, .. }) => return (ids, Ok(Some(attempts))),
            Err(e) => return (ids, Err(e.to_string())),
        }
    }
    (ids, Ok(None))
}

fn sentinelone(base: &Url) -> BodyCursor {
    BodyCursor::param(base, &["pagination", "nextCursor"], "cursor").with_retry(quick_retry())
}

#[tokio::test]
async fn a_token_cursor_walks_every_page_and_a_null_cursor_ends_it() {
    let (c, base, m) = start(Agents::default()).await;
    let (ids, end) = walk(&c, &mut sentinelone(&base)).await;
    assert_eq!(ids, ["a1", "a2", "a3", "a4", "a5"]);
    assert_eq!(end, Ok(None), "a well-formed page with a null cursor is the last");
    assert_eq!(m.snapshot().retries, 0);
}

#[tokio::test]
async fn a_page_cut_short_is_fetched_again_not_taken_for_the_last() {
    let (c, base, m) = start(Agents { cut: 1, ..Default::default() }).await;
    let (ids, end) = walk(&c, &mut sentinelone(&base)).await;
    assert_eq!(ids, ["a1", "a2", "a3", "a4", "a5"], "the walk went on past the cut page");
    assert_eq!(end, Ok(None));
    assert_eq!(m.snapshot().retries, 1, "the refetch is counted as a retry");
}

#[tokio::test]
async fn a_page_that_stays_cut_is_handed_back_unreadable() {
    let (c, base, _) = start(Agents { cut: 10, ..Default::default() }).await;
    let (ids, end) = walk(&c, &mut sentinelone(&base).unreadable_attempts(3)).await;
    assert_eq!(ids, ["a1", "a2"]);
    assert_eq!(end, Ok(Some(3)), "fetched three times, then handed back, never taken for the last page");
}

#[tokio::test]
async fn a_cursor_that_does_not_move_is_an_error() {
    let (c, base, _) = start(Agents { stuck: true, ..Default::default() }).await;
    let (ids, end) = walk(&c, &mut sentinelone(&base)).await;
    assert_eq!(ids, ["a1", "a2"], "the page that repeats its own cursor is not handed on");
    let e = end.expect_err("a loop");
    assert!(e.contains("never end"), "{e}");
}

#[tokio::test]
async fn a_next_url_is_followed_on_the_origin_only() {
    let router = Router::new().route(
        "/v1.0/users",
        get(|Query(q): Query<BTreeMap<String, String>>| async move {
            match q.get("$skiptoken").map(String::as_str) {
                None => r#"{"@odata.nextLink":"/v1.0/users?$skiptoken=x","value":[{"id":"u1"}]}"#.to_string(),
                Some("x") => r#"{"@odata.nextLink":"https://evil.example/v1.0/users?$skiptoken=y","value":[]}"#.into(),
                Some(_) => panic!("unexpected"),
            }
        }),
    );
    let base = serve(router).await;
    let (c, _) = client(HttpConfig::new(&base));
    let mut pages = BodyCursor::next_url(c.base_url(), &["@odata.nextLink"]);
    let first = pages.get(&c, "/v1.0/users").await.expect("first page");
    let CursorPage::Page { next: Some(next), .. } = first else { panic!("a next link") };
    assert!(next.ends_with("/v1.0/users?$skiptoken=x"), "{next}");
    let e = pages.get(&c, &next).await.expect_err("off the origin");
    assert!(e.to_string().contains("leaves"), "{e}");
}
