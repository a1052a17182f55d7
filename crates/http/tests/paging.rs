//! Link-header paging end to end, cross-origin URLs, and request metrics.

mod common;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::get;
use common::{client, serve};
use corral_http::{Auth, HttpConfig, SecretString, extract_json_string};

async fn users(Query(q): Query<BTreeMap<String, String>>) -> Response {
    let after = q.get("after").map(String::as_str).unwrap_or("");
    match after {
        // Okta style: separate Link lines.
        "" => (
            AppendHeaders([
                (header::LINK, "</api/v1/users?limit=2>; rel=\"self\""),
                (header::LINK, "</api/v1/users?after=u2&limit=2>; rel=\"next\""),
            ]),
            "[{\"id\":\"u1\"},{\"id\":\"u2\"}]",
        )
            .into_response(),
        // Comma-joined, relative reference.
        "u2" => (
            [(header::LINK, "<users?after=u2&limit=2>; rel=\"self\", <users?after=u4&limit=2>; rel=\"next\"")],
            "[{\"id\":\"u3\"},{\"id\":\"u4\"}]",
        )
            .into_response(),
        "u4" => {
            ([(header::LINK, "</api/v1/users?after=u4&limit=2>; rel=\"self\"")], "[{\"id\":\"u5\"}]").into_response()
        }
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[tokio::test]
async fn follows_link_headers_in_both_forms() {
    let base = serve(Router::new().route("/api/v1/users", get(users))).await;
    let (c, m) = client(HttpConfig::new(&base));
    let mut next = Some("/api/v1/users?limit=2".to_string());
    let mut pages = Vec::new();
    while let Some(url) = next {
        let r = c.get(&url).send_bytes().await.expect("page");
        next = r.next_link();
        pages.push(String::from_utf8(r.body.to_vec()).expect("utf8"));
        assert!(pages.len() <= 3, "runaway paging");
    }
    assert_eq!(pages.len(), 3);
    assert!(pages[2].contains("u5"));
    assert_eq!(m.snapshot().by_status.get(&200), Some(&3));
}

#[tokio::test]
async fn metrics_count_every_status() {
    let router = Router::new()
        .route("/ok", get(|| async { "{\"@odata.nextLink\":\"https://graph/next\",\"value\":[]}" }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route("/bad", get(|| async { StatusCode::BAD_REQUEST }));
    let base = serve(router).await;
    let (c, m) = client(HttpConfig::new(&base));
    for _ in 0..3 {
        let r = c.get("/ok").send_bytes().await.expect("ok");
        assert_eq!(extract_json_string(&r.body, &["@odata.nextLink"]).as_deref(), Some("https://graph/next"));
    }
    assert!(c.get("/missing").send_bytes().await.is_err());
    assert!(c.get("/bad").send_bytes().await.is_err());
    // Another run's counters, same client.
    let other = std::sync::Arc::new(corral_core::metrics::RequestMetrics::default());
    c.with_metrics(other.clone()).get("/ok").send_bytes().await.expect("ok");
    let s = m.snapshot();
    assert_eq!(s.by_status, BTreeMap::from([(200, 3), (400, 1), (404, 1)]));
    assert_eq!(s.total, 5);
    assert_eq!(s.retries, 0);
    assert_eq!(other.snapshot().total, 1);
}

#[tokio::test]
async fn credentials_stay_on_the_vendor_origin() {
    let seen = |h: HeaderMap| async move {
        h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string()
    };
    let vendor = serve(Router::new().route("/a", get(seen))).await;
    let other = serve(Router::new().route("/a", get(seen))).await;
    let (c, _) = client(HttpConfig::new(&vendor).with_auth(Auth::Bearer(SecretString::from("tok-abcdef"))));
    let own = c.get("/a").send_bytes().await.expect("own");
    assert_eq!(&own.body[..], b"Bearer tok-abcdef");
    let foreign = c.get(&format!("{other}/a")).send_bytes().await.expect("foreign");
    assert_eq!(&foreign.body[..], b"none");
}
