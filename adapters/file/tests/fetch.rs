//! Paging, locators, checkpoints and errors of fetch.

mod common;

use std::collections::HashSet;

use common::{adapter, pages};
use corral_adapter_file::FileAdapterFactory;
use corral_core::{Adapter, AdapterFactory, AssetKind, CheckOutcome, FetchError, RawPage};
use serde_json::json;

/// `(a, b)` from a locator `"{path} lines {a}-{b}"`.
fn lines_of(p: &RawPage) -> (u64, u64) {
    let range = p.locator.rsplit(" lines ").next().expect("locator has lines");
    let (a, b) = range.split_once('-').expect("a-b");
    (a.parse().expect("a"), b.parse().expect("b"))
}

fn assert_contiguous(ps: &[RawPage], first_line: u64, last_line: u64, file_len: u64) {
    let mut expect_first = first_line;
    let mut prev_offset = 0;
    for p in ps {
        let (a, b) = lines_of(p);
        assert_eq!(a, expect_first, "{}", p.locator);
        assert_eq!(p.first_record, a);
        assert!(b >= a);
        let cp = p.checkpoint.as_ref().expect("checkpoint");
        let offset = cp.0["offset"].as_u64().expect("offset");
        assert!(offset > prev_offset);
        assert_eq!(cp.0["line"].as_u64(), Some(b));
        prev_offset = offset;
        expect_first = b + 1;
    }
    assert_eq!(expect_first - 1, last_line);
    assert_eq!(prev_offset, file_len);
}

#[tokio::test]
async fn ndjson_10005_lines_make_11_contiguous_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body: String = (0..10_005).map(|i| format!("{{\"id\":\"d{i}\",\"host\":\"h{i}\"}}\n")).collect();
    let cfg = json!({"page_records": 1000, "columns": {"source_id": "id", "hostname": "host"}});
    let (a, path) = adapter(dir.path(), "d.ndjson", body.as_bytes(), cfg);
    let ps = pages(&a).await.expect("fetch");
    assert_eq!(ps.len(), 11);
    assert_eq!(ps.iter().map(|p| p.record_hint.expect("hint")).sum::<usize>(), 10_005);
    assert_eq!(ps[10].record_hint, Some(5));
    assert_eq!(ps[0].locator, format!("{} lines 1-1000", path.display()));
    assert_eq!(ps[10].locator, format!("{} lines 10001-10005", path.display()));
    assert_contiguous(&ps, 1, 10_005, body.len() as u64);

    let mut ids = Vec::new();
    for p in &ps {
        let n = a.normalize(p);
        assert!(n.rejects.is_empty());
        assert_eq!(n.assets.len(), p.record_hint.expect("hint"));
        ids.extend(n.assets.into_iter().map(|a| a.source_id().to_string()));
    }
    assert_eq!(ids.len(), 10_005);
    assert_eq!(ids[10_004], "d10004");
}

#[tokio::test]
async fn csv_10005_records_with_multiline_fields_make_11_contiguous_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::from("id,host,note\r\n");
    let mut lines = 1u64;
    let mut record_lines = Vec::new(); // (first, last) line of each record
    for i in 0..10_005 {
        if i % 7 == 0 {
            body.push_str(&format!("d{i},h{i},\"two\r\nlines, \"\"quoted\"\"\"\r\n"));
            record_lines.push((lines + 1, lines + 2));
            lines += 2;
        } else {
            body.push_str(&format!("d{i},h{i},\r\n"));
            record_lines.push((lines + 1, lines + 1));
            lines += 1;
        }
        if i % 1000 == 999 {
            body.push_str("\r\n"); // blank lines are not records
            lines += 1;
        }
    }
    body.push_str("\r\n\r\n");
    let cfg = json!({"page_records": 1000, "columns": {"source_id": "id", "hostname": "host"}});
    let (a, _) = adapter(dir.path(), "d.csv", body.as_bytes(), cfg);
    let ps = pages(&a).await.expect("fetch");
    assert_eq!(ps.len(), 11);
    assert_eq!(ps.iter().map(|p| p.record_hint.expect("hint")).sum::<usize>(), 10_005);
    for (k, p) in ps.iter().enumerate() {
        let first = record_lines[k * 1000].0;
        let last = record_lines[(k * 1000 + 999).min(10_004)].1;
        assert_eq!(lines_of(p), (first, last), "{}", p.locator);
        assert_eq!(p.first_record, first);
    }
    // Pages start at a record: the blank line after each full page belongs to no page.
    assert_eq!(lines_of(&ps[1]).0, lines_of(&ps[0]).1 + 2);
    assert_eq!(ps[10].checkpoint.as_ref().map(|c| c.0["offset"].clone()), Some(json!(body.len() - 4)));
    let mut ids = HashSet::new();
    for p in &ps {
        let n = a.normalize(p);
        assert!(n.rejects.is_empty(), "{:?}", n.rejects.first());
        assert_eq!(n.assets.len(), p.record_hint.expect("hint"));
        ids.extend(n.assets.into_iter().map(|a| a.source_id().to_string()));
    }
    assert_eq!(ids.len(), 10_005);
}

#[tokio::test]
async fn line_numbers_of_rejects_are_right_on_every_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every 10th record has no id; records 0, 3, 6 .. span two lines.
    let mut body = String::from("id,name\n");
    let mut line = 2;
    let mut expected = Vec::new();
    for i in 0..500 {
        let id = if i % 10 == 0 { String::new() } else { format!("u{i}") };
        if i % 10 == 0 {
            expected.push(format!("line {line}"));
        }
        if i % 3 == 0 {
            body.push_str(&format!("{id},\"a\nb\"\n"));
            line += 2;
        } else {
            body.push_str(&format!("{id},x\n"));
            line += 1;
        }
    }
    let cfg = json!({"kind": "user", "page_records": 7, "columns": {"source_id": "id", "display_name": "name"}});
    let (a, _) = adapter(dir.path(), "u.csv", body.as_bytes(), cfg);
    let (assets, rejects) = common::run(&a).await;
    assert_eq!(assets.len(), 450);
    assert_eq!(rejects.iter().map(|r| r.record.clone()).collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn missing_file_is_an_io_error_and_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.csv");
    let a = corral_adapter_file::FileAdapter::from_config(
        "c",
        json!({"path": path.display().to_string(), "columns": {"source_id": "id"}}),
    )
    .expect("build does no I/O");
    match pages(&a).await {
        Err(FetchError::Io { what, .. }) => assert_eq!(what, path.display().to_string()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    match a.check().await {
        CheckOutcome::Unreachable { endpoint, .. } => assert_eq!(endpoint, path.display().to_string()),
        other => panic!("expected unreachable, got {other:?}"),
    }
    let dir_adapter = corral_adapter_file::FileAdapter::from_config(
        "c",
        json!({"path": dir.path().display().to_string(), "format": "csv", "columns": {"source_id": "id"}}),
    )
    .expect("valid");
    assert!(!dir_adapter.check().await.is_ok());
}

#[tokio::test]
async fn check_reports_size_and_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) =
        adapter(dir.path(), "d.csv", b"\xEF\xBB\xBFid,Host Name\n1,a\n", json!({"columns": {"source_id": "id"}}));
    match a.check().await {
        CheckOutcome::Ok { detail } => assert_eq!(detail, "20 bytes, columns `id`, `Host Name`"),
        other => panic!("{other:?}"),
    }
    let (a, _) = adapter(dir.path(), "e.csv", b"", json!({"columns": {"source_id": "id"}}));
    assert!(!a.check().await.is_ok());
    let (a, _) = adapter(dir.path(), "d.ndjson", b"{}\n", json!({"columns": {"source_id": "id"}}));
    assert_eq!(a.check().await, CheckOutcome::Ok { detail: "3 bytes, ndjson".into() });
}

#[tokio::test]
async fn empty_and_header_only_files_yield_no_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = adapter(dir.path(), "h.csv", b"id,name\r\n\r\n", json!({"columns": {"source_id": "id"}}));
    assert!(pages(&a).await.expect("fetch").is_empty());
    let (a, _) = adapter(dir.path(), "e.ndjson", b"", json!({"columns": {"source_id": "id"}}));
    assert!(pages(&a).await.expect("fetch").is_empty());
}

#[tokio::test]
async fn a_stray_quote_costs_one_reject_not_the_records_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = b"id,name,ip\n".to_vec();
    let mut expected = Vec::new();
    for i in 0..3000u32 {
        let line = i + 2;
        match i % 50 {
            // An unterminated quote, then good records with and without quotes.
            7 => {
                body.extend_from_slice(format!("d{i},\"broken host,10.0.0.1\n").as_bytes());
                expected.push(format!("line {line}"));
            }
            8 | 9 => body.extend_from_slice(format!("d{i},plain,10.0.0.2\n").as_bytes()),
            _ => body.extend_from_slice(format!("d{i},\"quoted, name\",10.0.0.3\n").as_bytes()),
        }
    }
    // The last one never closes before the end of the file.
    body.extend_from_slice(b"last,\"open\nz1,a,b\nz2,a,b");
    expected.push("line 3002".into());
    let (a, _) = adapter(dir.path(), "q.csv", &body, json!({"page_records": 100, "columns": {"source_id": "id"}}));
    let ps = pages(&a).await.expect("fetch");
    assert_eq!(ps.iter().map(|p| p.record_hint.unwrap_or(0)).sum::<usize>(), 3003);
    let (assets, rejects) = common::run(&a).await;
    assert_eq!(rejects.iter().map(|r| r.record.clone()).collect::<Vec<_>>(), expected);
    assert!(rejects.iter().all(|r| r.reason == "malformed_csv"));
    assert_eq!(rejects[0].raw.as_deref(), Some("d7,\"broken host,10.0.0.1"));
    assert_eq!(assets.len(), 3003 - expected.len());
    assert_eq!(assets.last().map(|a| a.source_id()), Some("z2"));
}

#[tokio::test]
async fn lead_sample_exports_with_malformed_lines() {
    use corral_adapter_file::sample::{self, DEVICE_COLUMNS, SampleOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("devices.csv");
    let opts = SampleOptions { seed: 7, malformed_every: Some(10) };
    sample::write_devices_csv(&csv_path, 5000, opts).expect("write");
    let targets = [
        "source_id",
        "hostname",
        "ip_addresses",
        "mac_addresses",
        "serial_number",
        "os_name",
        "os_version",
        "manufacturer",
        "model",
        "last_seen",
        "owner",
        "tags",
    ];
    let columns: serde_json::Map<String, serde_json::Value> =
        targets.iter().zip(DEVICE_COLUMNS).map(|(t, c)| (t.to_string(), json!(c))).collect();
    let a = corral_adapter_file::FileAdapter::from_config(
        "c",
        json!({"path": csv_path.display().to_string(), "page_records": 300, "columns": columns}),
    )
    .expect("valid");
    let (assets, rejects) = common::run(&a).await;
    assert_eq!(rejects.len(), 500, "{:?}", rejects.first());
    assert_eq!(assets.len(), 4500);
    assert_eq!(rejects[0].record, "line 11");
    assert!(assets.iter().all(|a| a.source_id().starts_with("dev-")));

    let nd_path = dir.path().join("users.ndjson");
    sample::write_users_ndjson(&nd_path, 5000, opts).expect("write");
    let a = corral_adapter_file::FileAdapter::from_config(
        "c",
        json!({"path": nd_path.display().to_string(), "kind": "user", "columns": {
            "source_id": "id", "username": "profile.login", "email": "profile.email", "first_name": "profile.firstName",
            "last_name": "profile.lastName", "status": "status", "active": "active", "created": "created",
            "last_login": "lastLogin"}}),
    )
    .expect("valid");
    let (assets, rejects) = common::run(&a).await;
    assert_eq!((assets.len(), rejects.len()), (4500, 500));
    assert!(rejects.iter().all(|r| r.reason == "malformed_json"));
}

#[test]
fn factory_info_and_build() {
    let info = FileAdapterFactory.info();
    assert_eq!(info.name, "file");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    let streams: Vec<(&str, AssetKind)> = info.streams.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(streams, [("devices", AssetKind::Device), ("users", AssetKind::User)]);
    for f in ["path", "format", "kind", "delimiter", "page_records", "keep_raw", "columns"] {
        assert!(info.config.iter().any(|c| c.name == f), "{f} documented");
    }
    assert!(info.config.iter().filter(|c| c.required).map(|c| c.name.as_str()).eq(["path", "columns"]));

    let a = FileAdapterFactory
        .build("hr", json!({"path": "people.csv", "kind": "user", "columns": {"source_id": "Employee ID"}}))
        .expect("valid");
    assert_eq!(a.info().streams.len(), 1);
    assert_eq!(a.info().streams[0].name, "users");
    assert_eq!(a.info().streams[0].key, "Employee ID");

    let e = FileAdapterFactory.build("x", json!({"columns": {"source_id": "id"}})).err().expect("no path");
    assert_eq!(e.to_string(), "config field `path`: is required");
    let e = FileAdapterFactory
        .build("x", json!({"path": "a.csv", "kind": "printer", "columns": {"source_id": "id"}}))
        .err()
        .expect("kind");
    assert!(e.to_string().starts_with("config field `kind`"), "{e}");
    let e = FileAdapterFactory
        .build("x", json!({"path": "a.csv", "columns": {"source_id": "id", "colour": "c"}}))
        .err()
        .expect("target");
    assert!(e.to_string().starts_with("config field `columns.colour`"), "{e}");
    let e = FileAdapterFactory
        .build("x", json!({"path": "a.csv", "page_records": 0, "columns": {"source_id": "id"}}))
        .err()
        .expect("0");
    assert!(e.to_string().starts_with("config field `page_records`"), "{e}");
}

#[tokio::test]
async fn fetch_through_the_engine_sink() {
    use corral_core::{FetchContext, PageSink};
    let dir = tempfile::tempdir().expect("tempdir");
    let body: String = (0..2_500).map(|i| format!("{{\"id\":\"d{i}\"}}\n")).collect();
    let (a, _) = adapter(dir.path(), "d.ndjson", body.as_bytes(), json!({"columns": {"source_id": "id"}}));
    let (sink, mut rx) = PageSink::channel(4);
    let stream = a.info().streams[0].clone();
    let fetch = tokio::spawn(async move { a.fetch(FetchContext::for_test("c", stream, sink)).await });
    let mut hints = Vec::new();
    while let Some(p) = rx.recv().await {
        hints.push(p.record_hint.expect("hint"));
    }
    fetch.await.expect("join").expect("fetch ok");
    assert_eq!(hints, [1000, 1000, 500]);
}

#[tokio::test]
async fn fetch_returns_closed_when_the_pipeline_goes_away() {
    use corral_core::{FetchContext, PageSink};
    let dir = tempfile::tempdir().expect("tempdir");
    let body: String = (0..50).map(|i| format!("{{\"id\":\"d{i}\"}}\n")).collect();
    let (a, _) =
        adapter(dir.path(), "d.ndjson", body.as_bytes(), json!({"page_records": 1, "columns": {"source_id": "id"}}));
    let (sink, rx) = PageSink::channel(1);
    drop(rx);
    let stream = a.info().streams[0].clone();
    let r = a.fetch(FetchContext::for_test("c", stream, sink)).await;
    assert!(matches!(r, Err(FetchError::Closed)), "{r:?}");
}

#[tokio::test]
async fn fetch_of_the_other_stream_is_unknown() {
    use corral_core::{FetchContext, PageSink, StreamInfo};
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = adapter(dir.path(), "d.ndjson", b"{}\n", json!({"columns": {"source_id": "id"}}));
    let (sink, _rx) = PageSink::channel(1);
    let users = StreamInfo::new("users", AssetKind::User, "id", "");
    let r = a.fetch(FetchContext::for_test("c", users, sink)).await;
    assert!(matches!(r, Err(FetchError::UnknownStream(s)) if s == "users"));
}

async fn pages_from(a: &corral_adapter_file::FileAdapter, cp: Option<&corral_core::Checkpoint>) -> Vec<RawPage> {
    let mut out = Vec::new();
    a.fetch_pages(cp, |p| {
        out.push(p);
        std::future::ready(Ok(()))
    })
    .await
    .expect("fetch");
    out
}

#[tokio::test]
async fn resume_from_a_checkpoint_only_for_the_same_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::from("\u{feff}id,note\n");
    for i in 0..95 {
        body.push_str(&format!("d{i},\"line\nbreak\"\n"));
    }
    let (a, path) =
        adapter(dir.path(), "d.csv", body.as_bytes(), json!({"page_records": 10, "columns": {"source_id": "id"}}));
    let all = pages_from(&a, None).await;
    assert_eq!(all.len(), 10);

    // Resume after page 3: the same pages 4.. as a full read.
    let cp = all[2].checkpoint.clone().expect("checkpoint");
    let resumed = pages_from(&a, Some(&cp)).await;
    assert_eq!(resumed.len(), 7);
    for (r, f) in resumed.iter().zip(&all[3..]) {
        assert_eq!(
            (r.body.clone(), &r.locator, r.first_record, r.record_hint),
            (f.body.clone(), &f.locator, f.first_record, f.record_hint)
        );
        assert_eq!(r.checkpoint, f.checkpoint);
    }
    let n = a.normalize(&resumed[0]);
    assert_eq!(n.assets.first().map(|a| a.source_id()), Some("d30"));

    // A checkpoint at the very end resumes to nothing.
    let last = all[9].checkpoint.clone().expect("checkpoint");
    assert!(pages_from(&a, Some(&last)).await.is_empty());

    // Garbage or foreign checkpoints start over.
    for bad in [
        json!(null),
        json!({"offset": 5}),
        json!("x"),
        json!({"offset": 7, "line": 2, "size": body.len(), "mtime_ns": 1}),
    ] {
        let got = pages_from(&a, Some(&corral_core::Checkpoint(bad))).await;
        assert_eq!(got.len(), 10);
    }
    // An offset that is not a record boundary starts over.
    let mut mid = cp.0.clone();
    mid["offset"] = json!(cp.0["offset"].as_u64().expect("offset") - 3);
    assert_eq!(pages_from(&a, Some(&corral_core::Checkpoint(mid))).await.len(), 10);

    // The file changed (appended to): start over.
    body.push_str("d95,x\n");
    std::fs::write(&path, &body).expect("rewrite");
    let got = pages_from(&a, Some(&cp)).await;
    assert_eq!(got.len(), 10);
    assert_eq!(got.iter().map(|p| p.record_hint.unwrap_or(0)).sum::<usize>(), 96);
}

#[tokio::test]
async fn resume_ndjson() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body: String = (0..25).map(|i| format!("{{\"id\":\"d{i}\"}}\n")).collect();
    let (a, _) =
        adapter(dir.path(), "d.ndjson", body.as_bytes(), json!({"page_records": 10, "columns": {"source_id": "id"}}));
    let all = pages_from(&a, None).await;
    let resumed = pages_from(&a, all[0].checkpoint.as_ref()).await;
    assert_eq!(resumed.len(), 2);
    assert_eq!(resumed[0].locator, all[1].locator);
    assert_eq!(resumed[1].body, all[2].body);
}

/// A line too long to hold (17 MiB) is one reject naming its line; the
/// records around it load, and the stream still completes (so a later run
/// can resume or handle stale assets as usual).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_too_long_to_hold_is_one_reject_and_the_rest_loads() {
    use std::sync::Arc;

    use corral_core::testing::{MemoryStore, sync_once};
    use corral_core::{RunStatus, Store};

    for (name, head) in [("d.csv", "id,host\n"), ("d.ndjson", "")] {
        let good = |i: &str| if head.is_empty() { format!("{{\"id\":\"{i}\"}}\n") } else { format!("{i},host\n") };
        let long_line = good(&"x".repeat(17 << 20));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut body = String::from(head);
        body.push_str(&good("1"));
        body.push_str(&long_line);
        body.push_str(&good("2"));
        body.push_str(&good("3"));
        let (a, _) = adapter(dir.path(), name, body.as_bytes(), json!({"columns": {"source_id": "id"}}));
        let store = Arc::new(MemoryStore::new());
        let s = sync_once(&store, "c", Arc::new(a)).await;
        assert_eq!(s.status, RunStatus::Partial, "{name}: {:?}", s.errors);
        assert_eq!((s.loaded(), s.records_rejected, s.records_fetched), (3, 1, 4), "{name}");
        let sample = &s.rejects["line_too_long"].samples[0];
        let line = if head.is_empty() { "line 2" } else { "line 3" };
        assert_eq!(sample.record, line, "{name}");
        assert!(s.streams.values().all(|st| st.fetch_completed), "{name}: {:?}", s.streams);
        let kept = store.rejects(&s.sync_id, 10).await.expect("rejects");
        assert_eq!(kept[0].reject.raw.as_ref().map(String::len), Some(corral_core::Reject::MAX_RAW), "{name}");
    }
}

/// Pages never exceed the engine's `max_page_records`, whatever
/// `page_records` says: the engine's memory bound assumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_stay_within_the_engines_max_page_records() {
    use std::sync::Arc;

    use corral_core::testing::MemoryStore;
    use corral_core::{Connection, Engine, EngineConfig, RunStatus, StalePolicy};

    let dir = tempfile::tempdir().expect("tempdir");
    let body: String = (0..2_500).map(|i| format!("{{\"id\":\"d{i}\"}}\n")).collect();
    let cfg = json!({"page_records": 5000, "columns": {"source_id": "id"}});
    let (a, _) = adapter(dir.path(), "d.ndjson", body.as_bytes(), cfg);
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig { max_page_records: 1000, ..Default::default() }, store).expect("engine");
    let conn = Connection {
        name: "c".into(),
        adapter: Arc::new(a),
        streams: vec![],
        stale: StalePolicy::Mark { delete_after: None },
    };
    let s = engine.sync(conn).await;
    assert_eq!((s.status, s.inserted, s.pages), (RunStatus::Success, 2_500, 3));
    assert_eq!(s.in_flight.oversized_pages, 0);
    assert!(s.in_flight.peak_records <= s.in_flight.record_bound, "{:?}", s.in_flight);
}

/// A run interrupted by the store leaves a checkpoint; the file then changes
/// (a device removed): the next run cannot use the checkpoint, reads the
/// whole file, says so, and so keeps its stale handling: the removed device
/// is marked stale. (A run that truly resumed would skip stale handling.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_no_longer_fits_the_file_keeps_stale_handling() {
    use std::sync::Arc;

    use corral_core::testing::MemoryStore;
    use corral_core::{Connection, Engine, EngineConfig, RunStatus};

    let dir = tempfile::tempdir().expect("tempdir");
    let rows = |skip: Option<usize>| -> String {
        let mut s = String::from("id,host\n");
        for i in (0..100).filter(|i| Some(*i) != skip) {
            s.push_str(&format!("d{i:03},h{i}\n"));
        }
        s
    };
    let (a, path) = adapter(
        dir.path(),
        "d.csv",
        rows(None).as_bytes(),
        json!({"page_records": 10, "columns": {"source_id": "id", "hostname": "host"}}),
    );
    let a: Arc<dyn Adapter> = Arc::new(a);
    let conn = || Connection { name: "f".into(), adapter: a.clone(), streams: vec![], stale: Default::default() };
    let store = Arc::new(MemoryStore::new());
    let config = EngineConfig { batch_max_records: 10, batches_in_flight: 1, load_attempts: 1, ..Default::default() };
    let engine = Engine::new(config, store.clone()).expect("engine");

    // A complete run, then one the store fails after 3 batches: a checkpoint is left.
    assert_eq!(engine.sync(conn()).await.status, RunStatus::Success);
    store.fail_after(store.batch_sizes().len() as u64 + 3);
    assert_eq!(engine.sync(conn()).await.status, RunStatus::Failed);
    let cp = store.checkpoint("f", "devices").expect("a checkpoint row");
    assert!(!cp.0.is_null(), "the failed run left a checkpoint to resume from");
    store.fail_after(u64::MAX);

    // d042 is gone from the file: the checkpoint no longer fits it.
    std::fs::write(&path, rows(Some(42))).expect("rewrite");
    let s = engine.sync(conn()).await;
    assert_eq!(s.status, RunStatus::Success, "{:?}", s.errors);
    assert_eq!(s.records_fetched, 99, "the whole file was read");
    assert_eq!(s.stale_marked, 1, "the removed device is marked stale: {s:?}");
    let stale: Vec<String> =
        store.all_assets().into_iter().filter(|a| a.stale_since.is_some()).map(|a| a.source_id).collect();
    assert_eq!(stale, ["d042"]);
}
