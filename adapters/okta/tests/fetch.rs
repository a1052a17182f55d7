//! `fetch` on its own: pages, checkpoints, resuming, and Link headers that
//! must not be followed.

mod common;

use std::sync::Arc;

use corral_adapter_okta::{OktaAdapter, OktaFactory};
use corral_core::testing::MemoryStore;
use corral_core::{
    Adapter, AdapterFactory, AssetKind, Checkpoint, FetchContext, FetchError, PageSink, RawPage, RunStatus, Store,
};
use corral_sim::SimConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

fn stream() -> corral_core::StreamInfo {
    OktaFactory.info().streams.remove(0)
}

/// Run `fetch` with an optional checkpoint; the pages it sent and its result.
async fn fetch(adapter: &dyn Adapter, checkpoint: Option<Value>) -> (Vec<RawPage>, Result<(), FetchError>) {
    let (sink, mut rx) = PageSink::channel(64);
    let mut ctx = FetchContext::for_test("okta-test", stream(), sink);
    ctx.checkpoint = checkpoint.map(Checkpoint);
    let result = adapter.fetch(ctx).await;
    let mut pages = Vec::new();
    while let Ok(p) = rx.try_recv() {
        pages.push(p);
    }
    // The forwarding task may still hold the last pages.
    while let Ok(Some(p)) = tokio::time::timeout(std::time::Duration::from_millis(100), rx.recv()).await {
        pages.push(p);
    }
    (pages, result)
}

fn ids_of(pages: &[RawPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| serde_json::from_slice::<Vec<Value>>(&p.body).expect("a JSON array"))
        .map(|u| u["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_the_next_url_as_checkpoint() {
    let (seed, size) = (2, 25);
    let sim = sim(SimConfig::new(seed, size)).await;
    let adapter = adapter(&sim, json!({ "page_size": 10, "requests_per_minute": 0 }));
    let (pages, result) = fetch(adapter.as_ref(), None).await;
    result.expect("complete fetch");
    assert_eq!(pages.len(), 3);
    assert_eq!(ids_of(&pages), expected_ids(seed, size));
    let ids = expected_ids(seed, size);
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(p.stream, "users");
        assert!(p.locator.starts_with(&format!("page {} ({}/api/v1/users?", i + 1, sim.base_url)), "{}", p.locator);
        let next = p.checkpoint.as_ref().and_then(|c| c.0["next"].as_str().map(String::from));
        if i < 2 {
            let want = format!("{}/api/v1/users?after={}&limit=10", sim.base_url, ids[i * 10 + 9]);
            assert_eq!(next.as_deref(), Some(want.as_str()));
        } else {
            assert_eq!(next, None, "the last page has no next URL");
        }
    }
    assert_eq!(pages[0].locator, format!("page 1 ({}/api/v1/users?limit=10)", sim.base_url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_a_checkpoint_and_falls_back_to_the_start() {
    let (seed, size) = (3, 30);
    let sim = sim(SimConfig::new(seed, size)).await;
    let adapter = adapter(&sim, json!({ "page_size": 10, "requests_per_minute": 0 }));
    let ids = expected_ids(seed, size);
    let (all, result) = fetch(adapter.as_ref(), None).await;
    result.expect("complete fetch");
    let after_first = all[0].checkpoint.clone().expect("checkpoint").0;

    let (pages, result) = fetch(adapter.as_ref(), Some(after_first)).await;
    result.expect("resumed fetch");
    assert_eq!(ids_of(&pages), ids[10..].to_vec());

    // A cursor Okta no longer knows (400), another org's URL, or junk: from the start.
    let stale = json!({ "next": format!("{}/api/v1/users?after=00uGONE&limit=10", sim.base_url) });
    let foreign = json!({ "next": format!("https://other.okta.com/api/v1/users?after={}&limit=10", ids[9]) });
    for checkpoint in [stale, foreign, json!({ "next": 5 }), json!("junk")] {
        let (pages, result) = fetch(adapter.as_ref(), Some(checkpoint.clone())).await;
        result.unwrap_or_else(|e| panic!("{checkpoint}: {e}"));
        assert_eq!(ids_of(&pages), ids, "{checkpoint}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_resumes_from_a_saved_checkpoint_without_stale_handling() {
    let (seed, size) = (4, 40);
    let sim = sim(SimConfig::new(seed, size)).await;
    let adapter = adapter(&sim, json!({ "page_size": 10, "requests_per_minute": 0 }));
    let ids = expected_ids(seed, size);
    let store = Arc::new(MemoryStore::new());
    let next = format!("{}/api/v1/users?after={}&limit=10", sim.base_url, ids[19]);
    store.save_checkpoint("okta-test", "users", &Checkpoint(json!({ "next": next }))).await.expect("save");
    let summary = sync_into(&store, adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(summary.inserted, 20);
    assert_eq!(stored_ids(&store), ids[20..].iter().cloned().collect());
    assert!(!summary.streams["users"].stale_handled, "a resumed run has not seen every user");
    // The completed stream cleared its checkpoint: the next run starts over.
    assert!(store.checkpoint("okta-test", "users").is_none_or(|c| c.0.is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_is_refused() {
    let sim = sim(SimConfig::new(1, 5)).await;
    let adapter = adapter(&sim, json!({}));
    let (sink, _rx) = PageSink::channel(1);
    let mut info = stream();
    info.name = "groups".into();
    info.kind = AssetKind::User;
    let err = adapter.fetch(FetchContext::for_test("okta-test", info, sink)).await.expect_err("unknown");
    assert!(matches!(err, FetchError::UnknownStream(s) if s == "groups"));
    assert_eq!(sim.counters.snapshot().requests, 0);
}

/// A one-response-per-connection HTTP server answering every request with
/// `[]` and the given `Link` header.
async fn link_server(link: impl Fn(&str) -> String + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let origin = base.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
                link(&format!("{origin}{target}"))
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    base
}

fn adapter_at(base: &str) -> OktaAdapter {
    OktaAdapter::from_config("okta-test", json!({ "base_url": base, "token": "t0ken-value", "requests_per_minute": 0 }))
        .expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_links_off_the_org_or_in_a_loop_are_not_followed() {
    let off = link_server(|_| "<https://evil.example/api/v1/users?after=x>; rel=\"next\"".to_string()).await;
    let (pages, result) = fetch(&adapter_at(&off), None).await;
    let err = result.expect_err("off-origin next link");
    assert!(matches!(&err, FetchError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("leaves http://127.0.0.1"), "{err}");
    assert_eq!(pages.len(), 1, "the page itself is passed on");
    assert!(pages[0].checkpoint.is_none(), "no checkpoint past a broken Link header");

    let same = link_server(|url| format!("<{url}>; rel=\"next\"")).await;
    let (_, result) = fetch(&adapter_at(&same), None).await;
    let err = result.expect_err("self-referencing next link");
    assert!(err.to_string().contains("never end"), "{err}");

    // A longer cycle: page a links to b, b back to a.
    let cycle = link_server(|url| {
        let next = if url.contains("after=a") { "b" } else { "a" };
        format!("</api/v1/users?after={next}&limit=200>; rel=\"next\"")
    })
    .await;
    let (pages, result) = fetch(&adapter_at(&cycle), None).await;
    let err = result.expect_err("a -> b -> a");
    assert!(err.to_string().contains("loop"), "{err}");
    assert_eq!(pages.len(), 3, "first page, a, b; never a again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_an_unreachable_org() {
    // Bind then drop a listener: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let outcome = adapter_at(&format!("http://127.0.0.1:{port}")).check().await;
    match outcome {
        corral_core::CheckOutcome::Unreachable { endpoint, .. } => {
            assert_eq!(endpoint, format!("http://127.0.0.1:{port}/api/v1/users?limit=1"));
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}
