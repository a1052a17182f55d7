//! Decoding pages of `<HOST>` elements into devices and vulnerabilities. Runs
//! on the normalize pool, never on the runtime.
//!
//! A page is a slice of one answer holding whole `<HOST>` elements
//! ([`crate::frame`]). Each host is read on its own with quick-xml's
//! streaming reader (events borrowed from the page, no document tree), so one
//! broken host never costs the others:
//! - a host whose XML is malformed or cut short: on the `hosts` stream, a
//!   `malformed_xml` reject keyed by its ID when the ID could be read (its
//!   stored device stays fresh); otherwise, and always on the `detections`
//!   stream (its detections' keys are unknown), the page is marked failed,
//!   naming the host, so the stream is not stale-handled. The page's other
//!   hosts are stored either way.
//! - a well-formed host or detection that cannot be used (no ID, no QID) is a
//!   reject naming the record.

use corral_core::fields::{self, SeverityScale};
use corral_core::{Asset, AssetKind, AssetRef, Device, NormalizedPage, RawPage, Reject, Vulnerability};
use quick_xml::Reader;
use quick_xml::events::{BytesRef, Event};

use crate::frame::host_spans;
use crate::{DETECTIONS, HOSTS};

/// What normalize needs from the config.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub results_max_chars: usize,
}

/// One host's leaf values (`HOST/X` and `HOST/DNS_DATA/X`) and its detections.
#[derive(Debug, Default)]
struct HostRec {
    fields: Vec<(String, String)>,
    detections: Vec<DetectionRec>,
}

#[derive(Debug, Default)]
struct DetectionRec {
    fields: Vec<(String, String)>,
    results_truncated: bool,
}

fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
}

/// `&amp;`-style entities quick-xml hands over as references.
pub(crate) fn named_entity(r: &BytesRef<'_>) -> Option<char> {
    match &**r {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

/// Why a host could not be read, and its ID when it came before the fault.
struct Broken {
    id: Option<String>,
    detail: String,
}

/// Read one `<HOST>` element. `with_detections` false skips detection content.
fn read_host(xml: &[u8], with_detections: bool, opts: Options) -> Result<HostRec, Broken> {
    let mut reader = Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut rec = HostRec::default();
    let mut text = String::new();
    let broken = |rec: &HostRec, detail: String| Broken { id: get(&rec.fields, "ID").map(str::to_string), detail };
    loop {
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                let at = reader.error_position();
                return Err(broken(&rec, format!("malformed XML at byte {at} of the host: {e}")));
            }
        };
        match ev {
            Event::Start(e) => {
                let name = e.name().as_ref().to_string();
                if path.is_empty() && name != "HOST" {
                    return Err(broken(&rec, format!("expected <HOST>, found <{name}>")));
                }
                if path.len() == 1 && name == "HOST" {
                    return Err(broken(&rec, "a <HOST> inside a host: the host before it was cut short".into()));
                }
                path.push(name);
                text.clear();
                if with_detections && path.len() == 3 && path[1] == "DETECTION_LIST" && path[2] == "DETECTION" {
                    rec.detections.push(DetectionRec::default());
                }
            }
            Event::End(_) => {
                let leaf = path.pop().unwrap_or_default();
                let value = std::mem::take(&mut text);
                match path.len() {
                    0 => {
                        return match check_rest(&mut reader) {
                            Ok(()) => Ok(rec),
                            Err(d) => Err(broken_ok(d, &rec)),
                        };
                    }
                    1 => rec.fields.push((leaf, value)),
                    2 if path[1] == "DNS_DATA" => rec.fields.push((format!("DNS_DATA.{leaf}"), value)),
                    3 if with_detections && path[2] == "DETECTION" => {
                        if let Some(d) = rec.detections.last_mut() {
                            d.fields.push((leaf, value));
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => push_text(&mut text, &path, &t, opts, &mut rec),
            Event::CData(t) => push_text(&mut text, &path, &t, opts, &mut rec),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => named_entity(&r),
                    Err(e) => return Err(broken(&rec, format!("malformed XML: {e}"))),
                };
                match c {
                    Some(c) => push_text(&mut text, &path, c.encode_utf8(&mut [0; 4]), opts, &mut rec),
                    None => return Err(broken(&rec, format!("malformed XML: unknown entity &{};", &*r))),
                }
            }
            Event::Empty(e) if path.is_empty() => {
                return Err(broken(&rec, format!("expected <HOST>, found <{}/>", e.name().as_ref())));
            }
            Event::Eof => {
                let detail = if path.is_empty() {
                    "no <HOST> element".to_string()
                } else {
                    format!("the host was cut short inside <{}>", path.join("/"))
                };
                return Err(broken(&rec, detail));
            }
            _ => {}
        }
    }
}

fn broken_ok(detail: String, rec: &HostRec) -> Broken {
    Broken { id: get(&rec.fields, "ID").map(str::to_string), detail }
}

/// After `</HOST>` only whitespace may follow in a host's slice.
fn check_rest(reader: &mut Reader<&[u8]>) -> Result<(), String> {
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => return Ok(()),
            Ok(Event::Text(t)) if t.trim().is_empty() => {}
            Ok(Event::Comment(_)) => {}
            Ok(other) => return Err(format!("unexpected content after </HOST>: {other:?}")),
            Err(e) => return Err(format!("malformed XML after </HOST>: {e}")),
        }
    }
}

/// Append text to the current leaf; RESULTS are kept to `results_max_chars`.
fn push_text(text: &mut String, path: &[String], piece: &str, opts: Options, rec: &mut HostRec) {
    if path.last().is_some_and(|l| l == "RESULTS") {
        let room = opts.results_max_chars.saturating_sub(text.chars().count());
        let mut chars = piece.chars();
        text.extend(chars.by_ref().take(room));
        if chars.next().is_some()
            && let Some(d) = rec.detections.last_mut()
        {
            d.results_truncated = true;
        }
        return;
    }
    text.push_str(piece);
}

/// Decode one page of either stream.
pub fn page(page: &RawPage, opts: Options) -> NormalizedPage {
    let detections = page.stream == DETECTIONS;
    if !detections && page.stream != HOSTS {
        return NormalizedPage::page_failed(format!("unknown stream `{}`", page.stream));
    }
    let mut out = NormalizedPage::default();
    let (spans, _) = host_spans(&page.body);
    if spans.is_empty() && !page.body.iter().all(u8::is_ascii_whitespace) {
        return NormalizedPage::page_failed("no <HOST> element in the page");
    }
    let mut failed: Vec<String> = Vec::new();
    for (n, span) in spans.iter().enumerate() {
        let xml = &page.body[span.start..span.end];
        let which = |id: Option<&str>| match id {
            Some(id) => format!("host {id} (host {} of {})", n + 1, page.locator),
            None => format!("host {} of {}", n + 1, page.locator),
        };
        let read = if span.closed {
            read_host(xml, detections, opts)
        } else {
            let id = read_host(xml, false, opts).err().and_then(|b| b.id);
            Err(Broken { id, detail: "the host was cut short (no </HOST> before the next host)".into() })
        };
        let rec = match read {
            Ok(rec) => rec,
            Err(b) => {
                tracing::debug!(page = %page.locator, host = n + 1, "malformed host XML");
                match (&b.id, detections) {
                    (Some(id), false) => out.rejects.push(
                        Reject::new(which(Some(id)), "malformed_xml", b.detail).with_key(id.clone()).with_raw(xml),
                    ),
                    _ => failed.push(format!("{}: {}", which(b.id.as_deref()), b.detail)),
                }
                continue;
            }
        };
        let Some(id) = get(&rec.fields, "ID").map(str::to_string) else {
            out.rejects.push(Reject::new(which(None), "missing_key", "no <ID>").with_raw(xml));
            continue;
        };
        if id.parse::<u64>().is_err() {
            out.rejects.push(Reject::new(which(Some(&id)), "bad_id", "<ID> is not a host id").with_raw(xml));
            continue;
        }
        if detections {
            detections_of(&page.stream, &id, &rec, &which(Some(&id)), opts, &mut out);
        } else {
            out.assets.push(device(&page.stream, id, &rec));
        }
    }
    if !failed.is_empty() {
        out.page_error =
            Some(format!("{} malformed host(s), their records unknown: {}", failed.len(), failed.join("; ")));
    }
    out
}

fn device(stream: &str, id: String, rec: &HostRec) -> Asset {
    let f = &rec.fields;
    let dns = get(f, "DNS_DATA.HOSTNAME").or_else(|| get(f, "DNS"));
    let domain = get(f, "DNS_DATA.DOMAIN");
    let netbios = get(f, "NETBIOS");
    let name = fields::hostname_with_domain(dns.or(netbios).unwrap_or(""), domain);
    let ips = fields::ips([get(f, "IP"), get(f, "IPV6")].into_iter().flatten());
    let last_scan = get(f, "LAST_VULN_SCAN_DATETIME")
        .or_else(|| get(f, "LAST_SCAN_DATETIME"))
        .or_else(|| get(f, "LAST_VM_SCANNED_DATE"))
        .and_then(fields::timestamp);
    let os = get(f, "OS");
    Asset::device(
        stream,
        Device {
            source_id: id,
            hostname: name.hostname,
            domain: name.domain,
            ip_addresses: ips,
            os: fields::os(os, None),
            last_seen: last_scan,
            ..Default::default()
        },
    )
    .with_attr_opt("asset_id", get(f, "ASSET_ID").and_then(|v| v.parse::<i64>().ok()))
    .with_attr_opt("tracking_method", get(f, "TRACKING_METHOD"))
    .with_attr_opt("dns", get(f, "DNS"))
    .with_attr_opt("netbios", netbios)
    .with_attr_opt("qg_hostid", get(f, "QG_HOSTID"))
    .with_attr_opt(
        "last_vm_scanned",
        get(f, "LAST_VM_SCANNED_DATE").or_else(|| get(f, "LAST_SCAN_DATETIME")).and_then(fields::timestamp),
    )
    .with_attr_opt("last_activity", get(f, "LAST_ACTIVITY").and_then(fields::timestamp))
}

fn detections_of(stream: &str, host: &str, rec: &HostRec, which: &str, opts: Options, out: &mut NormalizedPage) {
    for (j, d) in rec.detections.iter().enumerate() {
        let f = &d.fields;
        let record = || format!("detection {} of {which}", j + 1);
        let Some(qid) = get(f, "QID") else {
            out.rejects.push(Reject::new(record(), "missing_key", "no <QID>"));
            continue;
        };
        if qid.parse::<u64>().is_err() {
            out.rejects.push(Reject::new(record(), "bad_qid", format!("<QID> {qid:?} is not a number")));
            continue;
        }
        let port = get(f, "PORT");
        let protocol = get(f, "PROTOCOL").map(str::to_ascii_lowercase);
        let key = detection_key(host, qid, port, protocol.as_deref());
        let port_n = match port.map(str::parse::<u16>) {
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                out.rejects.push(Reject::new(record(), "bad_port", "<PORT> is not a port number").with_key(key));
                continue;
            }
            None => None,
        };
        let severity = get(f, "SEVERITY")
            .and_then(|s| s.parse::<f64>().ok())
            .and_then(|n| fields::severity_scaled(n, SeverityScale::OneToFive));
        let results = (opts.results_max_chars > 0).then(|| get(f, "RESULTS")).flatten();
        let v = Vulnerability {
            source_id: key,
            asset: Some(AssetRef::local(AssetKind::Device, host)),
            plugin_id: Some(qid.to_string()),
            severity,
            state: get(f, "STATUS").and_then(fields::finding_state),
            first_found: get(f, "FIRST_FOUND_DATETIME").and_then(fields::timestamp),
            last_found: get(f, "LAST_FOUND_DATETIME").and_then(fields::timestamp),
            port: port_n,
            protocol,
            ..Default::default()
        };
        out.assets.push(
            Asset::vulnerability(stream, v)
                .with_attr_opt("detection_type", get(f, "TYPE"))
                .with_attr_opt("status", get(f, "STATUS"))
                .with_attr_opt("unique_vuln_id", get(f, "UNIQUE_VULN_ID"))
                .with_attr_opt("ssl", get(f, "SSL").map(|s| s == "1"))
                .with_attr_opt("times_found", get(f, "TIMES_FOUND").and_then(|s| s.parse::<i64>().ok()))
                .with_attr_opt("last_fixed", get(f, "LAST_FIXED_DATETIME").and_then(fields::timestamp))
                .with_attr_opt("is_disabled", get(f, "IS_DISABLED").map(|s| s == "1"))
                .with_attr_opt("results", results)
                .with_attr_opt("results_truncated", results.map(|_| d.results_truncated)),
        );
    }
}

/// A detection's key: `<host ID>|<QID>`, and `|<port>/<protocol>` when it
/// names either (Qualys reports the same QID once per port).
pub fn detection_key(host: &str, qid: &str, port: Option<&str>, protocol: Option<&str>) -> String {
    if port.is_none() && protocol.is_none() {
        return format!("{host}|{qid}");
    }
    format!("{host}|{qid}|{}/{}", port.unwrap_or(""), protocol.unwrap_or("").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const OPTS: Options = Options { results_max_chars: 10 };

    fn raw(stream: &str, xml: &str) -> RawPage {
        RawPage::new(stream, Bytes::from(xml.to_string()), "answer 1 hosts 1-3")
    }

    const HOST_1: &str = "<HOST><ID>101</ID><ASSET_ID>9001</ASSET_ID><IP>10.0.0.1</IP>\
<TRACKING_METHOD>QAGENT</TRACKING_METHOD><OS><![CDATA[Windows Server 2019 Standard]]></OS>\
<DNS><![CDATA[web-1.corp.example.com]]></DNS><NETBIOS><![CDATA[WEB-1]]></NETBIOS>\
<LAST_SCAN_DATETIME>2024-05-01T10:00:00Z</LAST_SCAN_DATETIME>\
<DETECTION_LIST><DETECTION><QID>38173</QID><TYPE>Confirmed</TYPE><SEVERITY>2</SEVERITY><PORT>443</PORT>\
<PROTOCOL>tcp</PROTOCOL><RESULTS><![CDATA[a </HOST> in the results, long enough to cut]]></RESULTS>\
<STATUS>Re-Opened</STATUS><FIRST_FOUND_DATETIME>2023-01-01T00:00:00Z</FIRST_FOUND_DATETIME>\
<LAST_FOUND_DATETIME>2024-05-01T10:00:00Z</LAST_FOUND_DATETIME></DETECTION>\
<DETECTION><QID>91345</QID><TYPE>Potential</TYPE><SEVERITY>5</SEVERITY><STATUS>Active</STATUS></DETECTION>\
</DETECTION_LIST></HOST>";

    #[test]
    fn a_host_becomes_a_device_with_its_identifiers() {
        let out = page(&raw(HOSTS, HOST_1), OPTS);
        assert!(out.page_error.is_none() && out.rejects.is_empty(), "{:?}", out.rejects);
        let Some(corral_core::AssetBody::Device(d)) = out.assets.first().map(|a| &a.body) else {
            panic!("a device: {:?}", out.assets)
        };
        assert_eq!(d.source_id, "101");
        assert_eq!(d.hostname.as_deref(), Some("web-1"));
        assert_eq!(d.domain.as_deref(), Some("corp.example.com"));
        assert_eq!(d.ip_addresses.len(), 1);
        assert!(d.last_seen.is_some());
        let attrs = &out.assets[0].attributes;
        assert!(attrs.contains_key("asset_id") && attrs.contains_key("tracking_method"));
    }

    #[test]
    fn detections_reference_their_host_and_results_are_cut() {
        let out = page(&raw(DETECTIONS, HOST_1), OPTS);
        assert!(out.page_error.is_none() && out.rejects.is_empty(), "{:?}", out.rejects);
        let keys: Vec<&str> = out.assets.iter().map(|a| a.source_id()).collect();
        assert_eq!(keys, ["101|38173|443/tcp", "101|91345"]);
        let Some(corral_core::AssetBody::Vulnerability(v)) = out.assets.first().map(|a| &a.body) else {
            panic!("a vulnerability")
        };
        assert_eq!(v.asset, Some(AssetRef::local(AssetKind::Device, "101")));
        assert_eq!(v.state, Some(corral_core::FindingState::Reopened));
        assert_eq!(v.severity, Some(corral_core::Severity::Low));
        assert_eq!(v.port, Some(443));
        let a = &out.assets[0].attributes;
        assert_eq!(
            a.get("results").map(|v| format!("{v:?}")),
            Some(format!("{:?}", corral_core::AttrValue::from("a </HOST>")))
        );
        assert!(a.contains_key("results_truncated"));
    }

    #[test]
    fn a_malformed_host_is_a_reject_keyed_by_its_id_and_the_others_load() {
        let bad = "<HOST><ID>102</ID><IP>10.0.0.2</IPX></HOST>";
        let xml = format!("{HOST_1}{bad}{}", HOST_1.replace("101", "103"));
        let out = page(&raw(HOSTS, &xml), OPTS);
        assert_eq!(out.assets.len(), 2);
        assert!(out.page_error.is_none());
        assert_eq!(out.rejects.len(), 1);
        let r = &out.rejects[0];
        assert_eq!((r.reason.as_str(), r.key.as_deref()), ("malformed_xml", Some("102")));
        assert!(r.record.contains("host 102 (host 2 of answer 1"), "{}", r.record);
        // On the detections stream the host's detections are unknown: the page fails, the others load.
        let out = page(&raw(DETECTIONS, &xml), OPTS);
        assert_eq!(out.assets.len(), 4);
        assert!(out.page_error.as_deref().is_some_and(|e| e.contains("host 102")), "{:?}", out.page_error);
    }

    #[test]
    fn a_cut_host_and_odd_records() {
        let xml = format!("<HOST><ID>104</ID><IP>10.0{HOST_1}<HOST><IP>1.2.3.4</IP></HOST><HOST><ID>x</ID></HOST>");
        let out = page(&raw(HOSTS, &xml), OPTS);
        assert_eq!(out.assets.len(), 1);
        let reasons: Vec<(&str, Option<&str>)> =
            out.rejects.iter().map(|r| (r.reason.as_str(), r.key.as_deref())).collect();
        assert_eq!(reasons, [("malformed_xml", Some("104")), ("missing_key", None), ("bad_id", None)]);
        assert!(page(&raw(HOSTS, "<html>oops</html>"), OPTS).page_error.is_some());
        assert!(page(&raw(HOSTS, "\n"), OPTS).page_error.is_none());
    }
}
