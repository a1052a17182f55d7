//! Decoding export chunks (JSON arrays) into devices, software and
//! vulnerabilities. Runs on the normalize pool, never on the runtime.
//!
//! A chunk is decoded in two steps so one bad record never costs the chunk:
//! the array with each record kept as raw JSON, then each record on its own.
//! A record that cannot be read is a reject (with its id when it has one, so
//! its stored asset stays fresh); a chunk that is not a JSON array fails the
//! page (its stream then gets no stale handling).

use corral_core::fields::{self, SeverityScale};
use corral_core::{Asset, AssetKind, AssetRef, Device, NormalizedPage, RawPage, Reject, Software, Vulnerability};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{ASSETS, SOFTWARE, VULNERABILITIES};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Tag {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Source {
    name: Option<String>,
}

/// An asset of the asset export: nearly every identifier is an array.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AssetRec {
    id: Option<String>,
    agent_uuid: Option<String>,
    has_agent: Option<bool>,
    hostnames: Option<Vec<String>>,
    fqdns: Option<Vec<String>>,
    netbios_names: Option<Vec<String>>,
    ipv4s: Option<Vec<String>>,
    ipv6s: Option<Vec<String>>,
    mac_addresses: Option<Vec<String>>,
    operating_systems: Option<Vec<String>>,
    system_types: Option<Vec<String>>,
    serial_number: Option<String>,
    aws_ec2_instance_id: Option<String>,
    azure_vm_id: Option<String>,
    first_seen: Option<String>,
    last_seen: Option<String>,
    updated_at: Option<String>,
    terminated_at: Option<String>,
    sources: Option<Vec<Source>>,
    tags: Option<Vec<Tag>>,
    installed_software: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FindingAsset {
    uuid: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vpr {
    score: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Plugin {
    id: Option<Value>,
    name: Option<String>,
    family: Option<String>,
    cve: Option<Vec<String>>,
    cvss3_base_score: Option<f64>,
    cvss_base_score: Option<f64>,
    vpr: Option<Vpr>,
    solution: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Port {
    port: Option<Value>,
    protocol: Option<String>,
    service: Option<String>,
}

/// A finding of the vulnerability export (`output`, often tens of KB, is skipped).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Finding {
    finding_id: Option<String>,
    asset: Option<FindingAsset>,
    plugin: Option<Plugin>,
    port: Option<Port>,
    severity: Option<String>,
    severity_id: Option<Value>,
    state: Option<String>,
    first_found: Option<String>,
    last_found: Option<String>,
    last_fixed: Option<String>,
}

/// Normalize one chunk of `page.stream`. Never panics.
pub fn page(page: &RawPage, keep_raw: bool) -> NormalizedPage {
    let records: Vec<&RawValue> = match serde_json::from_slice(&page.body) {
        Ok(r) => r,
        Err(e) => {
            return NormalizedPage::page_failed(format!("{}: not a JSON array of records: {e}", page.locator));
        }
    };
    let mut out = NormalizedPage::default();
    for (i, raw) in records.into_iter().enumerate() {
        let at = || format!("record {i} of {}", page.locator);
        let raw_value = || if keep_raw { serde_json::from_str::<Value>(raw.get()).ok() } else { None };
        match page.stream.as_str() {
            ASSETS | SOFTWARE => {
                let rec: AssetRec = match serde_json::from_str(raw.get()) {
                    Ok(r) => r,
                    Err(e) => {
                        out.rejects.push(unreadable(at(), raw, &e, &["id"]));
                        continue;
                    }
                };
                let Some(id) = rec.id.as_deref().and_then(fields::text) else {
                    out.rejects
                        .push(Reject::new(at(), "missing_key", "the asset has no `id`").with_raw(raw.get().as_bytes()));
                    continue;
                };
                if page.stream == ASSETS {
                    out.assets.push(device(&page.stream, id, &rec).with_raw(raw_value()));
                } else {
                    software(&page.stream, &id, &rec, &mut out);
                }
            }
            VULNERABILITIES => {
                let f: Finding = match serde_json::from_str(raw.get()) {
                    Ok(r) => r,
                    Err(e) => {
                        out.rejects.push(unreadable(at(), raw, &e, &["finding_id"]));
                        continue;
                    }
                };
                match vulnerability(&page.stream, &f) {
                    Ok(a) => out.assets.push(a.with_raw(raw_value())),
                    Err(why) => out.rejects.push(Reject::new(at(), "missing_key", why).with_raw(raw.get().as_bytes())),
                }
            }
            other => return NormalizedPage::page_failed(format!("no stream `{other}` in the tenable adapter")),
        }
    }
    out
}

/// A record whose fields could not be read; its id, if it can be found, keeps it fresh.
fn unreadable(at: String, raw: &RawValue, e: &serde_json::Error, id_path: &[&str]) -> Reject {
    let reject = Reject::new(at, "malformed_record", format!("unreadable record: {e}")).with_raw(raw.get().as_bytes());
    match corral_http::extract_json_string(raw.get().as_bytes(), id_path) {
        Some(id) => reject.with_key(id),
        None => reject,
    }
}

fn list(v: &Option<Vec<String>>) -> impl Iterator<Item = &str> {
    v.iter().flatten().map(String::as_str)
}

fn texts(v: &Option<Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in list(v).filter_map(fields::text) {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn time(s: &Option<String>) -> Option<chrono::DateTime<chrono::Utc>> {
    s.as_deref().and_then(fields::timestamp)
}

fn device(stream: &str, id: String, rec: &AssetRec) -> Asset {
    // The first hostname; else the host label of the first FQDN; else the NetBIOS name.
    let fqdn = list(&rec.fqdns).find_map(fields::text);
    let named = list(&rec.hostnames)
        .chain(fqdn.as_deref())
        .chain(list(&rec.netbios_names))
        .map(|n| fields::hostname_with_domain(n, None))
        .find(|h| h.hostname.is_some())
        .unwrap_or_default();
    let domain = fqdn.as_deref().map(fields::hostname).and_then(|h| h.domain).or(named.domain);
    let ips = fields::ips(list(&rec.ipv4s).chain(list(&rec.ipv6s)));
    let os_name = list(&rec.operating_systems).find_map(fields::text);
    let tags: Vec<String> = rec
        .tags
        .iter()
        .flatten()
        .filter_map(|t| match (t.key.as_deref(), t.value.as_deref()) {
            (Some(k), Some(v)) => Some(format!("{}:{}", k.trim(), v.trim())),
            (Some(k), None) => Some(k.trim().to_string()),
            _ => None,
        })
        .collect();
    let sources: Vec<String> = {
        let mut s: Vec<String> = Vec::new();
        for n in rec.sources.iter().flatten().filter_map(|s| s.name.as_deref().and_then(fields::text)) {
            if !s.contains(&n) {
                s.push(n);
            }
        }
        s
    };
    let cloud = rec.aws_ec2_instance_id.as_deref().and_then(fields::text);
    let azure = rec.azure_vm_id.as_deref().and_then(fields::text);
    let agent = rec.agent_uuid.as_deref().and_then(fields::text);
    Asset::device(
        stream,
        Device {
            source_id: id,
            hostname: named.hostname,
            domain,
            ip_addresses: ips,
            mac_addresses: fields::macs(list(&rec.mac_addresses)),
            serial_number: rec.serial_number.as_deref().and_then(fields::serial),
            os: fields::os(os_name.as_deref(), None),
            first_seen: time(&rec.first_seen),
            last_seen: time(&rec.last_seen),
            cloud_instance_id: cloud.or(azure.clone()),
            tags: fields::tags(tags.iter().map(String::as_str)),
            ..Default::default()
        },
    )
    .with_attr_opt("agent_uuid", agent)
    .with_attr_opt("has_agent", rec.has_agent)
    .with_attr("fqdns", texts(&rec.fqdns))
    .with_attr("netbios_names", texts(&rec.netbios_names))
    .with_attr("system_types", texts(&rec.system_types))
    .with_attr("sources", sources)
    .with_attr_opt("azure_vm_id", azure)
    .with_attr_opt("updated_at", time(&rec.updated_at))
    .with_attr_opt("terminated_at", time(&rec.terminated_at))
}

/// One software record per distinct CPE of the asset's `installed_software`.
fn software(stream: &str, asset_id: &str, rec: &AssetRec, out: &mut NormalizedPage) {
    let mut seen: Vec<String> = Vec::new();
    for (k, raw) in list(&rec.installed_software).enumerate() {
        let Some(text) = fields::text(raw) else { continue };
        let parsed = fields::cpe(&text);
        let cpe = parsed.as_ref().map_or_else(|| text.to_lowercase(), |c| c.formatted.clone());
        if seen.contains(&cpe) {
            continue;
        }
        let source_id = format!("{asset_id}|{cpe}");
        let Some(c) = parsed else {
            out.rejects.push(
                Reject::new(
                    format!("installed_software {k} of asset {asset_id}"),
                    "bad_cpe",
                    "not a CPE name (cpe:/ or cpe:2.3:)",
                )
                .with_raw(raw.as_bytes())
                .with_key(source_id),
            );
            seen.push(cpe);
            continue;
        };
        seen.push(cpe.clone());
        out.assets.push(Asset::software(
            stream,
            Software {
                source_id,
                device: Some(AssetRef::local(AssetKind::Device, asset_id)),
                name: c.product.clone(),
                vendor: c.vendor.clone(),
                version: c.version.clone(),
                cpe: Some(cpe),
                last_seen: time(&rec.last_seen),
                ..Default::default()
            },
        ));
    }
}

fn scalar_text(v: &Option<Value>) -> Option<String> {
    match v.as_ref()? {
        Value::String(s) => fields::text(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn vulnerability(stream: &str, f: &Finding) -> Result<Asset, String> {
    let asset_id = f.asset.as_ref().and_then(|a| a.uuid.as_deref()).and_then(fields::text);
    let plugin = f.plugin.as_ref();
    let plugin_id = plugin.and_then(|p| scalar_text(&p.id));
    let port_rec = f.port.as_ref();
    let port = port_rec.and_then(|p| match p.port.as_ref()? {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<u16>().ok(),
        _ => None,
    });
    let protocol = port_rec.and_then(|p| p.protocol.as_deref()).and_then(fields::text).map(|p| p.to_lowercase());
    let source_id = match f.finding_id.as_deref().and_then(fields::text) {
        Some(id) => id,
        None => match (&asset_id, &plugin_id) {
            (Some(a), Some(p)) => {
                format!("{a}:{p}:{}:{}", port.unwrap_or(0), protocol.as_deref().unwrap_or("-"))
            }
            _ => return Err("the finding has no `finding_id`, and no asset uuid and plugin id to make one".into()),
        },
    };
    let severity = f
        .severity_id
        .as_ref()
        .and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        })
        .and_then(|n| fields::severity_scaled(n, SeverityScale::ZeroToFour))
        .or_else(|| f.severity.as_deref().and_then(fields::severity));
    let cves = fields::cves(plugin.map(|p| list(&p.cve)).into_iter().flatten());
    let state = f.state.as_deref().and_then(fields::finding_state);
    Ok(Asset::vulnerability(
        stream,
        Vulnerability {
            source_id,
            asset: asset_id.map(|a| AssetRef::local(AssetKind::Device, a)),
            cves,
            plugin_id,
            title: plugin.and_then(|p| p.name.as_deref()).and_then(fields::text),
            severity,
            cvss3_score: plugin.and_then(|p| p.cvss3_base_score).and_then(fields::cvss_score),
            vendor_score: plugin.and_then(|p| p.vpr.as_ref()).and_then(|v| v.score).and_then(fields::score),
            state,
            first_found: time(&f.first_found),
            last_found: time(&f.last_found),
            port,
            protocol,
            solution: plugin.and_then(|p| p.solution.as_deref()).and_then(fields::text),
        },
    )
    .with_attr_opt("plugin_family", plugin.and_then(|p| p.family.as_deref()).and_then(fields::text))
    .with_attr_opt("cvss2_base_score", plugin.and_then(|p| p.cvss_base_score).and_then(fields::cvss_score))
    .with_attr_opt("service", port_rec.and_then(|p| p.service.as_deref()).and_then(fields::text))
    .with_attr_opt("last_fixed", time(&f.last_fixed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use corral_core::{AssetBody, FindingState, Severity};

    fn raw(stream: &str, body: &str) -> RawPage {
        RawPage::new(stream, Bytes::from(body.to_string()), "chunk 1")
    }

    const ASSET: &str = r#"[{"id":"0b1e0e6c-1111-4222-8333-444455556666","agent_uuid":"abc123","has_agent":true,
        "hostnames":["HOST-1"],"fqdns":["host-1.corp.example.com"],"netbios_names":["HOST-1"],
        "ipv4s":["10.0.0.5"],"ipv6s":["fe80::1"],"mac_addresses":["00:50:56:AB:CD:EF"],
        "operating_systems":["Microsoft Windows Server 2019"],"system_types":["general-purpose"],
        "serial_number":"VMware-42 1a","aws_ec2_instance_id":null,"first_seen":"2025-01-01T00:00:00.000Z",
        "last_seen":"2025-05-30T10:00:00.000Z","sources":[{"name":"NESSUS_AGENT"}],
        "tags":[{"key":"Location","value":"HQ"}],
        "installed_software":["cpe:/a:google:chrome:126.0","cpe:/a:google:chrome:126.0","not a cpe"]},
        {"hostnames":["no-id"]}, {"id": 7, "hostnames": "oops"}]"#;

    #[test]
    fn assets_become_devices_and_bad_records_rejects() {
        let out = page(&raw(ASSETS, ASSET), false);
        assert!(out.page_error.is_none());
        assert_eq!(out.assets.len(), 1);
        let a = &out.assets[0];
        let AssetBody::Device(d) = &a.body else { panic!("a device") };
        assert_eq!(d.source_id, "0b1e0e6c-1111-4222-8333-444455556666");
        assert_eq!(d.hostname.as_deref(), Some("host-1"));
        assert_eq!(d.domain.as_deref(), Some("corp.example.com"));
        assert_eq!(d.ip_addresses.len(), 2);
        assert_eq!(d.mac_addresses.len(), 1);
        assert_eq!(d.os.family.as_deref(), Some("windows"));
        assert!(d.last_seen.is_some() && d.serial_number.is_some());
        assert_eq!(d.tags, ["Location:HQ"]);
        assert_eq!(a.attributes.get("agent_uuid"), Some(&corral_core::AttrValue::from("abc123")));
        assert_eq!(out.rejects.len(), 2, "{:?}", out.rejects);
        assert_eq!(out.rejects[0].reason, "missing_key");
        assert_eq!(out.rejects[1].reason, "malformed_record");
    }

    #[test]
    fn software_is_one_record_per_distinct_cpe_referencing_its_device() {
        let out = page(&raw(SOFTWARE, ASSET), false);
        assert_eq!(out.assets.len(), 1, "the duplicate CPE once");
        let AssetBody::Software(s) = &out.assets[0].body else { panic!("software") };
        assert_eq!(s.vendor.as_deref(), Some("google"));
        assert_eq!(s.name.as_deref(), Some("chrome"));
        assert_eq!(s.version.as_deref(), Some("126.0"));
        assert!(s.source_id.starts_with("0b1e0e6c-1111-4222-8333-444455556666|cpe:2.3:a:google:chrome:126.0"));
        let d = s.device.as_ref().expect("device ref");
        assert_eq!(
            (d.kind, d.source_id.as_str(), d.connection.as_deref()),
            (AssetKind::Device, "0b1e0e6c-1111-4222-8333-444455556666", None)
        );
        assert!(out.rejects.iter().any(|r| r.reason == "bad_cpe" && r.key.is_some()));
    }

    #[test]
    fn findings_keep_ids_scores_state_and_their_asset() {
        let body = r#"[{"finding_id":"f-1","asset":{"uuid":"a-1"},"plugin":{"id":156860,"name":"Log4j",
            "family":"Misc.","cve":["cve-2021-44228"],"cvss3_base_score":10.0,"cvss_base_score":9.3,
            "vpr":{"score":9.9},"solution":"Upgrade."},"port":{"port":8080,"protocol":"TCP","service":"www"},
            "severity":"critical","severity_id":4,"state":"REOPENED","first_found":"2025-01-01T00:00:00Z",
            "last_found":"2025-05-01T00:00:00Z","output":"long"},
            {"asset":{"uuid":"a-2"},"plugin":{"id":"19506"},"port":{"port":0,"protocol":"TCP"},"severity":"info","state":"FIXED"},
            {"plugin":{"id":1}}]"#;
        let out = page(&raw(VULNERABILITIES, body), false);
        assert_eq!(out.assets.len(), 2);
        let AssetBody::Vulnerability(v) = &out.assets[0].body else { panic!("vuln") };
        assert_eq!(v.source_id, "f-1");
        assert_eq!(v.asset.as_ref().map(|r| r.source_id.as_str()), Some("a-1"));
        assert_eq!(v.cves, ["CVE-2021-44228"]);
        assert_eq!(v.plugin_id.as_deref(), Some("156860"));
        assert_eq!(v.severity, Some(Severity::Critical));
        assert_eq!((v.cvss3_score, v.vendor_score), (Some(10.0), Some(9.9)));
        assert_eq!(v.state, Some(FindingState::Reopened));
        assert_eq!((v.port, v.protocol.as_deref()), (Some(8080), Some("tcp")));
        let AssetBody::Vulnerability(w) = &out.assets[1].body else { panic!("vuln") };
        assert_eq!(w.source_id, "a-2:19506:0:tcp", "asset + plugin + port + protocol without a finding id");
        assert_eq!(w.state, Some(FindingState::Fixed));
        assert_eq!(out.rejects.len(), 1);
    }

    #[test]
    fn a_chunk_that_is_not_an_array_fails_the_page() {
        for body in ["<html>", "{\"a\":1}", "[{\"id\":\"x\"}"] {
            assert!(page(&raw(ASSETS, body), false).page_error.is_some(), "{body}");
        }
    }
}
