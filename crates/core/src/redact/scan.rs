//! [`SecretSet`]: every form of a set of secrets, found in one pass, in a
//! text as written and with its escapes decoded.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use super::forms::secret_forms;

/// The shortest start of a secret scrubbed at the end of a truncated text, in bytes.
pub const MIN_TAIL: usize = 6;

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
