//! Scrubbing resolved secrets out of text the engine keeps or prints.
//!
//! Adapters hold secrets in `secrecy` types and never format them, but an
//! error from a vendor, a library or a misconfigured URL can still echo one
//! (a token in a query string, a password in a connection string, a token
//! request quoted back in an error body). The binary registers every secret
//! value it resolved; the engine scrubs them from each run summary before it
//! is saved or returned and from every rejected record before it is kept.
//!
//! # Which forms are scrubbed
//!
//! A secret seldom comes back exactly as configured: a vendor that echoes a
//! token request quotes it form-encoded (`s3cr3t-ZZ%7ETOP`), a JSON error body
//! or a JSON log line escapes it (`\"`, `\\`, `\u00fc`), an HTTP Basic header
//! carries it in base64. [`SecretSet`], used by the [`Redactor`] and by the
//! HTTP toolkit's own scrubber alike, catches all of these:
//!
//! - [`secret_forms`] lists, for each secret, the literal forms to look for:
//!   the value; its JSON-escaped form as serde_json writes it and its
//!   `application/x-www-form-urlencoded` form as an HTTP form body carries it
//!   (so one more layer of escaping over those is caught too: a JSON error
//!   quoting a form body, a JSON log line quoting a JSON error); and its
//!   base64 at each of the three byte alignments, in the standard and the
//!   URL-safe alphabets, keeping only the characters the secret alone
//!   determines: those appear in *any* base64 stream that contains the
//!   secret, `Basic base64(id:secret)` among them, whatever comes before it.
//!   A fragment shorter than [`MIN_BASE64_FRAGMENT`] characters is left out:
//!   it could occur in innocent text.
//! - Each form is looked for in the text as written and in the text with its
//!   escapes decoded: percent-encoding (`%7e` or `%7E`, whichever characters
//!   the encoder chose to escape, a space as `%20` or as `+`), JSON and Rust
//!   string escapes (`\"`, `\\`, `\/`, `\n`, `\u00fc` or `\u00FC`, surrogate
//!   pairs, `\u{fc}`) and HTML character references (`&amp;`, `&quot;`,
//!   `&#39;`, `&#x27;`). The text is decoded, never the secret encoded, so
//!   only text that spells a secret in some encoding is scrubbed.
//! - A text cut off inside a secret (a truncated error body or reject) still
//!   ends with the secret's start: a text that ends with at least
//!   [`MIN_TAIL`] bytes of the start of a form (before a trailing `…` or
//!   `...`) has them scrubbed too.
//!
//! Not caught: a secret split by line wrapping (MIME base64 at 76 columns),
//! text in another character set than UTF-8, encodings nested more than one
//! level beyond the forms above, and secrets shorter than [`Redactor::MIN_LEN`].

use std::ops::Range;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

use crate::store::StoredReject;
use crate::summary::RunSummary;

/// What a scrubbed secret becomes.
pub const REDACTED: &str = "[redacted]";

/// Base64 fragments shorter than this (in characters) are not looked for.
pub const MIN_BASE64_FRAGMENT: usize = 8;

/// The shortest start of a secret scrubbed at the end of a truncated text, in bytes.
pub const MIN_TAIL: usize = 6;

/// Remembers secret values and scrubs them from text. Cheap to clone; clones
/// share the list. `Debug` shows how many secrets it holds, never one.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<RwLock<Registered>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets = self.inner.read().map(|r| r.secrets.len()).unwrap_or(0);
        f.debug_struct("Redactor").field("secrets", &secrets).finish()
    }
}

#[derive(Default)]
struct Registered {
    secrets: Vec<String>,
    /// Compiled from `secrets` when first needed after a change (a config
    /// with hundreds of secrets registers them one by one).
    set: Option<Arc<SecretSet>>,
}

impl Redactor {
    /// Values shorter than this (in bytes) are not registered: they would
    /// scrub innocent text (`-`, `on`, `123`) and are no real secret.
    pub const MIN_LEN: usize = 4;

    pub fn new() -> Self {
        Self::default()
    }

    /// Remember one secret value (and its form after trimming whitespace),
    /// in every form [`secret_forms`] lists.
    pub fn add(&self, secret: &str) {
        let Ok(mut reg) = self.inner.write() else { return };
        let before = reg.secrets.len();
        for value in [secret, secret.trim()] {
            if value.len() >= Self::MIN_LEN && !reg.secrets.iter().any(|s| s == value) {
                reg.secrets.push(value.to_string());
            }
        }
        if reg.secrets.len() != before {
            reg.set = None;
        }
    }

    /// The compiled secrets, compiling them if they changed since last time.
    fn set(&self) -> Option<Arc<SecretSet>> {
        if let Some(set) = self.inner.read().ok()?.set.as_ref() {
            return Some(Arc::clone(set));
        }
        let mut reg = self.inner.write().ok()?;
        let reg = &mut *reg;
        let set = reg.set.get_or_insert_with(|| Arc::new(SecretSet::new(&reg.secrets)));
        Some(Arc::clone(set))
    }

    pub fn is_empty(&self) -> bool {
        self.inner.read().map(|r| r.secrets.is_empty()).unwrap_or(true)
    }

    /// `text` with every registered secret, in any of its forms, replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        self.redact_in_place(&mut out);
        out
    }

    /// Scrub `text` in place; allocates only when a secret is found.
    pub fn redact_in_place(&self, text: &mut String) {
        let Some(set) = self.set() else { return };
        if let Some(scrubbed) = set.scrub(text, REDACTED) {
            *text = scrubbed;
        }
    }

    /// Scrub every free-text field of a run summary: errors, stream errors,
    /// page errors and reject samples.
    pub fn redact_summary(&self, summary: &mut RunSummary) {
        if self.is_empty() {
            return;
        }
        for e in &mut summary.errors {
            self.redact_in_place(e);
        }
        for st in summary.streams.values_mut() {
            if let Some(e) = &mut st.fetch_error {
                self.redact_in_place(e);
            }
            for e in &mut st.page_errors {
                self.redact_in_place(e);
            }
        }
        for group in summary.rejects.values_mut() {
            for r in &mut group.samples {
                self.redact_reject(r);
            }
        }
    }

    /// Scrub a rejected record's locator, detail and raw input.
    pub fn redact_reject(&self, r: &mut crate::adapter::Reject) {
        self.redact_in_place(&mut r.record);
        self.redact_in_place(&mut r.detail);
        if let Some(raw) = &mut r.raw {
            self.redact_in_place(raw);
        }
    }

    pub fn redact_stored_reject(&self, r: &mut StoredReject) {
        self.redact_reject(&mut r.reject);
    }
}

/// The literal forms in which `secret` is looked for (see the module docs):
/// the value, its serde_json escaping, its form encoding, and its base64
/// fragments of at least [`MIN_BASE64_FRAGMENT`] characters. Deduplicated;
/// empty for an empty secret.
pub fn secret_forms(secret: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if secret.is_empty() {
        return out;
    }
    let candidates = [secret.to_string(), json_escaped(secret), form_urlencoded(secret)]
        .into_iter()
        .chain(base64_fragments(secret.as_bytes()));
    for form in candidates {
        if !form.is_empty() && !out.contains(&form) {
            out.push(form);
        }
    }
    out
}

/// `s` as it appears inside a JSON string written by serde_json.
fn json_escaped(s: &str) -> String {
    match serde_json::to_string(s) {
        Ok(quoted) => quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or(s).to_string(),
        Err(_) => s.to_string(),
    }
}

/// `s` as `application/x-www-form-urlencoded` (what an HTTP form body carries):
/// ASCII letters, digits and `*-._` kept, a space as `+`, every other byte `%XX`.
pub fn form_urlencoded(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out
}

const BASE64_STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 (RFC 4648, standard alphabet, with `=` padding).
pub fn base64(input: &[u8]) -> String {
    let mut out = base64_unpadded(input, BASE64_STANDARD);
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// One character per 6 bits of `input`, the last group filled with zero bits.
fn base64_unpadded(input: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The base64 characters `secret` determines on its own, wherever it sits in
/// a base64 stream: for each of the three byte alignments and both
/// alphabets, the characters whose six bits all come from the secret.
fn base64_fragments(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for alphabet in [BASE64_STANDARD, BASE64_URL_SAFE] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let encoded = base64_unpadded(&shifted, alphabet);
            let first = (8 * offset).div_ceil(6);
            let end = 8 * (offset + secret.len()) / 6;
            if let Some(fragment) = encoded.get(first..end)
                && fragment.len() >= MIN_BASE64_FRAGMENT
            {
                out.push(fragment.to_string());
            }
        }
    }
    out
}

/// Secrets compiled for scrubbing: every form of each (see the module docs),
/// searched for in one pass. Build once, use many times. `Debug` shows how
/// many forms it holds, never one.
#[derive(Default)]
pub struct SecretSet {
    forms: Vec<String>,
    matcher: Option<AhoCorasick>,
    /// The first [`MIN_TAIL`] bytes of each form longer than that, for the
    /// truncated-tail check, and which forms start with each.
    prefixes: Vec<(Vec<u8>, Vec<usize>)>,
    prefix_matcher: Option<AhoCorasick>,
    longest: usize,
    any_space: bool,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSet").field("forms", &self.forms.len()).finish_non_exhaustive()
    }
}

impl SecretSet {
    /// The forms of every non-empty secret in `secrets`.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Self {
        let mut forms: Vec<String> = Vec::new();
        for s in secrets {
            for form in secret_forms(s.as_ref()) {
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        // Longest first: the fallback search relies on it.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        let matcher = (!forms.is_empty())
            .then(|| AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&forms).ok())
            .flatten();
        let mut prefixes: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
        for (i, f) in forms.iter().enumerate() {
            let Some(p) = f.as_bytes().get(..MIN_TAIL).filter(|_| f.len() > MIN_TAIL) else { continue };
            match prefixes.iter_mut().find(|(q, _)| q == p) {
                Some((_, ids)) => ids.push(i),
                None => prefixes.push((p.to_vec(), vec![i])),
            }
        }
        let prefix_matcher = (!prefixes.is_empty())
            .then(|| AhoCorasick::builder().build(prefixes.iter().map(|(p, _)| p)).ok())
            .flatten();
        SecretSet {
            longest: forms.iter().map(String::len).max().unwrap_or(0),
            any_space: forms.iter().any(|f| f.contains(' ')),
            forms,
            matcher,
            prefixes,
            prefix_matcher,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Whether `text` holds any form of any secret (a truncated tail included).
    pub fn is_found_in(&self, text: &str) -> bool {
        self.scrub(text, "").is_some()
    }

    /// `text` with every form of every secret replaced by `mask`, or `None`
    /// when `text` holds none.
    pub fn scrub(&self, text: &str, mask: &str) -> Option<String> {
        if self.forms.is_empty() {
            return None;
        }
        let mut scrubbed: Option<String> = None;
        // As written first, then with escapes decoded, then with `+` read as a space too.
        for kind in [ViewKind::Raw, ViewKind::Decoded, ViewKind::DecodedPlus] {
            let current = scrubbed.as_deref().unwrap_or(text);
            if !kind.useful(current, self.any_space) {
                continue;
            }
            let ranges: Vec<Range<usize>> = if kind == ViewKind::Raw {
                self.find_all(current.as_bytes())
            } else {
                let view = View::of(current.as_bytes(), kind);
                self.find_all(&view.bytes).into_iter().filter_map(|m| view.original(m)).collect()
            };
            if let Some(next) = replace_ranges(current, &ranges, mask) {
                scrubbed = Some(next);
            }
        }
        let current = scrubbed.as_deref().unwrap_or(text);
        if let Some(next) = self.scrub_tail(current, mask) {
            scrubbed = Some(next);
        }
        scrubbed
    }

    /// Leftmost-longest, non-overlapping matches of any form in `hay`.
    fn find_all(&self, hay: &[u8]) -> Vec<Range<usize>> {
        if let Some(ac) = &self.matcher {
            return ac.find_iter(hay).map(|m| m.range()).collect();
        }
        // Without an automaton (too many patterns to build one): forms are
        // sorted longest first, so the first that matches at a position is the longest.
        let mut out = Vec::new();
        let mut i = 0;
        while i < hay.len() {
            match self.forms.iter().find(|f| hay[i..].starts_with(f.as_bytes())) {
                Some(f) => {
                    out.push(i..i + f.len());
                    i += f.len();
                }
                None => i += 1,
            }
        }
        out
    }

    /// Scrub the start of a form left at the end of a truncated text.
    fn scrub_tail(&self, text: &str, mask: &str) -> Option<String> {
        let stop = tail_end(text);
        if stop < MIN_TAIL || self.prefixes.is_empty() {
            return None;
        }
        // Only the end of the text matters: no escape is longer than three
        // bytes per byte it stands for, so a tail of `longest` decoded bytes
        // lies within the last 3 x `longest` bytes; decode a generous window.
        let mut window_start = stop.saturating_sub(12 * self.longest + 12);
        while !text.is_char_boundary(window_start) {
            window_start += 1;
        }
        let window_text = &text[window_start..stop];
        let mut best: Option<usize> = None;
        for kind in [ViewKind::Raw, ViewKind::Decoded, ViewKind::DecodedPlus] {
            if !kind.useful(window_text, self.any_space) {
                continue;
            }
            let view = View::of(window_text.as_bytes(), kind);
            let end = view.bytes.len();
            // A proper start of a form is shorter than the longest form.
            let from = end.saturating_sub(self.longest);
            let tail_window = &view.bytes[from..];
            for (pos, id) in self.prefix_candidates(tail_window) {
                let tail = &tail_window[pos..];
                let starts_a_form = self.prefixes[id].1.iter().any(|&f| {
                    let form = self.forms[f].as_bytes();
                    form.len() > tail.len() && form.starts_with(tail)
                });
                if starts_a_form && let Some(r) = view.original(from + pos..end) {
                    let start = window_start + r.start;
                    best = Some(best.map_or(start, |b| b.min(start)));
                    break;
                }
            }
        }
        let tail = best?..stop;
        replace_ranges(text, std::slice::from_ref(&tail), mask)
    }

    /// Every position in `window` where a form's first [`MIN_TAIL`] bytes
    /// start, with the prefix's index, leftmost first.
    fn prefix_candidates(&self, window: &[u8]) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = match &self.prefix_matcher {
            Some(ac) => ac.find_overlapping_iter(window).map(|m| (m.start(), m.pattern().as_usize())).collect(),
            None => (0..window.len())
                .flat_map(|i| {
                    self.prefixes
                        .iter()
                        .enumerate()
                        .filter(move |(_, (p, _))| window[i..].starts_with(p))
                        .map(move |(id, _)| (i, id))
                })
                .collect(),
        };
        out.sort_unstable();
        out
    }
}

/// Where the text proper ends: before trailing whitespace and a trailing
/// truncation mark (`…` or `...`).
fn tail_end(text: &str) -> usize {
    let t = text.trim_end();
    let t = t.strip_suffix('…').or_else(|| t.strip_suffix("...")).unwrap_or(t).trim_end();
    t.len()
}

/// `text` with each range (ascending, non-overlapping, on char boundaries)
/// replaced by `mask`; `None` when there is none.
fn replace_ranges(text: &str, ranges: &[Range<usize>], mask: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut any = false;
    for r in ranges {
        if r.start < copied || r.start >= r.end {
            continue;
        }
        let (Some(before), Some(_)) = (text.get(copied..r.start), text.get(r.start..r.end)) else { continue };
        out.push_str(before);
        out.push_str(mask);
        copied = r.end;
        any = true;
    }
    if !any {
        return None;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Some(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewKind {
    /// The text as written.
    Raw,
    /// Percent, JSON/Rust and HTML escapes decoded.
    Decoded,
    /// As `Decoded`, and `+` read as a space (form encoding).
    DecodedPlus,
}

impl ViewKind {
    /// Whether this view can differ from the raw text in a way that matters.
    fn useful(self, text: &str, any_space: bool) -> bool {
        match self {
            ViewKind::Raw => true,
            ViewKind::Decoded => text.bytes().any(|b| matches!(b, b'%' | b'\\' | b'&')),
            ViewKind::DecodedPlus => any_space && text.contains('+'),
        }
    }
}

/// A decoded view of a text: its bytes, and for each the range of the
/// original text it came from.
struct View {
    bytes: Vec<u8>,
    from: Vec<Range<usize>>,
}

impl View {
    fn of(t: &[u8], kind: ViewKind) -> View {
        let mut view = View { bytes: Vec::with_capacity(t.len()), from: Vec::with_capacity(t.len()) };
        let mut p = 0;
        while p < t.len() {
            let decoded = match kind {
                ViewKind::Raw => None,
                ViewKind::Decoded => unescape_at(t, p, false),
                ViewKind::DecodedPlus => unescape_at(t, p, true),
            };
            match decoded {
                Some((bytes, used)) => {
                    for &b in bytes.as_slice() {
                        view.bytes.push(b);
                        view.from.push(p..p + used);
                    }
                    p += used;
                }
                None => {
                    view.bytes.push(t[p]);
                    view.from.push(p..p + 1);
                    p += 1;
                }
            }
        }
        view
    }

    /// The original range behind the view's bytes `r` (whole escapes).
    fn original(&self, r: Range<usize>) -> Option<Range<usize>> {
        if r.start >= r.end {
            return None;
        }
        let first = self.from.get(r.start)?;
        let last = self.from.get(r.end - 1)?;
        Some(first.start..last.end)
    }
}

/// Up to four bytes one escape stands for.
struct Unescaped {
    buf: [u8; 4],
    len: usize,
}

impl Unescaped {
    fn byte(b: u8) -> Self {
        Unescaped { buf: [b, 0, 0, 0], len: 1 }
    }
    fn char(c: char) -> Self {
        let mut buf = [0u8; 4];
        let len = c.encode_utf8(&mut buf).len();
        Unescaped { buf, len }
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn hex(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

/// `n` hex digits at `t[p..]`.
fn hex_digits(t: &[u8], p: usize, n: usize) -> Option<u32> {
    let digits = t.get(p..p + n)?;
    digits.iter().try_fold(0u32, |acc, &b| Some(acc << 4 | hex(b)?))
}

/// The escape starting at `t[p]`, if there is one: what it stands for and
/// how many bytes it takes.
fn unescape_at(t: &[u8], p: usize, plus_is_space: bool) -> Option<(Unescaped, usize)> {
    match t[p] {
        b'%' => {
            let v = hex_digits(t, p + 1, 2)?;
            Some((Unescaped::byte(u8::try_from(v).ok()?), 3))
        }
        b'+' if plus_is_space => Some((Unescaped::byte(b' '), 1)),
        b'\\' => unescape_backslash(t, p),
        b'&' => unescape_entity(t, p),
        _ => None,
    }
}

/// JSON (`\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t` `\uXXXX`, surrogate pairs)
/// and Rust (`\'` `\0` `\u{X..}`) string escapes.
fn unescape_backslash(t: &[u8], p: usize) -> Option<(Unescaped, usize)> {
    let simple = |b: u8| Some((Unescaped::byte(b), 2));
    match *t.get(p + 1)? {
        c @ (b'"' | b'\\' | b'/' | b'\'') => simple(c),
        b'b' => simple(0x08),
        b'f' => simple(0x0c),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'0' => simple(0),
        b'u' if t.get(p + 2) == Some(&b'{') => {
            let close = t.get(p + 3..)?.iter().take(7).position(|&b| b == b'}')?;
            if close == 0 {
                return None;
            }
            let v = hex_digits(t, p + 3, close)?;
            Some((Unescaped::char(char::from_u32(v)?), 3 + close + 1))
        }
        b'u' => {
            let unit = hex_digits(t, p + 2, 4)?;
            match unit {
                0xd800..=0xdbff => {
                    if t.get(p + 6..p + 8) != Some(b"\\u") {
                        return None;
                    }
                    let low = hex_digits(t, p + 8, 4)?;
                    if !(0xdc00..=0xdfff).contains(&low) {
                        return None;
                    }
                    let c = char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))?;
                    Some((Unescaped::char(c), 12))
                }
                _ => Some((Unescaped::char(char::from_u32(unit)?), 6)),
            }
        }
        _ => None,
    }
}

/// HTML character references: the five named ones and numeric ones.
fn unescape_entity(t: &[u8], p: usize) -> Option<(Unescaped, usize)> {
    // The longest handled: `&#x10FFFF;` and `&#1114111;`, 10 bytes.
    let semi = t.get(p + 1..)?.iter().take(10).position(|&b| b == b';')?;
    let name = &t[p + 1..p + 1 + semi];
    let used = semi + 2;
    let c = match name {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        [b'#', b'x' | b'X', digits @ ..] if !digits.is_empty() => char::from_u32(hex_digits(digits, 0, digits.len())?)?,
        [b'#', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            char::from_u32(std::str::from_utf8(digits).ok()?.parse().ok()?)?
        }
        _ => return None,
    };
    Some((Unescaped::char(c), used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Reject;
    use crate::summary::{RejectGroup, StreamSummary};

    #[test]
    fn secrets_are_scrubbed_longest_first_and_short_values_ignored() {
        let r = Redactor::new();
        r.add("abc");
        r.add("hunter2");
        r.add("hunter2-extended");
        r.add("  spaced-secret\n");
        assert_eq!(r.redact("x abc hunter2-extended hunter2 spaced-secret"), "x abc [redacted] [redacted] [redacted]");
    }

    #[test]
    fn every_text_field_of_a_summary_is_scrubbed() {
        let r = Redactor::new();
        r.add("s3cr3t-token");
        let mut s = RunSummary::new("c", "a");
        s.errors.push("GET https://x/?token=s3cr3t-token failed".into());
        s.streams.insert(
            "hosts".into(),
            StreamSummary {
                fetch_error: Some("401 for s3cr3t-token".into()),
                page_errors: vec!["page 1: s3cr3t-token".into()],
                ..Default::default()
            },
        );
        let reject = Reject::new("id s3cr3t-token", "bad", "detail s3cr3t-token").with_raw(b"{\"k\":\"s3cr3t-token\"}");
        s.rejects.insert("bad".into(), RejectGroup { count: 1, samples: vec![reject] });
        r.redact_summary(&mut s);
        let text = serde_json::to_string(&s).expect("json");
        assert!(!text.contains("s3cr3t-token"), "{text}");
        assert_eq!(text.matches(REDACTED).count(), 6, "{text}");
    }

    /// Every way the tests below write a secret into a text.
    fn encodings(secret: &str, id: &str) -> Vec<(&'static str, String)> {
        let json = serde_json::to_string(secret).expect("json");
        let json = json[1..json.len() - 1].to_string();
        let ascii_json: String = secret
            .chars()
            .map(|c| match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '/' => "\\/".to_string(),
                c if c.is_ascii() && !c.is_control() => c.to_string(),
                c => c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04X}")).collect(),
            })
            .collect();
        let pct = |plus: bool, lower: bool, keep: &str| -> String {
            secret
                .bytes()
                .map(|b| match b {
                    b' ' if plus => "+".to_string(),
                    b if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) => char::from(b).to_string(),
                    b if lower => format!("%{b:02x}"),
                    b => format!("%{b:02X}"),
                })
                .collect()
        };
        let form = form_urlencoded(secret);
        let html: String = secret
            .chars()
            .map(|c| match c {
                '&' => "&amp;".to_string(),
                '"' => "&quot;".to_string(),
                '\'' => "&#39;".to_string(),
                '<' => "&lt;".to_string(),
                c if !c.is_ascii() => format!("&#x{:x};", u32::from(c)),
                c => c.to_string(),
            })
            .collect();
        let basic_std = base64(format!("{id}:{secret}").as_bytes());
        let basic_url = basic_std.replace('+', "-").replace('/', "_");
        vec![
            ("raw", secret.to_string()),
            ("serde_json", json.clone()),
            ("ASCII-only JSON (\\u00FC, \\/)", ascii_json),
            ("JSON inside JSON", serde_json::to_string(&json).expect("json")),
            ("form encoding (what reqwest sends)", form.clone()),
            ("form encoding, lower-case hex", pct(true, true, "*-._")),
            ("RFC 3986 with %20", pct(false, false, "-._~")),
            ("encodeURIComponent", pct(false, false, "-._~!'()*")),
            ("Python quote (keeps /)", pct(false, false, "-._~/")),
            ("form body quoted in a JSON error", serde_json::to_string(&format!("client_secret={form}")).expect("j")),
            ("form body encoded twice", form_urlencoded(&form)),
            ("HTML", html),
            ("Basic header", format!("Authorization: Basic {basic_std}")),
            ("Basic, URL-safe base64", basic_url),
            ("base64 in a JSON log line", serde_json::to_string(&format!("Basic {basic_std}")).expect("json")),
        ]
    }

    #[test]
    fn every_encoding_of_a_secret_is_scrubbed() {
        let secrets = [
            "s3cr3t-ZZ~TOP",
            "p+a/s=s&w o\"r\\d-ü",
            "~+/=& \"\\ü-mixed-0123456789",
            "dGVzdA==/already+base64",
            "tab\tand\nnewline-secret",
            "emoji-🦀-secret",
        ];
        for secret in secrets {
            let r = Redactor::new();
            r.add(secret);
            for id in ["cid", "client-id-1", "ab"] {
                for (how, encoded) in encodings(secret, id) {
                    let text = format!("vendor said: {encoded} (end)");
                    let out = r.redact(&text);
                    assert!(out.contains(REDACTED), "{how} of {secret:?} not scrubbed: {out}");
                    assert!(out.starts_with("vendor said: ") && out.ends_with(" (end)"), "{how}: {out}");
                    // Nothing long enough to mean anything survives.
                    for (_, other) in encodings(secret, id).iter().filter(|(h, _)| !h.starts_with("Basic")) {
                        assert!(!out.contains(other.as_str()), "{how} of {secret:?} left {other:?} in {out}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_echoed_token_request_of_the_issue_is_scrubbed() {
        let r = Redactor::new();
        r.add("s3cr3t-ZZ~TOP");
        let body = r#"{"error":"invalid_client","request":"grant_type=client_credentials&client_id=x&client_secret=s3cr3t-ZZ%7ETOP"}"#;
        assert_eq!(
            r.redact(body),
            r#"{"error":"invalid_client","request":"grant_type=client_credentials&client_id=x&client_secret=[redacted]"}"#
        );
        r.add("m\u{fc}nchen\"quote\\slash");
        let echoed = r#"{"got":"m\u00fcnchen\"quote\\slash"}"#;
        assert_eq!(r.redact(echoed), r#"{"got":"[redacted]"}"#);
    }

    #[test]
    fn base64_fragments_cover_every_alignment() {
        let secret = "Zx9-secret-value";
        let r = Redactor::new();
        r.add(secret);
        for prefix in ["", "a", "ab", "abc", "client-id:", "client-id-2:", "x:"] {
            let stream = base64(format!("{prefix}{secret}").as_bytes());
            let out = r.redact(&format!("Basic {stream}"));
            assert!(out.contains(REDACTED), "prefix {prefix:?}: {out}");
            // What is left of the stream carries fewer than three of the secret's bytes.
            let left = out.replace("Basic ", "").replace(REDACTED, "");
            assert!(left.len() <= 4 + prefix.len().div_ceil(3) * 4, "prefix {prefix:?}: {out}");
        }
    }

    #[test]
    fn innocent_text_is_left_alone() {
        let r = Redactor::new();
        r.add("abcd");
        r.add("tok-12345678");
        for text in [
            "ab cd, a+b, a%62 cd, abc%6 is cut",
            "YWJj ZGVm",
            "100% done & 50%+ left \\ \\u00 \\uZZZZ &bogus; &#xZZ; %zz",
            "tok-1234567 tok_12345678",
            "a text ending in tok-1",
        ] {
            assert_eq!(r.redact(text), text);
        }
        // Short base64 fragments are not registered.
        let short = Redactor::new();
        short.add("abcde");
        assert_eq!(short.redact("YWJjZGU"), "YWJjZGU");
        // Both hex cases decode; a secret spelled with escapes is still the secret.
        assert_eq!(r.redact("a%62%63d"), REDACTED);
        assert_eq!(r.redact("\\u0061bcd"), REDACTED);
    }

    #[test]
    fn a_secret_cut_off_at_the_end_of_a_truncated_text_is_scrubbed() {
        let r = Redactor::new();
        r.add("tok-8f3k2j9d7s");
        assert_eq!(r.redact("echo: token=tok-8f3k2…"), "echo: token=[redacted]…");
        assert_eq!(r.redact("echo: token=tok-8f3k2"), "echo: token=[redacted]");
        assert_eq!(r.redact("echo: token=tok-8f%33k..."), "echo: token=[redacted]...");
        // Fewer than MIN_TAIL bytes of it: left alone.
        assert_eq!(r.redact("echo: token=tok-8"), "echo: token=tok-8");
    }

    #[test]
    fn secret_set_reports_what_it_finds() {
        let set = SecretSet::new(&["pw-secret", ""]);
        assert!(set.is_found_in("x pw%2Dsecret y"));
        assert!(!set.is_found_in("nothing here"));
        assert_eq!(set.scrub("a pw-secret b", "***").as_deref(), Some("a *** b"));
        assert!(SecretSet::new::<&str>(&[]).is_empty());
        assert_eq!(secret_forms(""), Vec::<String>::new());
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(form_urlencoded("a b~ü*"), "a+b%7E%C3%BC*");
        // Debug shows counts, never a secret.
        let r = Redactor::new();
        r.add("pw-secret");
        assert_eq!(r.redact("pw-secret"), REDACTED);
        let shown = format!("{r:?} {set:?}");
        assert!(!shown.contains("pw-secret") && shown.contains("secrets: 1"), "{shown}");
    }
}
