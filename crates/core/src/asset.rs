//! The normalized asset schema every adapter produces and every store keeps.
//!
//! Field values are already canonical when they reach an [`Asset`]: adapters
//! build them with the helpers in [`crate::fields`], so a MAC address or a
//! hostname from CrowdStrike compares equal to the same one from Intune.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fields::MacAddr;

/// What kind of thing an asset is. Each stream produces exactly one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    Device,
    User,
}

impl AssetKind {
    pub const ALL: [AssetKind; 2] = [AssetKind::Device, AssetKind::User];

    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Device => "device",
            AssetKind::User => "user",
        }
    }
}

impl fmt::Display for AssetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AssetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "device" | "devices" => Ok(AssetKind::Device),
            "user" | "users" => Ok(AssetKind::User),
            other => Err(format!("unknown asset kind `{other}` (expected device or user)")),
        }
    }
}

/// Operating system facts, as far as the vendor tells them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    /// One of `windows`, `macos`, `linux`, `ios`, `android`, `chromeos`, `unix`, `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Os {
    pub fn is_empty(&self) -> bool {
        self.family.is_none() && self.name.is_none() && self.version.is_none()
    }
}

/// A device: an endpoint, server, phone or VM as one product sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The vendor's own id for this device; with the connection it is the key.
    pub source_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mac_addresses: Vec<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Os::is_empty")]
    pub os: Os,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// The user the vendor associates with the device (login, UPN or email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A user account in an identity provider or directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub source_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The body of a normalized asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AssetBody {
    Device(Device),
    User(User),
}

/// One normalized asset as it travels from normalize to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    /// The stream that produced it: stale handling is scoped per stream.
    pub stream: String,
    #[serde(flatten)]
    pub body: AssetBody,
    /// The vendor's record as received, kept only when the connection asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
}

impl Asset {
    pub fn device(stream: impl Into<String>, device: Device) -> Self {
        Asset { stream: stream.into(), body: AssetBody::Device(device), raw: None }
    }

    pub fn user(stream: impl Into<String>, user: User) -> Self {
        Asset { stream: stream.into(), body: AssetBody::User(user), raw: None }
    }

    pub fn with_raw(mut self, raw: Option<serde_json::Value>) -> Self {
        self.raw = raw;
        self
    }

    pub fn kind(&self) -> AssetKind {
        match &self.body {
            AssetBody::Device(_) => AssetKind::Device,
            AssetBody::User(_) => AssetKind::User,
        }
    }

    /// Whether a store's `Reject::record` names this asset: its source id,
    /// or `<kind> <source_id>` as the SQLite and MongoDB stores write it.
    pub fn is_named_by(&self, record: &str) -> bool {
        let id = self.source_id();
        record == id
            || record
                .strip_prefix(self.kind().as_str())
                .and_then(|rest| rest.strip_prefix(' '))
                .is_some_and(|rest| rest == id)
    }

    pub fn source_id(&self) -> &str {
        match &self.body {
            AssetBody::Device(d) => &d.source_id,
            AssetBody::User(u) => &u.source_id,
        }
    }

    /// The asset's fields (without stream and raw) as a JSON object; what stores persist.
    pub fn fields_json(&self) -> serde_json::Value {
        // Serializing plain data structs into a Value cannot fail.
        match &self.body {
            AssetBody::Device(d) => serde_json::to_value(d),
            AssetBody::User(u) => serde_json::to_value(u),
        }
        .unwrap_or(serde_json::Value::Null)
    }

    /// A stable fingerprint of the asset's content, used by stores to tell
    /// "updated" from "unchanged". Independent of the sync that produced it.
    pub fn content_hash(&self) -> String {
        let mut bytes = serde_json::to_vec(&self.body).unwrap_or_default();
        if let Some(raw) = &self.raw {
            bytes.extend(serde_json::to_vec(raw).unwrap_or_default());
        }
        format!("{:016x}", fnv1a64(&bytes))
    }

    /// [`Asset::content_hash`] from the fields and raw record as a store has
    /// already serialized them (`serde_json::to_string` of the `Device` or
    /// `User`, and of the raw value), without serializing anything again.
    /// The body serializes as `{"kind":"<kind>",` followed by the fields'
    /// object without its `{`; the hash is taken over exactly those bytes.
    pub fn content_hash_of(&self, fields: &str, raw: Option<&str>) -> String {
        let Some(rest) = fields.strip_prefix('{').filter(|r| r.len() > 1) else {
            return self.content_hash();
        };
        let mut h = Fnv::default();
        h.write(b"{\"kind\":\"");
        h.write(self.kind().as_str().as_bytes());
        h.write(b"\",");
        h.write(rest.as_bytes());
        if let Some(raw) = raw {
            h.write(raw.as_bytes());
        }
        format!("{:016x}", h.0)
    }

    /// Approximate serialized size in bytes, used to close load batches by
    /// size. Estimated from the fields without serializing anything (it runs
    /// once per asset on the hot path); errs on the large side.
    pub fn approx_size(&self) -> usize {
        let body = match &self.body {
            AssetBody::Device(d) => {
                let ips: usize = d.ip_addresses.iter().map(|ip| if ip.is_ipv4() { 18 } else { 42 }).sum();
                let some = |n: usize| if n == 0 { 0 } else { FIELD + n };
                FIELD
                    + d.source_id.len()
                    + opt(&d.hostname)
                    + opt(&d.domain)
                    + some(ips)
                    + some(d.mac_addresses.len() * 20)
                    + opt(&d.serial_number)
                    + opt(&d.os.family)
                    + opt(&d.os.name)
                    + opt(&d.os.version)
                    + opt(&d.manufacturer)
                    + opt(&d.model)
                    + time(&d.first_seen)
                    + time(&d.last_seen)
                    + opt(&d.owner)
                    + list(&d.tags)
            }
            AssetBody::User(u) => {
                FIELD
                    + u.source_id.len()
                    + opt(&u.username)
                    + opt(&u.email)
                    + opt(&u.display_name)
                    + opt(&u.first_name)
                    + opt(&u.last_name)
                    + u.active.map_or(0, |_| FIELD + 5)
                    + opt(&u.status)
                    + time(&u.created)
                    + time(&u.last_login)
                    + list(&u.tags)
            }
        };
        2 * FIELD + self.stream.len() + body + self.raw.as_ref().map_or(0, |r| FIELD + json_size(r))
    }
}

/// A field's name, quotes and separators, roughly.
const FIELD: usize = 20;

fn opt(v: &Option<String>) -> usize {
    v.as_ref().map_or(0, |s| FIELD + s.len())
}

fn time(v: &Option<DateTime<Utc>>) -> usize {
    v.map_or(0, |_| FIELD + 32)
}

fn list(v: &[String]) -> usize {
    if v.is_empty() { 0 } else { FIELD + v.iter().map(|s| s.len() + 3).sum::<usize>() }
}

/// The serialized size of a JSON value, without serializing it (escapes aside).
fn json_size(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|i| json_size(i) + 1).sum::<usize>(),
        Value::Object(map) => 2 + map.iter().map(|(k, v)| k.len() + 4 + json_size(v)).sum::<usize>(),
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(bytes);
    h.0
}

/// 64-bit FNV-1a, fed in pieces.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate never serializes, but must stay close to (and rather
    /// above) the real size: batches close on it.
    #[test]
    fn approx_size_is_close_to_the_serialized_size() {
        let full = Device {
            source_id: "0b6d3c2e9f1a4b7c8d5e6f7a8b9c0d1e".into(),
            hostname: Some("web-01".into()),
            domain: Some("corp.example.com".into()),
            ip_addresses: vec!["10.0.0.5".parse().expect("ip"), "2001:db8::1".parse().expect("ip")],
            mac_addresses: crate::fields::macs(["aa:bb:cc:dd:ee:ff", "00-50-56-01-02-03"]),
            serial_number: Some("VMware-56 4d 1a".into()),
            os: crate::fields::os(Some("Windows 11 Enterprise"), Some("10.0.22631")),
            manufacturer: Some("Dell Inc.".into()),
            model: Some("Latitude 7440".into()),
            first_seen: crate::fields::timestamp("2025-01-02T03:04:05Z"),
            last_seen: crate::fields::timestamp("2026-11-30T08:15:42.123Z"),
            owner: Some("alice@corp.example.com".into()),
            tags: vec!["prod".into(), "eu".into()],
        };
        let user = User {
            source_id: "00u1abcd".into(),
            username: Some("alice@corp.example.com".into()),
            email: Some("alice@corp.example.com".into()),
            active: Some(true),
            created: crate::fields::timestamp("2025-01-02T03:04:05Z"),
            ..Default::default()
        };
        let raw = serde_json::json!({"id": 7, "nics": [{"mac": "aa:bb", "ips": ["10.0.0.5"]}], "ok": true, "x": null});
        for a in [
            Asset::device("hosts", full.clone()),
            Asset::device("hosts", Device { source_id: "1".into(), ..Default::default() }),
            Asset::user("users", user),
            Asset::device("hosts", full).with_raw(Some(raw)),
        ] {
            let real = serde_json::to_vec(&a).expect("serialize").len();
            let estimate = a.approx_size();
            assert!(estimate >= real && estimate <= real * 2, "estimate {estimate} for {real} bytes: {a:?}");
        }
    }

    #[test]
    fn a_reject_names_an_asset_by_source_id_or_kind_and_source_id() {
        let a = Asset::device("hosts", Device { source_id: "ab 1".into(), ..Default::default() });
        for (record, named) in
            [("ab 1", true), ("device ab 1", true), ("user ab 1", false), ("device ab", false), ("deviceab 1", false)]
        {
            assert_eq!(a.is_named_by(record), named, "{record:?}");
        }
    }

    /// Stores hash what they already serialized: it must be the same hash.
    #[test]
    fn content_hash_of_serialized_fields_is_the_content_hash() {
        let device = Device {
            source_id: "d-1".into(),
            hostname: Some("wé-01".into()),
            ip_addresses: vec!["10.0.0.5".parse().expect("ip")],
            mac_addresses: crate::fields::macs(["aa:bb:cc:dd:ee:ff"]),
            tags: vec!["a\"b".into()],
            ..Default::default()
        };
        let user = User { source_id: "u-1".into(), active: Some(false), ..Default::default() };
        let raw = serde_json::json!({"id": "d-1", "nested": [1, {"x": null}]});
        for a in [
            Asset::device("hosts", device.clone()),
            Asset::device("hosts", device).with_raw(Some(raw)),
            Asset::user("users", user),
        ] {
            let fields = match &a.body {
                AssetBody::Device(d) => serde_json::to_string(d),
                AssetBody::User(u) => serde_json::to_string(u),
            }
            .expect("fields");
            let raw = a.raw.as_ref().map(|r| serde_json::to_string(r).expect("raw"));
            assert_eq!(a.content_hash_of(&fields, raw.as_deref()), a.content_hash(), "{a:?}");
        }
    }

    #[test]
    fn content_hash_ignores_nothing_but_sync_metadata() {
        let a =
            Asset::device("hosts", Device { source_id: "1".into(), hostname: Some("a".into()), ..Default::default() });
        let mut b = a.clone();
        assert_eq!(a.content_hash(), b.content_hash());
        if let AssetBody::Device(d) = &mut b.body {
            d.hostname = Some("b".into());
        }
        assert_ne!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn asset_serializes_with_kind_tag() {
        let a =
            Asset::user("users", User { source_id: "u1".into(), email: Some("x@y.z".into()), ..Default::default() });
        let v = serde_json::to_value(&a).expect("serialize");
        assert_eq!(v["kind"], "user");
        assert_eq!(v["source_id"], "u1");
        let back: Asset = serde_json::from_value(v).expect("deserialize");
        assert_eq!(back, a);
    }
}
