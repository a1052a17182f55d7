//! Throughput smoke test: `cargo test -p corral-adapter-file --release --test perf -- --ignored --nocapture`.

use std::time::Instant;

use corral_adapter_file::FileAdapter;
use corral_adapter_file::sample::{self, DEVICE_COLUMNS, SampleOptions};
use corral_core::Adapter;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "timing only"]
async fn csv_and_ndjson_200k() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 200_000;
    let csv_path = dir.path().join("devices.csv");
    sample::write_devices_csv(&csv_path, n, SampleOptions::default()).expect("write");
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
    let nd_path = dir.path().join("users.ndjson");
    sample::write_users_ndjson(&nd_path, n, SampleOptions::default()).expect("write");
    let cases = [
        ("csv", json!({"path": csv_path.display().to_string(), "columns": columns})),
        (
            "ndjson",
            json!({"path": nd_path.display().to_string(), "kind": "user", "columns": {
            "source_id": "id", "username": "profile.login", "email": "profile.email", "first_name": "profile.firstName",
            "last_name": "profile.lastName", "status": "status", "active": "active", "created": "created",
            "last_login": "lastLogin"}}),
        ),
    ];
    for (name, cfg) in cases {
        let a = FileAdapter::from_config("perf", cfg).expect("valid");
        let bytes = std::fs::metadata(&a.settings().path).expect("meta").len();
        let t = Instant::now();
        let mut pages = Vec::new();
        a.fetch_pages(None, |p| {
            pages.push(p);
            std::future::ready(Ok(()))
        })
        .await
        .expect("fetch");
        let fetch = t.elapsed();
        let t = Instant::now();
        let mut assets = 0;
        for p in &pages {
            let out = a.normalize(p);
            assert!(out.rejects.is_empty());
            assets += out.assets.len();
        }
        let norm = t.elapsed();
        assert_eq!(assets as u64, n);
        println!(
            "{name}: {} MB, {} pages, fetch {:?} ({:.0} MB/s), normalize (one thread) {:?} ({:.0} records/s)",
            bytes / 1_000_000,
            pages.len(),
            fetch,
            bytes as f64 / 1e6 / fetch.as_secs_f64(),
            norm,
            n as f64 / norm.as_secs_f64()
        );
    }
}
