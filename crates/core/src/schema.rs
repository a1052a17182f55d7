//! The asset schema as data: every kind's canonical fields with their type,
//! correlation key and meaning. One table drives three things:
//! - `corral assets --where FIELD=VALUE`: [`parse_where`] checks the field
//!   and types the value into a [`Condition`] the stores run;
//! - docs/SCHEMA.md: [`render_markdown`] writes it from these tables and the
//!   adapters' [`AdapterInfo`] (a test fails when the committed file is out of date);
//! - adapters' declarations: [`crate::adapter::StreamInfo::fills`] must name fields listed here.
//!
//! A test checks the tables against the structs in [`crate::asset`]: every
//! serialized field is listed, and every listed field is serialized.

use std::fmt::Write as _;

use crate::adapter::AdapterInfo;
use crate::asset::{AssetKind, AttrType, FindingState, KeyType, Severity};
use crate::store::{Condition, Predicate, Scalar};

/// The type of a canonical field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    String,
    Integer,
    Float,
    Boolean,
    /// RFC 3339 UTC text.
    Timestamp,
    StringList,
    IpList,
    MacList,
    Severity,
    FindingState,
    /// A pointer to another asset: `{connection?, kind, source_id}`.
    Reference,
    /// A list of `{key, value}` pairs.
    KeyValueList,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Boolean => "boolean",
            ValueType::Timestamp => "timestamp",
            ValueType::StringList => "string list",
            ValueType::IpList => "IP address list",
            ValueType::MacList => "MAC address list",
            ValueType::Severity => "severity (info, low, medium, high, critical)",
            ValueType::FindingState => "state (open, fixed, reopened, accepted)",
            ValueType::Reference => "reference",
            ValueType::KeyValueList => "key/value list",
        }
    }
}

/// One canonical field of a kind.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Its name; nested fields are dotted (`os.family`).
    pub name: &'static str,
    pub ty: ValueType,
    /// The correlation key it feeds (indexed in both stores), if any.
    pub key: Option<KeyType>,
    /// Stored lowercase: a `--where` value is lowercased too.
    pub lower: bool,
    /// Not a stored field: derived from others, queryable through its key only.
    pub derived: bool,
    pub description: &'static str,
}

const fn f(name: &'static str, ty: ValueType, description: &'static str) -> FieldSpec {
    FieldSpec { name, ty, key: None, lower: false, derived: false, description }
}

const fn keyed(name: &'static str, ty: ValueType, key: KeyType, description: &'static str) -> FieldSpec {
    FieldSpec { name, ty, key: Some(key), lower: false, derived: false, description }
}

const fn lower(name: &'static str, description: &'static str) -> FieldSpec {
    FieldSpec { name, ty: ValueType::String, key: None, lower: true, derived: false, description }
}

use ValueType as T;

const SOURCE_ID: FieldSpec =
    f("source_id", T::String, "The vendor's id of the record; with connection and kind, the key.");

const DEVICE: &[FieldSpec] = &[
    SOURCE_ID,
    keyed("hostname", T::String, KeyType::Hostname, "Host label, lowercase (`web-01`), from `fields::hostname`."),
    lower("domain", "DNS or NetBIOS domain, lowercase."),
    FieldSpec {
        name: "fqdn",
        ty: T::String,
        key: Some(KeyType::Fqdn),
        lower: true,
        derived: true,
        description: "`hostname.domain` (derived from hostname and domain; a correlation key, not stored as a field).",
    },
    f("ip_addresses", T::IpList, "IP addresses (IPv4-mapped IPv6 folded to IPv4)."),
    keyed("mac_addresses", T::MacList, KeyType::MacAddress, "MAC addresses `aa:bb:cc:dd:ee:ff`, placeholders dropped."),
    keyed("serial_number", T::String, KeyType::SerialNumber, "Hardware serial, OEM placeholders dropped."),
    lower("os.family", "windows, macos, linux, ios, android, chromeos, unix or other."),
    f("os.name", T::String, "Operating system name as the vendor gives it."),
    f("os.version", T::String, "Operating system version."),
    f("manufacturer", T::String, "Hardware manufacturer, placeholders dropped."),
    f("model", T::String, "Hardware model."),
    f("first_seen", T::Timestamp, "When the vendor first saw the device."),
    f("last_seen", T::Timestamp, "When the vendor last saw the device."),
    f("owner", T::String, "The user the vendor associates with the device (login, UPN or email)."),
    f("owner_ref", T::Reference, "The owner as a user asset (`--points-at` finds devices by it)."),
    keyed("cloud_instance_id", T::String, KeyType::CloudId, "Cloud provider instance id of a cloud VM (`i-0abc...`)."),
    FieldSpec {
        name: "entra_device_id",
        ty: T::String,
        key: Some(KeyType::EntraDeviceId),
        lower: true,
        derived: false,
        description: "Entra ID (Azure AD) device id (`azureADDeviceId`), lowercase.",
    },
    f("tags", T::StringList, "Vendor tags and groups."),
];

const USER: &[FieldSpec] = &[
    SOURCE_ID,
    FieldSpec {
        name: "username",
        ty: T::String,
        key: Some(KeyType::Username),
        lower: false,
        derived: false,
        description: "Login name or UPN (matched case-insensitively through its key).",
    },
    FieldSpec {
        name: "email",
        ty: T::String,
        key: Some(KeyType::Email),
        lower: true,
        derived: false,
        description: "Email address, lowercase.",
    },
    f("display_name", T::String, "Display name."),
    f("first_name", T::String, "Given name."),
    f("last_name", T::String, "Family name."),
    f("active", T::Boolean, "Whether the account can sign in."),
    f("status", T::String, "The vendor's account status."),
    f("created", T::Timestamp, "When the account was created."),
    f("last_login", T::Timestamp, "Last sign-in."),
    f("tags", T::StringList, "Vendor tags and groups."),
];

const VULNERABILITY: &[FieldSpec] = &[
    SOURCE_ID,
    f("asset", T::Reference, "The affected asset, usually a device (`--points-at` finds findings by it)."),
    keyed("cves", T::StringList, KeyType::Cve, "CVE ids, validated and upper-cased (`fields::cve`)."),
    f("plugin_id", T::String, "The vendor's check id: Tenable plugin id, Qualys QID."),
    f("title", T::String, "The finding's title."),
    f("severity", T::Severity, "Normalized severity (`fields::severity`, `severity_scaled`, `severity_from_cvss`)."),
    f("cvss3_score", T::Float, "CVSS v3 base score, 0.0-10.0, where the vendor gives one."),
    f("vendor_score", T::Float, "The vendor's own score (Tenable VPR, ...)."),
    f("state", T::FindingState, "open, fixed, reopened or accepted (`fields::finding_state`)."),
    f("first_found", T::Timestamp, "When the finding was first found."),
    f("last_found", T::Timestamp, "When the finding was last found."),
    f("port", T::Integer, "Port the finding is on."),
    lower("protocol", "tcp, udp, ... lowercase."),
    f("solution", T::String, "How to fix it."),
];

const SOFTWARE: &[FieldSpec] = &[
    SOURCE_ID,
    f("device", T::Reference, "The device it is installed on (`--points-at` finds software by it)."),
    f("name", T::String, "Product name."),
    f("vendor", T::String, "Product vendor."),
    f("version", T::String, "Installed version."),
    FieldSpec {
        name: "cpe",
        ty: T::String,
        key: Some(KeyType::Cpe),
        lower: true,
        derived: false,
        description: "CPE 2.3 formatted string, lowercase (`fields::cpe`), where the vendor gives one.",
    },
    f("first_seen", T::Timestamp, "When the installation was first seen."),
    f("last_seen", T::Timestamp, "When the installation was last seen."),
];

const CLOUD_RESOURCE: &[FieldSpec] = &[
    SOURCE_ID,
    lower("provider", "aws, azure, gcp, ... lowercase."),
    f("account", T::String, "AWS account id, Azure subscription id, GCP project."),
    f("region", T::String, "Region or location."),
    f("resource_type", T::String, "The provider's type name (`ec2:instance`, `Microsoft.Compute/virtualMachines`)."),
    keyed("resource_id", T::String, KeyType::CloudId, "The provider's id (`i-0abc...`, an Azure resource id)."),
    keyed("arn", T::String, KeyType::CloudId, "ARN or other fully qualified name."),
    f("name", T::String, "Name."),
    lower("state", "The provider's state (`running`, `stopped`, ...), lowercase."),
    f("tags", T::KeyValueList, "Tags as `{key, value}` pairs (`--where tags.KEY=VALUE`)."),
    f("public_ips", T::IpList, "Public IP addresses."),
    f("private_ips", T::IpList, "Private IP addresses."),
    f("created", T::Timestamp, "When the resource was created."),
];

/// What each kind is.
pub fn kind_description(kind: AssetKind) -> &'static str {
    match kind {
        AssetKind::Device => "An endpoint, server, phone or VM as one product sees it.",
        AssetKind::User => "A user account in an identity provider or directory.",
        AssetKind::Vulnerability => "A finding: one vulnerability (a plugin, a QID) on one asset.",
        AssetKind::Software => "An installed product on a device.",
        AssetKind::CloudResource => "A resource in a cloud account (instance, bucket, database, ...).",
    }
}

/// The canonical fields of `kind`.
pub fn fields(kind: AssetKind) -> &'static [FieldSpec] {
    match kind {
        AssetKind::Device => DEVICE,
        AssetKind::User => USER,
        AssetKind::Vulnerability => VULNERABILITY,
        AssetKind::Software => SOFTWARE,
        AssetKind::CloudResource => CLOUD_RESOURCE,
    }
}

/// One canonical field of `kind` by name.
pub fn field(kind: AssetKind, name: &str) -> Option<&'static FieldSpec> {
    fields(kind).iter().find(|f| f.name == name)
}

/// An attribute some stream of `kind` declares, for typing `--where attributes.NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredAttribute {
    pub kind: AssetKind,
    pub name: String,
    pub ty: AttrType,
}

/// Every attribute the `adapters` declare, by kind (duplicates dropped).
pub fn declared_attributes<'a>(adapters: impl IntoIterator<Item = &'a AdapterInfo>) -> Vec<DeclaredAttribute> {
    let mut out: Vec<DeclaredAttribute> = Vec::new();
    for a in adapters {
        for s in &a.streams {
            for attr in &s.attributes {
                let d = DeclaredAttribute { kind: s.kind, name: attr.name.clone(), ty: attr.ty };
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Why a `--where` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--where {text:?}: {message}")]
pub struct WhereError {
    pub text: String,
    pub message: String,
}

/// Parse `FIELD=VALUE` into a [`Condition`] on the assets of `kind` (every
/// kind when `None`): a canonical field of [`fields`] (`hostname`,
/// `os.family`, `mac_addresses` matches an element, `tags.KEY` for a cloud
/// resource's tag), `source_id`, or `attributes.NAME` for a vendor attribute
/// one of the `attributes` declares. The value is typed by the field (or the
/// attribute's declared type) and normalized as the stored values are. An
/// unknown field, a missing `=` or a value of the wrong type is an error that
/// names it.
pub fn parse_where(
    text: &str,
    kind: Option<AssetKind>,
    attributes: &[DeclaredAttribute],
) -> Result<Condition, WhereError> {
    let err = |message: String| WhereError { text: text.to_string(), message };
    let Some((name, value)) = text.split_once('=') else {
        return Err(err("expected FIELD=VALUE (for example hostname=web-01 or attributes.status=normal)".into()));
    };
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() {
        return Err(err("no field before `=`".into()));
    }
    if value.is_empty() {
        return Err(err(format!("no value after `{name}=`")));
    }
    let kinds: Vec<AssetKind> = kind.map_or_else(|| AssetKind::ALL.to_vec(), |k| vec![k]);
    let which = match kind {
        Some(k) => format!("{k} field"),
        None => "field of any kind".to_string(),
    };
    let mut alternatives = Vec::new();
    let mut type_errors: Vec<String> = Vec::new();

    if let Some(attr) = name.strip_prefix("attributes.") {
        let declared: Vec<&DeclaredAttribute> =
            attributes.iter().filter(|d| d.name == attr && kinds.contains(&d.kind)).collect();
        if declared.is_empty() {
            let mut known: Vec<&str> =
                attributes.iter().filter(|d| kinds.contains(&d.kind)).map(|d| d.name.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(err(format!("unknown attribute `{attr}`: no adapter declares it (declared: {known})")));
        }
        for d in declared {
            let path = format!("attributes.{attr}");
            match attr_predicate(path, d.ty, value) {
                Ok(p) => alternatives.push((d.kind, p)),
                Err(m) => type_errors.push(format!("attribute `{attr}` is a {}: {m}", d.ty)),
            }
        }
    } else {
        let mut known = false;
        for &k in &kinds {
            if name == "source_id" {
                known = true;
                alternatives.push((k, Predicate::SourceId(value.to_string())));
                continue;
            }
            if let Some(spec) = field(k, name) {
                known = true;
                match field_predicate(spec, value) {
                    Ok(p) => alternatives.push((k, p)),
                    Err(m) => type_errors.push(format!("{k} field `{name}` is a {}: {m}", spec.ty.as_str())),
                }
                continue;
            }
            if let Some((base, tag)) = name.split_once('.')
                && let Some(spec) = field(k, base)
                && spec.ty == ValueType::KeyValueList
                && !tag.is_empty()
            {
                known = true;
                alternatives.push((
                    k,
                    Predicate::Tag { path: base.to_string(), key: tag.to_string(), value: value.to_string() },
                ));
            }
        }
        if !known {
            let mut names: Vec<&str> = kinds.iter().flat_map(|k| fields(*k).iter().map(|f| f.name)).collect();
            names.sort_unstable();
            names.dedup();
            return Err(err(format!(
                "unknown {which} `{name}` (fields: {}; vendor attributes: attributes.NAME)",
                names.join(", ")
            )));
        }
    }
    if alternatives.is_empty() {
        return Err(err(type_errors.join("; ")));
    }
    Ok(Condition { text: text.to_string(), alternatives })
}

fn field_predicate(spec: &FieldSpec, value: &str) -> Result<Predicate, String> {
    let path = spec.name.to_string();
    if let Some(key) = spec.key {
        return key
            .normalize(value)
            .map(|value| Predicate::Key { key, value })
            .ok_or_else(|| format!("`{value}` is not a valid {}", key.as_str().replace('_', " ")));
    }
    let v = if spec.lower { value.to_lowercase() } else { value.to_string() };
    Ok(match spec.ty {
        ValueType::String => Predicate::Equals { path, value: Scalar::Str(v) },
        ValueType::Integer => Predicate::Equals { path, value: int(value)? },
        ValueType::Float => Predicate::Equals { path, value: float(value)? },
        ValueType::Boolean => Predicate::Equals { path, value: boolean(value)? },
        ValueType::Timestamp => Predicate::Equals { path, value: timestamp(value)? },
        ValueType::StringList => Predicate::Contains { path, value: Scalar::Str(v) },
        ValueType::IpList => {
            let ip = crate::fields::ip(value).ok_or_else(|| format!("`{value}` is not an IP address"))?;
            Predicate::Contains { path, value: Scalar::Str(ip.to_string()) }
        }
        ValueType::MacList => {
            let mac = crate::fields::mac(value).ok_or_else(|| format!("`{value}` is not a MAC address"))?;
            Predicate::Contains { path, value: Scalar::Str(mac.to_string()) }
        }
        ValueType::Severity => {
            let s = Severity::ALL
                .into_iter()
                .find(|s| s.as_str().eq_ignore_ascii_case(value))
                .ok_or_else(|| format!("`{value}` is not one of info, low, medium, high, critical"))?;
            Predicate::Equals { path, value: Scalar::Str(s.as_str().into()) }
        }
        ValueType::FindingState => {
            let s = FindingState::ALL
                .into_iter()
                .find(|s| s.as_str().eq_ignore_ascii_case(value))
                .ok_or_else(|| format!("`{value}` is not one of open, fixed, reopened, accepted"))?;
            Predicate::Equals { path, value: Scalar::Str(s.as_str().into()) }
        }
        ValueType::Reference => {
            return Err("a reference cannot be compared to a value: use --points-at CONNECTION KIND SOURCE_ID".into());
        }
        ValueType::KeyValueList => return Err(format!("use {}.KEY=VALUE to match one tag", spec.name)),
    })
}

fn attr_predicate(path: String, ty: AttrType, value: &str) -> Result<Predicate, String> {
    Ok(match ty {
        AttrType::String => Predicate::Equals { path, value: Scalar::Str(value.to_string()) },
        AttrType::Integer => Predicate::Equals { path, value: int(value)? },
        AttrType::Float => Predicate::Equals { path, value: float(value)? },
        AttrType::Boolean => Predicate::Equals { path, value: boolean(value)? },
        AttrType::Timestamp => Predicate::Equals { path, value: timestamp(value)? },
        AttrType::StringList => Predicate::Contains { path, value: Scalar::Str(value.to_string()) },
    })
}

fn int(v: &str) -> Result<Scalar, String> {
    v.parse::<i64>().map(Scalar::Int).map_err(|_| format!("`{v}` is not an integer"))
}

fn float(v: &str) -> Result<Scalar, String> {
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Scalar::Float(f)),
        _ => Err(format!("`{v}` is not a number")),
    }
}

fn boolean(v: &str) -> Result<Scalar, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(Scalar::Bool(true)),
        "false" | "no" | "0" => Ok(Scalar::Bool(false)),
        _ => Err(format!("`{v}` is not true or false")),
    }
}

fn timestamp(v: &str) -> Result<Scalar, String> {
    let t = crate::fields::timestamp(v).ok_or_else(|| format!("`{v}` is not a timestamp"))?;
    // The form serde writes (what the stores hold).
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => Ok(Scalar::Str(s)),
        _ => Err(format!("`{v}` is not a timestamp")),
    }
}

/// docs/SCHEMA.md: every kind, field, type and correlation key, and how each
/// of `adapters` fills them (its streams' [`crate::adapter::StreamInfo::fills`]
/// and attributes).
pub fn render_markdown(adapters: &[AdapterInfo]) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# corral asset schema\n");
    let _ = writeln!(
        w,
        "<!-- Generated from the code (corral_core::schema::render_markdown and each adapter's AdapterInfo). \
         Do not edit: regenerate with `cargo run -p corral -- docs`. -->\n"
    );
    let _ = writeln!(
        w,
        "Every asset is one of five kinds, keyed by (connection, kind, source_id). Its canonical fields \
         are typed and normalized by `corral_core::fields`; vendor fields beyond them are **attributes**, \
         declared per stream (name, type, description) and stored under `attributes`. \
         `corral assets --where FIELD=VALUE` matches a canonical field, `attributes.NAME=VALUE` an attribute, \
         `tags.KEY=VALUE` a cloud resource's tag; list fields match an element. Fields with a *key* are \
         correlation keys, indexed in both stores (SQLite `asset_lookup`, MongoDB `keys`), and `--where` on \
         them uses the index.\n"
    );
    let _ = writeln!(w, "| kind | what |\n|---|---|");
    for k in AssetKind::ALL {
        let _ = writeln!(w, "| [`{k}`](#{k}) | {} |", kind_description(k));
    }
    let _ = writeln!(w);
    for k in AssetKind::ALL {
        let _ = writeln!(w, "## {k}\n\n{}\n", kind_description(k));
        let streams: Vec<(&AdapterInfo, &crate::adapter::StreamInfo)> =
            adapters.iter().flat_map(|a| a.streams.iter().filter(|s| s.kind == k).map(move |s| (a, s))).collect();
        let _ = writeln!(w, "| field | type | key | description | filled by |\n|---|---|---|---|---|");
        for spec in fields(k) {
            let mut by: Vec<String> = Vec::new();
            for (a, s) in &streams {
                for fs in s.fills.iter().filter(|fs| fs.field == spec.name) {
                    by.push(format!("{}/{}: {}", a.name, s.name, cell(&fs.from)));
                }
            }
            if spec.name == "source_id" {
                by = streams.iter().map(|(a, s)| format!("{}/{}: `{}`", a.name, s.name, cell(&s.key))).collect();
            }
            let by = if by.is_empty() { "-".to_string() } else { by.join("<br>") };
            let key = spec.key.map_or("-".to_string(), |k| format!("`{k}`"));
            let _ =
                writeln!(w, "| `{}` | {} | {key} | {} | {by} |", spec.name, spec.ty.as_str(), cell(spec.description));
        }
        let _ = writeln!(w);
        let attrs: Vec<_> = streams.iter().flat_map(|(a, s)| s.attributes.iter().map(move |at| (a, s, at))).collect();
        if !attrs.is_empty() {
            let _ = writeln!(w, "Attributes of {k} streams:\n");
            let _ = writeln!(w, "| adapter/stream | attribute | type | description |\n|---|---|---|---|");
            for (a, s, at) in attrs {
                let _ =
                    writeln!(w, "| {}/{} | `{}` | {} | {} |", a.name, s.name, at.name, at.ty, cell(&at.description));
            }
            let _ = writeln!(w);
        }
    }
    let _ = writeln!(w, "## Correlation keys\n");
    let _ = writeln!(w, "| key | from | indexed form |\n|---|---|---|");
    for key in KeyType::ALL {
        let from: Vec<String> = AssetKind::ALL
            .iter()
            .flat_map(|k| fields(*k).iter().filter(|f| f.key == Some(key)).map(move |f| format!("{k}.{}", f.name)))
            .collect();
        let form = match key {
            KeyType::SerialNumber => "upper-cased",
            KeyType::MacAddress => "`aa:bb:cc:dd:ee:ff`",
            KeyType::CloudId => "as given",
            KeyType::Cve => "`CVE-YYYY-NNNN`",
            _ => "lowercase",
        };
        let _ = writeln!(w, "| `{key}` | {} | {form} |", from.join(", "));
    }
    let _ = writeln!(
        w,
        "\n## References\n\nA reference is `{{connection?, kind, source_id}}`; without `connection` it points into \
         the record's own connection. Stores index them (SQLite `asset_lookup`, MongoDB `refs`): \
         `corral assets --points-at CONNECTION KIND SOURCE_ID` lists every asset pointing at one.\n"
    );
    let _ = writeln!(w, "| kind | field | points at |\n|---|---|---|");
    let _ = writeln!(w, "| device | `owner_ref` | its owner (a user) |");
    let _ = writeln!(w, "| vulnerability | `asset` | the affected asset (a device) |");
    let _ = writeln!(w, "| software | `device` | the device it is installed on |");
    out
}

/// Text safe in a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::asset::*;

    /// Every dotted path a JSON object has (arrays and reference objects are leaves).
    fn paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                let leaf_object = v.get("source_id").is_some() && v.get("kind").is_some();
                if v.is_object() && !leaf_object {
                    paths(v, &p, out);
                } else {
                    out.insert(p);
                }
            }
        }
    }

    fn full(kind: AssetKind) -> Asset {
        let t = crate::fields::timestamp("2024-01-02T03:04:05Z");
        let r = Some(AssetRef::local(AssetKind::Device, "d1"));
        match kind {
            AssetKind::Device => Asset::device(
                "s",
                Device {
                    source_id: "d".into(),
                    hostname: Some("h".into()),
                    domain: Some("d.com".into()),
                    ip_addresses: crate::fields::ips(["10.0.0.1"]),
                    mac_addresses: crate::fields::macs(["aa:bb:cc:dd:ee:01"]),
                    serial_number: Some("S".into()),
                    os: crate::fields::os(Some("Windows 11"), Some("10")),
                    manufacturer: Some("m".into()),
                    model: Some("m".into()),
                    first_seen: t,
                    last_seen: t,
                    owner: Some("o".into()),
                    owner_ref: Some(AssetRef::local(AssetKind::User, "u")),
                    cloud_instance_id: Some("i-1".into()),
                    entra_device_id: Some("e".into()),
                    tags: vec!["t".into()],
                },
            ),
            AssetKind::User => Asset::user(
                "s",
                User {
                    source_id: "u".into(),
                    username: Some("u".into()),
                    email: Some("u@x.io".into()),
                    display_name: Some("U".into()),
                    first_name: Some("U".into()),
                    last_name: Some("U".into()),
                    active: Some(true),
                    status: Some("x".into()),
                    created: t,
                    last_login: t,
                    tags: vec!["t".into()],
                },
            ),
            AssetKind::Vulnerability => Asset::vulnerability(
                "s",
                Vulnerability {
                    source_id: "v".into(),
                    asset: r,
                    cves: vec!["CVE-2024-0001".into()],
                    plugin_id: Some("1".into()),
                    title: Some("t".into()),
                    severity: Some(Severity::High),
                    cvss3_score: Some(7.5),
                    vendor_score: Some(6.1),
                    state: Some(FindingState::Open),
                    first_found: t,
                    last_found: t,
                    port: Some(443),
                    protocol: Some("tcp".into()),
                    solution: Some("patch".into()),
                },
            ),
            AssetKind::Software => Asset::software(
                "s",
                Software {
                    source_id: "s".into(),
                    device: r,
                    name: Some("n".into()),
                    vendor: Some("v".into()),
                    version: Some("1".into()),
                    cpe: Some("cpe:2.3:a:v:n:1:*:*:*:*:*:*:*".into()),
                    first_seen: t,
                    last_seen: t,
                },
            ),
            AssetKind::CloudResource => Asset::cloud_resource(
                "s",
                CloudResource {
                    source_id: "c".into(),
                    provider: Some("aws".into()),
                    account: Some("1".into()),
                    region: Some("eu-west-1".into()),
                    resource_type: Some("ec2:instance".into()),
                    resource_id: Some("i-1".into()),
                    arn: Some("arn:aws:ec2:eu-west-1:1:instance/i-1".into()),
                    name: Some("n".into()),
                    state: Some("running".into()),
                    tags: vec![CloudTag { key: "env".into(), value: "prod".into() }],
                    public_ips: crate::fields::ips(["1.2.3.4"]),
                    private_ips: crate::fields::ips(["10.0.0.1"]),
                    created: t,
                },
            ),
        }
    }

    /// The tables list exactly the fields the structs serialize (plus derived ones).
    #[test]
    fn tables_match_the_structs() {
        for kind in AssetKind::ALL {
            let mut serialized = BTreeSet::new();
            paths(&full(kind).fields_json(), "", &mut serialized);
            let listed: BTreeSet<String> =
                fields(kind).iter().filter(|f| !f.derived).map(|f| f.name.to_string()).collect();
            assert_eq!(serialized, listed, "{kind}: the field table and the struct differ");
            for f in fields(kind) {
                assert!(!f.description.is_empty(), "{kind}.{} has no description", f.name);
            }
        }
    }

    fn attrs() -> Vec<DeclaredAttribute> {
        vec![
            DeclaredAttribute { kind: AssetKind::Device, name: "agent_version".into(), ty: AttrType::String },
            DeclaredAttribute { kind: AssetKind::Device, name: "cpu_count".into(), ty: AttrType::Integer },
            DeclaredAttribute { kind: AssetKind::User, name: "mfa".into(), ty: AttrType::Boolean },
            DeclaredAttribute { kind: AssetKind::Device, name: "groups".into(), ty: AttrType::StringList },
        ]
    }

    fn one(text: &str, kind: Option<AssetKind>) -> Vec<(AssetKind, Predicate)> {
        match parse_where(text, kind, &attrs()) {
            Ok(c) => c.alternatives,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn where_parses_and_types_values() {
        use AssetKind::*;
        assert_eq!(
            one("hostname=WEB-01", None),
            vec![(Device, Predicate::Key { key: KeyType::Hostname, value: "web-01".into() })]
        );
        assert_eq!(
            one("mac_addresses=AA-BB-CC-DD-EE-FF", Some(Device)),
            vec![(Device, Predicate::Key { key: KeyType::MacAddress, value: "aa:bb:cc:dd:ee:ff".into() })]
        );
        assert_eq!(
            one("os.family=Windows", None),
            vec![(Device, Predicate::Equals { path: "os.family".into(), value: Scalar::Str("windows".into()) })]
        );
        assert_eq!(
            one("cves=cve-2024-3094", None),
            vec![(Vulnerability, Predicate::Key { key: KeyType::Cve, value: "CVE-2024-3094".into() })]
        );
        assert_eq!(
            one("severity=HIGH", None),
            vec![(Vulnerability, Predicate::Equals { path: "severity".into(), value: Scalar::Str("high".into()) })]
        );
        assert_eq!(
            one("port=443", None),
            vec![(Vulnerability, Predicate::Equals { path: "port".into(), value: Scalar::Int(443) })]
        );
        // `tags` is a string list on devices and users, key/value pairs on cloud resources.
        assert_eq!(one("tags=prod", None).len(), 2);
        assert_eq!(
            one("tags.env=prod", None),
            vec![(CloudResource, Predicate::Tag { path: "tags".into(), key: "env".into(), value: "prod".into() })]
        );
        assert_eq!(one("source_id=x", None).len(), 5);
        assert_eq!(
            one("attributes.cpu_count=4", None),
            vec![(Device, Predicate::Equals { path: "attributes.cpu_count".into(), value: Scalar::Int(4) })]
        );
        assert_eq!(
            one("attributes.mfa=true", Some(User)),
            vec![(User, Predicate::Equals { path: "attributes.mfa".into(), value: Scalar::Bool(true) })]
        );
        assert_eq!(
            one("attributes.groups=admins", None),
            vec![(
                Device,
                Predicate::Contains { path: "attributes.groups".into(), value: Scalar::Str("admins".into()) }
            )]
        );
        assert_eq!(
            one("last_seen=2024-01-02T03:04:05+01:00", Some(Device)),
            vec![(
                Device,
                Predicate::Equals { path: "last_seen".into(), value: Scalar::Str("2024-01-02T02:04:05Z".into()) }
            )]
        );
    }

    #[test]
    fn where_errors_name_the_problem() {
        let e = |text: &str, kind: Option<AssetKind>| match parse_where(text, kind, &attrs()) {
            Ok(c) => panic!("{text} parsed: {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(e("hostname", None).contains("expected FIELD=VALUE"));
        assert!(e("=x", None).contains("no field"));
        assert!(e("hostname=", None).contains("no value"));
        let m = e("colour=red", None);
        assert!(m.contains("unknown field of any kind `colour`") && m.contains("hostname"), "{m}");
        let m = e("severity=high", Some(AssetKind::Device));
        assert!(m.contains("unknown device field `severity`"), "{m}");
        let m = e("port=https", None);
        assert!(m.contains("`port` is a integer") || m.contains("not an integer"), "{m}");
        assert!(e("severity=urgent", None).contains("not one of info"));
        assert!(e("mac_addresses=nope", None).contains("not a valid mac address"));
        let m = e("attributes.nope=1", None);
        assert!(m.contains("unknown attribute `nope`") && m.contains("agent_version"), "{m}");
        let m = e("attributes.cpu_count=many", None);
        assert!(m.contains("attribute `cpu_count` is a integer") && m.contains("not an integer"), "{m}");
        assert!(e("attributes.mfa=1", Some(AssetKind::Device)).contains("unknown attribute"));
        assert!(e("owner_ref=x", None).contains("--points-at"));
        assert!(e("tags=x", Some(AssetKind::CloudResource)).contains("tags.KEY=VALUE"));
    }
}
