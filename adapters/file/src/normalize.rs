//! Turning one raw page (CSV with its header, or NDJSON) into assets.
//!
//! Pure CPU, never panics. A record that cannot become an asset is a
//! [`Reject`] naming its real line in the file; the rest of the page goes on.

use std::borrow::Cow;

use corral_core::fields;
use corral_core::{Asset, AssetKind, AssetRef, AttrType, AttrValue, Device, NormalizedPage, RawPage, Reject, User};
use serde_json::Value;

use crate::config::{Format, Settings, Target};
use crate::split::{self, count_newlines};

/// Reason codes used in rejects.
pub mod reason {
    pub const MALFORMED_JSON: &str = "malformed_json";
    pub const NOT_AN_OBJECT: &str = "not_an_object";
    pub const MALFORMED_CSV: &str = "malformed_csv";
    pub const INVALID_UTF8: &str = "invalid_utf8";
    pub const MISSING_SOURCE_ID: &str = "missing_source_id";
    pub const INVALID_SOURCE_ID: &str = "invalid_source_id";
    pub const UNSUPPORTED_KIND: &str = "unsupported_kind";
}

/// One source value, borrowed from the record.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Json(&'a Value),
}

impl<'a> Val<'a> {
    /// A scalar as text. Arrays and objects are not text.
    fn as_text(self) -> Option<Cow<'a, str>> {
        match self {
            Val::Str(s) => Some(Cow::Borrowed(s)),
            Val::Json(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
            Val::Json(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            Val::Json(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Val::Json(_) => None,
        }
    }

    /// The items of a multi-valued field: a JSON array's scalar items, or
    /// the value itself (the field helpers split `a, b; c`).
    fn for_each_item(self, mut f: impl FnMut(&str)) {
        match self {
            Val::Json(Value::Array(items)) => {
                for item in items {
                    if let Some(t) = Val::Json(item).as_text() {
                        f(&t);
                    }
                }
            }
            other => {
                if let Some(t) = other.as_text() {
                    f(&t);
                }
            }
        }
    }
}

/// Splits a tag list: `,` `;` and line breaks separate tags (a tag may hold spaces).
fn split_tags(s: &str) -> impl Iterator<Item = &str> {
    s.split([',', ';', '\n', '\r', '|'])
}

fn parse_bool(v: Val<'_>) -> Option<bool> {
    match v {
        Val::Json(Value::Bool(b)) => Some(*b),
        Val::Json(Value::Number(n)) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        other => {
            let t = other.as_text()?;
            let t = t.trim();
            const TRUE: &[&str] = &["true", "t", "yes", "y", "1", "active", "enabled", "on"];
            const FALSE: &[&str] = &["false", "f", "no", "n", "0", "inactive", "disabled", "off", "suspended"];
            if TRUE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
                Some(true)
            } else if FALSE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
                Some(false)
            } else {
                None
            }
        }
    }
}

fn timestamp(v: Val<'_>) -> Option<chrono::DateTime<chrono::Utc>> {
    match v {
        Val::Str(s) => fields::timestamp(s),
        Val::Json(j) => fields::timestamp_json(j),
    }
}

fn text(v: Val<'_>) -> Option<String> {
    fields::text(&v.as_text()?)
}

/// Build one asset from a record. `get(i)` returns the value of
/// `settings.mappings[i]`. Err is a ready reject reason and detail.
/// The record's source id (mapping 0), when it reads as one: a rejected
/// record's key (`Reject::with_key`).
fn source_key<'a>(get: impl Fn(usize) -> Option<Val<'a>>) -> Option<String> {
    match get(0)? {
        v @ (Val::Str(_) | Val::Json(Value::String(_) | Value::Number(_))) => {
            v.as_text().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
        }
        Val::Json(_) => None,
    }
}

fn build_asset<'a>(
    settings: &Settings,
    stream: &str,
    get: impl Fn(usize) -> Option<Val<'a>>,
) -> Result<Asset, (&'static str, String)> {
    let source_id = match get(0) {
        None => None,
        Some(v @ (Val::Str(_) | Val::Json(Value::String(_) | Value::Number(_)))) => v.as_text(),
        Some(Val::Json(Value::Null)) => None,
        Some(Val::Json(_)) => {
            return Err((
                reason::INVALID_SOURCE_ID,
                format!("`{}` is not a string or a number", settings.source_column()),
            ));
        }
    };
    let source_id = match source_id.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => return Err((reason::MISSING_SOURCE_ID, format!("`{}` is missing or empty", settings.source_column()))),
    };

    let mut asset = match settings.kind {
        AssetKind::Device => {
            let mut d = Device { source_id, ..Default::default() };
            let mut host: Option<Val<'a>> = None;
            let mut domain: Option<Val<'a>> = None;
            let mut os_name: Option<Val<'a>> = None;
            let mut os_version: Option<Val<'a>> = None;
            for (i, m) in settings.mappings.iter().enumerate().skip(1) {
                let Some(v) = get(i) else { continue };
                match m.target {
                    Target::Hostname => host = Some(v),
                    Target::Domain => domain = Some(v),
                    Target::OsName => os_name = Some(v),
                    Target::OsVersion => os_version = Some(v),
                    Target::IpAddresses => v.for_each_item(|s| {
                        for ip in fields::ips([s]) {
                            if !d.ip_addresses.contains(&ip) {
                                d.ip_addresses.push(ip);
                            }
                        }
                    }),
                    Target::MacAddresses => v.for_each_item(|s| {
                        for mac in fields::macs([s]) {
                            if !d.mac_addresses.contains(&mac) {
                                d.mac_addresses.push(mac);
                            }
                        }
                    }),
                    Target::SerialNumber => d.serial_number = v.as_text().and_then(|t| fields::serial(&t)),
                    Target::Manufacturer => d.manufacturer = v.as_text().and_then(|t| fields::manufacturer(&t)),
                    Target::Model => d.model = text(v),
                    Target::FirstSeen => d.first_seen = timestamp(v),
                    Target::LastSeen => d.last_seen = timestamp(v),
                    Target::Owner => d.owner = text(v),
                    Target::OwnerId => {
                        d.owner_ref = text(v).map(|id| AssetRef {
                            connection: settings.owner_connection.clone(),
                            kind: AssetKind::User,
                            source_id: id,
                        })
                    }
                    Target::Tags => push_tags(&mut d.tags, v),
                    _ => {}
                }
            }
            let host_text = host.and_then(Val::as_text);
            let domain_text = domain.and_then(Val::as_text);
            if host_text.is_some() || domain_text.is_some() {
                let h = fields::hostname_with_domain(host_text.as_deref().unwrap_or(""), domain_text.as_deref());
                d.hostname = h.hostname;
                d.domain = h.domain;
            }
            if os_name.is_some() || os_version.is_some() {
                let name = os_name.and_then(Val::as_text);
                let version = os_version.and_then(Val::as_text);
                d.os = fields::os(name.as_deref(), version.as_deref());
            }
            Asset::device(stream, d)
        }
        AssetKind::User => {
            let mut u = User { source_id, ..Default::default() };
            for (i, m) in settings.mappings.iter().enumerate().skip(1) {
                let Some(v) = get(i) else { continue };
                match m.target {
                    Target::Username => u.username = text(v),
                    Target::Email => u.email = v.as_text().and_then(|t| fields::email(&t)),
                    Target::DisplayName => u.display_name = text(v),
                    Target::FirstName => u.first_name = text(v),
                    Target::LastName => u.last_name = text(v),
                    Target::Active => u.active = parse_bool(v),
                    Target::Status => u.status = text(v),
                    Target::Created => u.created = timestamp(v),
                    Target::LastLogin => u.last_login = timestamp(v),
                    Target::Tags => push_tags(&mut u.tags, v),
                    _ => {}
                }
            }
            Asset::user(stream, u)
        }
        // `validate` refuses other kinds.
        other => return Err((reason::UNSUPPORTED_KIND, format!("the file adapter does not read {other} records"))),
    };
    for (i, m) in settings.mappings.iter().enumerate() {
        let (Target::Attribute(a), Some(v)) = (m.target, get(i)) else { continue };
        let Some(attr) = settings.attributes.get(a) else { continue };
        // Empty and "no value" spellings are no attribute, as for canonical fields.
        if v.as_text().is_some_and(|t| fields::text(&t).is_none()) || matches!(v, Val::Json(Value::Null)) {
            continue;
        }
        let value = attribute(attr.ty, v).ok_or_else(|| {
            (
                corral_core::adapter::ATTRIBUTE_TYPE,
                format!("attribute `{}` is declared {} but `{}` holds no {}", attr.name, attr.ty, m.column, attr.ty),
            )
        })?;
        asset.attributes.insert(attr.name.clone(), value);
    }
    Ok(asset)
}

/// A column's value as an attribute of type `ty`, or `None` when it is not one.
fn attribute(ty: AttrType, v: Val<'_>) -> Option<AttrValue> {
    Some(match ty {
        AttrType::String => AttrValue::String(text(v)?),
        AttrType::Integer => match v {
            Val::Json(Value::Number(n)) => AttrValue::Integer(n.as_i64()?),
            other => AttrValue::Integer(other.as_text()?.trim().parse().ok()?),
        },
        AttrType::Float => {
            let f = match v {
                Val::Json(Value::Number(n)) => n.as_f64()?,
                other => other.as_text()?.trim().parse().ok()?,
            };
            AttrValue::Float(fields::score(f)?)
        }
        AttrType::Boolean => AttrValue::Boolean(parse_bool(v)?),
        AttrType::Timestamp => AttrValue::Timestamp(timestamp(v)?),
        AttrType::StringList => {
            let mut out = Vec::new();
            push_tags(&mut out, v);
            AttrValue::StringList(out)
        }
    })
}

fn push_tags(out: &mut Vec<String>, v: Val<'_>) {
    v.for_each_item(|s| {
        for t in fields::tags(split_tags(s)) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    });
}

/// Normalize one page according to `settings`.
pub fn normalize_page(settings: &Settings, page: &RawPage) -> NormalizedPage {
    match settings.format {
        Format::Csv => normalize_csv(settings, page),
        Format::Ndjson => normalize_ndjson(settings, page),
    }
}

/// The line number of the page's first record (pages from elsewhere may leave it 0).
fn first_line(page: &RawPage) -> u64 {
    page.first_record.max(1)
}

fn trim_line_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = b {
        b = rest;
    }
    b
}

// ---------------------------------------------------------------------------
// NDJSON

/// Look up a key, or a dotted path (`os.name`, `nics.0.mac`) when the object
/// has no key with the literal name.
fn lookup<'a>(obj: &'a serde_json::Map<String, Value>, key: &str, path: &[String]) -> Option<&'a Value> {
    if let Some(v) = obj.get(key) {
        return Some(v);
    }
    if path.len() < 2 {
        return None;
    }
    let mut cur = obj.get(&path[0])?;
    for seg in &path[1..] {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn normalize_ndjson(settings: &Settings, page: &RawPage) -> NormalizedPage {
    let paths: Vec<Vec<String>> =
        settings.mappings.iter().map(|m| m.column.split('.').map(str::to_owned).collect()).collect();
    let stream = page.stream.as_str();
    let mut out = NormalizedPage { assets: Vec::with_capacity(page.record_hint.unwrap_or(0)), ..Default::default() };
    for (n, raw_line) in (first_line(page)..).zip(page.body.split(|&b| b == b'\n')) {
        let line = trim_line_end(raw_line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = || format!("line {n}");
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                out.rejects
                    .push(Reject::new(record(), reason::INVALID_UTF8, format!("not valid UTF-8: {e}")).with_raw(line));
                continue;
            }
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                out.rejects.push(Reject::new(record(), reason::MALFORMED_JSON, e.to_string()).with_raw(line));
                continue;
            }
        };
        let Value::Object(obj) = &value else {
            out.rejects
                .push(Reject::new(record(), reason::NOT_AN_OBJECT, "each line must be a JSON object").with_raw(line));
            continue;
        };
        let built =
            build_asset(settings, stream, |i| lookup(obj, &settings.mappings[i].column, &paths[i]).map(Val::Json));
        match built {
            Ok(asset) => {
                let raw = settings.keep_raw.then_some(value);
                out.assets.push(asset.with_raw(raw));
            }
            Err((reason, detail)) => {
                let key = source_key(|i| lookup(obj, &settings.mappings[i].column, &paths[i]).map(Val::Json));
                out.rejects
                    .push(Reject::new(record(), reason, detail).with_raw(line).with_key(key.unwrap_or_default()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// CSV

/// Find a mapped column in the header: exact match (both sides trimmed),
/// else a unique ASCII-case-insensitive match.
pub(crate) fn find_column(header: &[&str], column: &str) -> Option<usize> {
    let column = column.trim();
    if let Some(i) = header.iter().position(|h| h.trim() == column) {
        return Some(i);
    }
    let mut found = header.iter().enumerate().filter(|(_, h)| h.trim().eq_ignore_ascii_case(column));
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// Where each mapping's column sits in the header, or an error naming the missing ones.
pub(crate) fn resolve_columns(settings: &Settings, header: &[&str]) -> Result<Vec<usize>, String> {
    let mut idx = Vec::with_capacity(settings.mappings.len());
    let mut missing = Vec::new();
    for m in &settings.mappings {
        match find_column(header, &m.column) {
            Some(i) => idx.push(i),
            None => missing.push(format!("`{}` (columns.{})", m.column, m.field)),
        }
    }
    if missing.is_empty() { Ok(idx) } else { Err(format!("CSV header has no column {}", missing.join(", "))) }
}

fn csv_reader<'a>(settings: &Settings, body: &'a [u8]) -> csv::Reader<&'a [u8]> {
    csv::ReaderBuilder::new()
        .delimiter(settings.delimiter)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(body)
}

/// Parse a CSV header record (as fetch kept it) into column names.
pub(crate) fn parse_header(settings: &Settings, header: &[u8]) -> Result<Vec<String>, String> {
    let mut rdr = csv_reader(settings, header);
    let mut rec = csv::StringRecord::new();
    match rdr.read_record(&mut rec) {
        Ok(true) => Ok(rec.iter().map(|h| h.trim().trim_start_matches('\u{feff}').to_owned()).collect()),
        Ok(false) => Err("the file has no CSV header".into()),
        Err(e) => Err(format!("unreadable CSV header: {e}")),
    }
}

fn normalize_csv(settings: &Settings, page: &RawPage) -> NormalizedPage {
    let body: &[u8] = &page.body;
    let stream = page.stream.as_str();
    let mut rec = csv::StringRecord::new();

    // The header record every page starts with.
    let mut rdr = csv_reader(settings, body);
    let header: Vec<String> = match rdr.read_record(&mut rec) {
        Ok(true) => rec.iter().map(|h| h.trim().trim_start_matches('\u{feff}').to_owned()).collect(),
        Ok(false) => return NormalizedPage::default(),
        Err(e) => return NormalizedPage::page_failed(format!("{}: unreadable CSV header: {e}", page.locator)),
    };
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let columns = match resolve_columns(settings, &header_refs) {
        Ok(c) => c,
        Err(e) => return NormalizedPage::page_failed(format!("{}: {e}", page.locator)),
    };
    let width = header.len();

    // `base` is where the current reader started in the body and `line` the
    // file line at `base`. The first record of the page is on `first_record`.
    let mut base = (rdr.position().byte() as usize).min(body.len());
    let header_newlines = count_newlines(&body[..skip_line_breaks(body, base)]);
    let mut line = if page.first_record == 0 {
        1 + count_newlines(&body[..base])
    } else {
        (page.first_record + count_newlines(&body[..base])).saturating_sub(header_newlines)
    };

    let mut out = NormalizedPage { assets: Vec::with_capacity(page.record_hint.unwrap_or(0)), ..Default::default() };
    'readers: loop {
        let data = &body[base..];
        let mut rdr = csv_reader(settings, data);
        let mut pos = 0;
        loop {
            let result = rdr.read_record(&mut rec);
            let end = (rdr.position().byte() as usize).clamp(pos, data.len());
            let start = skip_line_breaks(data, pos).min(end);
            let n = line + count_newlines(&data[pos..start]);
            line += count_newlines(&data[pos..end]);
            pos = end;
            if matches!(result, Ok(false)) {
                break 'readers;
            }
            let raw = trim_line_end(&data[start..end]);
            let record = || format!("line {n}");

            // A record spanning lines may be a stray quote swallowing the
            // lines after it: reject its first line, read on from the next
            // (the same cut fetch made; see `split`).
            if raw.contains(&b'\n')
                && let Some(cut) = split::broken_first_line(&data[start..end], settings.delimiter, end == data.len())
            {
                out.rejects.push(
                    Reject::new(record(), reason::MALFORMED_CSV, "unterminated quoted field")
                        .with_raw(trim_line_end(&data[start..start + cut])),
                );
                base += start + cut;
                line = n + 1;
                continue 'readers;
            }

            if let Err(e) = result {
                let (reason, detail) = match e.kind() {
                    csv::ErrorKind::Utf8 { err, .. } => {
                        (reason::INVALID_UTF8, format!("field {} is not valid UTF-8", err.field() + 1))
                    }
                    _ => (reason::MALFORMED_CSV, e.to_string()),
                };
                out.rejects.push(Reject::new(record(), reason, detail).with_raw(raw));
                if start == end {
                    // No progress: never loop forever on a reader that is stuck.
                    break 'readers;
                }
                continue;
            }
            if raw.iter().all(|&b| b.is_ascii_whitespace() && b != settings.delimiter) {
                continue; // a whitespace-only line is not a record (as in fetch)
            }
            if rec.len() != width {
                out.rejects.push(
                    Reject::new(
                        record(),
                        reason::MALFORMED_CSV,
                        format!("expected {width} fields, found {}", rec.len()),
                    )
                    .with_raw(raw),
                );
                continue;
            }
            match build_asset(settings, stream, |i| rec.get(columns[i]).map(Val::Str)) {
                Ok(asset) => {
                    let raw_json = settings.keep_raw.then(|| {
                        Value::Object(
                            header
                                .iter()
                                .zip(rec.iter())
                                .map(|(h, v)| (h.clone(), Value::String(v.to_owned())))
                                .collect(),
                        )
                    });
                    out.assets.push(asset.with_raw(raw_json));
                }
                Err((reason, detail)) => {
                    // The row has the header's width, so its id column is the id.
                    let key = source_key(|i| rec.get(columns[i]).map(Val::Str));
                    out.rejects
                        .push(Reject::new(record(), reason, detail).with_raw(raw).with_key(key.unwrap_or_default()));
                }
            }
        }
    }
    out
}

/// Index of the first byte at or after `pos` that is not `\r` or `\n`.
fn skip_line_breaks(body: &[u8], pos: usize) -> usize {
    let rest = body.get(pos..).unwrap_or(&[]);
    pos + rest.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
}
