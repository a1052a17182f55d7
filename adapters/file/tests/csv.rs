//! CSV imports end to end: fetch (page splitting) then normalize.

mod common;

use common::{adapter, pages, reasons, run};
use corral_core::{Adapter, AssetBody, Device, User};
use serde_json::json;

fn device(a: &corral_core::Asset) -> &Device {
    match &a.body {
        AssetBody::Device(d) => d,
        _ => panic!("expected a device"),
    }
}

fn user(a: &corral_core::Asset) -> &User {
    match &a.body {
        AssetBody::User(u) => u,
        _ => panic!("expected a user"),
    }
}

const DEVICES: &str = "\u{feff}id,Host Name,IPs,MACs,OS,OS Version,Serial,Vendor,Last Seen,Tags,Notes\r\n\
1,WS-001.corp.example.com,\"10.0.0.1, 10.0.0.2\",AA-BB-CC-DD-EE-01,Windows 11 Pro,23H2,SN-1,Dell Inc.,2024-05-01T10:00:00Z,\"prod; eu\",\"a, b\"\r\n\
2,srv02,10.0.0.3 fe80::1;bogus,aabb.ccdd.ee02,Ubuntu,22.04,,,,,\"multi\r\nline, with \"\"quotes\"\"\"\r\n\
\r\n\
3,Bücher-PC,not-an-ip,\"aa:bb:cc:dd:ee:03 AABBCCDDEE04,00-00-00-00-00-00\",macOS,14.4,,Apple,not a date,,\r\n\
4,,,,,,,,,,last line without terminator";

fn device_cfg() -> serde_json::Value {
    json!({
        "page_records": 2,
        "keep_raw": true,
        "columns": {
            "source_id": "id",
            "hostname": "Host Name",
            "ip_addresses": "IPs",
            "mac_addresses": "macs",
            "os_name": "OS",
            "os_version": "OS Version",
            "serial_number": "Serial",
            "manufacturer": "Vendor",
            "last_seen": "Last Seen",
            "tags": "Tags"
        }
    })
}

#[tokio::test]
async fn csv_devices_bom_crlf_quotes_unicode_and_macs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, path) = adapter(dir.path(), "devices.csv", DEVICES.as_bytes(), device_cfg());

    let ps = pages(&a).await.expect("fetch");
    let locators: Vec<&str> = ps.iter().map(|p| p.locator.as_str()).collect();
    let shown = path.display();
    assert_eq!(locators, [format!("{shown} lines 2-4"), format!("{shown} lines 6-7")]);
    assert_eq!(ps.iter().map(|p| p.first_record).collect::<Vec<_>>(), [2, 6]);
    assert_eq!(ps.iter().map(|p| p.record_hint).collect::<Vec<_>>(), [Some(2), Some(2)]);
    assert!(ps.iter().all(|p| p.stream == "devices"));

    let (assets, rejects) = run(&a).await;
    assert!(rejects.is_empty(), "{rejects:?}");
    let ids: Vec<&str> = assets.iter().map(|a| a.source_id()).collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);

    let d1 = device(&assets[0]);
    assert_eq!(d1.hostname.as_deref(), Some("ws-001"));
    assert_eq!(d1.domain.as_deref(), Some("corp.example.com"));
    assert_eq!(d1.ip_addresses, ["10.0.0.1".parse::<std::net::IpAddr>().expect("ip"), "10.0.0.2".parse().expect("ip")]);
    assert_eq!(d1.mac_addresses.iter().map(|m| String::from(*m)).collect::<Vec<_>>(), ["aa:bb:cc:dd:ee:01"]);
    assert_eq!(d1.os.family.as_deref(), Some("windows"));
    assert_eq!(d1.os.version.as_deref(), Some("23H2"));
    assert_eq!(d1.serial_number.as_deref(), Some("SN-1"));
    assert!(d1.manufacturer.is_some());
    assert_eq!(d1.last_seen.map(|t| t.to_rfc3339()), Some("2024-05-01T10:00:00+00:00".into()));
    assert_eq!(d1.tags, ["prod", "eu"]);
    let raw = assets[0].raw.as_ref().expect("keep_raw");
    assert_eq!(raw["Notes"], "a, b");
    assert_eq!(raw["Host Name"], "WS-001.corp.example.com");

    let d2 = device(&assets[1]);
    assert_eq!(d2.hostname.as_deref(), Some("srv02"));
    assert_eq!(d2.ip_addresses.len(), 2, "{:?}", d2.ip_addresses);
    assert_eq!(d2.mac_addresses.iter().map(|m| String::from(*m)).collect::<Vec<_>>(), ["aa:bb:cc:dd:ee:02"]);
    assert_eq!(d2.serial_number, None);
    assert_eq!(assets[1].raw.as_ref().expect("raw")["Notes"], "multi\r\nline, with \"quotes\"");

    let d3 = device(&assets[2]);
    assert_eq!(d3.hostname.as_deref(), Some("bücher-pc"));
    assert!(d3.ip_addresses.is_empty());
    assert_eq!(
        d3.mac_addresses.iter().map(|m| String::from(*m)).collect::<Vec<_>>(),
        ["aa:bb:cc:dd:ee:03", "aa:bb:cc:dd:ee:04"]
    );
    assert_eq!(d3.last_seen, None, "an unparseable date drops the field, not the record");
    assert_eq!(d3.os.family.as_deref(), Some("macos"));

    let d4 = device(&assets[3]);
    assert_eq!(d4, &Device { source_id: "4".into(), ..Default::default() });
}

#[tokio::test]
async fn csv_pages_normalize_independently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = adapter(dir.path(), "devices.csv", DEVICES.as_bytes(), device_cfg());
    let ps = pages(&a).await.expect("fetch");
    // The second page alone (as another worker would get it) still parses with its header.
    let n = a.normalize(&ps[1]);
    assert_eq!(n.page_error, None);
    assert_eq!(n.assets.iter().map(|a| a.source_id()).collect::<Vec<_>>(), ["3", "4"]);
    assert!(ps[1].body.starts_with(b"id,Host Name,"), "no BOM, header first");
}

#[tokio::test]
async fn csv_malformed_records_are_rejected_with_their_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = b"id,name,mail\n".to_vec(); // line 1
    data.extend_from_slice(b"u1,Ann,ann@example.com\n"); // 2
    data.extend_from_slice(b"u2,\"Bob\nBobson\",bob@example.com\n"); // 3-4
    data.extend_from_slice(b"u3,too,many,fields\n"); // 5
    data.extend_from_slice(b"\n"); // 6
    data.extend_from_slice(b",nobody,x@example.com\n"); // 7
    data.extend_from_slice(b"u4,\xff\xfe,bad@example.com\n"); // 8
    data.extend_from_slice(b"u5,short\n"); // 9
    data.extend_from_slice(b"  ,Spaces,\n"); // 10
    data.extend_from_slice(b"u6,Last,last@example.com\n"); // 11
    let cfg = json!({
        "kind": "user",
        "page_records": 3,
        "columns": {"source_id": "id", "display_name": "name", "email": "mail"}
    });
    let (a, _) = adapter(dir.path(), "users.csv", &data, cfg);
    let (assets, rejects) = run(&a).await;
    assert_eq!(assets.iter().map(|a| a.source_id()).collect::<Vec<_>>(), ["u1", "u2", "u6"]);
    assert!(assets.iter().all(|a| a.stream == "users"));
    assert_eq!(user(&assets[1]).display_name.as_deref(), Some("Bob\nBobson"));
    assert_eq!(user(&assets[0]).email.as_deref(), Some("ann@example.com"));
    assert_eq!(
        reasons(&rejects),
        [
            ("line 5".to_string(), "malformed_csv".to_string()),
            ("line 7".into(), "missing_source_id".into()),
            ("line 8".into(), "invalid_utf8".into()),
            ("line 9".into(), "malformed_csv".into()),
            ("line 10".into(), "missing_source_id".into()),
        ]
    );
    assert_eq!(rejects[0].raw.as_deref(), Some("u3,too,many,fields"));
    assert!(rejects[0].detail.contains("expected 3 fields, found 4"), "{}", rejects[0].detail);
    assert_eq!(rejects[2].raw.as_deref(), Some("u4,\u{fffd}\u{fffd},bad@example.com"));
}

#[tokio::test]
async fn csv_users_fields_and_custom_delimiter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = "ID;Login;Mail;First;Last;Enabled;State;Created;LastLogon;Groups\n\
                7;jdoe;John Doe <JDoe@Example.COM>;John;Doe;yes;active;2023-01-02T03:04:05Z;1714557600;\"admins, vpn\"\n\
                8;asmith;not-an-email;Ann;Smith;maybe;;;;\n";
    let cfg = json!({
        "kind": "user",
        "format": "csv",
        "delimiter": ";",
        "columns": {
            "source_id": "id", "username": "Login", "email": "Mail", "first_name": "First", "last_name": "Last",
            "active": "Enabled", "status": "State", "created": "Created", "last_login": "LastLogon", "tags": "Groups"
        }
    });
    let (a, _) = adapter(dir.path(), "users.txt", data.as_bytes(), cfg);
    let (assets, rejects) = run(&a).await;
    assert!(rejects.is_empty(), "{rejects:?}");
    let u = user(&assets[0]);
    assert_eq!(u.source_id, "7");
    assert_eq!(u.username.as_deref(), Some("jdoe"));
    assert_eq!(u.email.as_deref(), Some("jdoe@example.com"));
    assert_eq!((u.first_name.as_deref(), u.last_name.as_deref()), (Some("John"), Some("Doe")));
    assert_eq!(u.active, Some(true));
    assert_eq!(u.status.as_deref(), Some("active"));
    assert!(u.created.is_some());
    assert!(u.last_login.is_some(), "epoch seconds");
    assert_eq!(u.tags, ["admins", "vpn"]);
    let u = user(&assets[1]);
    assert_eq!((u.email.as_deref(), u.active, u.status.as_deref()), (None, None, None));
}

#[tokio::test]
async fn csv_header_missing_a_mapped_column_fails_fetch_and_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = json!({"columns": {"source_id": "id", "hostname": "Hostname"}});
    let (a, path) = adapter(dir.path(), "d.csv", b"id,name\n1,a\n", cfg);
    let err = pages(&a).await.expect_err("missing column");
    let msg = err.to_string();
    assert!(msg.contains("`Hostname` (columns.hostname)"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    match a.check().await {
        corral_core::CheckOutcome::Unreachable { endpoint, detail } => {
            assert_eq!(endpoint, path.display().to_string());
            assert!(detail.contains("columns.hostname"), "{detail}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn csv_header_match_is_case_insensitive_when_unambiguous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = json!({"columns": {"source_id": "ID", "hostname": "hostname"}});
    let (a, _) = adapter(dir.path(), "d.csv", b" id , HostName\n1,alpha\n", cfg);
    let (assets, _) = run(&a).await;
    assert_eq!(device(&assets[0]).hostname.as_deref(), Some("alpha"));
}

/// A `DOMAIN\name` host with a DNS domain column takes the DNS domain; the
/// NetBIOS prefix is kept only when nothing better is given. Android's
/// privacy MAC is a placeholder, not an address.
#[tokio::test]
async fn csv_dns_domain_beats_a_netbios_prefix_and_android_privacy_mac_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = "id,name,domain,mac\n\
               1,CORP\\srv-1,corp.example.com,02:00:00:00:00:00\n\
               2,EU\\ws-2,CORP,020000000000\n\
               3,CORP\\ws-3,,\"02:00:00:00:00:00, 02:00:00:00:00:01\"\n\
               4,ws-4.lab.example.org,corp.example.com,\n";
    let cfg = json!({"columns": {"source_id": "id", "hostname": "name", "domain": "domain", "mac_addresses": "mac"}});
    let (a, _) = adapter(dir.path(), "hosts.csv", csv.as_bytes(), cfg);
    let (assets, rejects) = run(&a).await;
    assert!(rejects.is_empty(), "{rejects:?}");
    let got: Vec<(Option<&str>, Option<&str>, Vec<String>)> = assets
        .iter()
        .map(device)
        .map(|d| {
            (d.hostname.as_deref(), d.domain.as_deref(), d.mac_addresses.iter().map(|m| String::from(*m)).collect())
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("srv-1"), Some("corp.example.com"), vec![]),
            (Some("ws-2"), Some("eu"), vec![]),
            (Some("ws-3"), Some("corp"), vec!["02:00:00:00:00:01".to_string()]),
            (Some("ws-4"), Some("lab.example.org"), vec![]),
        ]
    );
}

/// Columns mapped to attributes by config: typed, declared on the
/// connection's stream (so `corral adapters` and `--where` know them), a
/// value of the wrong type rejects its record naming the attribute; an
/// `owner_id` column references the owner in `owner_connection`.
#[tokio::test]
async fn columns_feed_typed_attributes_and_owner_references() {
    use corral_core::{AdapterFactory, AssetKind, AssetRef, AttrType, AttrValue};
    let csv = "id,Rack,Cores,Managed,Patched,Groups,Owner\n\
               1,R-12,8,yes,2024-05-01T10:00:00Z,\"a, b\",u-1\n\
               2,,n/a,,,,\n\
               3,R-3,many,no,,,u-3\n";
    let cfg = json!({
        "owner_connection": "okta-prod",
        "columns": {"source_id": "id", "owner_id": "Owner"},
        "attributes": {
            "rack": "Rack",
            "cores": {"column": "Cores", "type": "integer", "description": "CPU cores"},
            "managed": {"column": "Managed", "type": "boolean"},
            "patched": {"column": "Patched", "type": "timestamp"},
            "groups": {"column": "Groups", "type": "string_list"},
        },
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = adapter(dir.path(), "d.csv", csv.as_bytes(), cfg.clone());
    let stream = a.info().stream("devices").expect("stream").clone();
    let declared: Vec<(&str, AttrType)> = stream.attributes.iter().map(|x| (x.name.as_str(), x.ty)).collect();
    assert_eq!(
        declared,
        [
            ("cores", AttrType::Integer),
            ("groups", AttrType::StringList),
            ("managed", AttrType::Boolean),
            ("patched", AttrType::Timestamp),
            ("rack", AttrType::String)
        ]
    );
    assert!(a.info().problems().is_empty(), "{:?}", a.info().problems());
    // The same declaration without building the connection (what `corral assets` reads).
    let mut unbuilt = cfg.clone();
    unbuilt["path"] = json!("d.csv");
    assert_eq!(corral_adapter_file::FileAdapterFactory.info_for(&unbuilt).streams, vec![stream.clone()]);

    let (assets, rejects) = run(&a).await;
    assert_eq!(reasons(&rejects), [("line 4".to_string(), "attribute_type".to_string())]);
    assert!(rejects[0].detail.contains("`cores`") && rejects[0].detail.contains("Cores"), "{}", rejects[0].detail);
    assert_eq!(assets.len(), 2);
    let attrs = &assets[0].attributes;
    assert_eq!(attrs.get("rack"), Some(&AttrValue::String("R-12".into())));
    assert_eq!(attrs.get("cores"), Some(&AttrValue::Integer(8)));
    assert_eq!(attrs.get("managed"), Some(&AttrValue::Boolean(true)));
    assert_eq!(
        attrs.get("patched"),
        corral_core::fields::timestamp("2024-05-01T10:00:00Z").map(AttrValue::Timestamp).as_ref()
    );
    assert_eq!(attrs.get("groups"), Some(&AttrValue::StringList(vec!["a".into(), "b".into()])));
    assert!(assets[1].attributes.is_empty(), "empty and n/a values are no attribute: {:?}", assets[1].attributes);
    for asset in &assets {
        assert_eq!(stream.check_attributes(asset), Ok(()));
    }
    assert_eq!(device(&assets[0]).owner_ref, Some(AssetRef::to("okta-prod", AssetKind::User, "u-1")));
    assert_eq!(device(&assets[1]).owner_ref, None);
}

/// A record the vendor still has but that is rejected this time (a value
/// of the wrong type) keeps its stored asset fresh: not marked stale (and
/// so never deleted) while a record that is really gone is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_keeps_its_stored_asset_out_of_stale() {
    use std::sync::Arc;

    use corral_core::testing::{MemoryStore, sync_once};
    use corral_core::{Adapter, RunStatus};

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = json!({
        "columns": {"source_id": "id"},
        "attributes": {"cores": {"column": "Cores", "type": "integer"}},
    });
    let (a, path) = adapter(dir.path(), "d.csv", b"id,Cores\n1,8\n2,4\n3,2\n", cfg);
    let a: Arc<dyn Adapter> = Arc::new(a);
    let store = Arc::new(MemoryStore::new());
    assert_eq!(sync_once(&store, "f", a.clone()).await.status, RunStatus::Success);
    // Device 2's cores are unreadable this time; device 3 is gone.
    std::fs::write(&path, "id,Cores\n1,8\n2,many\n").expect("rewrite");
    let s = sync_once(&store, "f", a).await;
    assert_eq!(s.status, RunStatus::Partial, "{:?}", s.errors);
    assert_eq!(s.records_rejected, 1);
    assert_eq!(s.stale_marked, 1, "only the device that is gone: {s:?}");
    let stale: Vec<String> =
        store.all_assets().into_iter().filter(|a| a.stale_since.is_some()).map(|a| a.source_id).collect();
    assert_eq!(stale, ["3"]);
}
