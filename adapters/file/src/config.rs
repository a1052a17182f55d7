//! The file adapter's config: parsed with [`corral_core::parse_config`], then
//! validated into [`Settings`]. Every error names the offending field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_core::{AssetKind, AttrType, ConfigError};
use serde::Deserialize;

/// Default records per raw page.
pub const DEFAULT_PAGE_RECORDS: usize = 1000;
/// Upper bound for `page_records`.
pub const MAX_PAGE_RECORDS: usize = 100_000;

/// The config table of a `file` connection, as written by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The export to read.
    pub path: PathBuf,
    /// `csv` or `ndjson`; inferred from the file extension when absent.
    #[serde(default)]
    pub format: Option<Format>,
    /// `device` or `user`: which stream (`devices` or `users`) the file feeds.
    #[serde(default = "default_kind")]
    pub kind: AssetKind,
    /// CSV field delimiter, one ASCII character (default `,`, or tab for `.tsv`).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Records per raw page.
    #[serde(default = "default_page_records")]
    pub page_records: usize,
    /// Keep the source record (as a JSON object) on each asset.
    #[serde(default)]
    pub keep_raw: bool,
    /// Asset field -> CSV header name or NDJSON key (dotted path allowed for NDJSON).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Vendor attribute name -> its column (a string attribute), or
    /// `{ column, type, description }`.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeColumn>,
    /// Devices: the connection the `owner_id` column's users belong to
    /// (default: this one).
    #[serde(default)]
    pub owner_connection: Option<String>,
}

/// One `attributes` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AttributeColumn {
    Column(String),
    Full {
        column: String,
        #[serde(default, rename = "type")]
        ty: Option<String>,
        #[serde(default)]
        description: Option<String>,
    },
}

/// A vendor attribute fed by a column, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMapping {
    pub name: String,
    pub ty: AttrType,
    pub description: String,
}

fn default_kind() -> AssetKind {
    AssetKind::Device
}

fn default_page_records() -> usize {
    DEFAULT_PAGE_RECORDS
}

/// Input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    #[serde(alias = "jsonl")]
    Ndjson,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// An asset field a column can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    SourceId,
    // Device
    Hostname,
    Domain,
    IpAddresses,
    MacAddresses,
    SerialNumber,
    OsName,
    OsVersion,
    Manufacturer,
    Model,
    FirstSeen,
    LastSeen,
    Owner,
    /// The owner's source id in `owner_connection`: a reference to a user.
    OwnerId,
    // User
    Username,
    Email,
    DisplayName,
    FirstName,
    LastName,
    Active,
    Status,
    Created,
    LastLogin,
    // Both
    Tags,
    /// The vendor attribute `Settings::attributes[i]`.
    Attribute(usize),
}

/// Column targets valid for devices, in documentation order.
pub const DEVICE_TARGETS: &[(&str, Target)] = &[
    ("source_id", Target::SourceId),
    ("hostname", Target::Hostname),
    ("domain", Target::Domain),
    ("ip_addresses", Target::IpAddresses),
    ("mac_addresses", Target::MacAddresses),
    ("serial_number", Target::SerialNumber),
    ("os_name", Target::OsName),
    ("os_version", Target::OsVersion),
    ("manufacturer", Target::Manufacturer),
    ("model", Target::Model),
    ("first_seen", Target::FirstSeen),
    ("last_seen", Target::LastSeen),
    ("owner", Target::Owner),
    ("owner_id", Target::OwnerId),
    ("tags", Target::Tags),
];

/// Column targets valid for users, in documentation order.
pub const USER_TARGETS: &[(&str, Target)] = &[
    ("source_id", Target::SourceId),
    ("username", Target::Username),
    ("email", Target::Email),
    ("display_name", Target::DisplayName),
    ("first_name", Target::FirstName),
    ("last_name", Target::LastName),
    ("active", Target::Active),
    ("status", Target::Status),
    ("created", Target::Created),
    ("last_login", Target::LastLogin),
    ("tags", Target::Tags),
];

/// The column targets valid for `kind`.
pub fn targets(kind: AssetKind) -> &'static [(&'static str, Target)] {
    match kind {
        AssetKind::Device => DEVICE_TARGETS,
        AssetKind::User => USER_TARGETS,
        // Refused by `validate`: the file adapter reads devices and users.
        _ => &[],
    }
}

/// One `columns` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The asset field name as configured (`hostname`, `attributes.rack`).
    pub field: String,
    pub target: Target,
    /// The CSV header name or NDJSON key / dotted path.
    pub column: String,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathBuf,
    pub format: Format,
    pub kind: AssetKind,
    /// CSV delimiter byte (unused for NDJSON).
    pub delimiter: u8,
    pub page_records: usize,
    pub keep_raw: bool,
    /// `source_id` first, then the other mappings in config order, then the attributes'.
    pub mappings: Vec<Mapping>,
    /// The vendor attributes the columns feed (`Target::Attribute(i)` is the i-th).
    pub attributes: Vec<AttributeMapping>,
    /// The connection `owner_id` references point into (`None`: this one).
    pub owner_connection: Option<String>,
}

impl Settings {
    /// The stream this connection produces: `devices` or `users`.
    pub fn stream_name(&self) -> &'static str {
        stream_name(self.kind)
    }

    /// The column holding the source id.
    pub fn source_column(&self) -> &str {
        // validate() guarantees mappings[0] is source_id.
        self.mappings.first().map(|m| m.column.as_str()).unwrap_or("source_id")
    }
}

pub fn stream_name(kind: AssetKind) -> &'static str {
    match kind {
        AssetKind::Device => "devices",
        AssetKind::User => "users",
        AssetKind::Vulnerability => "vulnerabilities",
        AssetKind::Software => "software",
        AssetKind::CloudResource => "cloud_resources",
    }
}

/// Parse and validate a connection's config table. Does no I/O.
pub fn parse(value: serde_json::Value) -> Result<Settings, ConfigError> {
    let cfg: FileConfig = corral_core::parse_config(value)?;
    cfg.validate()
}

fn format_from_extension(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "csv" | "tsv" => Some(Format::Csv),
        "ndjson" | "jsonl" => Some(Format::Ndjson),
        _ => None,
    }
}

fn is_tsv(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
}

impl FileConfig {
    /// Check everything that can be checked without touching the file.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::field("path", "must not be empty"));
        }
        let format = match self.format {
            Some(f) => f,
            None => format_from_extension(&self.path).ok_or_else(|| {
                ConfigError::field(
                    "format",
                    "cannot be inferred from the file extension (expected .csv, .tsv, .ndjson or .jsonl); set format = \"csv\" or \"ndjson\"",
                )
            })?,
        };

        let delimiter = match (&self.delimiter, format) {
            (None, _) => {
                if format == Format::Csv && is_tsv(&self.path) {
                    b'\t'
                } else {
                    b','
                }
            }
            (Some(_), Format::Ndjson) => {
                return Err(ConfigError::field("delimiter", "only applies to format \"csv\""));
            }
            (Some(d), Format::Csv) => {
                let bytes = d.as_bytes();
                if bytes.len() != 1 || !bytes[0].is_ascii() {
                    return Err(ConfigError::field("delimiter", "must be exactly one ASCII character"));
                }
                if matches!(bytes[0], b'"' | b'\n' | b'\r') {
                    return Err(ConfigError::field("delimiter", "cannot be a double quote or a line break"));
                }
                bytes[0]
            }
        };

        if !matches!(self.kind, AssetKind::Device | AssetKind::User) {
            return Err(ConfigError::field("kind", "must be \"device\" or \"user\""));
        }
        if !(1..=MAX_PAGE_RECORDS).contains(&self.page_records) {
            return Err(ConfigError::field("page_records", format!("must be between 1 and {MAX_PAGE_RECORDS}")));
        }

        let allowed = targets(self.kind);
        let mut mappings: Vec<Mapping> = Vec::with_capacity(self.columns.len());
        for (field, column) in &self.columns {
            let Some((name, target)) = allowed.iter().find(|(n, _)| n == field) else {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                return Err(ConfigError::field(
                    format!("columns.{field}"),
                    format!("is not a {} field (expected one of: {})", self.kind, names.join(", ")),
                ));
            };
            if column.trim().is_empty() {
                return Err(ConfigError::field(format!("columns.{field}"), "must name a source column"));
            }
            let m = Mapping { field: (*name).to_string(), target: *target, column: column.clone() };
            if *target == Target::SourceId {
                mappings.insert(0, m);
            } else {
                mappings.push(m);
            }
        }
        if mappings.first().is_none_or(|m| m.target != Target::SourceId) {
            return Err(ConfigError::field(
                "columns.source_id",
                "is required (the column holding each record's unique id)",
            ));
        }

        if self.owner_connection.is_some() && !self.columns.contains_key("owner_id") {
            return Err(ConfigError::field("owner_connection", "only applies with a columns.owner_id column"));
        }
        if self.owner_connection.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(ConfigError::field("owner_connection", "must name a connection"));
        }
        let mut attributes = Vec::with_capacity(self.attributes.len());
        for (name, spec) in &self.attributes {
            let field = format!("attributes.{name}");
            if !corral_core::adapter::valid_attribute_name(name) {
                return Err(ConfigError::field(
                    field,
                    "an attribute name is lowercase letters, digits and _, starting with a letter (at most 64)",
                ));
            }
            let (column, ty, description) = match spec {
                AttributeColumn::Column(c) => (c, None, None),
                AttributeColumn::Full { column, ty, description } => (column, ty.as_deref(), description.clone()),
            };
            if column.trim().is_empty() {
                return Err(ConfigError::field(field, "must name a source column"));
            }
            let ty = match ty {
                None => AttrType::String,
                Some(t) => t.parse::<AttrType>().map_err(|e| ConfigError::field(format!("{field}.type"), e))?,
            };
            mappings.push(Mapping { field, target: Target::Attribute(attributes.len()), column: column.clone() });
            attributes.push(AttributeMapping {
                name: name.clone(),
                ty,
                description: description.unwrap_or_else(|| format!("From the file's `{column}` column.")),
            });
        }

        Ok(Settings {
            path: self.path,
            format,
            kind: self.kind,
            delimiter,
            page_records: self.page_records,
            keep_raw: self.keep_raw,
            mappings,
            attributes,
            owner_connection: self.owner_connection,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(v: serde_json::Value) -> String {
        match parse(v) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let s = parse(json!({"path": "x/devices.csv", "columns": {"source_id": "id"}})).expect("valid");
        assert_eq!(s.format, Format::Csv);
        assert_eq!(s.kind, AssetKind::Device);
        assert_eq!(s.delimiter, b',');
        assert_eq!(s.page_records, DEFAULT_PAGE_RECORDS);
        assert!(!s.keep_raw);
        assert_eq!(s.stream_name(), "devices");
        assert_eq!(s.source_column(), "id");
    }

    #[test]
    fn format_from_extension_and_tsv_delimiter() {
        let s = parse(json!({"path": "a.JSONL", "kind": "user", "columns": {"source_id": "id"}})).expect("valid");
        assert_eq!(s.format, Format::Ndjson);
        assert_eq!(s.stream_name(), "users");
        let s = parse(json!({"path": "a.tsv", "columns": {"source_id": "id"}})).expect("valid");
        assert_eq!(s.delimiter, b'\t');
        let s = parse(json!({"path": "a.txt", "format": "csv", "delimiter": ";", "columns": {"source_id": "id"}}))
            .expect("valid");
        assert_eq!(s.delimiter, b';');
    }

    #[test]
    fn source_id_mapping_comes_first() {
        let s = parse(json!({"path": "a.csv", "columns": {"hostname": "h", "source_id": "id", "tags": "t"}}))
            .expect("valid");
        let fields: Vec<&str> = s.mappings.iter().map(|m| m.field.as_str()).collect();
        assert_eq!(fields, ["source_id", "hostname", "tags"]);
    }

    #[test]
    fn attributes_and_owner_references() {
        let s = parse(json!({"path": "a.csv", "owner_connection": "okta", "columns": {"source_id": "id", "owner_id": "uid"},
            "attributes": {"rack": "Rack", "cores": {"column": "CPU Cores", "type": "integer", "description": "CPU cores"}}}))
        .expect("valid");
        assert_eq!(s.attributes.len(), 2);
        assert_eq!((s.attributes[0].name.as_str(), s.attributes[0].ty), ("cores", AttrType::Integer));
        assert_eq!((s.attributes[1].name.as_str(), s.attributes[1].ty), ("rack", AttrType::String));
        let fields: Vec<&str> = s.mappings.iter().map(|m| m.field.as_str()).collect();
        assert_eq!(fields, ["source_id", "owner_id", "attributes.cores", "attributes.rack"]);
        assert_eq!(s.owner_connection.as_deref(), Some("okta"));
        let e = err(json!({"path": "a.csv", "columns": {"source_id": "id"}, "attributes": {"Rack": "r"}}));
        assert!(e.starts_with("config field `attributes.Rack`"), "{e}");
        let e = err(
            json!({"path": "a.csv", "columns": {"source_id": "id"}, "attributes": {"r": {"column": "r", "type": "decimal"}}}),
        );
        assert!(e.starts_with("config field `attributes.r.type`") && e.contains("string_list"), "{e}");
        let e = err(json!({"path": "a.csv", "columns": {"source_id": "id"}, "attributes": {"r": " "}}));
        assert!(e.starts_with("config field `attributes.r`"), "{e}");
        let e = err(json!({"path": "a.csv", "owner_connection": "okta", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `owner_connection`"), "{e}");
        let e = err(json!({"path": "a.csv", "kind": "software", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `kind`"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(json!({"columns": {"source_id": "id"}}));
        assert!(e.contains("`path`") && e.contains("required"), "{e}");

        let e = err(json!({"path": "a.csv", "kind": "printer", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `kind`"), "{e}");

        let e = err(json!({"path": "a.csv", "columns": {"source_id": "id", "email": "mail"}}));
        assert!(e.starts_with("config field `columns.email`"), "{e}");
        assert!(e.contains("not a device field"), "{e}");

        let e = err(json!({"path": "a.csv", "kind": "user", "columns": {"source_id": "id", "hostname": "h"}}));
        assert!(e.starts_with("config field `columns.hostname`"), "{e}");

        let e = err(json!({"path": "a.csv", "columns": {"hostname": "h"}}));
        assert!(e.starts_with("config field `columns.source_id`"), "{e}");
        let e = err(json!({"path": "a.csv"}));
        assert!(e.starts_with("config field `columns.source_id`"), "{e}");
        let e = err(json!({"path": "a.csv", "columns": {"source_id": "  "}}));
        assert!(e.starts_with("config field `columns.source_id`"), "{e}");

        let e = err(json!({"path": "a.csv", "page_records": 0, "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `page_records`"), "{e}");
        let e = err(json!({"path": "a.csv", "page_records": 100_001, "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `page_records`"), "{e}");
        let e = err(json!({"path": "a.csv", "page_records": -1, "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `page_records`"), "{e}");

        let e = err(json!({"path": "a.csv", "delimiter": "::", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `delimiter`"), "{e}");
        let e = err(json!({"path": "a.csv", "delimiter": "é", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `delimiter`"), "{e}");
        let e = err(json!({"path": "a.ndjson", "delimiter": ";", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `delimiter`"), "{e}");

        let e = err(json!({"path": "a.dat", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `format`"), "{e}");
        // A .json file may be one JSON array rather than NDJSON: say so explicitly.
        let e = err(json!({"path": "a.json", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `format`"), "{e}");
        let e = err(json!({"path": "a.csv", "format": "xml", "columns": {"source_id": "id"}}));
        assert!(e.starts_with("config field `format`"), "{e}");

        let e = err(json!({"path": "a.csv", "colums": {"source_id": "id"}}));
        assert!(e.contains("colums"), "{e}");
        let e = err(json!({"path": "a.csv", "columns": {"source_id": 3}}));
        assert!(e.starts_with("config field `columns.source_id`"), "{e}");
    }
}
