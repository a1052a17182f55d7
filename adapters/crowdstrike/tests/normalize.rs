//! `normalize` on fixture pages: messy MACs, placeholder serials, DOMAIN\host,
//! missing fields, records without a key, vendor errors, broken pages.

use std::net::IpAddr;

use bytes::Bytes;
use corral_adapter_crowdstrike::CrowdStrikeFactory;
use corral_core::fields::MacAddr;
use corral_core::{Adapter, AdapterFactory, AssetBody, Device, NormalizedPage, RawPage};
use serde_json::{Value, json};

const PAGE: &str = include_str!("fixtures/hosts_page.json");
const LOCATOR: &str = "details batch 0 (listing positions 0..11)";

fn adapter(keep_raw: bool) -> std::sync::Arc<dyn Adapter> {
    let cfg = json!({"client_id": "cid", "client_secret": "secret-value", "keep_raw": keep_raw});
    CrowdStrikeFactory.build("falcon", cfg).expect("valid config")
}

fn normalize(body: impl Into<Bytes>) -> NormalizedPage {
    adapter(false).normalize(&RawPage::new("hosts", body.into(), LOCATOR))
}

fn devices(page: &NormalizedPage) -> Vec<&Device> {
    page.assets
        .iter()
        .map(|a| match &a.body {
            AssetBody::Device(d) => d,
            _ => panic!("hosts produce devices"),
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("test literal")
}

use corral_core::fields::timestamp as ts;

#[test]
fn fixture_page_maps_every_field() {
    let page = normalize(PAGE);
    assert_eq!(page.page_error, None);
    let d = devices(&page);
    assert_eq!(d.len(), 6, "{:#?}", page.rejects);
    assert!(page.assets.iter().all(|a| a.stream == "hosts" && a.raw.is_none()));

    // A complete Windows host.
    let w = d[0];
    assert_eq!(w.source_id, "0a1b2c3d4e5f60718293a4b5c6d7e8f9");
    assert_eq!(w.hostname.as_deref(), Some("ws-00001"));
    assert_eq!(w.domain.as_deref(), Some("corp.example.com"));
    assert_eq!(w.ip_addresses, vec![ip("10.1.2.3"), ip("203.0.113.7")]);
    assert_eq!(w.mac_addresses, vec![mac("a4:bb:6d:01:02:03")]);
    assert_eq!(w.serial_number.as_deref(), Some("5CG1234ABC"));
    assert_eq!(w.os.family.as_deref(), Some("windows"));
    assert_eq!(w.os.name.as_deref(), Some("Windows"));
    assert_eq!(w.os.version.as_deref(), Some("Windows 11"));
    assert_eq!(w.manufacturer.as_deref(), Some("HP"));
    assert_eq!(w.model.as_deref(), Some("HP EliteBook 840 G8"));
    assert!(w.first_seen.is_some());
    assert_eq!(w.first_seen, ts("2023-03-01T08:00:00Z"));
    assert_eq!(w.last_seen, ts("2024-06-01T12:34:56Z"));
    assert_eq!(w.owner.as_deref(), Some("CORP\\user0001"));
    assert_eq!(w.tags, vec!["SensorGroupingTags/prod", "FalconGroupingTags/pci"]);

    // DOMAIN\host with machine_domain: the DNS domain wins over the NetBIOS
    // prefix; upper-case dashed MAC; OEM placeholders dropped.
    let n = d[1];
    assert_eq!(n.hostname.as_deref(), Some("ws-00042"));
    assert_eq!(n.domain.as_deref(), Some("corp.example.com"));
    assert_eq!(n.mac_addresses, vec![mac("f8:75:a4:aa:bb:cc")]);
    assert_eq!(n.serial_number, None);
    assert_eq!(n.manufacturer, None);
    assert_eq!(n.model, None);
    assert_eq!(n.os.family.as_deref(), Some("windows"));

    // macOS: `.local` is no domain, Cisco-dotted MAC, padded serial trimmed,
    // placeholder addresses and a blank user dropped.
    let m = d[2];
    assert_eq!(m.hostname.as_deref(), Some("johns-macbook-pro"));
    assert_eq!(m.domain, None);
    assert_eq!(m.mac_addresses, vec![mac("3c:22:fb:00:11:22")]);
    assert_eq!(m.serial_number.as_deref(), Some("c02abc123xyz"));
    assert!(m.ip_addresses.is_empty());
    assert_eq!(m.owner, None);
    assert_eq!(m.os.family.as_deref(), Some("macos"));

    // Upper-case FQDN, all-zero MAC, serial "0", unreadable timestamps.
    let l = d[3];
    assert_eq!(l.hostname.as_deref(), Some("lnx-00004"));
    assert_eq!(l.domain.as_deref(), Some("eu.example.net"));
    assert!(l.mac_addresses.is_empty());
    assert_eq!(l.serial_number, None);
    assert_eq!(l.first_seen, None);
    assert_eq!(l.last_seen, None);
    assert_eq!(l.os.family.as_deref(), Some("linux"));

    // Nothing but the id.
    assert_eq!(*d[4], Device { source_id: "4e5f60718293a4b5c6d7e8f90a1b2c3d".into(), ..Default::default() });

    // Wrong types are read leniently: a number as text, structures ignored,
    // a single tag string as one tag.
    let odd = d[5];
    assert_eq!(odd.source_id, "5f60718293a4b5c6d7e8f90a1b2c3d4e");
    assert_eq!(odd.hostname.as_deref(), Some("12345"));
    assert!(odd.mac_addresses.is_empty());
    assert_eq!(odd.serial_number, None);
    assert_eq!(odd.tags, vec!["FalconGroupingTags/dev"]);
}

#[test]
fn fixture_page_rejects_name_the_record_and_keep_its_raw_input() {
    let page = normalize(PAGE);
    let got: Vec<(&str, &str)> = page.rejects.iter().map(|r| (r.record.as_str(), r.reason.as_str())).collect();
    let vendor = format!("id 718293a4b5c6d7e8f90a1b2c3d4e5f60 of {LOCATOR}");
    let r5 = format!("resource 5 of {LOCATOR}");
    let r6 = format!("resource 6 of {LOCATOR}");
    let r7 = format!("resource 7 of {LOCATOR}");
    assert_eq!(
        got,
        vec![
            (vendor.as_str(), "vendor_error"),
            (r5.as_str(), "missing_key"),
            (r6.as_str(), "missing_key"),
            (r7.as_str(), "malformed_record"),
        ]
    );
    let raw = |i: usize| page.rejects[i].raw.as_deref().unwrap_or_default();
    assert!(page.rejects[0].detail.contains("500"), "{:?}", page.rejects[0]);
    assert!(raw(1).contains("NO-ID-HOST"), "{}", raw(1));
    assert!(raw(2).contains("BLANK-ID"), "{}", raw(2));
    assert_eq!(raw(3), "\"not a host\"");
    // The 404 for a host removed since the listing is churn, not a reject.
    assert!(!page.rejects.iter().any(|r| r.record.contains("60718293a4b5c6d7e8f90a1b2c3d4e5f")));
}

#[test]
fn keep_raw_keeps_the_record_as_received() {
    let page = adapter(true).normalize(&RawPage::new("hosts", Bytes::from(PAGE), LOCATOR));
    let first: Value = serde_json::from_str::<Value>(PAGE).expect("fixture")["resources"][0].clone();
    assert_eq!(page.assets[0].raw.as_ref(), Some(&first));
    assert!(page.assets.iter().all(|a| a.raw.is_some()));
}

#[test]
fn undecodable_pages_fail_as_a_whole() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("html", b"<!DOCTYPE html><html><body>Service Unavailable</body></html>".to_vec()),
        ("truncated", PAGE.as_bytes()[..PAGE.len() / 2].to_vec()),
        ("trailing document", format!("{PAGE}\n{{\"meta\":{{").into_bytes()),
        ("spliced garbage", {
            let mut b = PAGE.as_bytes()[..100].to_vec();
            b.extend_from_slice(b"{\"corrupted\": NaN,,}");
            b.extend_from_slice(&PAGE.as_bytes()[100..]);
            b
        }),
        ("empty body", Vec::new()),
        ("array", b"[]".to_vec()),
        ("no resources", b"{\"meta\":{},\"errors\":[]}".to_vec()),
        ("resources not an array", b"{\"resources\":{}}".to_vec()),
    ];
    for (what, body) in cases {
        let page = normalize(body);
        assert!(page.page_error.is_some(), "{what}: {page:?}");
        assert!(page.assets.is_empty(), "{what}");
    }
    let page = normalize(&PAGE.as_bytes()[..PAGE.len() - 10]);
    assert!(page.page_error.as_deref().is_some_and(|e| e.starts_with("truncated JSON")), "{page:?}");
}

#[test]
fn call_level_vendor_errors_taint_the_page_but_keep_its_hosts() {
    let body = json!({
        "meta": {},
        "resources": [{"device_id": "abc"}],
        "errors": [{"code": 500, "message": "partial results: a shard timed out"}],
    });
    let page = normalize(serde_json::to_vec(&body).expect("json"));
    assert_eq!(page.assets.len(), 1);
    assert!(page.page_error.as_deref().is_some_and(|e| e.contains("shard timed out")), "{page:?}");

    // The envelope of a 404 for a batch whose hosts are all gone: nothing, no error.
    let gone = json!({
        "meta": {},
        "resources": [],
        "errors": [{"code": 404, "id": "abc", "message": "device abc not found"}],
    });
    let page = normalize(serde_json::to_vec(&gone).expect("json"));
    assert!(page.assets.is_empty() && page.rejects.is_empty() && page.page_error.is_none(), "{page:?}");
}

/// A page the simulator serves: every host becomes a device, nothing rejected,
/// and the fields are the shared normalizers' reading of the vendor values.
#[test]
fn simulator_hosts_normalize_cleanly() {
    let hosts = corral_sim::crowdstrike_hosts(99, 500, 0);
    let body = json!({"meta": {}, "resources": hosts, "errors": []});
    let page = normalize(serde_json::to_vec(&body).expect("json"));
    assert_eq!(page.page_error, None);
    assert!(page.rejects.is_empty(), "{:?}", page.rejects);
    let d = devices(&page);
    assert_eq!(d.len(), 500);
    for (dev, host) in d.iter().zip(&hosts) {
        let s = |k: &str| host.get(k).and_then(Value::as_str);
        assert_eq!(Some(dev.source_id.as_str()), s("device_id"));
        let name = corral_core::fields::hostname_with_domain(s("hostname").unwrap_or(""), s("machine_domain"));
        assert_eq!(dev.hostname, name.hostname);
        assert_eq!(dev.domain, name.domain);
        assert_eq!(dev.mac_addresses, corral_core::fields::macs(s("mac_address")));
        assert_eq!(dev.serial_number, s("serial_number").and_then(corral_core::fields::serial));
        assert_eq!(dev.ip_addresses, corral_core::fields::ips(s("local_ip").into_iter().chain(s("external_ip"))));
        assert!(dev.os.family.is_some());
        assert!(dev.last_seen.is_some() && dev.first_seen.is_some());
    }
    // The dataset's mess is really there, and cleaned.
    assert!(d.iter().any(|x| x.mac_addresses.is_empty()));
    assert!(d.iter().any(|x| x.serial_number.is_none()));
    assert!(d.iter().any(|x| x.domain.as_deref() == Some("corp")));
    assert!(d.iter().all(|x| x.hostname.as_deref().is_none_or(|h| h == h.to_lowercase())));
}

/// Every prefix of a page and a spread of single-byte corruptions: normalize
/// never panics and never invents hosts from a broken page.
#[test]
fn never_panics_on_cut_or_corrupted_pages() {
    let a = adapter(true);
    let bytes = PAGE.trim_end().as_bytes();
    for cut in 0..bytes.len() {
        let page = a.normalize(&RawPage::new("hosts", Bytes::copy_from_slice(&bytes[..cut]), LOCATOR));
        assert!(page.page_error.is_some() && page.assets.is_empty(), "cut at {cut}");
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = bytes.to_vec();
        let at = (x % b.len() as u64) as usize;
        b[at] = (x >> 32) as u8;
        let _ = a.normalize(&RawPage::new("hosts", Bytes::from(b), LOCATOR));
    }
}

/// Hosts carry the attributes the stream declares, of their declared types;
/// the declaration itself is well-formed.
#[test]
fn hosts_carry_declared_attributes() {
    let info = CrowdStrikeFactory.info();
    assert!(info.problems().is_empty(), "{:?}", info.problems());
    let page = normalize(PAGE);
    let stream = info.stream("hosts").expect("hosts stream");
    for a in &page.assets {
        assert_eq!(stream.check_attributes(a), Ok(()), "{a:?}");
    }
    let first = &page.assets[0].attributes;
    assert_eq!(first.get("agent_version"), Some(&corral_core::AttrValue::String("7.14.17001.0".into())));
    assert_eq!(first.get("status"), Some(&corral_core::AttrValue::String("normal".into())));
    assert_eq!(first.get("cid"), Some(&corral_core::AttrValue::String("ffffffffffffffffffffffffffffffff".into())));
    assert_eq!(first.get("platform"), Some(&corral_core::AttrValue::String("Windows".into())));
    let host = json!({"resources": [{"device_id": "c1", "instance_id": "i-0abc", "groups": ["g1", "g2"], "product_type_desc": "Server"}]});
    let page = normalize(host.to_string());
    let a = &page.assets[0];
    let AssetBody::Device(d) = &a.body else { panic!("a device") };
    assert_eq!(d.cloud_instance_id.as_deref(), Some("i-0abc"));
    assert_eq!(a.attributes.get("groups"), Some(&corral_core::AttrValue::StringList(vec!["g1".into(), "g2".into()])));
    assert_eq!(a.attributes.get("product_type"), Some(&corral_core::AttrValue::String("Server".into())));
    assert_eq!(stream.check_attributes(a), Ok(()));
}
