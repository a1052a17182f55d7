//! Graph collection pages (`{"@odata.context", "@odata.nextLink", "value": [...]}`)
//! into devices and users. Pure CPU work on the engine's rayon pool; never panics.
//!
//! The envelope is decoded with each record kept as raw JSON, then every record
//! is decoded on its own: a record that is not an object, or lacks an `id`,
//! becomes a [`Reject`] carrying its raw bytes while the rest of the page still
//! loads. Scalar fields are read leniently (a number where a string was expected
//! is taken as its text; arrays and objects are ignored), so one odd property
//! never costs a whole record.

use std::borrow::Cow;
use std::fmt;

use corral_core::fields;
use corral_core::{Asset, AssetKind, AssetRef, Device, NormalizedPage, RawPage, Reject, User};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::Stream;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    value: Option<Vec<&'a RawValue>>,
}

/// Decode one page of `stream`.
pub fn page(stream: Stream, page: &RawPage, keep_raw: bool) -> NormalizedPage {
    let records = match envelope(&page.body) {
        Ok(r) => r,
        Err(reason) => return NormalizedPage::page_failed(reason),
    };
    let mut out = NormalizedPage { assets: Vec::with_capacity(records.len()), ..Default::default() };
    for (i, raw) in records.into_iter().enumerate() {
        let reject = |reason: &str, detail: String| {
            Reject::new(format!("record {i} of {}", page.locator), reason, detail).with_raw(raw.get().as_bytes())
        };
        let asset = match stream {
            Stream::ManagedDevices => match serde_json::from_str::<DeviceRecord>(raw.get()) {
                Ok(rec) => {
                    let compliance = rec.compliance_state.text();
                    let ownership = rec.managed_device_owner_type.text();
                    let registration = rec.device_registration_state.text();
                    device(rec).map(|d| {
                        Asset::device(stream.name(), d)
                            .with_attr_opt("compliance_state", compliance)
                            .with_attr_opt("owner_type", ownership)
                            .with_attr_opt("registration_state", registration)
                    })
                }
                Err(e) => {
                    out.rejects.push(reject("invalid_record", format!("not a managedDevice object: {e}")));
                    continue;
                }
            },
            Stream::Users => match serde_json::from_str::<UserRecord>(raw.get()) {
                Ok(rec) => {
                    let user_type = rec.user_type.text();
                    user(rec).map(|u| Asset::user(stream.name(), u).with_attr_opt("user_type", user_type))
                }
                Err(e) => {
                    out.rejects.push(reject("invalid_record", format!("not a user object: {e}")));
                    continue;
                }
            },
        };
        match asset {
            Some(a) => {
                let raw_value = if keep_raw { serde_json::from_str(raw.get()).ok() } else { None };
                out.assets.push(a.with_raw(raw_value));
            }
            None => out.rejects.push(reject("missing_key", "no id".into())),
        }
    }
    out
}

/// The records of a collection page, or why the page cannot be read at all.
fn envelope(body: &[u8]) -> Result<Vec<&RawValue>, String> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| body[i]) {
        None => return Err("empty body".into()),
        Some(b'<') => return Err("an HTML page instead of JSON (a proxy or gateway answered)".into()),
        _ => {}
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { value: Some(v) }) => Ok(v),
        Ok(Envelope { value: None }) => Err("JSON without a `value` array: not a Graph collection page".into()),
        Err(e) if e.is_eof() => Err(format!("truncated JSON: {e}")),
        Err(e) => Err(format!("not a Graph collection page: {e}")),
    }
}

fn device(r: DeviceRecord) -> Option<Device> {
    let source_id = r.id.text()?;
    let host = r.device_name.as_str().map(fields::hostname).unwrap_or_default();
    let owner = r.user_principal_name.text().or_else(|| r.email_address.as_str().and_then(fields::email));
    // The owner's Entra user object id: a user of this connection's `users` stream.
    let owner_ref = r.user_id.text().map(|id| AssetRef::local(AssetKind::User, id));
    let entra_device_id = r
        .azure_ad_device_id
        .text()
        .map(|id| id.to_ascii_lowercase())
        .filter(|id| id != "00000000-0000-0000-0000-000000000000");
    let compliance = r.compliance_state.text().map(|s| format!("compliance:{}", s.to_ascii_lowercase()));
    let ownership = r.managed_device_owner_type.text().map(|s| format!("ownership:{}", s.to_ascii_lowercase()));
    Some(Device {
        source_id,
        hostname: host.hostname,
        domain: host.domain,
        ip_addresses: Vec::new(),
        mac_addresses: fields::macs(
            [r.wifi_mac_address.as_str(), r.ethernet_mac_address.as_str()].into_iter().flatten(),
        ),
        serial_number: r.serial_number.as_str().and_then(fields::serial),
        os: fields::os(r.operating_system.as_str(), r.os_version.as_str()),
        manufacturer: r.manufacturer.as_str().and_then(fields::manufacturer),
        model: r.model.text(),
        first_seen: r.enrolled_date_time.as_str().and_then(fields::timestamp),
        last_seen: r.last_sync_date_time.as_str().and_then(fields::timestamp),
        owner,
        owner_ref,
        entra_device_id,
        tags: fields::tags(compliance.iter().chain(ownership.iter()).map(String::as_str)),
        ..Default::default()
    })
}

fn user(r: UserRecord) -> Option<User> {
    let source_id = r.id.text()?;
    let user_type = r.user_type.text().map(|s| format!("user_type:{}", s.to_ascii_lowercase()));
    Some(User {
        source_id,
        username: r.user_principal_name.text(),
        email: r.mail.as_str().and_then(fields::email),
        display_name: r.display_name.text(),
        first_name: r.given_name.text(),
        last_name: r.surname.text(),
        active: r.account_enabled.0,
        status: r.account_enabled.0.map(|on| if on { "enabled" } else { "disabled" }.to_string()),
        created: r.created_date_time.as_str().and_then(fields::timestamp),
        last_login: None,
        tags: fields::tags(user_type.iter().map(String::as_str)),
    })
}

/// The `managedDevice` properties corral maps (the `$select` list, see `lib.rs`).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct DeviceRecord<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    device_name: Text<'a>,
    #[serde(borrow)]
    serial_number: Text<'a>,
    #[serde(borrow, rename = "wiFiMacAddress")]
    wifi_mac_address: Text<'a>,
    #[serde(borrow)]
    ethernet_mac_address: Text<'a>,
    #[serde(borrow)]
    operating_system: Text<'a>,
    #[serde(borrow)]
    os_version: Text<'a>,
    #[serde(borrow)]
    manufacturer: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    enrolled_date_time: Text<'a>,
    #[serde(borrow)]
    last_sync_date_time: Text<'a>,
    #[serde(borrow)]
    user_principal_name: Text<'a>,
    #[serde(borrow)]
    email_address: Text<'a>,
    #[serde(borrow)]
    compliance_state: Text<'a>,
    #[serde(borrow)]
    managed_device_owner_type: Text<'a>,
    #[serde(borrow, rename = "azureADDeviceId")]
    azure_ad_device_id: Text<'a>,
    #[serde(borrow)]
    user_id: Text<'a>,
    #[serde(borrow)]
    device_registration_state: Text<'a>,
}

/// The `user` properties corral maps.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct UserRecord<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    user_principal_name: Text<'a>,
    #[serde(borrow)]
    mail: Text<'a>,
    #[serde(borrow)]
    display_name: Text<'a>,
    #[serde(borrow)]
    given_name: Text<'a>,
    #[serde(borrow)]
    surname: Text<'a>,
    account_enabled: Flag,
    #[serde(borrow)]
    user_type: Text<'a>,
    #[serde(borrow)]
    created_date_time: Text<'a>,
}

/// A scalar property as text, read leniently: strings as sent (borrowed when
/// unescaped), numbers and booleans as their text; `null`, arrays and objects
/// are absent.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl Text<'_> {
    fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
    /// Trimmed, placeholders (`null`, `n/a`, `unknown`, empty) dropped.
    fn text(&self) -> Option<String> {
        self.as_str().and_then(fields::text)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
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
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Borrowed(if v { "true" } else { "false" }))))
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

/// A boolean property read leniently: `true`/`false`, also as strings; anything else is absent.
#[derive(Default)]
struct Flag(Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = Text::deserialize(d)?;
        Ok(Flag(match t.as_str().map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Some(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use corral_core::AssetBody;

    fn run(stream: Stream, body: &str) -> NormalizedPage {
        page(stream, &RawPage::new(stream.name(), Bytes::from(body.to_string()), "page 0"), false)
    }

    fn devices(n: &NormalizedPage) -> Vec<&Device> {
        n.assets
            .iter()
            .filter_map(|a| match &a.body {
                AssetBody::Device(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn users(n: &NormalizedPage) -> Vec<&User> {
        n.assets
            .iter()
            .filter_map(|a| match &a.body {
                AssetBody::User(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn device_fields_are_normalized() {
        let body = r#"{"@odata.context":"x","value":[{
            "id":"d1","deviceName":"CORP\\LT-00042","serialNumber":"5CG1234XYZ",
            "wiFiMacAddress":"A0B1C2D3E4F5","ethernetMacAddress":"00155D010203",
            "operatingSystem":"Windows","osVersion":"10.0.22631.3447",
            "manufacturer":"Dell Inc.","model":"Latitude 7440",
            "enrolledDateTime":"2023-05-01T10:00:00Z","lastSyncDateTime":"2024-04-30T08:15:42.1234567Z",
            "userPrincipalName":"Ann.Lee@corralsim.onmicrosoft.com","emailAddress":"ann.lee@example.com",
            "complianceState":"noncompliant","managedDeviceOwnerType":"company","azureADDeviceId":"x"}]}"#;
        let n = run(Stream::ManagedDevices, body);
        assert_eq!(n.page_error, None);
        assert!(n.rejects.is_empty(), "{:?}", n.rejects);
        let d = devices(&n)[0];
        assert_eq!(d.source_id, "d1");
        assert_eq!(d.hostname.as_deref(), Some("lt-00042"));
        assert_eq!(d.domain.as_deref(), Some("corp"));
        assert_eq!(d.serial_number.as_deref(), Some("5CG1234XYZ"));
        let macs: Vec<String> = d.mac_addresses.iter().map(|m| m.to_string()).collect();
        assert_eq!(macs, ["a0:b1:c2:d3:e4:f5", "00:15:5d:01:02:03"]);
        assert_eq!(d.os.family.as_deref(), Some("windows"));
        assert_eq!(d.os.name.as_deref(), Some("Windows"));
        assert_eq!(d.os.version.as_deref(), Some("10.0.22631.3447"));
        assert_eq!(d.manufacturer.as_deref(), Some("Dell Inc."));
        assert_eq!(d.model.as_deref(), Some("Latitude 7440"));
        assert_eq!(d.first_seen.map(|t| t.to_rfc3339()).as_deref(), Some("2023-05-01T10:00:00+00:00"));
        assert_eq!(d.last_seen.map(|t| t.to_rfc3339()).as_deref(), Some("2024-04-30T08:15:42.123456700+00:00"));
        assert_eq!(d.owner.as_deref(), Some("Ann.Lee@corralsim.onmicrosoft.com"));
        assert_eq!(d.tags, ["compliance:noncompliant", "ownership:company"]);
        assert!(n.assets[0].raw.is_none());
    }

    /// The owner as a reference to this connection's Entra user, the Entra
    /// device id as a correlation key, compliance as an attribute.
    #[test]
    fn owner_reference_entra_id_and_attributes() {
        use corral_core::{AssetKind, AttrValue};
        let body = r#"{"value":[{"id":"d1","deviceName":"LT-1","userId":"u-123","azureADDeviceId":"8F2C0000-AAAA-BBBB-CCCC-000000000001",
            "complianceState":"noncompliant","managedDeviceOwnerType":"company","deviceRegistrationState":"registered"},
            {"id":"d2","azureADDeviceId":"00000000-0000-0000-0000-000000000000","userId":null}]}"#;
        let n = run(Stream::ManagedDevices, body);
        let d = devices(&n);
        assert_eq!(d[0].owner_ref, Some(corral_core::AssetRef::local(AssetKind::User, "u-123")));
        assert_eq!(d[0].entra_device_id.as_deref(), Some("8f2c0000-aaaa-bbbb-cccc-000000000001"));
        assert_eq!(
            (d[1].owner_ref.as_ref(), d[1].entra_device_id.as_deref()),
            (None, None),
            "the all-zero id is no id"
        );
        let attrs = &n.assets[0].attributes;
        assert_eq!(attrs.get("compliance_state"), Some(&AttrValue::String("noncompliant".into())));
        assert_eq!(attrs.get("owner_type"), Some(&AttrValue::String("company".into())));
        assert_eq!(attrs.get("registration_state"), Some(&AttrValue::String("registered".into())));
        let info = Stream::ManagedDevices.info();
        assert!(info.problems().is_empty(), "{:?}", info.problems());
        for a in &n.assets {
            assert_eq!(info.check_attributes(a), Ok(()));
        }
        let users = Stream::Users.info();
        assert!(users.problems().is_empty(), "{:?}", users.problems());
        let n = run(Stream::Users, r#"{"value":[{"id":"u1","userType":"Guest"}]}"#);
        assert_eq!(n.assets[0].attributes.get("user_type"), Some(&AttrValue::String("Guest".into())));
        assert_eq!(users.check_attributes(&n.assets[0]), Ok(()));
    }

    #[test]
    fn null_dates_placeholders_and_missing_fields_are_dropped() {
        let body = r#"{"value":[
            {"id":"d2","deviceName":"","serialNumber":"To be filled by O.E.M.",
             "wiFiMacAddress":"","ethernetMacAddress":null,"enrolledDateTime":"0001-01-01T00:00:00Z",
             "lastSyncDateTime":"0001-01-01T00:00:00Z","userPrincipalName":"","emailAddress":"",
             "complianceState":"unknown","manufacturer":"System manufacturer"},
            {"id":"d3","userPrincipalName":"","emailAddress":"Shared@Example.com","wiFiMacAddress":"00:00:00:00:00:00"},
            {"id":"d4"}
        ]}"#;
        let n = run(Stream::ManagedDevices, body);
        assert!(n.rejects.is_empty(), "{:?}", n.rejects);
        let d = devices(&n);
        assert_eq!(d.len(), 3);
        assert_eq!(*d[0], Device { source_id: "d2".into(), ..Default::default() });
        assert!(
            n.assets[0].attributes.is_empty(),
            "`unknown` compliance is no attribute: {:?}",
            n.assets[0].attributes
        );
        assert_eq!(d[1].owner.as_deref(), Some("shared@example.com"), "emailAddress when the UPN is empty");
        assert!(d[1].mac_addresses.is_empty(), "placeholder MAC dropped");
        assert_eq!(*d[2], Device { source_id: "d4".into(), ..Default::default() });
    }

    /// Intune reports `02:00:00:00:00:00` as the Wi-Fi MAC of Android 6+
    /// devices (the OS hides the real one from apps): no address, and never
    /// one that ties the devices reporting it together.
    #[test]
    fn android_privacy_mac_is_dropped() {
        let body = r#"{"value":[{"id":"a1","operatingSystem":"Android","wiFiMacAddress":"020000000000"},
            {"id":"a2","operatingSystem":"Android","wiFiMacAddress":"020000000000","ethernetMacAddress":"A0B1C2D3E4F5"}]}"#;
        let n = run(Stream::ManagedDevices, body);
        let d = devices(&n);
        assert!(d[0].mac_addresses.is_empty(), "{:?}", d[0].mac_addresses);
        let macs: Vec<String> = d[1].mac_addresses.iter().map(|m| m.to_string()).collect();
        assert_eq!(macs, ["a0:b1:c2:d3:e4:f5"]);
    }

    #[test]
    fn mac_spellings_and_duplicates() {
        let body = r#"{"value":[{"id":"d5","wiFiMacAddress":"a0-b1-c2-d3-e4-f5","ethernetMacAddress":"A0B1C2D3E4F5"},
            {"id":"d6","wiFiMacAddress":"A0B1C2D3E4","ethernetMacAddress":"zzzzzzzzzzzz"}]}"#;
        let n = run(Stream::ManagedDevices, body);
        let d = devices(&n);
        assert_eq!(d[0].mac_addresses.len(), 1, "same address in both fields counted once");
        assert!(d[1].mac_addresses.is_empty(), "wrong length and non-hex dropped");
    }

    #[test]
    fn records_without_id_or_not_objects_are_rejected_with_raw_bytes() {
        let body = r#"{"value":[{"id":"ok"},{"deviceName":"no-id"},{"id":""},{"id":null},"just a string",{"id":7}]}"#;
        let n = run(Stream::ManagedDevices, body);
        let ids: Vec<&str> = devices(&n).iter().map(|d| d.source_id.as_str()).collect();
        assert_eq!(ids, ["ok", "7"], "a numeric id is taken as its text");
        let r: Vec<(&str, &str)> = n.rejects.iter().map(|r| (r.record.as_str(), r.reason.as_str())).collect();
        assert_eq!(
            r,
            [
                ("record 1 of page 0", "missing_key"),
                ("record 2 of page 0", "missing_key"),
                ("record 3 of page 0", "missing_key"),
                ("record 4 of page 0", "invalid_record"),
            ]
        );
        assert_eq!(n.rejects[0].raw.as_deref(), Some(r#"{"deviceName":"no-id"}"#));
        assert_eq!(n.rejects[3].raw.as_deref(), Some(r#""just a string""#));
    }

    #[test]
    fn odd_types_do_not_cost_the_record() {
        let body = r#"{"value":[{"id":"d7","deviceName":["a"],"serialNumber":7351942,"model":{"x":1},
            "lastSyncDateTime":true,"osVersion":14}]}"#;
        let n = run(Stream::ManagedDevices, body);
        assert!(n.rejects.is_empty());
        let d = devices(&n)[0];
        assert_eq!(d.hostname, None);
        assert_eq!(d.serial_number.as_deref(), Some("7351942"));
        assert_eq!(d.model, None);
        assert_eq!(d.last_seen, None);
        assert_eq!(d.os.version.as_deref(), Some("14"));
    }

    #[test]
    fn users_are_mapped() {
        let body = r#"{"value":[
            {"id":"u1","userPrincipalName":"ann.lee@corralsim.onmicrosoft.com","mail":"Ann.Lee@Example.com",
             "displayName":"Ann Lee","givenName":"Ann","surname":"Lee","accountEnabled":true,"userType":"Member",
             "createdDateTime":"2020-01-02T03:04:05Z"},
            {"id":"u2","userPrincipalName":"bo_partner.example#EXT#@corralsim.onmicrosoft.com","mail":null,
             "displayName":"Bø Ünïcode","accountEnabled":false,"userType":"Guest"},
            {"id":"u3","displayName":"Default property set"},
            {"displayName":"no id"}
        ]}"#;
        let n = run(Stream::Users, body);
        let u = users(&n);
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].username.as_deref(), Some("ann.lee@corralsim.onmicrosoft.com"));
        assert_eq!(u[0].email.as_deref(), Some("ann.lee@example.com"));
        assert_eq!(u[0].display_name.as_deref(), Some("Ann Lee"));
        assert_eq!((u[0].first_name.as_deref(), u[0].last_name.as_deref()), (Some("Ann"), Some("Lee")));
        assert_eq!(u[0].active, Some(true));
        assert_eq!(u[0].status.as_deref(), Some("enabled"));
        assert!(u[0].created.is_some());
        assert_eq!(u[0].tags, ["user_type:member"]);
        assert_eq!(u[1].email, None);
        assert_eq!(u[1].active, Some(false));
        assert_eq!(u[1].display_name.as_deref(), Some("Bø Ünïcode"));
        assert_eq!(u[1].tags, ["user_type:guest"]);
        assert_eq!((u[2].active, u[2].status.as_deref()), (None, None));
        assert_eq!(n.rejects.len(), 1);
        assert_eq!(n.rejects[0].reason, "missing_key");
        assert_eq!(n.rejects[0].record, "record 3 of page 0");
    }

    #[test]
    fn keep_raw_keeps_the_record() {
        let body = r#"{"value":[{"id":"u1","displayName":"A","extra":{"nested":[1,2]}}]}"#;
        let n = page(Stream::Users, &RawPage::new("users", Bytes::from(body), "p"), true);
        assert_eq!(n.assets[0].raw, Some(serde_json::json!({"id":"u1","displayName":"A","extra":{"nested":[1,2]}})));
    }

    #[test]
    fn broken_pages_fail_whole() {
        let cases = [
            ("", "empty body"),
            ("  \n", "empty body"),
            ("<!DOCTYPE html><html></html>", "HTML"),
            (r#"{"value":[{"id":"a"},{"id":"b""#, "truncated"),
            (r#"{"value":[{"id":"a"}{"corrupted": NaN,,}]}"#, "not a Graph collection page"),
            ("{\"value\":[]}\n{\"meta\":{\"trace_id\":", "not a Graph collection page"),
            (r#"{"error":{"code":"x"}}"#, "without a `value` array"),
            (r#"{"value":null}"#, "without a `value` array"),
            (r#"{"value":"nope"}"#, "not a Graph collection page"),
            ("[1,2]", "not a Graph collection page"),
        ];
        for (body, want) in cases {
            for stream in [Stream::ManagedDevices, Stream::Users] {
                let n = run(stream, body);
                let err = n.page_error.unwrap_or_default();
                assert!(err.contains(want), "{body:?}: {err}");
                assert!(n.assets.is_empty());
            }
        }
        let n = run(Stream::Users, r#"{"value":[]}"#);
        assert_eq!((n.page_error, n.assets.len()), (None, 0));
        let n = page(Stream::Users, &RawPage::new("users", Bytes::from_static(b"\xff\xfe{"), "p"), false);
        assert!(n.page_error.is_some());
    }

    #[test]
    fn never_panics_on_mangled_sim_pages() {
        let base = r#"{"@odata.context":"c","@odata.nextLink":"http://h/v1.0/users?$skiptoken=x","value":[{"id":"a","deviceName":"Büro-1","wiFiMacAddress":"A0B1C2D3E4F5"},{"id":"b\u00e9","mail":"x@y.z"}]}"#;
        for cut in 0..=base.len() {
            let body = Bytes::copy_from_slice(&base.as_bytes()[..cut]);
            for stream in [Stream::ManagedDevices, Stream::Users] {
                let _ = page(stream, &RawPage::new(stream.name(), body.clone(), "p"), true);
            }
        }
    }
}
