//! Decoding a details page (`POST /devices/entities/devices/v2`) into devices.
//!
//! The envelope is `{"meta":{..},"resources":[host, ..],"errors":[..]}`. The
//! usual page (no vendor errors, every resource a host with a `device_id`,
//! raw records not kept) is decoded in one pass. Any other page is decoded
//! in two steps so one bad record never costs the page: the envelope with
//! each resource kept as raw JSON, then each resource on its own, so a
//! rejected record is named and kept as it came. Host
//! fields are read leniently (a number where a string was expected is taken as
//! text; an object or array there is ignored), so only a record that is not an
//! object at all, or has no `device_id`, is rejected.

use std::borrow::Cow;
use std::fmt;

use corral_core::fields;
use corral_core::{Asset, Device, NormalizedPage, RawPage, Reject};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The details envelope. `meta` is not needed.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    resources: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    errors: Option<Vec<&'a RawValue>>,
}

/// One entry of the envelope's `errors`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiError<'a> {
    #[serde(borrow)]
    code: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
}

/// The host fields corral maps. Everything else in the record is skipped.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Host<'a> {
    #[serde(borrow)]
    device_id: Text<'a>,
    #[serde(borrow)]
    hostname: Text<'a>,
    #[serde(borrow)]
    machine_domain: Text<'a>,
    #[serde(borrow)]
    local_ip: Text<'a>,
    #[serde(borrow)]
    external_ip: Text<'a>,
    #[serde(borrow)]
    mac_address: Text<'a>,
    #[serde(borrow)]
    serial_number: Text<'a>,
    #[serde(borrow)]
    platform_name: Text<'a>,
    #[serde(borrow)]
    os_version: Text<'a>,
    #[serde(borrow)]
    system_manufacturer: Text<'a>,
    #[serde(borrow)]
    system_product_name: Text<'a>,
    #[serde(borrow)]
    first_seen: Text<'a>,
    #[serde(borrow)]
    last_seen: Text<'a>,
    #[serde(borrow)]
    last_login_user: Text<'a>,
    #[serde(borrow)]
    tags: TextList<'a>,
    #[serde(borrow)]
    agent_version: Text<'a>,
    #[serde(borrow)]
    status: Text<'a>,
    #[serde(borrow)]
    cid: Text<'a>,
    #[serde(borrow)]
    product_type_desc: Text<'a>,
    #[serde(borrow)]
    instance_id: Text<'a>,
    #[serde(borrow)]
    groups: TextList<'a>,
}

/// Normalize one details page. Never panics.
pub fn page(page: &RawPage, keep_raw: bool) -> NormalizedPage {
    if !keep_raw && let Some(out) = page_in_one_pass(page) {
        return out;
    }
    page_record_by_record(page, keep_raw)
}

/// The usual page in one pass over its bytes (the two-step decoding reads
/// every record twice), each host made an asset as soon as it is read.
/// `None` when the page is anything but the usual: not UTF-8, not a host
/// envelope, a resource that is not a host object, a host without a
/// `device_id`, any entry in `errors`. The two-step decoding then reports
/// it, naming the record and keeping it.
fn page_in_one_pass(page: &RawPage) -> Option<NormalizedPage> {
    // The page checked as UTF-8 once, not each string of it on its own (a
    // tenth of this decoding's time), then read as text.
    let text = std::str::from_utf8(&page.body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let assets = de::DeserializeSeed::deserialize(OnePass(&page.stream), &mut de).ok()?;
    de.end().ok()?;
    Some(NormalizedPage { assets, ..NormalizedPage::default() })
}

/// The envelope's fields, for [`OnePass`].
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EnvelopeField {
    Resources,
    Errors,
    #[serde(other)]
    Other,
}

/// Decodes a details envelope into the assets of its hosts (of the stream
/// it holds), failing on anything [`page_in_one_pass`] declines.
struct OnePass<'p>(&'p str);

impl<'de> de::DeserializeSeed<'de> for OnePass<'_> {
    type Value = Vec<Asset>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OnePass<'_> {
    type Value = Vec<Asset>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a details envelope")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut assets, mut errors_seen) = (None, false);
        while let Some(field) = map.next_key()? {
            match field {
                EnvelopeField::Resources if assets.is_some() => return Err(de::Error::duplicate_field("resources")),
                EnvelopeField::Resources => assets = Some(map.next_value_seed(Hosts(self.0))?),
                EnvelopeField::Errors if errors_seen => return Err(de::Error::duplicate_field("errors")),
                EnvelopeField::Errors => {
                    errors_seen = true;
                    let errors: Option<Vec<IgnoredAny>> = map.next_value()?;
                    if errors.is_some_and(|e| !e.is_empty()) {
                        return Err(de::Error::custom("the vendor reported errors"));
                    }
                }
                EnvelopeField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        assets.ok_or_else(|| de::Error::missing_field("resources"))
    }
}

/// The `resources` array, each host made an asset of stream `.0`.
struct Hosts<'p>(&'p str);

impl<'de> de::DeserializeSeed<'de> for Hosts<'_> {
    type Value = Vec<Asset>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Hosts<'_> {
    type Value = Vec<Asset>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of hosts")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut assets = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(host) = seq.next_element::<Host>()? {
            let d = device(&host).ok_or_else(|| de::Error::custom("a host without device_id"))?;
            assets.push(with_attributes(Asset::device(self.0, d), &host));
        }
        Ok(assets)
    }
}

/// Normalize one details page record by record: the envelope with each
/// resource as raw JSON, then each resource on its own.
fn page_record_by_record(page: &RawPage, keep_raw: bool) -> NormalizedPage {
    let env: Envelope = match serde_json::from_slice(&page.body) {
        Ok(e) => e,
        Err(e) => return NormalizedPage::page_failed(describe_json_error(&e, &page.body)),
    };
    let mut out = NormalizedPage::default();
    let mut page_errors: Vec<String> = Vec::new();
    for (i, raw) in env.errors.unwrap_or_default().into_iter().enumerate() {
        let err: ApiError = serde_json::from_str(raw.get()).unwrap_or_default();
        let code = err.code.as_str().unwrap_or("?");
        let message = err.message.as_str().unwrap_or("(no message)");
        match err.id.as_str() {
            // A host removed between the listing and this call: normal churn, not an error.
            Some(id) if code == "404" => {
                tracing::debug!(page = %page.locator, device_id = id, "host listed but gone by the details call");
            }
            Some(id) => out.rejects.push(
                Reject::new(format!("id {id} of {}", page.locator), "vendor_error", format!("{code}: {message}"))
                    .with_raw(raw.get().as_bytes())
                    .with_key(id),
            ),
            None => page_errors.push(format!("error {i}: {code}: {message}")),
        }
    }
    let Some(resources) = env.resources else {
        let why = if page_errors.is_empty() { "no `resources` array".to_string() } else { page_errors.join("; ") };
        return NormalizedPage { page_error: Some(format!("vendor answered without hosts: {why}")), ..out };
    };
    if !page_errors.is_empty() {
        // The vendor says something went wrong for the call as a whole: the hosts
        // it did return are kept, but the page cannot count as complete.
        out.page_error = Some(format!("vendor reported errors: {}", page_errors.join("; ")));
    }
    out.assets.reserve(resources.len());
    for (i, raw) in resources.into_iter().enumerate() {
        let locator = || format!("resource {i} of {}", page.locator);
        let host: Host = match serde_json::from_str(raw.get()) {
            Ok(h) => h,
            Err(e) => {
                out.rejects.push(
                    Reject::new(locator(), "malformed_record", format!("not a host object: {e}"))
                        .with_raw(raw.get().as_bytes()),
                );
                continue;
            }
        };
        match device(&host) {
            Some(d) => {
                let raw_value = if keep_raw { serde_json::from_str(raw.get()).ok() } else { None };
                out.assets.push(with_attributes(Asset::device(&page.stream, d), &host).with_raw(raw_value));
            }
            None => {
                out.rejects.push(Reject::new(locator(), "missing_key", "no device_id").with_raw(raw.get().as_bytes()))
            }
        }
    }
    out
}

/// The vendor attributes of a host (declared in [`crate::hosts_stream`]).
fn with_attributes(asset: Asset, h: &Host) -> Asset {
    let text = |t: &Text| t.as_str().and_then(fields::text);
    let groups = fields::tags(h.groups.0.iter().map(|t| t.as_ref()));
    asset
        .with_attr_opt("agent_version", text(&h.agent_version))
        .with_attr_opt("status", text(&h.status))
        .with_attr_opt("cid", text(&h.cid).map(|c| c.to_ascii_lowercase()))
        .with_attr_opt("platform", text(&h.platform_name))
        .with_attr_opt("product_type", text(&h.product_type_desc))
        .with_attr_opt("groups", (!groups.is_empty()).then_some(groups))
}

/// Map one host to a device; `None` without a usable `device_id`.
fn device(h: &Host) -> Option<Device> {
    let source_id = h.device_id.as_str().and_then(fields::text)?;
    let name = fields::hostname_with_domain(h.hostname.as_str().unwrap_or(""), h.machine_domain.as_str());
    Some(Device {
        source_id,
        hostname: name.hostname,
        domain: name.domain,
        ip_addresses: fields::ips(h.local_ip.as_str().into_iter().chain(h.external_ip.as_str())),
        mac_addresses: fields::macs(h.mac_address.as_str()),
        serial_number: h.serial_number.as_str().and_then(fields::serial),
        os: fields::os(h.platform_name.as_str(), h.os_version.as_str()),
        manufacturer: h.system_manufacturer.as_str().and_then(fields::manufacturer),
        model: h.system_product_name.as_str().and_then(model),
        first_seen: h.first_seen.as_str().and_then(fields::timestamp),
        last_seen: h.last_seen.as_str().and_then(fields::timestamp),
        owner: h.last_login_user.as_str().and_then(fields::text),
        cloud_instance_id: h.instance_id.as_str().and_then(fields::text),
        tags: fields::tags(h.tags.0.iter().map(|t| t.as_ref())),
        ..Default::default()
    })
}

/// A product name, without the firmware defaults (`System Product Name`,
/// `To be filled by O.E.M.`, ...).
fn model(s: &str) -> Option<String> {
    let m = fields::manufacturer(s)?;
    let key: String = m.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    (!matches!(key.as_str(), "systemproductname" | "productname" | "systemmodel" | "model")).then_some(m)
}

/// What was wrong with a body that is not the expected JSON, with its start
/// (the engine keeps the raw start in the `malformed_page` reject too).
fn describe_json_error(e: &serde_json::Error, body: &[u8]) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "unexpected JSON shape",
        serde_json::error::Category::Io => "unreadable body",
    };
    let start: String = String::from_utf8_lossy(&body[..body.len().min(60)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{what} ({e}); body starts with {start:?}")
}

/// A JSON scalar read as text: strings as they are (borrowed when unescaped),
/// numbers as their decimal form; `null`, booleans, arrays and objects as absent.
#[derive(Default, Debug, PartialEq)]
struct Text<'a>(Option<Cow<'a, str>>);

impl Text<'_> {
    fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(TextVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

/// A list of texts: an array (non-scalar items skipped) or a single scalar.
#[derive(Default, Debug, PartialEq)]
struct TextList<'a>(Vec<Cow<'a, str>>);

struct TextListVisitor;

impl<'de> Visitor<'de> for TextListVisitor {
    type Value = TextList<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Text(item)) = seq.next_element::<Text<'de>>()? {
            out.extend(item);
        }
        Ok(TextList(out))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(TextList(vec![Cow::Borrowed(v)]))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(TextList(vec![Cow::Owned(v.to_owned())]))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(TextList(vec![Cow::Owned(v)]))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(TextList::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(TextList::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(TextList::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TextList::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(TextList::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(TextList::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(TextListVisitor)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(TextList::default())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TextList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/hosts_page.json");

    fn page_of(v: &serde_json::Value) -> RawPage {
        RawPage::new("hosts", bytes::Bytes::from(v.to_string()), "details batch 0")
    }

    /// The fixture's hosts that carry a `device_id`, without vendor errors:
    /// a page the one-pass decoding takes.
    fn usual_page() -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture");
        let resources = v["resources"].as_array().expect("resources").clone();
        let usable: Vec<serde_json::Value> =
            resources.into_iter().filter(|r| r["device_id"].as_str().is_some_and(|id| !id.trim().is_empty())).collect();
        assert!(usable.len() >= 5, "the fixture has hosts to decode");
        v["resources"] = serde_json::Value::Array(usable);
        v["errors"] = serde_json::json!([]);
        v
    }

    /// Both decodings give the same assets for the usual page; the one-pass
    /// decoding declines every other page, so the two-step one names and
    /// keeps its bad records.
    #[test]
    fn the_one_pass_decoding_agrees_with_the_record_by_record_one() {
        let usual = page_of(&usual_page());
        let fast = page_in_one_pass(&usual).expect("the usual page is decoded in one pass");
        let slow = page_record_by_record(&usual, false);
        assert!(slow.rejects.is_empty() && slow.page_error.is_none(), "{slow:?}");
        assert_eq!(fast.assets, slow.assets);
        assert!(fast.rejects.is_empty() && fast.page_error.is_none());
        assert_eq!(page(&usual, false).assets, slow.assets);

        let mut without_id = usual_page();
        without_id["resources"][1]["device_id"] = serde_json::Value::Null;
        let mut not_an_object = usual_page();
        not_an_object["resources"][2] = serde_json::json!("not a host");
        let mut vendor_error = usual_page();
        vendor_error["errors"] = serde_json::json!([{"code": 500, "id": "abc", "message": "internal"}]);
        let mut no_resources = usual_page();
        no_resources["resources"] = serde_json::Value::Null;
        for (what, v, rejects) in [
            ("a host without device_id", &without_id, 1),
            ("a resource that is not an object", &not_an_object, 1),
            ("a vendor error", &vendor_error, 1),
            ("no resources", &no_resources, 0),
        ] {
            let p = page_of(v);
            assert!(page_in_one_pass(&p).is_none(), "{what}: declined");
            let out = page(&p, false);
            assert_eq!(out.rejects.len(), rejects, "{what}: {out:?}");
            assert!(out.rejects.iter().all(|r| r.raw.is_some()), "{what}: the record is kept");
        }
        assert!(page(&page_of(&no_resources), false).page_error.is_some());
        for twice in ["resources", "errors"] {
            let text = String::from_utf8(usual.body.to_vec()).expect("UTF-8");
            let body = format!("{{\"{twice}\":[],{}", &text[1..]);
            let p = RawPage::new("hosts", bytes::Bytes::from(body), "details batch 0");
            assert!(page_in_one_pass(&p).is_none(), "`{twice}` twice: declined");
            assert!(page(&p, false).page_error.is_some(), "`{twice}` twice: the page fails, as before");
        }
        let mut not_utf8 = usual.body.to_vec();
        let at = not_utf8.windows(12).position(|w| w == b"\"hostname\":\"").expect("a host name") + 12;
        not_utf8[at] = 0xff;
        let not_utf8 = RawPage::new("hosts", bytes::Bytes::from(not_utf8), "details batch 0");
        assert!(page_in_one_pass(&not_utf8).is_none(), "not UTF-8: declined");
        assert!(page(&not_utf8, false).page_error.is_some(), "not UTF-8: the page fails, as before");
        // Raw records kept: always the two-step decoding, each asset with its record.
        let kept = page(&usual, true);
        assert_eq!(kept.assets.len(), slow.assets.len());
        assert!(kept.assets.iter().all(|a| a.raw.is_some()));
    }

    #[test]
    fn text_reads_scalars_and_skips_structures() {
        let h: Host = serde_json::from_str(
            r#"{"device_id": 42, "hostname": "a\u0062c", "mac_address": null, "serial_number": {"x": [1]},
                "local_ip": ["10.0.0.1"], "platform_name": true, "tags": ["a", 1, null, "b", {"c": 2}]}"#,
        )
        .expect("lenient");
        assert_eq!(h.device_id.as_str(), Some("42"));
        assert_eq!(h.hostname.as_str(), Some("abc"));
        assert_eq!(h.mac_address.as_str(), None);
        assert_eq!(h.serial_number.as_str(), None);
        assert_eq!(h.local_ip.as_str(), None);
        assert_eq!(h.platform_name.as_str(), None);
        assert_eq!(h.tags.0, vec!["a", "1", "b"]);
        let h: Host = serde_json::from_str(r#"{"tags": "one"}"#).expect("single tag");
        assert_eq!(h.tags.0, vec!["one"]);
    }

    #[test]
    fn model_drops_firmware_defaults() {
        assert_eq!(model("Latitude 5440").as_deref(), Some("Latitude 5440"));
        assert_eq!(model("System Product Name"), None);
        assert_eq!(model("To be filled by O.E.M."), None);
        assert_eq!(model(" "), None);
    }
}
