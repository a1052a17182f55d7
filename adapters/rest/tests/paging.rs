//! The engine's paging, incremental sync and token-call auth against kit
//! simulators shaped for each, with small specs written into a temporary
//! spec folder and loaded from there. Every test checks the exact set of
//! source ids stored (all of them, no duplicates) and the requests made.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use corral_adapter_rest::RestFactory;
use corral_core::testing::{MemoryStore, sync_once};
use corral_core::{AdapterFactory, RunStatus, RunSummary};
use corral_sim::kit::{self, KitAuth, KitSpec, Pagination};
use corral_sim::{Faults, SimConfig, SimHandle};
use serde_json::{Value, json};

const SEED: u64 = 5;
const LIST: &str = "/api/devices";

/// A spec of stream `devices` over the kit's device records; `auth` and
/// `stream` are TOML lines for `[auth]` and the stream's own keys.
fn spec_text(name: &str, auth: &str, stream: &str) -> String {
    format!(
        r#"[adapter]
name = "{name}"
description = "Kit devices"

[[config]]
name = "base_url"
type = "url"
required = true
description = "The simulator"

[[config]]
name = "user"
type = "string"
description = "A user"

[[config]]
name = "secret"
type = "string"
required = true
secret = true
description = "A token or password"

[http]
base_url = "{{config.base_url}}"

[auth]
{auth}

[[streams]]
name = "devices"
kind = "device"
description = "Devices"
path = "{LIST}"
key = "id"
{stream}

[streams.fields]
hostname = "hostname"
serial_number = "serial_number"
last_seen = "last_seen"
"#
    )
}

/// Write the spec into a fresh spec folder and load it from there.
fn load(name: &str, auth: &str, stream: &str) -> RestFactory {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(format!("{name}.toml")), spec_text(name, auth, stream)).expect("write spec");
    let mut loaded = corral_adapter_rest::load_dir(dir.path()).unwrap_or_else(|e| panic!("spec errors: {e:?}"));
    assert_eq!(loaded.len(), 1);
    loaded.remove(0)
}

const BEARER: &str = r#"type = "bearer"
token = "{config.secret}""#;

fn config(sim: &SimHandle) -> Value {
    json!({"base_url": sim.base_url, "secret": sim.config.credentials.token, "requests_per_minute": 0})
}

async fn sync(f: &RestFactory, store: &Arc<MemoryStore>, cfg: Value) -> RunSummary {
    let adapter = f.build("c", cfg).expect("valid config");
    sync_once(store, "c", adapter).await
}

fn stored(store: &MemoryStore) -> BTreeSet<String> {
    store.all_assets().into_iter().map(|a| a.source_id).collect()
}

fn all_ids(spec: &KitSpec, size: usize, generation: u64) -> BTreeSet<String> {
    spec.ids(size, generation).into_iter().collect()
}

/// One full sync of `f` against a kit simulator of `kit` with `size`
/// records: success, exactly the dataset, no duplicate; the list requests made.
async fn full_sync(f: &RestFactory, kit: KitSpec, size: usize) -> u64 {
    let sim = kit::start(kit.clone(), SimConfig::new(SEED, size)).await.expect("simulator");
    let store = Arc::new(MemoryStore::new());
    let s = sync(f, &store, config(&sim)).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(stored(&store), all_ids(&kit, size, 0), "exactly the dataset");
    assert_eq!(store.asset_count(), size);
    assert_eq!(s.assets_normalized, size as u64, "each record once: no page fetched twice");
    let requests = sim.counters.snapshot().endpoint("kit.list");
    sim.shutdown().await;
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_paging_stops_at_the_total_in_the_body() {
    let kit = KitSpec::new(LIST, kit::devices(SEED))
        .pagination(Pagination::offset_limit("offset"))
        .total_at(&["meta", "total"]);
    let f = load(
        "offset-total",
        BEARER,
        r#"records = "data"
pagination = { type = "offset", offset_param = "offset", limit_param = "limit", size = "10", total = "meta.total" }"#,
    );
    // 95 records: 10 pages, the last one short; the total ends the walk.
    assert_eq!(full_sync(&f, kit.clone(), 95).await, 10);
    // 100 records: the total ends the walk after page 10, with no empty page 11.
    assert_eq!(full_sync(&f, kit, 100).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_paging_without_a_total_stops_at_a_short_or_empty_page() {
    let kit = KitSpec::new(LIST, kit::devices(SEED)).records_at(&[]).pagination(Pagination::offset_limit("start"));
    let f = load(
        "offset-bare",
        BEARER,
        r#"records = "."
pagination = { type = "offset", offset_param = "start", limit_param = "limit", size = "10" }"#,
    );
    assert_eq!(full_sync(&f, kit.clone(), 95).await, 10, "page 10 is short");
    assert_eq!(full_sync(&f, kit, 100).await, 11, "page 11 is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_paging_with_a_total_header() {
    // ServiceNow's shape: X-Total-Count on every page.
    let kit = KitSpec::new(LIST, kit::devices(SEED))
        .records_at(&["result"])
        .pagination(Pagination::offset_limit("sysparm_offset"))
        .limit_param("sysparm_limit")
        .total_header("X-Total-Count");
    let f = load(
        "offset-header",
        BEARER,
        r#"records = "result"
pagination = { type = "offset", offset_param = "sysparm_offset", limit_param = "sysparm_limit", size = "7", total_header = "X-Total-Count" }"#,
    );
    assert_eq!(full_sync(&f, kit, 50).await, 8, "50 records in pages of 7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_paging_from_one_and_from_zero() {
    for first in [0u64, 1] {
        let kit = KitSpec::new(LIST, kit::devices(SEED))
            .records_at(&["results"])
            .pagination(Pagination::page_number("page", first))
            .limit_param("per_page");
        let stream = format!(
            r#"records = "results"
pagination = {{ type = "page_number", page_param = "page", size_param = "per_page", first_page = {first}, size = "10" }}"#
        );
        let f = load(&format!("pages-{first}"), BEARER, &stream);
        assert_eq!(full_sync(&f, kit.clone(), 73).await, 8, "first page {first}: page 8 is short");
        assert_eq!(full_sync(&f, kit, 40).await, 5, "first page {first}: page 5 is empty");
    }
    // With the total in the body (Jamf's shape), no empty page is asked for.
    let kit = KitSpec::new(LIST, kit::devices(SEED))
        .records_at(&["results"])
        .total_at(&["totalCount"])
        .pagination(Pagination::page_number("page", 0))
        .limit_param("page-size");
    let f = load(
        "pages-total",
        BEARER,
        r#"records = "results"
pagination = { type = "page_number", page_param = "page", size_param = "page-size", size = "10", total = "totalCount" }"#,
    );
    assert_eq!(full_sync(&f, kit, 40).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_next_urls_are_followed() {
    let kit = KitSpec::new(LIST, kit::devices(SEED))
        .records_at(&["value"])
        .pagination(Pagination::next_link(&["@odata.nextLink"]));
    let f = load(
        "next-url",
        BEARER,
        r#"records = "value"
query = { limit = "9" }
pagination = { type = "next_url", next = "['@odata.nextLink']" }"#,
    );
    assert_eq!(full_sync(&f, kit, 80).await, 9, "80 records in pages of 9");
}

const TOKEN_CALL: &str = r#"type = "token_call"
token_path = "/auth/token"
username = "{config.user}"
password = "{config.secret}""#;

fn token_kit() -> KitSpec {
    KitSpec::new(LIST, kit::devices(SEED))
        .auth(KitAuth::token_from_basic("/auth/token", Duration::from_secs(20 * 60)))
        .pagination(Pagination::body_cursor(&["next"], "cursor"))
}

fn basic_config(sim: &SimHandle) -> Value {
    json!({"base_url": sim.base_url, "user": sim.config.credentials.client_id,
           "secret": sim.config.credentials.client_secret, "requests_per_minute": 0})
}

const CURSOR_STREAM: &str = r#"records = "data"
query = { limit = "10" }
pagination = { type = "body_cursor", cursor = "next", param = "cursor" }"#;

/// A token bought with Basic is fetched once and used for every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_call_buys_one_token_for_the_run() {
    let f = load("token-once", TOKEN_CALL, CURSOR_STREAM);
    let sim = kit::start(token_kit(), SimConfig::new(SEED, 60)).await.expect("simulator");
    let store = Arc::new(MemoryStore::new());
    let s = sync(&f, &store, basic_config(&sim)).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(stored(&store), all_ids(&token_kit(), 60, 0));
    let c = sim.counters.snapshot();
    assert_eq!((c.tokens_issued, c.endpoint("kit.token"), c.endpoint("kit.list")), (1, 1, 6));
    assert_eq!(c.status(401), 0);
    sim.shutdown().await;
}

/// A token that dies before its announced expiry is refused with 401; the
/// engine buys a new one and repeats the request, and the run is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_before_its_expiry_is_bought_again() {
    let f = load("token-again", TOKEN_CALL, CURSOR_STREAM);
    let faults = Faults { token_ttl: Some(Duration::from_millis(200)), token_ttl_hidden: true, ..Faults::default() };
    let sim = kit::start(token_kit(), SimConfig::new(SEED, 60).latency_ms(60).faults(faults)).await.expect("simulator");
    let store = Arc::new(MemoryStore::new());
    let s = sync(&f, &store, basic_config(&sim)).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(stored(&store), all_ids(&token_kit(), 60, 0));
    assert_eq!(s.assets_normalized, 60);
    let c = sim.counters.snapshot();
    assert!(c.fault("token_expired") >= 1, "the simulator refused an expired token: {:?}", c.faults);
    assert_eq!(c.tokens_issued, 1 + c.fault("token_expired"), "one new token per refusal");
    sim.shutdown().await;
}

/// Bad credentials at the token call fail the run as an authentication error
/// without any data request, and without the password in the errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_call_is_an_auth_error() {
    let f = load("token-refused", TOKEN_CALL, CURSOR_STREAM);
    let sim = kit::start(token_kit(), SimConfig::new(SEED, 20)).await.expect("simulator");
    let mut cfg = basic_config(&sim);
    cfg["secret"] = json!("wrong-password-Xq9");
    let store = Arc::new(MemoryStore::new());
    let s = sync(&f, &store, cfg).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(store.asset_count(), 0);
    let errors = s.errors.join("\n");
    assert!(errors.contains("401"), "{errors}");
    assert!(!errors.contains("wrong-password-Xq9"), "{errors}");
    assert_eq!(sim.counters.snapshot().endpoint("kit.list"), 0);
    sim.shutdown().await;
}

fn incremental_kit() -> KitSpec {
    KitSpec::new(LIST, kit::devices(SEED))
        .pagination(Pagination::body_cursor(&["next"], "cursor"))
        .since_filter("seen_after", "last_seen")
}

const INCREMENTAL_STREAM: &str = r#"records = "data"
query = { limit = "10" }
pagination = { type = "body_cursor", cursor = "next", param = "cursor" }
incremental = { cursor_field = "last_seen", param = "seen_after" }"#;

/// The largest `last_seen` among generation `g`'s records.
fn high_water(kit: &KitSpec, size: usize, g: u64) -> String {
    (0..size as u64).filter_map(|i| kit.record(i, g)["last_seen"].as_str().map(str::to_string)).max().expect("records")
}

/// A first sync stores everything and saves the largest cursor value; the
/// next sends it and gets (and writes) only the records that changed since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_sends_the_saved_cursor_and_gets_only_newer_records() {
    const SIZE: usize = 300;
    let kit = incremental_kit();
    let f = load("incremental", BEARER, INCREMENTAL_STREAM);
    let sim = kit::start(kit.clone(), SimConfig::new(SEED, SIZE)).await.expect("simulator");
    let store = Arc::new(MemoryStore::new());
    let first = sync(&f, &store, config(&sim)).await;
    assert_eq!(first.status, RunStatus::Success, "{:?}", first.errors);
    assert_eq!(stored(&store), all_ids(&kit, SIZE, 0));
    let since = high_water(&kit, SIZE, 0);
    let cp = store.checkpoint("c", "devices").expect("a checkpoint after the acknowledged run");
    assert_eq!(cp.0, json!({"since": since}));

    // Some records change at the vendor (newer last_seen; a few replaced by new ids).
    sim.set_generation(3);
    let newer: BTreeSet<String> = (0..SIZE as u64)
        .map(|i| kit.record(i, 3))
        .filter(|r| r["last_seen"].as_str().is_some_and(|t| t > since.as_str()))
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    assert!(!newer.is_empty() && newer.len() < SIZE / 2, "the dataset rules change a few records: {}", newer.len());
    let second = sync(&f, &store, config(&sim)).await;
    assert_eq!(second.status, RunStatus::Success, "{:?}", second.errors);
    assert_eq!(second.assets_normalized, newer.len() as u64, "only the newer records were fetched");
    let written: BTreeSet<String> =
        store.all_assets().into_iter().filter(|a| a.last_sync_id == second.sync_id).map(|a| a.source_id).collect();
    assert_eq!(written, newer);
    assert!(!second.streams["devices"].stale_handled, "an incremental run marks nothing stale");
    assert_eq!(store.stale_count(), 0);
    assert_eq!(store.checkpoint("c", "devices").map(|c| c.0), Some(json!({"since": high_water(&kit, SIZE, 3)})));
    sim.shutdown().await;
}

/// When the store does not acknowledge the pages, no cursor is saved: the
/// next run (the store working again) starts from the beginning and gets
/// everything, and only then is the cursor saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incremental_cursor_is_saved_only_after_the_store_acknowledged() {
    const SIZE: usize = 60;
    let kit = incremental_kit();
    let f = load("incremental-ack", BEARER, INCREMENTAL_STREAM);
    let sim = kit::start(kit.clone(), SimConfig::new(SEED, SIZE)).await.expect("simulator");
    let store = Arc::new(MemoryStore::new());
    store.fail_after(0);
    let failed = sync(&f, &store, config(&sim)).await;
    assert_ne!(failed.status, RunStatus::Success);
    assert_eq!(store.asset_count(), 0);
    assert!(store.checkpoint("c", "devices").is_none(), "no cursor without an acknowledgement");

    store.fail_after(u64::MAX);
    let again = sync(&f, &store, config(&sim)).await;
    assert_eq!(again.status, RunStatus::Success, "{:?}", again.errors);
    assert_eq!(again.assets_normalized, SIZE as u64, "a run without a cursor fetches everything");
    assert_eq!(stored(&store), all_ids(&kit, SIZE, 0));
    assert_eq!(store.checkpoint("c", "devices").map(|c| c.0), Some(json!({"since": high_water(&kit, SIZE, 0)})));
    sim.shutdown().await;
}
