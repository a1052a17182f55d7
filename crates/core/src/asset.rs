//! The normalized asset schema every adapter produces and every store keeps.
//!
//! Field values are already canonical when they reach an [`Asset`]: adapters
//! build them with the helpers in [`crate::fields`], so a MAC address or a
//! hostname from CrowdStrike compares equal to the same one from Intune.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fields::MacAddr;

/// What kind of thing an asset is. Each stream produces exactly one kind.
///
/// The variants are declared in the order of their names, so `Ord` is the
/// byte order of [`AssetKind::as_str`]: the order stores sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    /// A resource in a cloud account (instance, bucket, database, ...).
    CloudResource,
    Device,
    /// An installed product on a device.
    Software,
    User,
    /// A finding: one vulnerability on one asset.
    Vulnerability,
}

impl AssetKind {
    pub const ALL: [AssetKind; 5] =
        [AssetKind::Device, AssetKind::User, AssetKind::Vulnerability, AssetKind::Software, AssetKind::CloudResource];

    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Device => "device",
            AssetKind::User => "user",
            AssetKind::Vulnerability => "vulnerability",
            AssetKind::Software => "software",
            AssetKind::CloudResource => "cloud_resource",
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
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "device" | "devices" => Ok(AssetKind::Device),
            "user" | "users" => Ok(AssetKind::User),
            "vulnerability" | "vulnerabilities" | "vuln" | "vulns" => Ok(AssetKind::Vulnerability),
            "software" => Ok(AssetKind::Software),
            "cloud_resource" | "cloud_resources" => Ok(AssetKind::CloudResource),
            other => Err(format!(
                "unknown asset kind `{other}` (expected device, user, vulnerability, software or cloud_resource)"
            )),
        }
    }
}

/// A pointer from one asset to another: (connection, kind, source_id). The
/// connection defaults to the pointing record's own (a vulnerability of a
/// scanner points at a device of the same scanner); name another connection
/// to point across products.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AssetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    pub kind: AssetKind,
    pub source_id: String,
}

impl AssetRef {
    /// A reference to an asset of the record's own connection.
    pub fn local(kind: AssetKind, source_id: impl Into<String>) -> Self {
        AssetRef { connection: None, kind, source_id: source_id.into() }
    }

    /// A reference to an asset of another connection.
    pub fn to(connection: impl Into<String>, kind: AssetKind, source_id: impl Into<String>) -> Self {
        AssetRef { connection: Some(connection.into()), kind, source_id: source_id.into() }
    }

    /// The connection this reference points into, given the pointing record's own.
    pub fn connection_or<'a>(&'a self, own: &'a str) -> &'a str {
        self.connection.as_deref().unwrap_or(own)
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
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub last_seen: Option<DateTime<Utc>>,
    /// The user the vendor associates with the device (login, UPN or email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The owner as a user asset, where the vendor says which one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_ref: Option<AssetRef>,
    /// The cloud provider's instance id (`i-0abc...`, an Azure VM id) of a cloud VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_instance_id: Option<String>,
    /// The Entra ID (Azure AD) device id (`azureADDeviceId`), lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_device_id: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub last_login: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// How bad a finding is, normalized from the vendor's scale (see
/// [`crate::fields::severity`] and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a finding stands (see [`crate::fields::finding_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingState {
    Open,
    Fixed,
    Reopened,
    /// Risk accepted, an exception, a false positive: open but not to be fixed.
    Accepted,
}

impl FindingState {
    pub const ALL: [FindingState; 4] =
        [FindingState::Open, FindingState::Fixed, FindingState::Reopened, FindingState::Accepted];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingState::Open => "open",
            FindingState::Fixed => "fixed",
            FindingState::Reopened => "reopened",
            FindingState::Accepted => "accepted",
        }
    }
}

impl fmt::Display for FindingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vulnerability finding: one vulnerability (a scanner plugin, a QID) on one asset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vulnerability {
    /// The vendor's id of the finding (or plugin id + asset id when it has none).
    pub source_id: String,
    /// The affected asset (usually a device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<AssetRef>,
    /// CVE ids, validated and upper-cased (`CVE-2024-3094`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cves: Vec<String>,
    /// The vendor's check id: Tenable plugin id, Qualys QID, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// CVSS v3 base score (0.0-10.0), where the vendor gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss3_score: Option<f64>,
    /// The vendor's own score (Tenable VPR, Qualys TruRisk, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<FindingState>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub first_found: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub last_found: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp`, `udp`, ... lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
}

/// An installed product on a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Software {
    pub source_id: String,
    /// The device it is installed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<AssetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CPE 2.3 formatted string, where the vendor gives one ([`crate::fields::cpe`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub last_seen: Option<DateTime<Utc>>,
}

/// One key/value tag of a cloud resource (AWS and Azure tags, GCP labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CloudTag {
    pub key: String,
    pub value: String,
}

/// A resource in a cloud account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudResource {
    pub source_id: String,
    /// `aws`, `azure`, `gcp`, ... lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// AWS account id, Azure subscription id, GCP project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The provider's type name (`ec2:instance`, `Microsoft.Compute/virtualMachines`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The provider's id (`i-0abc...`, an Azure resource id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The ARN (AWS) or other fully qualified name, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The provider's state (`running`, `stopped`, `available`, ...) lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<CloudTag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "timestamp::serialize")]
    pub created: Option<DateTime<Utc>>,
}

/// The body of a normalized asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AssetBody {
    Device(Device),
    User(User),
    Vulnerability(Vulnerability),
    Software(Software),
    CloudResource(CloudResource),
}

/// The type of a vendor attribute, as a stream declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrType {
    String,
    Integer,
    /// A finite number.
    Float,
    Boolean,
    /// A UTC instant, stored as RFC 3339 text.
    Timestamp,
    StringList,
}

impl AttrType {
    pub const ALL: [AttrType; 6] = [
        AttrType::String,
        AttrType::Integer,
        AttrType::Float,
        AttrType::Boolean,
        AttrType::Timestamp,
        AttrType::StringList,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Integer => "integer",
            AttrType::Float => "float",
            AttrType::Boolean => "boolean",
            AttrType::Timestamp => "timestamp",
            AttrType::StringList => "string_list",
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttrType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttrType::ALL.into_iter().find(|t| t.as_str() == s.trim()).ok_or_else(|| {
            format!("unknown attribute type `{s}` (expected string, integer, float, boolean, timestamp or string_list)")
        })
    }
}

/// One vendor attribute's value. Serialized as plain JSON (a timestamp as
/// RFC 3339 text, so it reads back as a string).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Timestamp(DateTime<Utc>),
    StringList(Vec<String>),
}

impl AttrValue {
    pub fn ty(&self) -> AttrType {
        match self {
            AttrValue::String(_) => AttrType::String,
            AttrValue::Integer(_) => AttrType::Integer,
            AttrValue::Float(_) => AttrType::Float,
            AttrValue::Boolean(_) => AttrType::Boolean,
            AttrValue::Timestamp(_) => AttrType::Timestamp,
            AttrValue::StringList(_) => AttrType::StringList,
        }
    }

    fn approx_size(&self) -> usize {
        match self {
            AttrValue::String(s) => s.len() + 2,
            AttrValue::Integer(_) | AttrValue::Float(_) => 24,
            AttrValue::Boolean(_) => 5,
            AttrValue::Timestamp(_) => 32,
            AttrValue::StringList(v) => 2 + v.iter().map(|s| s.len() + 3).sum::<usize>(),
        }
    }
}

impl Serialize for AttrValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AttrValue::String(v) => s.serialize_str(v),
            AttrValue::Integer(v) => s.serialize_i64(*v),
            AttrValue::Float(v) => s.serialize_f64(*v),
            AttrValue::Boolean(v) => s.serialize_bool(*v),
            AttrValue::Timestamp(v) => v.serialize(s),
            AttrValue::StringList(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(AttrValue::String(s)),
            serde_json::Value::Bool(b) => Ok(AttrValue::Boolean(b)),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(AttrValue::Integer(i)),
                (None, Some(f)) => Ok(AttrValue::Float(f)),
                _ => Err(D::Error::custom("attribute number out of range")),
            },
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => Ok(s),
                    _ => Err(D::Error::custom("a list attribute holds strings only")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(AttrValue::StringList),
            _ => Err(D::Error::custom("an attribute is a string, number, boolean or list of strings")),
        }
    }
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::String(v)
    }
}
impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::String(v.to_string())
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Integer(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Float(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Boolean(v)
    }
}
impl From<DateTime<Utc>> for AttrValue {
    fn from(v: DateTime<Utc>) -> Self {
        AttrValue::Timestamp(v)
    }
}
impl From<Vec<String>> for AttrValue {
    fn from(v: Vec<String>) -> Self {
        AttrValue::StringList(v)
    }
}

/// An asset's vendor attributes, by name (ordered, so the content hash is stable).
pub type Attributes = BTreeMap<String, AttrValue>;

/// The kinds of correlation key an asset can carry ([`Asset::correlation_keys`]).
/// Stores index them: SQLite in its lookup index (`asset_lookup`), MongoDB in the `keys` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// A device's serial number, upper-cased.
    SerialNumber,
    /// A device's MAC address (`aa:bb:cc:dd:ee:ff`).
    MacAddress,
    /// A device's host label, lowercase.
    Hostname,
    /// A device's `hostname.domain`, lowercase.
    Fqdn,
    /// A cloud instance id (device) or cloud resource id / ARN (cloud resource).
    CloudId,
    /// An Entra ID (Azure AD) device id, lowercase.
    EntraDeviceId,
    /// A user's email address, lowercase.
    Email,
    /// A user's login name or UPN, lowercase.
    Username,
    /// A CVE id of a vulnerability, upper-cased.
    Cve,
    /// The CPE of a software record, lowercase.
    Cpe,
}

impl KeyType {
    pub const ALL: [KeyType; 10] = [
        KeyType::SerialNumber,
        KeyType::MacAddress,
        KeyType::Hostname,
        KeyType::Fqdn,
        KeyType::CloudId,
        KeyType::EntraDeviceId,
        KeyType::Email,
        KeyType::Username,
        KeyType::Cve,
        KeyType::Cpe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::SerialNumber => "serial_number",
            KeyType::MacAddress => "mac_address",
            KeyType::Hostname => "hostname",
            KeyType::Fqdn => "fqdn",
            KeyType::CloudId => "cloud_id",
            KeyType::EntraDeviceId => "entra_device_id",
            KeyType::Email => "email",
            KeyType::Username => "username",
            KeyType::Cve => "cve",
            KeyType::Cpe => "cpe",
        }
    }

    /// The key's value in its indexed form, from a stored field value or
    /// from what a user typed (`corral assets --where`): `None` when it is
    /// not a valid value of this key.
    pub fn normalize(self, value: &str) -> Option<String> {
        let mut out = String::new();
        self.normalize_into(value, &mut out).then_some(out)
    }

    /// [`KeyType::normalize`] into `out`, which is cleared first: false
    /// (and `out` empty) when `value` is not a valid value of this key.
    /// Reusing `out` saves an allocation per key where every asset's keys
    /// are derived.
    pub fn normalize_into(self, value: &str, out: &mut String) -> bool {
        out.clear();
        let v = value.trim();
        if v.is_empty() {
            return false;
        }
        match self {
            KeyType::SerialNumber => push_cased(out, v, str::make_ascii_uppercase, str::to_uppercase),
            KeyType::MacAddress => match v.parse::<MacAddr>() {
                Ok(m) => m.push_to(out),
                Err(_) => return false,
            },
            KeyType::Hostname
            | KeyType::Fqdn
            | KeyType::EntraDeviceId
            | KeyType::Email
            | KeyType::Username
            | KeyType::Cpe => push_cased(out, v, str::make_ascii_lowercase, str::to_lowercase),
            KeyType::CloudId => out.push_str(v),
            KeyType::Cve => match crate::fields::cve(v) {
                Some(c) => out.push_str(&c),
                None => return false,
            },
        }
        true
    }
}

/// Append `v` to `out` in one case: in place when it is ASCII (the usual
/// case, and then the same as the full Unicode mapping), else by `unicode`.
fn push_cased(out: &mut String, v: &str, ascii: fn(&mut str), unicode: fn(&str) -> String) {
    if v.is_ascii() {
        let start = out.len();
        out.push_str(v);
        ascii(&mut out[start..]);
    } else {
        out.push_str(&unicode(v));
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One normalized asset as it travels from normalize to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    /// The stream that produced it: stale handling is scoped per stream.
    pub stream: String,
    #[serde(flatten)]
    pub body: AssetBody,
    /// Vendor fields beyond the canonical ones, each declared by the stream
    /// ([`crate::adapter::StreamInfo::attributes`]): the engine rejects a
    /// record carrying one its stream did not declare, or of another type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Attributes,
    /// The vendor's record as received, kept only when the connection asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
}

/// An asset's role-named references to other assets ([`Asset::references`]).
pub type References<'a> = Vec<(&'static str, &'a AssetRef)>;

impl Asset {
    pub fn new(stream: impl Into<String>, body: AssetBody) -> Self {
        Asset { stream: stream.into(), body, attributes: Attributes::new(), raw: None }
    }

    pub fn device(stream: impl Into<String>, device: Device) -> Self {
        Self::new(stream, AssetBody::Device(device))
    }

    pub fn user(stream: impl Into<String>, user: User) -> Self {
        Self::new(stream, AssetBody::User(user))
    }

    pub fn vulnerability(stream: impl Into<String>, vulnerability: Vulnerability) -> Self {
        Self::new(stream, AssetBody::Vulnerability(vulnerability))
    }

    pub fn software(stream: impl Into<String>, software: Software) -> Self {
        Self::new(stream, AssetBody::Software(software))
    }

    pub fn cloud_resource(stream: impl Into<String>, resource: CloudResource) -> Self {
        Self::new(stream, AssetBody::CloudResource(resource))
    }

    pub fn with_raw(mut self, raw: Option<serde_json::Value>) -> Self {
        self.raw = raw;
        self
    }

    /// Set a vendor attribute (declared by the stream: see [`Asset::attributes`]).
    pub fn with_attr(mut self, name: &str, value: impl Into<AttrValue>) -> Self {
        self.attributes.insert(name.to_string(), value.into());
        self
    }

    /// Set a vendor attribute when there is a value.
    pub fn with_attr_opt<V: Into<AttrValue>>(self, name: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.with_attr(name, v),
            None => self,
        }
    }

    pub fn kind(&self) -> AssetKind {
        match &self.body {
            AssetBody::Device(_) => AssetKind::Device,
            AssetBody::User(_) => AssetKind::User,
            AssetBody::Vulnerability(_) => AssetKind::Vulnerability,
            AssetBody::Software(_) => AssetKind::Software,
            AssetBody::CloudResource(_) => AssetKind::CloudResource,
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
            AssetBody::Vulnerability(v) => &v.source_id,
            AssetBody::Software(s) => &s.source_id,
            AssetBody::CloudResource(c) => &c.source_id,
        }
    }

    /// The assets this one points at, each with its role (the field holding it):
    /// a device's `owner_ref`, a vulnerability's `asset`, a software record's `device`.
    pub fn references(&self) -> References<'_> {
        let mut out = Vec::new();
        match &self.body {
            AssetBody::Device(d) => out.extend(d.owner_ref.as_ref().map(|r| ("owner_ref", r))),
            AssetBody::Vulnerability(v) => out.extend(v.asset.as_ref().map(|r| ("asset", r))),
            AssetBody::Software(s) => out.extend(s.device.as_ref().map(|r| ("device", r))),
            AssetBody::User(_) | AssetBody::CloudResource(_) => {}
        }
        out
    }

    /// The correlation keys of this asset, in their indexed form
    /// ([`KeyType::normalize`]), without duplicates: what stores index so that
    /// the same machine, person or CVE is found across products.
    pub fn correlation_keys(&self) -> Vec<(KeyType, String)> {
        let mut out: Vec<(KeyType, String)> = Vec::new();
        self.for_each_correlation_key(|k, v| {
            if !out.iter().any(|(ok, ov)| *ok == k && ov == v) {
                out.push((k, v.to_string()));
            }
        });
        out
    }

    /// Call `f` with each of [`Asset::correlation_keys`], in the same order,
    /// but without collecting them: a key may come more than once, and no
    /// key is allocated (the values are normalized into one reused buffer).
    pub fn for_each_correlation_key(&self, mut f: impl FnMut(KeyType, &str)) {
        fn key(f: &mut impl FnMut(KeyType, &str), buf: &mut String, k: KeyType, v: &str) {
            if k.normalize_into(v, buf) {
                f(k, buf);
            }
        }
        let mut buf = String::new();
        match &self.body {
            AssetBody::Device(d) => {
                if let Some(s) = &d.serial_number {
                    key(&mut f, &mut buf, KeyType::SerialNumber, s);
                }
                for m in &d.mac_addresses {
                    // The canonical form is the normalized one: no parsing it again.
                    buf.clear();
                    m.push_to(&mut buf);
                    f(KeyType::MacAddress, &buf);
                }
                if let Some(h) = &d.hostname {
                    key(&mut f, &mut buf, KeyType::Hostname, h);
                    if let Some(dom) = &d.domain {
                        let fqdn = [h.as_str(), ".", dom.as_str()].concat();
                        key(&mut f, &mut buf, KeyType::Fqdn, &fqdn);
                    }
                }
                if let Some(c) = &d.cloud_instance_id {
                    key(&mut f, &mut buf, KeyType::CloudId, c);
                }
                if let Some(e) = &d.entra_device_id {
                    key(&mut f, &mut buf, KeyType::EntraDeviceId, e);
                }
            }
            AssetBody::User(u) => {
                if let Some(e) = &u.email {
                    key(&mut f, &mut buf, KeyType::Email, e);
                }
                if let Some(n) = &u.username {
                    key(&mut f, &mut buf, KeyType::Username, n);
                }
            }
            AssetBody::Vulnerability(v) => {
                for c in &v.cves {
                    key(&mut f, &mut buf, KeyType::Cve, c);
                }
            }
            AssetBody::Software(s) => {
                if let Some(c) = &s.cpe {
                    key(&mut f, &mut buf, KeyType::Cpe, c);
                }
            }
            AssetBody::CloudResource(c) => {
                if let Some(id) = &c.resource_id {
                    key(&mut f, &mut buf, KeyType::CloudId, id);
                }
                if let Some(arn) = &c.arn {
                    key(&mut f, &mut buf, KeyType::CloudId, arn);
                }
            }
        }
    }

    /// The asset's fields (without stream and raw; with `attributes` when it
    /// has any) as JSON text: what stores persist.
    pub fn fields_string(&self) -> Result<String, serde_json::Error> {
        // Sized from the estimate (which errs on the large side), so the
        // text is written once instead of grown and copied several times.
        let mut out = Vec::with_capacity(self.approx_size());
        match &self.body {
            AssetBody::Device(d) => serde_json::to_writer(&mut out, d),
            AssetBody::User(u) => serde_json::to_writer(&mut out, u),
            AssetBody::Vulnerability(v) => serde_json::to_writer(&mut out, v),
            AssetBody::Software(x) => serde_json::to_writer(&mut out, x),
            AssetBody::CloudResource(c) => serde_json::to_writer(&mut out, c),
        }?;
        if !self.attributes.is_empty() && out.last() == Some(&b'}') {
            out.pop();
            out.extend_from_slice(b",\"attributes\":");
            serde_json::to_writer(&mut out, &self.attributes)?;
            out.push(b'}');
        }
        // serde_json writes UTF-8 only.
        String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.utf8_error()))
    }

    /// The asset's fields as a JSON object (the same as [`Asset::fields_string`]).
    pub fn fields_json(&self) -> serde_json::Value {
        // Serializing plain data structs into a Value cannot fail.
        let mut v = match &self.body {
            AssetBody::Device(d) => serde_json::to_value(d),
            AssetBody::User(u) => serde_json::to_value(u),
            AssetBody::Vulnerability(v) => serde_json::to_value(v),
            AssetBody::Software(x) => serde_json::to_value(x),
            AssetBody::CloudResource(c) => serde_json::to_value(c),
        }
        .unwrap_or(serde_json::Value::Null);
        if !self.attributes.is_empty()
            && let serde_json::Value::Object(m) = &mut v
        {
            m.insert("attributes".into(), serde_json::to_value(&self.attributes).unwrap_or(serde_json::Value::Null));
        }
        v
    }

    /// A stable fingerprint of the asset's content (fields, attributes, raw
    /// record), used by stores to tell "updated" from "unchanged".
    /// Independent of the sync that produced it.
    pub fn content_hash(&self) -> String {
        let fields = self.fields_string().unwrap_or_default();
        let raw = self.raw.as_ref().and_then(|r| serde_json::to_string(r).ok());
        self.content_hash_of(&fields, raw.as_deref())
    }

    /// [`Asset::content_hash`] from the fields and raw record as a store has
    /// already serialized them ([`Asset::fields_string`], and
    /// `serde_json::to_string` of the raw value), without serializing
    /// anything again. The hash is taken over `{"kind":"<kind>",` followed by
    /// the fields' object without its `{`: for an asset without attributes,
    /// the bytes of the tagged body, so hashes stored by earlier versions stay valid.
    pub fn content_hash_of(&self, fields: &str, raw: Option<&str>) -> String {
        let mut h = Fnv::default();
        h.write(b"{\"kind\":\"");
        h.write(self.kind().as_str().as_bytes());
        h.write(b"\",");
        h.write(fields.strip_prefix('{').unwrap_or(fields).as_bytes());
        if let Some(raw) = raw {
            h.write(raw.as_bytes());
        }
        format!("{:016x}", h.0)
    }

    /// Approximate serialized size in bytes, used to close load batches by
    /// size. Estimated from the fields without serializing anything (it runs
    /// once per asset on the hot path); errs on the large side.
    pub fn approx_size(&self) -> usize {
        let some = |n: usize| if n == 0 { 0 } else { FIELD + n };
        let ips = |v: &[IpAddr]| some(v.iter().map(|ip| if ip.is_ipv4() { 18 } else { 42 }).sum());
        let body = match &self.body {
            AssetBody::Device(d) => {
                FIELD
                    + d.source_id.len()
                    + opt(&d.hostname)
                    + opt(&d.domain)
                    + ips(&d.ip_addresses)
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
                    + reference(&d.owner_ref)
                    + opt(&d.cloud_instance_id)
                    + opt(&d.entra_device_id)
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
            AssetBody::Vulnerability(v) => {
                FIELD
                    + v.source_id.len()
                    + reference(&v.asset)
                    + list(&v.cves)
                    + opt(&v.plugin_id)
                    + opt(&v.title)
                    + v.severity.map_or(0, |_| FIELD + 10)
                    + v.cvss3_score.map_or(0, |_| FIELD + 24)
                    + v.vendor_score.map_or(0, |_| FIELD + 24)
                    + v.state.map_or(0, |_| FIELD + 10)
                    + time(&v.first_found)
                    + time(&v.last_found)
                    + v.port.map_or(0, |_| FIELD + 5)
                    + opt(&v.protocol)
                    + opt(&v.solution)
            }
            AssetBody::Software(s) => {
                FIELD
                    + s.source_id.len()
                    + reference(&s.device)
                    + opt(&s.name)
                    + opt(&s.vendor)
                    + opt(&s.version)
                    + opt(&s.cpe)
                    + time(&s.first_seen)
                    + time(&s.last_seen)
            }
            AssetBody::CloudResource(c) => {
                FIELD
                    + c.source_id.len()
                    + opt(&c.provider)
                    + opt(&c.account)
                    + opt(&c.region)
                    + opt(&c.resource_type)
                    + opt(&c.resource_id)
                    + opt(&c.arn)
                    + opt(&c.name)
                    + opt(&c.state)
                    + some(c.tags.iter().map(|t| t.key.len() + t.value.len() + 24).sum())
                    + ips(&c.public_ips)
                    + ips(&c.private_ips)
                    + time(&c.created)
            }
        };
        let attributes = if self.attributes.is_empty() {
            0
        } else {
            FIELD + self.attributes.iter().map(|(k, v)| k.len() + 4 + v.approx_size()).sum::<usize>()
        };
        2 * FIELD + self.stream.len() + body + attributes + self.raw.as_ref().map_or(0, |r| FIELD + json_size(r))
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

fn reference(r: &Option<AssetRef>) -> usize {
    r.as_ref().map_or(0, |r| 3 * FIELD + r.connection.as_ref().map_or(0, |c| FIELD + c.len()) + r.source_id.len())
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

/// 64-bit FNV-1a of `bytes`: a stable hash (the same in every version and
/// process), for content hashes and redacted stand-ins.
pub fn stable_hash(bytes: &[u8]) -> u64 {
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

/// How the asset bodies write their timestamps: the same text as chrono's
/// own `Serialize` (RFC 3339 in UTC with `Z`, fractional seconds only when
/// there are some, in 3, 6 or 9 digits), so stored fields and content hashes
/// do not change. chrono hands the serializer a `Display` that writes one
/// character at a time, and serde_json escapes each piece separately: about
/// 2,000 instructions a timestamp, a third of `fields_string` for a
/// CrowdStrike host. Here chrono writes the text into a string once
/// ([`DateTime::to_rfc3339_opts`], which runs the formatter its `Serialize`
/// runs, with the same options) and the serializer takes it whole.
mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Serialize, Serializer};

    struct Rfc3339<'a>(&'a DateTime<Utc>);

    impl Serialize for Rfc3339<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
    }

    pub(super) fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_some(&Rfc3339(t)),
            None => s.serialize_none(),
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
            owner_ref: Some(AssetRef::to("okta-prod", AssetKind::User, "00u1abcd")),
            cloud_instance_id: Some("i-0123456789abcdef0".into()),
            entra_device_id: Some("8f2c0000-aaaa-bbbb-cccc-000000000001".into()),
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
            Asset::device("hosts", full.clone()).with_raw(Some(raw)),
            Asset::device("hosts", full)
                .with_attr("agent_version", "7.1.0")
                .with_attr("cpu", 4_i64)
                .with_attr("groups", vec!["a".to_string(), "bb".to_string()]),
            Asset::vulnerability(
                "vulns",
                Vulnerability {
                    source_id: "plugin-19506-dev-1".into(),
                    asset: Some(AssetRef::local(AssetKind::Device, "dev-1")),
                    cves: vec!["CVE-2024-3094".into(), "CVE-2021-44228".into()],
                    plugin_id: Some("19506".into()),
                    title: Some("OpenSSH < 9.8 regreSSHion".into()),
                    severity: Some(Severity::Critical),
                    cvss3_score: Some(8.1),
                    vendor_score: Some(7.4),
                    state: Some(FindingState::Reopened),
                    first_found: crate::fields::timestamp("2025-01-02T03:04:05Z"),
                    last_found: crate::fields::timestamp("2025-01-02T03:04:05.123Z"),
                    port: Some(22),
                    protocol: Some("tcp".into()),
                    solution: Some("Upgrade to OpenSSH 9.8 or later.".into()),
                },
            ),
            Asset::software(
                "software",
                Software {
                    source_id: "sw-1".into(),
                    device: Some(AssetRef::to("cs-eu", AssetKind::Device, "dev-1")),
                    name: Some("openssl".into()),
                    vendor: Some("OpenSSL".into()),
                    version: Some("3.0.2".into()),
                    cpe: Some("cpe:2.3:a:openssl:openssl:3.0.2:*:*:*:*:*:*:*".into()),
                    ..Default::default()
                },
            ),
            Asset::cloud_resource(
                "instances",
                CloudResource {
                    source_id: "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc".into(),
                    provider: Some("aws".into()),
                    account: Some("123456789012".into()),
                    region: Some("eu-west-1".into()),
                    resource_type: Some("ec2:instance".into()),
                    resource_id: Some("i-0abc".into()),
                    name: Some("web".into()),
                    state: Some("running".into()),
                    tags: vec![CloudTag { key: "env".into(), value: "prod".into() }],
                    public_ips: vec!["1.2.3.4".parse().expect("ip")],
                    private_ips: vec!["10.0.0.5".parse().expect("ip")],
                    created: crate::fields::timestamp("2025-01-02T03:04:05Z"),
                    ..Default::default()
                },
            ),
        ] {
            let real = serde_json::to_vec(&a).expect("serialize").len();
            let estimate = a.approx_size();
            assert!(estimate >= real && estimate <= real * 2, "estimate {estimate} for {real} bytes: {a:?}");
        }
    }

    #[test]
    fn attributes_are_part_of_the_fields_and_the_hash() {
        let plain = Asset::device("hosts", Device { source_id: "d".into(), ..Default::default() });
        let with = plain.clone().with_attr("status", "normal").with_attr("cpu", 4_i64);
        assert_eq!(plain.fields_string().expect("fields"), r#"{"source_id":"d"}"#);
        assert_eq!(
            with.fields_string().expect("fields"),
            r#"{"source_id":"d","attributes":{"cpu":4,"status":"normal"}}"#
        );
        assert_eq!(with.fields_json()["attributes"]["status"], "normal");
        assert_ne!(plain.content_hash(), with.content_hash());
        let other = plain.clone().with_attr("status", "degraded").with_attr("cpu", 4_i64);
        assert_ne!(with.content_hash(), other.content_hash());
        // The hash of an asset without attributes is the one earlier versions stored.
        let tagged = serde_json::to_vec(&plain.body).expect("body");
        let mut h = Fnv::default();
        h.write(&tagged);
        assert_eq!(plain.content_hash(), format!("{:016x}", h.0));
    }

    #[test]
    fn keys_and_references() {
        let d = Asset::device(
            "hosts",
            Device {
                source_id: "d".into(),
                hostname: Some("web-01".into()),
                domain: Some("corp.example.com".into()),
                serial_number: Some("5cg123".into()),
                mac_addresses: crate::fields::macs(["AA-BB-CC-DD-EE-01", "aa:bb:cc:dd:ee:02"]),
                cloud_instance_id: Some("i-0abc".into()),
                entra_device_id: Some("8F2C0000-AAAA-BBBB-CCCC-000000000001".into()),
                owner_ref: Some(AssetRef::to("okta", AssetKind::User, "00u1")),
                ..Default::default()
            },
        );
        let keys = d.correlation_keys();
        let keys: Vec<(KeyType, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            keys,
            [
                (KeyType::SerialNumber, "5CG123"),
                (KeyType::MacAddress, "aa:bb:cc:dd:ee:01"),
                (KeyType::MacAddress, "aa:bb:cc:dd:ee:02"),
                (KeyType::Hostname, "web-01"),
                (KeyType::Fqdn, "web-01.corp.example.com"),
                (KeyType::CloudId, "i-0abc"),
                (KeyType::EntraDeviceId, "8f2c0000-aaaa-bbbb-cccc-000000000001"),
            ]
        );
        let refs = d.references();
        assert_eq!(refs.len(), 1);
        assert_eq!((refs[0].0, refs[0].1.connection_or("cs")), ("owner_ref", "okta"));
        let v = Asset::vulnerability(
            "v",
            Vulnerability {
                source_id: "v".into(),
                asset: Some(AssetRef::local(AssetKind::Device, "d")),
                cves: vec!["CVE-2024-3094".into(), "CVE-2024-3094".into()],
                ..Default::default()
            },
        );
        assert_eq!(v.correlation_keys(), [(KeyType::Cve, "CVE-2024-3094".to_string())]);
        assert_eq!(v.references()[0].1.connection_or("scanner"), "scanner");
        let u =
            Asset::user("u", User { source_id: "u".into(), username: Some("Ann@X.io".into()), ..Default::default() });
        assert_eq!(u.correlation_keys(), [(KeyType::Username, "ann@x.io".to_string())]);
        assert!(u.references().is_empty());
    }

    /// `normalize_into` writes into a reused buffer; what it writes must be
    /// what the key's definition says (full Unicode case mapping, trimmed,
    /// canonical MACs), whatever the buffer held before: the stores'
    /// lookup hashes are taken over these texts.
    #[test]
    fn normalized_keys_do_not_depend_on_the_buffer() {
        let cases: [(KeyType, &str, Option<&str>); 12] = [
            (KeyType::SerialNumber, " 5cg123 ", Some("5CG123")),
            (KeyType::SerialNumber, "straße", Some("STRASSE")),
            (KeyType::Hostname, "WEB-01", Some("web-01")),
            (KeyType::Hostname, "ÉCOLE-PC", Some("école-pc")),
            // Final sigma: the full mapping looks at the word, not the character.
            (KeyType::Username, "ΟΔΟΣ", Some("οδος")),
            (KeyType::Email, "   ", None),
            (KeyType::MacAddress, "AA-BB-CC-DD-EE-0F", Some("aa:bb:cc:dd:ee:0f")),
            (KeyType::MacAddress, "not a mac", None),
            (KeyType::CloudId, " i-0ABC ", Some("i-0ABC")),
            (KeyType::Cve, "cve-2024-3094", Some("CVE-2024-3094")),
            (KeyType::Cve, "CVE-24-1", None),
            (KeyType::Cpe, "CPE:2.3:A:Vendor", Some("cpe:2.3:a:vendor")),
        ];
        let mut buf = String::from("left over from the key before");
        for (k, v, want) in cases {
            assert_eq!(k.normalize(v).as_deref(), want, "{k} {v:?}");
            assert_eq!(k.normalize_into(v, &mut buf), want.is_some(), "{k} {v:?}");
            assert_eq!(buf, want.unwrap_or(""), "{k} {v:?}");
        }
    }

    #[test]
    fn every_key_is_visited_and_the_list_has_no_repeats() {
        let d = Asset::device(
            "hosts",
            Device {
                source_id: "d".into(),
                hostname: Some("Web-01".into()),
                domain: Some("Corp.Example.com".into()),
                mac_addresses: crate::fields::macs(["AA-BB-CC-DD-EE-01", "aa:bb:cc:dd:ee:02"]),
                cloud_instance_id: Some("i-1".into()),
                ..Default::default()
            },
        );
        let mut seen = Vec::new();
        d.for_each_correlation_key(|k, v| seen.push((k, v.to_string())));
        assert_eq!(seen, d.correlation_keys());
        assert!(seen.contains(&(KeyType::Fqdn, "web-01.corp.example.com".to_string())), "{seen:?}");
        let mut c = Asset::new(
            "r",
            AssetBody::CloudResource(CloudResource {
                source_id: "r".into(),
                resource_id: Some("arn:aws:s3:::b".into()),
                arn: Some("arn:aws:s3:::b".into()),
                ..Default::default()
            }),
        );
        let mut visits = 0;
        c.for_each_correlation_key(|_, _| visits += 1);
        assert_eq!((visits, c.correlation_keys().len()), (2, 1));
        if let AssetBody::CloudResource(r) = &mut c.body {
            r.arn = None;
        }
        assert_eq!(c.correlation_keys(), [(KeyType::CloudId, "arn:aws:s3:::b".to_string())]);
    }

    #[test]
    fn stored_fields_give_the_asset_back() {
        let a = Asset::vulnerability(
            "v",
            Vulnerability {
                source_id: "v".into(),
                asset: Some(AssetRef::local(AssetKind::Device, "d")),
                severity: Some(Severity::High),
                cvss3_score: Some(7.5),
                port: Some(443),
                ..Default::default()
            },
        )
        .with_attr("plugin_family", "Web Servers")
        .with_attr("exploitable", true)
        .with_raw(Some(serde_json::json!({"x": 1})));
        let stored = crate::store::StoredAsset {
            connection: "c".into(),
            kind: a.kind(),
            source_id: "v".into(),
            stream: "v".into(),
            first_seen: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            last_sync_id: "s".into(),
            stale_since: None,
            fields: a.fields_json(),
            raw: a.raw.clone(),
            position: Default::default(),
        };
        let back = stored.asset().expect("asset");
        assert_eq!(back, a);
        assert_eq!(back.content_hash(), a.content_hash());
    }

    #[test]
    fn kinds_order_by_name() {
        let mut by_name = AssetKind::ALL;
        by_name.sort_by_key(|k| k.as_str());
        let mut by_ord = AssetKind::ALL;
        by_ord.sort();
        assert_eq!(by_name, by_ord);
    }

    #[test]
    fn kinds_parse_and_print() {
        for k in AssetKind::ALL {
            assert_eq!(k.as_str().parse::<AssetKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).expect("kind"), k.as_str());
        }
        assert_eq!("cloud-resources".parse::<AssetKind>(), Ok(AssetKind::CloudResource));
        assert_eq!("Vulnerabilities".parse::<AssetKind>(), Ok(AssetKind::Vulnerability));
        assert!("printer".parse::<AssetKind>().is_err());
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
            let fields = a.fields_string().expect("fields");
            let raw = a.raw.as_ref().map(|r| serde_json::to_string(r).expect("raw"));
            assert_eq!(a.content_hash_of(&fields, raw.as_deref()), a.content_hash(), "{a:?}");
        }
    }

    /// Every timestamp field writes exactly what chrono's `Serialize` writes
    /// (stored fields and content hashes must not change): whole seconds,
    /// milli-, micro- and nanoseconds, a leap second, years at and beyond the
    /// four-digit range, and a spread of ordinary instants.
    #[test]
    fn timestamps_serialize_as_chrono_does() {
        use chrono::{NaiveDate, TimeZone};
        let day = |y: i32, m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d).expect("valid date");
        let mut instants: Vec<DateTime<Utc>> = vec![
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 120_000_000).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 1).unwrap(),
            day(2016, 12, 31).and_hms_nano_opt(23, 59, 59, 1_000_000_000).expect("leap second").and_utc(),
            day(2016, 12, 31).and_hms_nano_opt(23, 59, 59, 1_500_000_000).expect("leap second").and_utc(),
            day(1, 1, 1).and_hms_opt(0, 0, 0).expect("time").and_utc(),
            day(9999, 12, 31).and_hms_nano_opt(23, 59, 59, 999_999_999).expect("time").and_utc(),
            day(10_000, 1, 1).and_hms_opt(0, 0, 0).expect("time").and_utc(),
            day(-1, 6, 15).and_hms_milli_opt(12, 0, 0, 5).expect("time").and_utc(),
        ];
        // Ordinary instants from 1970 to 2100, with every kind of fraction.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let secs = (x >> 33) as i64 % 4_102_444_800;
            let nanos = match x % 4 {
                0 => 0,
                1 => (x >> 7) as u32 % 1000 * 1_000_000,
                2 => (x >> 7) as u32 % 1_000_000 * 1000,
                _ => (x >> 7) as u32 % 1_000_000_000,
            };
            instants.push(Utc.timestamp_opt(secs, nanos).unwrap());
        }
        for t in instants {
            let want = serde_json::to_value(t).expect("chrono serializes");
            let t = Some(t);
            let device = Device { first_seen: t, last_seen: t, ..Default::default() };
            let user = User { created: t, last_login: t, ..Default::default() };
            let finding = Vulnerability { first_found: t, last_found: t, ..Default::default() };
            let software = Software { first_seen: t, last_seen: t, ..Default::default() };
            let cloud = CloudResource { created: t, ..Default::default() };
            let written = [
                (serde_json::to_value(&device), ["first_seen", "last_seen"].as_slice()),
                (serde_json::to_value(&user), &["created", "last_login"]),
                (serde_json::to_value(&finding), &["first_found", "last_found"]),
                (serde_json::to_value(&software), &["first_seen", "last_seen"]),
                (serde_json::to_value(&cloud), &["created"]),
            ];
            for (json, names) in written {
                let json = json.expect("serializes");
                for name in names {
                    assert_eq!(json[name], want, "{name} of {json}");
                }
            }
            // And they read back as the same instant.
            let back: Device =
                serde_json::from_value(serde_json::to_value(&device).expect("serializes")).expect("reads");
            assert_eq!(back.first_seen, t);
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
