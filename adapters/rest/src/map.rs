//! The compiled mapping: record paths pre-split into segments, transforms
//! resolved to an enum, targets resolved to setters. Built once when a spec
//! is loaded ([`crate::load`]) and shared by every connection of it;
//! [`Mapping::record`] runs it on one decoded record, with no string lookups
//! of names, paths or transforms.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use corral_core::fields::{self, MacAddr};
use corral_core::{
    Asset, AssetBody, AssetKind, AssetRef, AttrType, AttrValue, CloudResource, Device, FindingState, Severity,
    Software, User, Vulnerability,
};
use serde_json::Value;

use crate::path::Path;

/// A named transform (`transform = "mac"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Text,
    Lowercase,
    Uppercase,
    Mac,
    Ip,
    Hostname,
    Domain,
    Serial,
    Manufacturer,
    Email,
    Time,
    EpochMs,
    EpochS,
    Bool,
    Integer,
    Float,
    Severity,
    Cvss,
    Cve,
    FindingState,
}

impl Transform {
    pub const ALL: [(&'static str, Transform); 20] = [
        ("text", Transform::Text),
        ("lowercase", Transform::Lowercase),
        ("uppercase", Transform::Uppercase),
        ("mac", Transform::Mac),
        ("ip", Transform::Ip),
        ("hostname", Transform::Hostname),
        ("domain", Transform::Domain),
        ("serial", Transform::Serial),
        ("manufacturer", Transform::Manufacturer),
        ("email", Transform::Email),
        ("time", Transform::Time),
        ("epoch_ms", Transform::EpochMs),
        ("epoch_s", Transform::EpochS),
        ("bool", Transform::Bool),
        ("integer", Transform::Integer),
        ("float", Transform::Float),
        ("severity", Transform::Severity),
        ("cvss", Transform::Cvss),
        ("cve", Transform::Cve),
        ("finding_state", Transform::FindingState),
    ];

    pub fn parse(name: &str) -> Option<Transform> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).map_or("?", |(n, _)| n)
    }

    /// What it produces.
    pub fn out(self) -> Out {
        match self {
            Transform::Mac => Out::Mac,
            Transform::Ip => Out::Ip,
            Transform::Time | Transform::EpochMs | Transform::EpochS => Out::Time,
            Transform::Bool => Out::Bool,
            Transform::Integer => Out::Int,
            Transform::Float | Transform::Cvss => Out::Float,
            Transform::Severity => Out::Severity,
            Transform::FindingState => Out::State,
            _ => Out::Str,
        }
    }
}

/// The type of what a transform produces, and of what a target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Str,
    Mac,
    Ip,
    Time,
    Bool,
    Int,
    Float,
    Severity,
    State,
}

impl Out {
    pub fn name(self) -> &'static str {
        match self {
            Out::Str => "text",
            Out::Mac => "MAC addresses",
            Out::Ip => "IP addresses",
            Out::Time => "timestamps",
            Out::Bool => "booleans",
            Out::Int => "integers",
            Out::Float => "numbers",
            Out::Severity => "severities",
            Out::State => "finding states",
        }
    }
}

/// A canonical field a mapping fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    DHostname,
    DDomain,
    DIps,
    DMacs,
    DSerial,
    DOsName,
    DOsVersion,
    DManufacturer,
    DModel,
    DFirstSeen,
    DLastSeen,
    DOwner,
    DCloudInstanceId,
    DEntraDeviceId,
    DTags,
    UUsername,
    UEmail,
    UDisplayName,
    UFirstName,
    ULastName,
    UActive,
    UStatus,
    UCreated,
    ULastLogin,
    UTags,
    VAsset,
    VCves,
    VPluginId,
    VTitle,
    VSeverity,
    VCvss3,
    VVendorScore,
    VState,
    VFirstFound,
    VLastFound,
    VPort,
    VProtocol,
    VSolution,
    SDevice,
    SName,
    SVendor,
    SVersion,
    SCpe,
    SFirstSeen,
    SLastSeen,
    CProvider,
    CAccount,
    CRegion,
    CResourceType,
    CResourceId,
    CArn,
    CName,
    CState,
    CPublicIps,
    CPrivateIps,
    CCreated,
}

/// What a target takes: the type, whether several values, and the transform used when the spec names none.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub out: Out,
    pub list: bool,
    pub default: Transform,
}

const fn w(out: Out, list: bool, default: Transform) -> Want {
    Want { out, list, default }
}

/// Every canonical field a spec can fill, by kind and name.
pub const TARGETS: &[(AssetKind, &str, Target, Want)] = {
    use AssetKind::*;
    use Target::*;
    use Transform as T;
    &[
        (Device, "hostname", DHostname, w(Out::Str, false, T::Hostname)),
        (Device, "domain", DDomain, w(Out::Str, false, T::Lowercase)),
        (Device, "ip_addresses", DIps, w(Out::Ip, true, T::Ip)),
        (Device, "mac_addresses", DMacs, w(Out::Mac, true, T::Mac)),
        (Device, "serial_number", DSerial, w(Out::Str, false, T::Serial)),
        (Device, "os.name", DOsName, w(Out::Str, false, T::Text)),
        (Device, "os.version", DOsVersion, w(Out::Str, false, T::Text)),
        (Device, "manufacturer", DManufacturer, w(Out::Str, false, T::Manufacturer)),
        (Device, "model", DModel, w(Out::Str, false, T::Text)),
        (Device, "first_seen", DFirstSeen, w(Out::Time, false, T::Time)),
        (Device, "last_seen", DLastSeen, w(Out::Time, false, T::Time)),
        (Device, "owner", DOwner, w(Out::Str, false, T::Text)),
        (Device, "cloud_instance_id", DCloudInstanceId, w(Out::Str, false, T::Text)),
        (Device, "entra_device_id", DEntraDeviceId, w(Out::Str, false, T::Lowercase)),
        (Device, "tags", DTags, w(Out::Str, true, T::Text)),
        (User, "username", UUsername, w(Out::Str, false, T::Text)),
        (User, "email", UEmail, w(Out::Str, false, T::Email)),
        (User, "display_name", UDisplayName, w(Out::Str, false, T::Text)),
        (User, "first_name", UFirstName, w(Out::Str, false, T::Text)),
        (User, "last_name", ULastName, w(Out::Str, false, T::Text)),
        (User, "active", UActive, w(Out::Bool, false, T::Bool)),
        (User, "status", UStatus, w(Out::Str, false, T::Text)),
        (User, "created", UCreated, w(Out::Time, false, T::Time)),
        (User, "last_login", ULastLogin, w(Out::Time, false, T::Time)),
        (User, "tags", UTags, w(Out::Str, true, T::Text)),
        (Vulnerability, "asset", VAsset, w(Out::Str, false, T::Text)),
        (Vulnerability, "cves", VCves, w(Out::Str, true, T::Cve)),
        (Vulnerability, "plugin_id", VPluginId, w(Out::Str, false, T::Text)),
        (Vulnerability, "title", VTitle, w(Out::Str, false, T::Text)),
        (Vulnerability, "severity", VSeverity, w(Out::Severity, false, T::Severity)),
        (Vulnerability, "cvss3_score", VCvss3, w(Out::Float, false, T::Cvss)),
        (Vulnerability, "vendor_score", VVendorScore, w(Out::Float, false, T::Float)),
        (Vulnerability, "state", VState, w(Out::State, false, T::FindingState)),
        (Vulnerability, "first_found", VFirstFound, w(Out::Time, false, T::Time)),
        (Vulnerability, "last_found", VLastFound, w(Out::Time, false, T::Time)),
        (Vulnerability, "port", VPort, w(Out::Int, false, T::Integer)),
        (Vulnerability, "protocol", VProtocol, w(Out::Str, false, T::Lowercase)),
        (Vulnerability, "solution", VSolution, w(Out::Str, false, T::Text)),
        (Software, "device", SDevice, w(Out::Str, false, T::Text)),
        (Software, "name", SName, w(Out::Str, false, T::Text)),
        (Software, "vendor", SVendor, w(Out::Str, false, T::Text)),
        (Software, "version", SVersion, w(Out::Str, false, T::Text)),
        (Software, "cpe", SCpe, w(Out::Str, false, T::Text)),
        (Software, "first_seen", SFirstSeen, w(Out::Time, false, T::Time)),
        (Software, "last_seen", SLastSeen, w(Out::Time, false, T::Time)),
        (CloudResource, "provider", CProvider, w(Out::Str, false, T::Lowercase)),
        (CloudResource, "account", CAccount, w(Out::Str, false, T::Text)),
        (CloudResource, "region", CRegion, w(Out::Str, false, T::Text)),
        (CloudResource, "resource_type", CResourceType, w(Out::Str, false, T::Text)),
        (CloudResource, "resource_id", CResourceId, w(Out::Str, false, T::Text)),
        (CloudResource, "arn", CArn, w(Out::Str, false, T::Text)),
        (CloudResource, "name", CName, w(Out::Str, false, T::Text)),
        (CloudResource, "state", CState, w(Out::Str, false, T::Lowercase)),
        (CloudResource, "public_ips", CPublicIps, w(Out::Ip, true, T::Ip)),
        (CloudResource, "private_ips", CPrivateIps, w(Out::Ip, true, T::Ip)),
        (CloudResource, "created", CCreated, w(Out::Time, false, T::Time)),
    ]
};

/// The target named `name` for `kind`.
pub fn target(kind: AssetKind, name: &str) -> Option<(Target, Want)> {
    TARGETS.iter().find(|(k, n, _, _)| *k == kind && *n == name).map(|(_, _, t, w)| (*t, *w))
}

/// What an attribute of type `ty` takes.
pub fn attr_want(ty: AttrType) -> Want {
    match ty {
        AttrType::String => w(Out::Str, false, Transform::Text),
        AttrType::StringList => w(Out::Str, true, Transform::Text),
        AttrType::Integer => w(Out::Int, false, Transform::Integer),
        AttrType::Float => w(Out::Float, false, Transform::Float),
        AttrType::Boolean => w(Out::Bool, false, Transform::Bool),
        AttrType::Timestamp => w(Out::Time, false, Transform::Time),
    }
}

/// Whether `t` can feed a target wanting `want` (text takes anything, rendered).
pub fn fits(t: Transform, want: Want) -> bool {
    want.out == Out::Str || t.out() == want.out
}

/// Where an expression's values come from.
#[derive(Debug, Clone)]
pub enum Source {
    Path(Path),
    /// The first that gives a value.
    First(Vec<Expr>),
    /// Each part's first value as text, joined.
    Join(Vec<Expr>, String),
    Const(Value),
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    pub source: Source,
    pub split: Option<String>,
    pub lowercase: bool,
    pub uppercase: bool,
    pub map: Option<(HashMap<String, Value>, Option<Value>)>,
    pub prefix: Option<String>,
    pub transform: Transform,
    /// hostname: an explicit domain.
    pub domain: Option<Path>,
}

impl Expr {
    fn has_text_ops(&self) -> bool {
        self.split.is_some() || self.lowercase || self.uppercase || self.map.is_some() || self.prefix.is_some()
    }

    /// The raw values, after the text operations (before the transform).
    fn eval<'a>(&'a self, rec: &'a Value, out: &mut Vec<V<'a>>) {
        let start = out.len();
        match &self.source {
            Source::Path(p) => {
                if p.is_multi() {
                    let mut tmp = Vec::new();
                    p.collect(rec, &mut tmp);
                    out.extend(tmp.into_iter().map(V::J));
                } else if let Some(v) = p.get(rec).filter(|v| !v.is_null()) {
                    match v {
                        // A list at a plain path is its elements.
                        Value::Array(a) => out.extend(a.iter().filter(|v| !v.is_null()).map(V::J)),
                        v => out.push(V::J(v)),
                    }
                }
            }
            Source::First(alts) => {
                for e in alts {
                    let before = out.len();
                    e.eval(rec, out);
                    if out[before..].iter().any(V::non_empty) {
                        break;
                    }
                    out.truncate(before);
                }
            }
            Source::Join(parts, sep) => {
                let mut joined = String::new();
                let mut tmp = Vec::new();
                for e in parts {
                    tmp.clear();
                    e.eval(rec, &mut tmp);
                    if let Some(t) = tmp.iter().find_map(|v| v.text()) {
                        if !joined.is_empty() {
                            joined.push_str(sep);
                        }
                        joined.push_str(&t);
                    }
                }
                if !joined.is_empty() {
                    out.push(V::S(joined));
                }
            }
            Source::Const(v) => out.push(V::J(v)),
        }
        if !self.has_text_ops() {
            return;
        }
        let raw: Vec<V<'a>> = out.drain(start..).collect();
        for v in raw {
            let Some(t) = v.text() else { continue };
            let pieces: Vec<String> = match &self.split {
                Some(sep) => t.split(sep.as_str()).filter_map(fields::text).collect(),
                None => vec![t.into_owned()],
            };
            for mut s in pieces {
                if self.lowercase {
                    s = s.to_lowercase();
                }
                if self.uppercase {
                    s = s.to_uppercase();
                }
                let v = match &self.map {
                    Some((m, default)) => match m.get(&s).or(default.as_ref()) {
                        Some(mapped) => V::J(mapped),
                        None => continue,
                    },
                    None => V::S(s),
                };
                match (&self.prefix, v) {
                    (Some(p), v) => {
                        if let Some(t) = v.text() {
                            out.push(V::S(format!("{p}{t}")));
                        }
                    }
                    (None, v) => out.push(v),
                }
            }
        }
    }

    /// The converted values.
    fn convert<'a>(&'a self, rec: &'a Value, scratch: &mut Vec<V<'a>>, out: &mut Vec<Conv>) {
        scratch.clear();
        out.clear();
        self.eval(rec, scratch);
        for v in scratch.iter() {
            convert(self.transform, v, out);
        }
    }
}

/// A value on its way: from the record, or made by an operation.
#[derive(Debug)]
enum V<'a> {
    J(&'a Value),
    S(String),
}

impl V<'_> {
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            V::J(Value::String(s)) => fields::text(s).map(Cow::Owned),
            V::J(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            V::J(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            V::J(_) => None,
            V::S(s) => fields::text(s).map(Cow::Owned),
        }
    }
    /// Raw text without cleaning (for normalizers that clean themselves).
    fn raw(&self) -> Option<Cow<'_, str>> {
        match self {
            V::J(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
            V::J(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            V::J(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            V::J(_) => None,
            V::S(s) => Some(Cow::Borrowed(s.as_str())),
        }
    }
    fn non_empty(&self) -> bool {
        match self {
            V::J(Value::String(s)) => fields::text(s).is_some(),
            V::J(Value::Null) => false,
            V::J(Value::Array(a)) => !a.is_empty(),
            V::J(_) => true,
            V::S(s) => fields::text(s).is_some(),
        }
    }
}

/// A converted value.
#[derive(Debug, Clone, PartialEq)]
pub enum Conv {
    S(String),
    Mac(MacAddr),
    Ip(IpAddr),
    T(DateTime<Utc>),
    B(bool),
    I(i64),
    F(f64),
    Sev(Severity),
    St(FindingState),
}

impl Conv {
    fn into_string(self) -> String {
        match self {
            Conv::S(s) => s,
            Conv::Mac(m) => m.to_string(),
            Conv::Ip(i) => i.to_string(),
            Conv::T(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            Conv::B(b) => b.to_string(),
            Conv::I(i) => i.to_string(),
            Conv::F(f) => f.to_string(),
            Conv::Sev(s) => s.as_str().to_string(),
            Conv::St(s) => s.as_str().to_string(),
        }
    }
}

/// 1980-01-01 and 2200-01-01: outside is a vendor's null date or "never" (as in `fields::timestamp`).
fn in_range(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (315_532_800..7_258_118_400).contains(&t.timestamp()).then_some(t)
}

fn epoch_number(v: &V<'_>) -> Option<f64> {
    match v {
        V::J(Value::Number(n)) => n.as_f64(),
        other => other.raw()?.trim().parse::<f64>().ok(),
    }
    .filter(|f| f.is_finite())
}

fn convert(t: Transform, v: &V<'_>, out: &mut Vec<Conv>) {
    let text = || v.text();
    let c = match t {
        Transform::Text => text().map(|s| Conv::S(s.into_owned())),
        Transform::Lowercase => text().map(|s| Conv::S(s.to_lowercase())),
        Transform::Uppercase => text().map(|s| Conv::S(s.to_uppercase())),
        Transform::Mac => {
            if let Some(s) = v.raw() {
                out.extend(fields::macs([s.as_ref()]).into_iter().map(Conv::Mac));
            }
            None
        }
        Transform::Ip => {
            if let Some(s) = v.raw() {
                out.extend(fields::ips([s.as_ref()]).into_iter().map(Conv::Ip));
            }
            None
        }
        Transform::Hostname => v.raw().and_then(|s| fields::hostname(&s).hostname).map(Conv::S),
        Transform::Domain => v.raw().and_then(|s| fields::hostname(&s).domain).map(Conv::S),
        Transform::Serial => v.raw().and_then(|s| fields::serial(&s)).map(Conv::S),
        Transform::Manufacturer => v.raw().and_then(|s| fields::manufacturer(&s)).map(Conv::S),
        Transform::Email => v.raw().and_then(|s| fields::email(&s)).map(Conv::S),
        Transform::Time => match v {
            V::J(j) => fields::timestamp_json(j),
            V::S(s) => fields::timestamp(s),
        }
        .map(Conv::T),
        Transform::EpochMs => {
            epoch_number(v).and_then(|f| DateTime::from_timestamp_millis(f as i64)).and_then(in_range).map(Conv::T)
        }
        Transform::EpochS => epoch_number(v)
            .and_then(|f| DateTime::from_timestamp(f.trunc() as i64, ((f.fract() * 1e9) as u32).min(999_999_999)))
            .and_then(in_range)
            .map(Conv::T),
        Transform::Bool => match v {
            V::J(Value::Bool(b)) => Some(*b),
            V::J(Value::Number(n)) => match n.as_i64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            other => other.text().and_then(|s| match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "y" => Some(true),
                "false" | "no" | "0" | "n" => Some(false),
                _ => None,
            }),
        }
        .map(Conv::B),
        Transform::Integer => match v {
            V::J(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            other => other.text().and_then(|s| s.parse().ok()),
        }
        .map(Conv::I),
        Transform::Float => epoch_number(v).map(Conv::F),
        Transform::Cvss => epoch_number(v).and_then(fields::cvss_score).map(Conv::F),
        Transform::Severity => v.raw().and_then(|s| fields::severity(&s)).map(Conv::Sev),
        Transform::Cve => v.raw().and_then(|s| fields::cve(&s)).map(Conv::S),
        Transform::FindingState => v.raw().and_then(|s| fields::finding_state(&s)).map(Conv::St),
    };
    if let Some(c) = c {
        out.push(c);
    }
}

/// One stream's compiled mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub kind: AssetKind,
    pub key: Path,
    pub fields: Vec<(Target, Expr)>,
    pub attributes: Vec<(String, AttrType, Expr)>,
    /// Whether `domain` is mapped on its own (then `hostname` does not set it).
    pub domain_mapped: bool,
}

/// Why a record was not mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    NotObject(&'static str),
    MissingKey(String),
}

pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Mapping {
    /// The record's source id.
    pub fn key_of(&self, rec: &Value) -> Result<String, RecordError> {
        if !rec.is_object() {
            return Err(RecordError::NotObject(json_type(rec)));
        }
        let k = &self.key.text;
        match self.key.get(rec) {
            None | Some(Value::Null) => Err(RecordError::MissingKey(format!("the record has no `{k}`"))),
            Some(Value::String(s)) => {
                fields::text(s).ok_or_else(|| RecordError::MissingKey(format!("the record's `{k}` is empty")))
            }
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => {
                Err(RecordError::MissingKey(format!("the record's `{k}` is {}, not a string", json_type(other))))
            }
        }
    }

    /// Map one record to an asset of `stream`.
    pub fn record(&self, stream: &str, rec: &Value) -> Result<Asset, RecordError> {
        let source_id = self.key_of(rec)?;
        let mut scratch: Vec<V<'_>> = Vec::with_capacity(4);
        let mut convs: Vec<Conv> = Vec::with_capacity(4);
        let mut body = match self.kind {
            AssetKind::Device => AssetBody::Device(Device { source_id, ..Default::default() }),
            AssetKind::User => AssetBody::User(User { source_id, ..Default::default() }),
            AssetKind::Vulnerability => AssetBody::Vulnerability(Vulnerability { source_id, ..Default::default() }),
            AssetKind::Software => AssetBody::Software(Software { source_id, ..Default::default() }),
            AssetKind::CloudResource => AssetBody::CloudResource(CloudResource { source_id, ..Default::default() }),
        };
        for (target, expr) in &self.fields {
            if *target == Target::DHostname {
                scratch.clear();
                expr.eval(rec, &mut scratch);
                let raw = scratch.iter().find_map(|v| v.raw().map(Cow::into_owned));
                let domain = expr.domain.as_ref().and_then(|d| d.get(rec)).and_then(Value::as_str);
                if let AssetBody::Device(d) = &mut body {
                    let h = fields::hostname_with_domain(raw.as_deref().unwrap_or(""), domain);
                    d.hostname = h.hostname;
                    if !self.domain_mapped {
                        d.domain = h.domain;
                    }
                }
                continue;
            }
            expr.convert(rec, &mut scratch, &mut convs);
            if !convs.is_empty() {
                set(&mut body, *target, &mut convs);
            }
        }
        if let AssetBody::Device(d) = &mut body {
            // The family comes from the name (and version), as the Rust adapters do.
            if d.os.name.is_some() || d.os.version.is_some() {
                d.os = fields::os(d.os.name.as_deref(), d.os.version.as_deref());
            }
        }
        let mut asset = Asset::new(stream, body);
        for (name, ty, expr) in &self.attributes {
            expr.convert(rec, &mut scratch, &mut convs);
            if let Some(v) = attr_value(*ty, &mut convs) {
                asset = asset.with_attr(name, v);
            }
        }
        Ok(asset)
    }
}

fn attr_value(ty: AttrType, convs: &mut Vec<Conv>) -> Option<AttrValue> {
    if ty == AttrType::StringList {
        let list: Vec<String> = convs.drain(..).map(Conv::into_string).collect();
        return (!list.is_empty()).then(|| AttrValue::StringList(fields::tags(list.iter().map(String::as_str))));
    }
    let first = convs.drain(..).next()?;
    Some(match (ty, first) {
        (AttrType::String, c) => AttrValue::String(c.into_string()),
        (AttrType::Integer, Conv::I(i)) => AttrValue::Integer(i),
        (AttrType::Float, Conv::F(f)) => AttrValue::Float(f),
        (AttrType::Float, Conv::I(i)) => AttrValue::Float(i as f64),
        (AttrType::Boolean, Conv::B(b)) => AttrValue::Boolean(b),
        (AttrType::Timestamp, Conv::T(t)) => AttrValue::Timestamp(t),
        _ => return None,
    })
}

fn first_string(convs: &mut Vec<Conv>) -> Option<String> {
    convs.drain(..).next().map(Conv::into_string)
}

fn first_time(convs: &mut [Conv]) -> Option<DateTime<Utc>> {
    convs.iter().find_map(|c| if let Conv::T(t) = c { Some(*t) } else { None })
}

fn ips(convs: &mut Vec<Conv>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for c in convs.drain(..) {
        if let Conv::Ip(i) = c
            && !out.contains(&i)
        {
            out.push(i);
        }
    }
    out
}

fn strings(convs: &mut Vec<Conv>) -> Vec<String> {
    let all: Vec<String> = convs.drain(..).map(Conv::into_string).collect();
    fields::tags(all.iter().map(String::as_str))
}

/// Set `target` of `body` from `convs` (non-empty).
fn set(body: &mut AssetBody, target: Target, convs: &mut Vec<Conv>) {
    use Target::*;
    match body {
        AssetBody::Device(d) => match target {
            DDomain => d.domain = first_string(convs),
            DIps => d.ip_addresses = ips(convs),
            DMacs => {
                let mut out: Vec<MacAddr> = Vec::new();
                for c in convs.drain(..) {
                    if let Conv::Mac(m) = c
                        && !out.contains(&m)
                    {
                        out.push(m);
                    }
                }
                d.mac_addresses = out;
            }
            DSerial => d.serial_number = first_string(convs),
            DOsName => d.os.name = first_string(convs),
            DOsVersion => d.os.version = first_string(convs),
            DManufacturer => d.manufacturer = first_string(convs),
            DModel => d.model = first_string(convs),
            DFirstSeen => d.first_seen = first_time(convs),
            DLastSeen => d.last_seen = first_time(convs),
            DOwner => d.owner = first_string(convs),
            DCloudInstanceId => d.cloud_instance_id = first_string(convs),
            DEntraDeviceId => d.entra_device_id = first_string(convs),
            DTags => d.tags = strings(convs),
            _ => {}
        },
        AssetBody::User(u) => match target {
            UUsername => u.username = first_string(convs),
            UEmail => u.email = first_string(convs),
            UDisplayName => u.display_name = first_string(convs),
            UFirstName => u.first_name = first_string(convs),
            ULastName => u.last_name = first_string(convs),
            UActive => u.active = convs.iter().find_map(|c| if let Conv::B(b) = c { Some(*b) } else { None }),
            UStatus => u.status = first_string(convs),
            UCreated => u.created = first_time(convs),
            ULastLogin => u.last_login = first_time(convs),
            UTags => u.tags = strings(convs),
            _ => {}
        },
        AssetBody::Vulnerability(v) => match target {
            VAsset => v.asset = first_string(convs).map(|id| AssetRef::local(AssetKind::Device, id)),
            VCves => v.cves = strings(convs),
            VPluginId => v.plugin_id = first_string(convs),
            VTitle => v.title = first_string(convs),
            VSeverity => v.severity = convs.iter().find_map(|c| if let Conv::Sev(s) = c { Some(*s) } else { None }),
            VCvss3 => v.cvss3_score = convs.iter().find_map(|c| if let Conv::F(f) = c { Some(*f) } else { None }),
            VVendorScore => {
                v.vendor_score = convs.iter().find_map(|c| if let Conv::F(f) = c { Some(*f) } else { None })
            }
            VState => v.state = convs.iter().find_map(|c| if let Conv::St(s) = c { Some(*s) } else { None }),
            VFirstFound => v.first_found = first_time(convs),
            VLastFound => v.last_found = first_time(convs),
            VPort => v.port = convs.iter().find_map(|c| if let Conv::I(i) = c { u16::try_from(*i).ok() } else { None }),
            VProtocol => v.protocol = first_string(convs),
            VSolution => v.solution = first_string(convs),
            _ => {}
        },
        AssetBody::Software(s) => match target {
            SDevice => s.device = first_string(convs).map(|id| AssetRef::local(AssetKind::Device, id)),
            SName => s.name = first_string(convs),
            SVendor => s.vendor = first_string(convs),
            SVersion => s.version = first_string(convs),
            SCpe => s.cpe = first_string(convs),
            SFirstSeen => s.first_seen = first_time(convs),
            SLastSeen => s.last_seen = first_time(convs),
            _ => {}
        },
        AssetBody::CloudResource(c) => match target {
            CProvider => c.provider = first_string(convs),
            CAccount => c.account = first_string(convs),
            CRegion => c.region = first_string(convs),
            CResourceType => c.resource_type = first_string(convs),
            CResourceId => c.resource_id = first_string(convs),
            CArn => c.arn = first_string(convs),
            CName => c.name = first_string(convs),
            CState => c.state = first_string(convs),
            CPublicIps => c.public_ips = ips(convs),
            CPrivateIps => c.private_ips = ips(convs),
            CCreated => c.created = first_time(convs),
            _ => {}
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Expr {
        Expr {
            source: Source::Path(Path::parse(p).expect("path")),
            split: None,
            lowercase: false,
            uppercase: false,
            map: None,
            prefix: None,
            transform: Transform::Text,
            domain: None,
        }
    }

    fn values(e: &Expr, rec: &Value) -> Vec<Conv> {
        let mut s = Vec::new();
        let mut out = Vec::new();
        e.convert(rec, &mut s, &mut out);
        out
    }

    #[test]
    fn transforms_normalize_like_the_rust_adapters() {
        let rec = json!({"m": "AA-BB-CC-DD-EE-01", "t": 1704164645000u64, "null_date": "0001-01-01T00:00:00Z",
                         "ips": ["10.0.0.1", "0.0.0.0", "10.0.0.1"], "s": " a,b ,, c "});
        let mac = Expr { transform: Transform::Mac, ..path("m") };
        assert_eq!(values(&mac, &rec), vec![Conv::Mac(fields::mac("aa:bb:cc:dd:ee:01").expect("mac"))]);
        let ms = Expr { transform: Transform::EpochMs, ..path("t") };
        assert_eq!(values(&ms, &rec), vec![Conv::T(fields::timestamp("2024-01-02T03:04:05Z").expect("t"))]);
        let null = Expr { transform: Transform::Time, ..path("null_date") };
        assert!(values(&null, &rec).is_empty(), "a vendor null date is no value");
        let ip = Expr { transform: Transform::Ip, ..path("ips") };
        assert_eq!(values(&ip, &rec).len(), 2, "the placeholder is dropped; dedup happens when set");
        let split = Expr { split: Some(",".into()), uppercase: true, ..path("s") };
        assert_eq!(values(&split, &rec), vec![Conv::S("A".into()), Conv::S("B".into()), Conv::S("C".into())]);
    }

    #[test]
    fn first_join_map_and_prefix() {
        let rec = json!({"p": {"displayName": "  ", "firstName": "Ada", "lastName": "Lovelace"}, "status": "active"});
        let join =
            Expr { source: Source::Join(vec![path("p.firstName"), path("p.lastName")], " ".into()), ..path(".") };
        let first = Expr { source: Source::First(vec![path("p.displayName"), join]), ..path(".") };
        assert_eq!(values(&first, &rec), vec![Conv::S("Ada Lovelace".into())]);
        let map = Expr {
            uppercase: true,
            map: Some((HashMap::from([("ACTIVE".to_string(), json!(true))]), None)),
            transform: Transform::Bool,
            ..path("status")
        };
        assert_eq!(values(&map, &rec), vec![Conv::B(true)]);
        let unmapped = Expr { map: Some((HashMap::new(), None)), ..map.clone() };
        assert!(values(&unmapped, &rec).is_empty(), "an unlisted value without a default is no value");
        let prefixed = Expr { prefix: Some("st:".into()), ..path("status") };
        assert_eq!(values(&prefixed, &rec), vec![Conv::S("st:active".into())]);
    }
}
