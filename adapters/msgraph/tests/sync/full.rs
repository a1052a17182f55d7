//! A clean full sync of both streams loads exactly the simulator's datasets.

use std::collections::BTreeSet;

use corral_core::{AssetKind, PageSink, RunStatus, fields};
use corral_sim::{NULL_DATE, SimConfig};
use serde_json::{Value, json};

use crate::common::*;

const SEED: u64 = 21;
const SIZE: usize = 2_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_loads_exactly_the_simulators_datasets() {
    let sim = start(SimConfig::new(SEED, SIZE)).await;
    let adapter = adapter(&sim, json!({}));
    assert!(adapter.check().await.is_ok());

    let (summary, store) = sync(adapter, &[]).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(summary.records_rejected, 0);

    let devices = corral_sim::msgraph_devices(SEED, SIZE, 0);
    let users = corral_sim::msgraph_users(SEED, SIZE, 0);
    let device_ids = ids_of(&devices, 0..SIZE);
    let user_ids = ids_of(&users, 0..SIZE);
    // The sim repeats a few devices across pages by design: every listing
    // position is normalized, the store keeps one asset per id.
    assert!(device_ids.len() < SIZE, "the dataset has repeats");
    assert_eq!(user_ids.len(), SIZE);

    let d = &summary.streams["managed_devices"];
    assert_eq!((d.pages, d.assets_normalized), (3, SIZE as u64), "{d:?}");
    assert!(d.fetch_completed && d.stale_handled, "{d:?}");
    let u = &summary.streams["users"];
    assert_eq!((u.pages, u.assets_normalized), (3, SIZE as u64), "999 per page: {u:?}");
    assert!(u.fetch_completed && u.stale_handled, "{u:?}");
    assert_eq!(summary.inserted, (device_ids.len() + SIZE) as u64);

    assert_eq!(stored_ids(&store, AssetKind::Device), device_ids);
    assert_eq!(stored_ids(&store, AssetKind::User), user_ids);
    assert_eq!(store.asset_count(), device_ids.len() + SIZE);
    assert_eq!(store.stale_count(), 0);

    // One token for the whole connection; one request per page, nothing retried.
    let c = sim.counters.snapshot();
    assert_eq!(c.tokens_issued, 1, "check and the sync's streams share one token cache");
    assert_eq!((c.endpoint("graph.devices"), c.endpoint("graph.users")), (3, 3 + 1), "{c:?}");
    assert_eq!(summary.requests.retries, 0);

    // Field mapping against the simulator's records.
    let stored: std::collections::HashMap<String, Value> =
        store.all_assets().into_iter().map(|a| (a.source_id, a.fields)).collect();
    let mut null_synced = 0;
    let mut with_macs = 0;
    for rec in &devices {
        let id = rec["id"].as_str().expect("id");
        let f = &stored[id];
        let want_host = fields::hostname(rec["deviceName"].as_str().unwrap_or_default()).hostname;
        assert_eq!(f["hostname"].as_str(), want_host.as_deref(), "{rec}");
        if rec["lastSyncDateTime"] == NULL_DATE {
            null_synced += 1;
            assert!(f.get("last_seen").is_none(), "Intune's null date is no observation: {f}");
        } else {
            assert!(f["last_seen"].is_string(), "{f}");
        }
        if f.get("mac_addresses").is_some() {
            with_macs += 1;
        }
        let want_macs =
            fields::macs([&rec["wiFiMacAddress"], &rec["ethernetMacAddress"]].into_iter().filter_map(Value::as_str));
        assert_eq!(f.get("mac_addresses").cloned().unwrap_or(json!([])), json!(want_macs), "{rec}");
    }
    assert!(null_synced > 0 && with_macs > SIZE / 2, "{null_synced} {with_macs}");
    for rec in &users {
        let f = &stored[rec["id"].as_str().expect("id")];
        assert_eq!(f["active"], rec["accountEnabled"], "accountEnabled is $selected: {f}");
        assert_eq!(f["username"], rec["userPrincipalName"]);
    }
    let guests = users.iter().filter(|u| u["userType"] == "Guest").count();
    let tagged = stored.values().filter(|f| f["tags"] == json!(["user_type:guest"])).count();
    assert_eq!(guests, tagged);
    sim.shutdown().await;
}

/// `fetch` alone: pages go to the sink undecoded, one per nextLink, and the
/// nextLink is requested exactly as the simulator wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_follows_next_links_and_passes_bodies_on_undecoded() {
    let sim = start(SimConfig::new(3, 95)).await;
    let adapter = adapter(&sim, json!({"page_size": 10}));
    let info = adapter.info().stream("users").cloned().expect("users stream");
    let (sink, mut rx) = PageSink::channel(4);
    let ctx = corral_core::FetchContext::for_test(CONN, info, sink);
    let fetched = tokio::spawn({
        let adapter = adapter.clone();
        async move { adapter.fetch(ctx).await }
    });
    let mut pages = Vec::new();
    while let Some(p) = rx.recv().await {
        pages.push(p);
    }
    fetched.await.expect("join").expect("fetch ok");
    assert_eq!(pages.len(), 10);
    let mut ids = BTreeSet::new();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(p.stream, "users");
        assert!(p.locator.starts_with(&format!("users page {i} (")), "{}", p.locator);
        assert!(!p.locator.contains("$skiptoken=") || p.locator.contains("$skiptoken=***"), "{}", p.locator);
        let v: Value = serde_json::from_slice(&p.body).expect("the body as served");
        assert_eq!(v["@odata.nextLink"].is_string(), i < 9);
        ids.extend(v["value"].as_array().expect("value").iter().filter_map(|u| u["id"].as_str().map(String::from)));
    }
    assert_eq!(ids, ids_of(&corral_sim::msgraph_users(3, 95, 0), 0..95));
    assert_eq!(sim.counters.snapshot().status(400), 0, "no rebuilt link was refused");
    sim.shutdown().await;
}

/// `keep_raw`: devices are fetched whole (no `$select`), users with Graph's
/// default property set plus the mapped ones, and each record is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_raw_keeps_the_graph_records() {
    let sim = start(SimConfig::new(6, 40)).await;
    let (summary, store) = sync(adapter(&sim, json!({"keep_raw": true, "page_size": 15})), &[]).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    let devices = corral_sim::msgraph_devices(6, 40, 0);
    let users = corral_sim::msgraph_users(6, 40, 0);
    for a in store.all_assets() {
        let raw = a.raw.as_ref().expect("raw kept");
        match a.kind {
            AssetKind::Device => {
                let want = devices.iter().find(|d| d["id"] == raw["id"]).expect("known device");
                assert_eq!(raw, want, "the whole managedDevice");
            }
            AssetKind::User => {
                let want = users.iter().find(|u| u["id"] == raw["id"]).expect("known user");
                for p in corral_sim::USER_DEFAULT_PROPERTIES.iter().chain(&["accountEnabled", "userType"]) {
                    assert_eq!(raw.get(*p), want.get(*p), "{p}");
                }
            }
            other => panic!("Graph streams give devices and users, not {other}"),
        }
    }
    sim.shutdown().await;
}

/// Every body is scanned off the runtime, even small ones: the nextLink of
/// each page, and the well-formedness check of the last one.
#[tokio::test(flavor = "current_thread")]
async fn small_pages_are_scanned_off_the_runtime() {
    let sim = start(SimConfig::new(3, 30)).await;
    let adapter = adapter(&sim, json!({"page_size": 10}));
    let info = adapter.info().stream("users").cloned().expect("users stream");
    let (sink, mut rx) = PageSink::channel(8);
    let before = corral_http::offloaded_on_this_thread();
    adapter.fetch(corral_core::FetchContext::for_test(CONN, info, sink)).await.expect("fetch ok");
    let offloaded = corral_http::offloaded_on_this_thread() - before;
    let mut pages = 0;
    while rx.recv().await.is_some() {
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert!(offloaded > pages, "{offloaded} scans off the runtime for {pages} pages (links and the last page's check)");
    sim.shutdown().await;
}

/// Real Graph puts `@odata.nextLink` after `value` on some endpoints: the
/// link is still found (at the end of the page) and every page is fetched once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_link_after_value_is_followed() {
    let config = SimConfig::new(12, 230)
        .behavior(corral_sim::Behavior { graph_next_link_after_value: true, ..corral_sim::Behavior::default() });
    let sim = start(config).await;
    let (summary, store) = sync(adapter(&sim, json!({"page_size": 50})), &[]).await;
    assert_eq!(summary.status, RunStatus::Success, "{}", show(&summary));
    assert_eq!(summary.records_rejected, 0);
    for (name, s) in &summary.streams {
        assert_eq!(s.pages, 5, "{name}");
        assert!(s.fetch_completed && s.stale_handled, "{name}");
    }
    assert_eq!(stored_ids(&store, AssetKind::User), ids_of(&corral_sim::msgraph_users(12, 230, 0), 0..230));
    assert_eq!(stored_ids(&store, AssetKind::Device), ids_of(&corral_sim::msgraph_devices(12, 230, 0), 0..230));
    let c = sim.counters.snapshot();
    assert_eq!((c.endpoint("graph.users"), c.endpoint("graph.devices")), (5, 5), "{c:?}");
    sim.shutdown().await;
}
