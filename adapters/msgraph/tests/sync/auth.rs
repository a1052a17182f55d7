//! Refused credentials: `check` names the token endpoint and its status, and
//! the token request is never retried.

use corral_core::{CheckOutcome, RunStatus};
use corral_sim::SimConfig;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secret_fails_check_with_the_token_endpoint_and_is_not_retried() {
    let sim = start(SimConfig::new(1, 10)).await;
    let adapter = adapter(&sim, json!({"client_secret": "wrong-secret-hunter2"}));
    let outcome = adapter.check().await;
    let token_url = format!("{}/{}/oauth2/v2.0/token", sim.base_url, sim.config.credentials.tenant);
    match &outcome {
        CheckOutcome::AuthError { endpoint, status, detail } => {
            assert_eq!(endpoint, &token_url);
            assert_eq!(*status, Some(401));
            assert!(detail.contains("invalid_client"), "{detail}");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert!(!format!("{outcome} {outcome:?}").contains("hunter2"));
    let c = sim.counters.snapshot();
    assert_eq!(c.endpoint("graph.token"), 1, "never retried: {c:?}");
    assert_eq!(c.requests, 1, "no data request without a token: {c:?}");
    assert_eq!(c.tokens_issued, 0);

    // A sync with the same credentials fails every stream with the same
    // error, without hammering the token endpoint.
    let (summary, store) = sync(adapter, &[]).await;
    assert_eq!(summary.status, RunStatus::Failed, "{}", show(&summary));
    for s in summary.streams.values() {
        let e = s.fetch_error.as_deref().unwrap_or_default();
        assert!(e.contains(&token_url) && e.contains("401"), "{e}");
    }
    assert!(!show(&summary).contains("hunter2"));
    assert_eq!(store.asset_count(), 0);
    let c = sim.counters.snapshot();
    assert!(c.endpoint("graph.token") <= 1 + 2, "at most one attempt per stream: {c:?}");
    assert_eq!(c.requests, c.endpoint("graph.token"));
    sim.shutdown().await;
}

/// An unknown tenant is "not found" (Microsoft answers 400 `invalid_request`,
/// AADSTS90002 "Tenant ... not found"): the URL names the wrong directory. An
/// unknown client id is refused credentials (400 `unauthorized_client`).
/// Neither is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_is_not_found_and_unknown_client_refused() {
    let sim = start(SimConfig::new(1, 10)).await;
    match adapter(&sim, json!({"tenant_id": "other-tenant"})).check().await {
        CheckOutcome::NotFound { endpoint, status, detail } => {
            assert!(endpoint.ends_with("/other-tenant/oauth2/v2.0/token"), "{endpoint}");
            assert_eq!(status, 400);
            assert!(detail.contains("AADSTS90002"), "{detail}");
        }
        other => panic!("unknown tenant: expected not found, got {other:?}"),
    }
    match adapter(&sim, json!({"client_id": "someone-else"})).check().await {
        CheckOutcome::AuthError { endpoint, status, .. } => {
            assert!(endpoint.ends_with("/oauth2/v2.0/token"), "{endpoint}");
            assert_eq!(status, Some(400));
        }
        other => panic!("unknown client: expected refused credentials, got {other:?}"),
    }
    assert_eq!(sim.counters.snapshot().endpoint("graph.token"), 2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_graph_is_reported_as_such() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = json!({"tenant_id": "t", "client_id": "c", "client_secret": "s3cret-value",
        "login_base_url": base, "graph_base_url": base});
    let adapter = corral_core::AdapterFactory::build(&corral_adapter_msgraph::MsGraphFactory, CONN, cfg).expect("cfg");
    match adapter.check().await {
        CheckOutcome::Unreachable { endpoint, .. } => assert!(endpoint.contains("/t/oauth2/v2.0/token"), "{endpoint}"),
        other => panic!("expected unreachable, got {other:?}"),
    }
}
