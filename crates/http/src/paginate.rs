//! Pagination helpers that work on headers, URLs and counts, plus a cheap
//! extraction of one cursor field from a JSON body. Nothing here builds a
//! DOM of a page.

use std::fmt;

use bytes::Bytes;
use reqwest::header::{HeaderMap, LINK};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// One link-value of an RFC 8288 `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub uri: String,
    /// Parameter names lower-cased; quoted values unquoted and unescaped.
    pub params: Vec<(String, String)>,
}

impl Link {
    /// Whether any of the space-separated `rel` values equals `rel` (case-insensitive).
    pub fn has_rel(&self, rel: &str) -> bool {
        self.params.iter().any(|(k, v)| k == "rel" && v.split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case(rel)))
    }
}

/// The `rel="next"` target among all `Link` headers: separate header lines
/// (Okta sends `self` and `next` separately) and comma-joined values alike.
/// The URI is returned as sent (possibly relative; see
/// [`crate::Response::next_link`] for one resolved against the request URL).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    link_with_rel(headers, "next")
}

/// The target of the first link with relation `rel`.
pub fn link_with_rel(headers: &HeaderMap, rel: &str) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_link_header)
        .find(|l| l.has_rel(rel))
        .map(|l| l.uri)
}

/// Parse one `Link` header value into its link-values. Tolerant: a malformed
/// link-value is skipped up to the next top-level comma.
pub fn parse_link_header(value: &str) -> Vec<Link> {
    let mut p = Parser { s: value, i: 0 };
    let mut links = Vec::new();
    loop {
        p.skip(|b| b == b',' || b.is_ascii_whitespace());
        if p.at_end() {
            break;
        }
        if p.peek() != Some(b'<') {
            p.skip_to_comma();
            continue;
        }
        p.i += 1;
        let Some(close) = p.s[p.i..].find('>') else { break };
        let uri = p.s[p.i..p.i + close].trim().to_string();
        p.i += close + 1;
        let mut params = Vec::new();
        loop {
            p.skip(|b| b.is_ascii_whitespace());
            match p.peek() {
                None | Some(b',') => break,
                Some(b';') => p.i += 1,
                Some(_) => {
                    p.skip_to_comma();
                    break;
                }
            }
            p.skip(|b| b.is_ascii_whitespace());
            let name = p.take_while(|b| !matches!(b, b'=' | b';' | b',') && !b.is_ascii_whitespace());
            p.skip(|b| b.is_ascii_whitespace());
            let mut val = String::new();
            if p.peek() == Some(b'=') {
                p.i += 1;
                p.skip(|b| b.is_ascii_whitespace());
                val = if p.peek() == Some(b'"') {
                    p.quoted()
                } else {
                    p.take_while(|b| !matches!(b, b';' | b',') && !b.is_ascii_whitespace()).to_string()
                };
            }
            if !name.is_empty() {
                params.push((name.to_ascii_lowercase(), val));
            }
        }
        links.push(Link { uri, params });
    }
    links
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }
    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }
    /// Only ASCII bytes stop it, so the slice ends on a char boundary.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(|b| !b.is_ascii() || f(b)) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut out = String::new();
        let mut chars = self.s[self.i..].char_indices();
        while let Some((off, c)) = chars.next() {
            match c {
                '"' => {
                    self.i += off + 1;
                    return out;
                }
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        out.push(e);
                    }
                }
                c => out.push(c),
            }
        }
        self.i = self.s.len();
        out
    }
    fn skip_to_comma(&mut self) {
        let mut in_quote = false;
        let mut in_uri = false;
        while let Some(b) = self.peek() {
            match b {
                b'"' if !in_uri => in_quote = !in_quote,
                b'\\' if in_quote => self.i += 1,
                b'<' if !in_quote => in_uri = true,
                b'>' if !in_quote => in_uri = false,
                b',' if !in_quote && !in_uri => return,
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// A total count the vendor put in a header (`X-Total-Count`, ServiceNow).
pub fn total_count(headers: &HeaderMap) -> Option<u64> {
    headers.get("x-total-count")?.to_str().ok()?.trim().parse().ok()
}

/// Offset/limit paging (CrowdStrike query ids, ServiceNow `sysparm_offset`).
///
/// Ends when the total is reached (if known) or, without a total, at the
/// first short page. With a known total a short page does not end the stream:
/// some vendors (ServiceNow ACLs) return fewer rows than asked mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPager {
    pub offset: u64,
    pub limit: u64,
    pub total: Option<u64>,
    done: bool,
}

impl OffsetPager {
    pub fn new(limit: u64) -> Self {
        Self::starting_at(0, limit)
    }
    pub fn starting_at(offset: u64, limit: u64) -> Self {
        OffsetPager { offset, limit: limit.max(1), total: None, done: false }
    }
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if self.offset >= total {
            self.done = true;
        }
    }
    /// Account for one page of `received` records.
    pub fn advance(&mut self, received: usize) {
        let received = received as u64;
        self.offset += received;
        self.done = match self.total {
            Some(total) => received == 0 || self.offset >= total,
            None => received < self.limit,
        };
    }
    pub fn done(&self) -> bool {
        self.done
    }
    /// `[(offset_name, offset), (limit_name, limit)]`, ready for [`crate::RequestBuilder::query`].
    pub fn params<'n>(&self, offset_name: &'n str, limit_name: &'n str) -> [(&'n str, String); 2] {
        [(offset_name, self.offset.to_string()), (limit_name, self.limit.to_string())]
    }
}

/// Page-number paging (Jamf `page`/`page-size`, zero- or one-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePager {
    pub page: u64,
    pub page_size: u64,
    pub total: Option<u64>,
    /// Records received so far.
    pub seen: u64,
    done: bool,
}

impl PagePager {
    /// `first_page`: 0 for zero-based APIs (Jamf), 1 for one-based.
    pub fn new(first_page: u64, page_size: u64) -> Self {
        PagePager { page: first_page, page_size: page_size.max(1), total: None, seen: 0, done: false }
    }
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if self.seen >= total {
            self.done = true;
        }
    }
    pub fn advance(&mut self, received: usize) {
        let received = received as u64;
        self.seen += received;
        self.page += 1;
        self.done = match self.total {
            Some(total) => received == 0 || self.seen >= total,
            None => received < self.page_size,
        };
    }
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Extract one string (or number, as text) field from a JSON body, found by
/// its path of object keys: `&["@odata.nextLink"]`,
/// `&["pagination", "nextCursor"]`, `&["meta", "pagination", "offset"]`.
/// `null`, absent, non-scalar or malformed gives `None`.
///
/// Cheap and bounded: no DOM, nothing allocated for skipped values, and the
/// scan stops as soon as the field's value is read. It still has to skip
/// everything before the field, which for a cursor at the end of a multi-MB
/// page is about a millisecond per MB. In a fetch path use
/// [`extract_json_string_offloaded`], which never scans on the runtime.
pub fn extract_json_string(body: &[u8], path: &[&str]) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    // An error is how the scan stops early; `found` says whether it succeeded.
    let _ = PathSeed { path, found: &mut found }.deserialize(&mut de);
    found
}

/// [`extract_json_string`] run off the tokio runtime (see
/// [`crate::off_runtime`]), whatever the body's size: the one to use in a
/// fetch path. `None` also when the scan could not run.
pub async fn extract_json_string_offloaded(body: Bytes, path: &[&str]) -> Option<String> {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    crate::off_runtime(move || {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        extract_json_string(&body, &p)
    })
    .await
    .flatten()
}

struct PathSeed<'p, 'f> {
    path: &'p [&'p str],
    found: &'f mut Option<String>,
}

const STOP: &str = "field extracted";

impl<'de> DeserializeSeed<'de> for PathSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PathSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(STOP))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(STOP))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(STOP))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((want, rest)) = self.path.split_first() else { return Err(de::Error::custom(STOP)) };
        while let Some(hit) = map.next_key_seed(KeyIs(want))? {
            if hit {
                map.next_value_seed(PathSeed { path: rest, found: self.found })?;
                // The field was there but did not hold a scalar: nothing more to find.
                return Err(de::Error::custom(STOP));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

impl PathSeed<'_, '_> {
    fn leaf<E: de::Error>(self, v: String) -> Result<(), E> {
        if self.path.is_empty() {
            *self.found = Some(v);
        }
        Err(E::custom(STOP))
    }
}

/// Compares a map key with the wanted one without allocating it.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
#[path = "paginate_tests.rs"]
mod tests;
