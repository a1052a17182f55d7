//! NDJSON imports end to end.

mod common;

use common::{adapter, reasons, run};
use corral_core::AssetBody;
use serde_json::json;

#[tokio::test]
async fn ndjson_nested_keys_arrays_and_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = [
        json!({"id": "h1", "name": "HOST1.corp.example.com", "os": {"name": "Windows 10 Enterprise", "version": "22H2"},
               "net": {"ips": ["10.1.0.1", "bad", "10.1.0.1"], "macs": ["AA-BB-CC-00-00-01", "aabbcc000002"]},
               "hw": {"serial": "ABC123", "vendor": "LENOVO", "model": "ThinkPad"}, "seen": "2024-03-01 12:00:00",
               "labels": ["a", "b", "a"], "user": "ann@example.com", "domain": "CORP"}),
        json!({"id": 1234, "name": "[10.0.0.9]", "net": {"ips": "10.2.0.1, 10.2.0.2", "macs": null},
               "nics": [{"mac": "00:11:22:33:44:55"}], "seen": 1714557600}),
        json!({"id": "h3", "os.name": "literal dotted key wins", "os": {"name": "ignored"}}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let cfg = json!({
        "format": "ndjson",
        "keep_raw": true,
        "columns": {
            "source_id": "id", "hostname": "name", "domain": "domain", "os_name": "os.name", "os_version": "os.version",
            "ip_addresses": "net.ips", "mac_addresses": "net.macs", "serial_number": "hw.serial",
            "manufacturer": "hw.vendor", "model": "hw.model", "last_seen": "seen", "tags": "labels", "owner": "user",
            "first_seen": "nics.0.mac"
        }
    });
    let (a, _) = adapter(dir.path(), "hosts.jsonl", body.as_bytes(), cfg);
    let (assets, rejects) = run(&a).await;
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(assets.iter().map(|a| a.source_id()).collect::<Vec<_>>(), ["h1", "1234", "h3"]);

    let AssetBody::Device(d) = &assets[0].body else { panic!("device") };
    assert_eq!(d.hostname.as_deref(), Some("host1"));
    assert_eq!(d.domain.as_deref(), Some("corp.example.com"));
    assert_eq!(d.os.name.as_deref(), Some("Windows 10 Enterprise"));
    assert_eq!(d.os.family.as_deref(), Some("windows"));
    assert_eq!(d.ip_addresses.len(), 1);
    assert_eq!(
        d.mac_addresses.iter().map(|m| String::from(*m)).collect::<Vec<_>>(),
        ["aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"]
    );
    assert_eq!(d.serial_number.as_deref(), Some("ABC123"));
    assert_eq!(d.model.as_deref(), Some("ThinkPad"));
    assert!(d.manufacturer.is_some());
    assert!(d.last_seen.is_some());
    assert_eq!(d.tags, ["a", "b"]);
    assert_eq!(d.owner.as_deref(), Some("ann@example.com"));
    assert_eq!(d.first_seen, None, "a MAC is not a timestamp: dropped");
    assert_eq!(assets[0].raw.as_ref(), Some(&lines[0]));

    let AssetBody::Device(d) = &assets[1].body else { panic!("device") };
    assert_eq!(d.hostname, None, "an IP is not a hostname");
    assert_eq!(d.ip_addresses.len(), 2);
    assert!(d.mac_addresses.is_empty());
    assert!(d.last_seen.is_some(), "epoch seconds");

    let AssetBody::Device(d) = &assets[2].body else { panic!("device") };
    assert_eq!(d.os.name.as_deref(), Some("literal dotted key wins"));
}

#[tokio::test]
async fn ndjson_malformed_lines_are_rejected_with_their_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = Vec::new();
    data.extend_from_slice(b"\xEF\xBB\xBF{\"id\":\"a\",\"mail\":\"A@X.ORG\",\"on\":true}\n"); // 1
    data.extend_from_slice(b"{\"id\":\"b\",\n"); // 2
    data.extend_from_slice(b"\n"); // 3
    data.extend_from_slice(b"[1,2]\n"); // 4
    data.extend_from_slice(b"{\"mail\":\"no id\"}\r\n"); // 5
    data.extend_from_slice(b"{\"id\":\"  \"}\n"); // 6
    data.extend_from_slice(b"{\"id\":42,\"on\":\"disabled\"}\n"); // 7
    data.extend_from_slice(b"{\"id\":\"\xff\"}\n"); // 8
    data.extend_from_slice(b"{\"id\":{\"x\":1}}\n"); // 9
    data.extend_from_slice(b"   \n"); // 10
    data.extend_from_slice(b"{\"id\":\"z\",\"on\":0}"); // 11, no final newline
    let cfg =
        json!({"kind": "user", "page_records": 4, "columns": {"source_id": "id", "email": "mail", "active": "on"}});
    let (a, _) = adapter(dir.path(), "users.ndjson", &data, cfg);
    let ps = common::pages(&a).await.expect("fetch");
    assert_eq!(ps.iter().map(|p| p.record_hint.unwrap_or(0)).sum::<usize>(), 9);
    let (assets, rejects) = run(&a).await;
    assert_eq!(assets.iter().map(|a| a.source_id()).collect::<Vec<_>>(), ["a", "42", "z"]);
    let active: Vec<Option<bool>> =
        assets.iter().map(|a| if let AssetBody::User(u) = &a.body { u.active } else { None }).collect();
    assert_eq!(active, [Some(true), Some(false), Some(false)]);
    assert_eq!(
        reasons(&rejects),
        [
            ("line 2".to_string(), "malformed_json".to_string()),
            ("line 4".into(), "not_an_object".into()),
            ("line 5".into(), "missing_source_id".into()),
            ("line 6".into(), "missing_source_id".into()),
            ("line 8".into(), "invalid_utf8".into()),
            ("line 9".into(), "invalid_source_id".into()),
        ]
    );
    assert_eq!(rejects[0].raw.as_deref(), Some("{\"id\":\"b\","));
    assert_eq!(rejects[2].raw.as_deref(), Some("{\"mail\":\"no id\"}"), "CR stripped");
}
