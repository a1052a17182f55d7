//! End to end against the Okta simulator: the adapter driven by the real
//! engine into a memory store.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use corral_core::testing::MemoryStore;
use corral_core::{CheckOutcome, RunStatus};
use corral_http::{Auth, HttpClient, HttpConfig, RateConfig, SecretString};
use corral_sim::{Behavior, Faults, SimConfig, Truncation};
use serde_json::json;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_loads_the_whole_dataset_with_either_link_form() {
    let (seed, size) = (21, 450);
    let want = expected_ids(seed, size);
    let want_set: BTreeSet<String> = want.iter().cloned().collect();
    // No id appears twice; about 1 % are the same person under a new id (same e-mail).
    assert_eq!(want_set.len(), size);
    let sim_users = corral_sim::okta_users(seed, size, 0);
    let emails: BTreeSet<String> =
        sim_users.iter().filter_map(|u| u["profile"]["email"].as_str()).map(str::to_lowercase).collect();
    assert!(emails.len() < size, "the dataset has re-hired people under new ids");

    for joined in [false, true] {
        let config = SimConfig::new(seed, size).behavior(Behavior { okta_joined_link: joined, ..Behavior::default() });
        let sim = sim(config).await;
        let adapter = adapter(&sim, json!({ "page_size": 100, "requests_per_minute": 0 }));
        let (summary, store) = sync(adapter.clone()).await;
        assert_eq!(summary.status, RunStatus::Success, "joined={joined}: {:?}", summary.errors);
        assert_eq!(summary.pages, 5, "joined={joined}");
        assert_eq!(summary.assets_normalized, size as u64);
        assert_eq!(summary.records_rejected, 0);
        assert_eq!(summary.inserted, size as u64);
        assert_eq!(stored_ids(&store), want_set, "joined={joined}");
        let users = &summary.streams["users"];
        assert!(users.fetch_completed && users.stale_handled);
        let snap = sim.counters.snapshot();
        assert_eq!(snap.endpoint("okta.users"), 5);
        assert_eq!(summary.requests.total, 5);
        // Re-hired people stay separate users (one per Okta id) with the same e-mail.
        let stored_emails: BTreeSet<String> =
            store.all_assets().iter().filter_map(|a| a.fields["email"].as_str().map(String::from)).collect();
        assert_eq!(stored_emails, emails);

        // A second run changes nothing and marks nothing stale.
        let again = sync_into(&store, adapter).await;
        assert_eq!(again.status, RunStatus::Success);
        assert_eq!(again.unchanged, size as u64);
        assert_eq!(store.stale_count(), 0);
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_to_success() {
    let (seed, size) = (5, 300);
    let sim = sim(SimConfig::new(seed, size).error_rate(0.3)).await;
    // The default fixed quota (600/min) stays on here.
    let adapter = adapter(&sim, json!({ "page_size": 50 }));
    let (summary, store) = sync(adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert!(summary.requests.retries > 0, "{:?}", summary.requests);
    let server_errors: u64 = summary.requests.by_status.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum();
    assert_eq!(server_errors, summary.requests.retries);
    assert!(sim.counters.snapshot().fault("5xx") > 0);
    assert_eq!(stored_ids(&store), expected_ids(seed, size).into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_fails_check_once_without_leaking_it() {
    let sim = sim(SimConfig::new(1, 20)).await;
    let secret = "wrong-token-hunter2-do-not-print";
    let adapter = adapter(&sim, json!({ "token": secret }));
    let outcome = adapter.check().await;
    match &outcome {
        CheckOutcome::AuthError { endpoint, status, .. } => {
            assert_eq!(*status, Some(401));
            assert_eq!(endpoint, &format!("{}/api/v1/users?limit=1", sim.base_url));
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    let shown = format!("{outcome} {outcome:?} {adapter:?}", adapter = adapter.info());
    assert!(!shown.contains("hunter2"), "{shown}");
    let snap = sim.counters.snapshot();
    assert_eq!(snap.requests, 1, "a refused credential is never retried");
    assert_eq!(snap.status(401), 1);

    // A sync with it fails on the first request, not retried either.
    let (summary, store) = sync(adapter).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(sim.counters.snapshot().requests, 2);
    let err = summary.streams["users"].fetch_error.clone().unwrap_or_default();
    assert!(err.contains("authentication failed") && err.contains("/api/v1/users"), "{err}");
    assert!(!format!("{summary:?}").contains("hunter2"));
    assert_eq!(store.asset_count(), 0);

    // The right token passes.
    let good = common::adapter(&sim, json!({}));
    assert!(good.check().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_is_one_reject_and_the_rest_loads() {
    let (seed, size) = (8, 50);
    let sim = sim(SimConfig::new(seed, size).malformed_pages([1])).await;
    let adapter = adapter(&sim, json!({ "page_size": 10, "requests_per_minute": 0 }));
    let (summary, store) = sync(adapter).await;
    assert_eq!(summary.status, RunStatus::Partial, "{:?}", summary.errors);
    assert_eq!(summary.pages, 5);
    assert_eq!(summary.rejects.get("malformed_page").map(|g| g.count), Some(1));
    let sample = &summary.rejects["malformed_page"].samples[0];
    assert!(sample.record.starts_with("page 2 ("), "{}", sample.record);
    let users = &summary.streams["users"];
    assert!(users.fetch_completed);
    assert!(!users.stale_handled, "a stream with an undecodable page skips stale handling");
    let ids = expected_ids(seed, size);
    let want: BTreeSet<String> = ids[..10].iter().chain(&ids[20..]).cloned().collect();
    assert_eq!(stored_ids(&store), want);
}

/// Okta's X-Rate-Limit-* headers pace the client: no 429 once it has seen
/// them, and it still uses most of the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_pace_the_client_without_429s() {
    // R requests per W, fixed windows; 12 requests span the first window, its reset and part of the next.
    let (r, w) = (10u32, Duration::from_secs(5));
    let (seed, size, page) = (9, 120, 10);
    let sim = sim_on_second_boundary(SimConfig::new(seed, size).rate_limit(r, w)).await;
    // No fixed quota: only the vendor's headers slow the client down.
    let adapter = adapter(&sim, json!({ "page_size": page, "requests_per_minute": 0 }));
    let (summary, store) = sync(adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(stored_ids(&store).len(), size);

    let snap = sim.counters.snapshot();
    assert_eq!(snap.requests, (size / page) as u64);
    assert_eq!(snap.rate_limited, 0, "no 429: {snap:?}");
    assert_eq!(summary.requests.rate_limited, 0);
    assert!(snap.max_in_window <= u64::from(r), "{snap:?}");
    assert!(summary.requests.limiter_wait_ms > 0, "the client paced itself");
    // 12 requests at 10 per 5 s window: at least one reset was waited for.
    let events = sim.counters.events();
    let (first, last) = (events.first().map(|e| e.arrived), events.last().map(|e| e.arrived));
    assert!(last.zip(first).is_some_and(|(l, f)| l - f >= w / 2), "the last requests waited for the next window");
}

/// A 429 (budget spent by someone else) is waited out until X-Rate-Limit-Reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_until_the_reset() {
    let (r, w) = (4u32, Duration::from_secs(2));
    let (seed, size) = (12, 30);
    let sim = sim_on_second_boundary(SimConfig::new(seed, size).rate_limit(r, w)).await;
    // Another client of the org spends this window's budget.
    let other = HttpClient::new(
        HttpConfig::new(&sim.base_url)
            .with_auth(Auth::okta_ssws(&SecretString::from(sim.config.credentials.token.clone())))
            .with_rate(RateConfig::unlimited().with_header_adaptation(false)),
        Arc::default(),
    )
    .expect("client");
    for _ in 0..r {
        other.get("/api/v1/users/me").send_bytes().await.expect("within the budget");
    }
    let adapter = adapter(&sim, json!({ "page_size": 10, "requests_per_minute": 0 }));
    let (summary, store) = sync(adapter).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(stored_ids(&store), expected_ids(seed, size).into_iter().collect());
    assert_eq!(summary.requests.rate_limited, 1, "{:?}", summary.requests);
    assert!(summary.requests.retries >= 1);
    // The retry came after the reset: exactly one 429 in all.
    assert_eq!(sim.counters.snapshot().status(429), 1);
}

/// A page whose connection is cut mid-body (Content-Length announced, part
/// sent) is retried to success: it never becomes a reject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_cut_mid_body_is_retried_not_rejected() {
    let (seed, size) = (13, 50);
    let faults = Faults { truncation: Truncation::Connection, truncate_requests: vec![2, 3], ..Faults::default() };
    let sim = sim(SimConfig::new(seed, size).faults(faults)).await;
    let (summary, store) = sync(adapter(&sim, json!({ "page_size": 10, "requests_per_minute": 0 }))).await;
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(summary.records_rejected, 0, "{:?}", summary.rejects);
    assert_eq!(summary.pages, 5);
    assert_eq!(stored_ids(&store), expected_ids(seed, size).into_iter().collect());
    let snap = sim.counters.snapshot();
    assert_eq!(snap.fault("truncate"), 2, "{snap:?}");
    assert_eq!(summary.requests.transport_errors, 2, "{:?}", summary.requests);
    assert_eq!(summary.requests.retries, 2);
    assert_eq!(snap.endpoint("okta.users"), 5 + 2);
}

/// The API token is revoked mid-run: the stream fails at once, naming the
/// endpoint, without retrying the refused credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_run_fails_the_stream_fast() {
    let faults = Faults { token_revoked_after: Some(2), ..Faults::default() };
    let sim = sim(SimConfig::new(14, 50).faults(faults)).await;
    let (summary, store) = sync(adapter(&sim, json!({ "page_size": 10 }))).await;
    assert_ne!(summary.status, RunStatus::Success);
    let users = &summary.streams["users"];
    assert!(!users.fetch_completed && !users.stale_handled, "{users:?}");
    let err = users.fetch_error.clone().unwrap_or_default();
    assert!(err.contains("authentication failed") && err.contains("/api/v1/users") && err.contains("401"), "{err}");
    assert_eq!(summary.requests.retries, 0, "a refused credential is not retried");
    let snap = sim.counters.snapshot();
    assert_eq!(snap.endpoint("okta.users"), 3, "two pages, then the refused one, once");
    assert_eq!(snap.fault("token_revoked"), 1);
    assert_eq!(store.asset_count(), 20, "what was fetched before is kept");
    assert_eq!(store.stale_count(), 0);
}

/// Records change between two runs against one running simulator: the second
/// run updates what moved, inserts replacements and marks replaced users stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_generation_between_runs_updates_the_store() {
    let (seed, size) = (15, 600);
    let sim = sim(SimConfig::new(seed, size)).await;
    let adapter = adapter(&sim, json!({ "requests_per_minute": 0 }));
    let store = Arc::new(MemoryStore::new());
    let first = sync_into(&store, adapter.clone()).await;
    assert_eq!(first.status, RunStatus::Success);
    // Replacements come every 2 to 4 generations: jump to the fourth.
    sim.set_generation(4);
    let second = sync_into(&store, adapter).await;
    assert_eq!(second.status, RunStatus::Success, "{:?}", second.errors);
    let ids = |g| -> BTreeSet<String> {
        corral_sim::okta_users(seed, size, g).iter().filter_map(|u| u["id"].as_str().map(String::from)).collect()
    };
    let (g0, g1) = (ids(0), ids(4));
    let replaced: BTreeSet<&String> = g0.difference(&g1).collect();
    assert!(!replaced.is_empty() && replaced.len() < size / 10, "{}", replaced.len());
    assert!(second.updated > 0, "volatile users moved: {second:?}");
    assert_eq!(second.inserted as usize, g1.difference(&g0).count());
    let live: BTreeSet<String> =
        store.all_assets().into_iter().filter(|a| a.stale_since.is_none()).map(|a| a.source_id).collect();
    assert_eq!(live, g1);
    assert_eq!(store.stale_count(), replaced.len());
}

/// A request the vendor never answers is cut by the whole-request timeout,
/// retried, and the sync completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_is_cut_by_the_timeout_and_retried() {
    let (seed, size) = (16, 30);
    let faults = Faults { hang_requests: vec![2], ..Faults::default() };
    let sim = sim(SimConfig::new(seed, size).faults(faults)).await;
    let adapter = adapter(&sim, json!({ "page_size": 10, "requests_per_minute": 0, "timeout_secs": 1 }));
    let (summary, store) = tokio::time::timeout(Duration::from_secs(60), sync(adapter)).await.expect("the sync ends");
    assert_eq!(summary.status, RunStatus::Success, "{:?}", summary.errors);
    assert_eq!(stored_ids(&store), expected_ids(seed, size).into_iter().collect());
    let snap = sim.counters.snapshot();
    assert_eq!(snap.fault("hang"), 1);
    assert_eq!(summary.requests.transport_errors, 1, "{:?}", summary.requests);
    assert_eq!(summary.requests.retries, 1);
    assert_eq!(snap.endpoint("okta.users"), 3 + 1);
    sim.shutdown().await;
}
