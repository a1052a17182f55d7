//! Small helpers: query strings, opaque tokens, JSON responses.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;

/// Which page of a listing a response carries; read by the fault layer
/// (`Faults::malformed_pages`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageIndex(pub usize);

/// Parse a raw query string into decoded `(name, value)` pairs, keeping repeats.
pub(crate) fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Parse an `application/x-www-form-urlencoded` body.
pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    parse_query(Some(&String::from_utf8_lossy(body)))
}

pub(crate) fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encode everything but unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 without padding.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = B64.iter().position(|&b| b == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i) & 0xFF) as u8);
        }
    }
    Some(out)
}

/// An opaque cursor: a few u64 fields plus a keyed checksum, base64url-encoded.
pub(crate) fn seal(key: u64, fields: &[u64]) -> String {
    let mut bytes = Vec::with_capacity(8 * (fields.len() + 1));
    for f in fields {
        bytes.extend_from_slice(&f.to_le_bytes());
    }
    bytes.extend_from_slice(&checksum(key, fields).to_le_bytes());
    b64_encode(&bytes)
}

/// Decode a cursor made by [`seal`]; `None` if it was not made with `key`.
pub(crate) fn unseal(key: u64, token: &str, n: usize) -> Option<Vec<u64>> {
    let bytes = b64_decode(token)?;
    if bytes.len() != 8 * (n + 1) {
        return None;
    }
    let words: Vec<u64> = bytes
        .chunks(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect();
    let (fields, sum) = words.split_at(n);
    (sum.first() == Some(&checksum(key, fields))).then(|| fields.to_vec())
}

fn checksum(key: u64, fields: &[u64]) -> u64 {
    fields.iter().fold(crate::data::mix64(key), |acc, f| crate::data::mix64(acc ^ f))
}

/// A JSON response from a serialisable value.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_default())
}

pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Bearer token from an `Authorization` header (case-insensitive scheme).
pub(crate) fn bearer(headers: &axum::http::HeaderMap, scheme: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (s, token) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| token.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_and_seal_roundtrip() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"\xff\x00\x10"] {
            assert_eq!(b64_decode(&b64_encode(data)).as_deref(), Some(data));
        }
        let t = seal(7, &[1, 2, 3]);
        assert_eq!(unseal(7, &t, 3), Some(vec![1, 2, 3]));
        assert_eq!(unseal(8, &t, 3), None);
        assert_eq!(unseal(7, "garbage!", 3), None);
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("a=1&b=x%20y+z&filter=platform_name%3A%27Windows%27&c"));
        assert_eq!(get(&q, "b"), Some("x y z"));
        assert_eq!(get(&q, "filter"), Some("platform_name:'Windows'"));
        assert_eq!(get(&q, "c"), Some(""));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
