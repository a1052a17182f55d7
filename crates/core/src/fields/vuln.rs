//! Findings: severities, scores, CVE ids, CPE names, finding states.

use crate::asset::{FindingState, Severity};

use super::alnum_in;
use super::text::is_nullish;

/// A severity from the names vendors use, compared ignoring case and
/// punctuation: `info`/`informational`/`none`/`log`, `low`/`minor`,
/// `medium`/`moderate`, `high`/`important`/`serious`/`major`,
/// `critical`/`urgent`/`emergency`. A number in the text is read on
/// the CVSS scale (`"7.5"` is high); anything else is `None`.
pub fn severity(s: &str) -> Option<Severity> {
    let t = s.trim();
    if is_nullish(t) && !t.eq_ignore_ascii_case("none") {
        return None;
    }
    const INFO: &[&str] = &["info", "informational", "information", "none", "log", "minimal"];
    const LOW: &[&str] = &["low", "minor"];
    const MEDIUM: &[&str] = &["medium", "moderate", "med", "warning"];
    const HIGH: &[&str] = &["high", "important", "serious", "major", "severe"];
    const CRITICAL: &[&str] = &["critical", "urgent", "emergency", "crit"];
    if alnum_in(t, INFO) {
        Some(Severity::Info)
    } else if alnum_in(t, LOW) {
        Some(Severity::Low)
    } else if alnum_in(t, MEDIUM) {
        Some(Severity::Medium)
    } else if alnum_in(t, HIGH) {
        Some(Severity::High)
    } else if alnum_in(t, CRITICAL) {
        Some(Severity::Critical)
    } else {
        t.parse::<f64>().ok().and_then(severity_from_cvss)
    }
}

/// A numeric severity scale a vendor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeverityScale {
    /// 0 info, 1 low, 2 medium, 3 high, 4 critical (Tenable's `severity`).
    ZeroToFour,
    /// 1 info (minimal), 2 low (medium), 3 medium (serious), 4 high
    /// (critical), 5 critical (urgent): Qualys severity levels.
    OneToFive,
    /// A CVSS score: see [`severity_from_cvss`].
    Cvss,
}

/// A severity from a number on `scale`; `None` for a number off the scale
/// (or not an integer, for the integer scales).
pub fn severity_scaled(n: f64, scale: SeverityScale) -> Option<Severity> {
    if !n.is_finite() {
        return None;
    }
    let level = |i: i64| -> Option<Severity> { usize::try_from(i).ok().and_then(|i| Severity::ALL.get(i).copied()) };
    match scale {
        SeverityScale::ZeroToFour if n.fract() == 0.0 => level(n as i64),
        SeverityScale::OneToFive if n.fract() == 0.0 && n >= 1.0 => level(n as i64 - 1),
        SeverityScale::Cvss => severity_from_cvss(n),
        _ => None,
    }
}

/// The CVSS v3 qualitative rating of a score: 0.0 info ("none"), 0.1-3.9
/// low, 4.0-6.9 medium, 7.0-8.9 high, 9.0-10.0 critical; `None` outside 0-10.
pub fn severity_from_cvss(score: f64) -> Option<Severity> {
    let s = cvss_score(score)?;
    Some(if s == 0.0 {
        Severity::Info
    } else if s < 4.0 {
        Severity::Low
    } else if s < 7.0 {
        Severity::Medium
    } else if s < 9.0 {
        Severity::High
    } else {
        Severity::Critical
    })
}

/// A CVSS score: finite, 0.0 to 10.0, rounded to one decimal; else `None`.
pub fn cvss_score(score: f64) -> Option<f64> {
    (score.is_finite() && (0.0..=10.0).contains(&score)).then(|| (score * 10.0).round() / 10.0)
}

/// A vendor's own score (Tenable VPR, a risk score): any finite number; else `None`.
pub fn score(score: f64) -> Option<f64> {
    score.is_finite().then_some(score)
}

/// A CVE id, validated and upper-cased: `CVE-YYYY-NNNN` with a year from
/// 1999 and a sequence of 4 to 19 digits (`cve-2024-3094` -> `CVE-2024-3094`);
/// else `None`.
pub fn cve(s: &str) -> Option<String> {
    let t = s.trim();
    let b = t.as_bytes();
    if b.len() < 13 || b.len() > 28 || !b[..4].eq_ignore_ascii_case(b"cve-") || b[8] != b'-' {
        return None;
    }
    let (year, seq) = (&t[4..8], &t[9..]);
    if !year.bytes().all(|c| c.is_ascii_digit()) || !seq.bytes().all(|c| c.is_ascii_digit()) || seq.len() < 4 {
        return None;
    }
    let y: u32 = year.parse().ok()?;
    (1999..=2999).contains(&y).then(|| format!("CVE-{year}-{seq}"))
}

/// Every valid CVE id in `items` (each item may hold several, separated by
/// commas, semicolons or whitespace), upper-cased, without duplicates, in
/// first-seen order.
pub fn cves<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for item in items {
        for part in super::split_list(item) {
            if let Some(c) = cve(part) {
                super::push_unique(&mut out, c);
            }
        }
    }
    out
}

/// A CPE name taken apart ([`cpe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpe {
    /// The CPE 2.3 formatted string, lowercase (`cpe:2.3:a:openssl:openssl:3.0.2:*:*:*:*:*:*:*`).
    pub formatted: String,
    /// `a` (application), `o` (operating system) or `h` (hardware).
    pub part: char,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
}

/// A CPE 2.3 formatted string (`cpe:2.3:a:vendor:product:version:...`) or a
/// CPE 2.2 URI (`cpe:/a:vendor:product:version`), split into vendor, product
/// and version (escapes such as `\:` undone; `*` and `-` are no value). The
/// formatted form is lowercase and has all 13 components (missing ones
/// `*`). `None` unless it starts with `cpe:2.3:` or `cpe:/` and names a part `a`, `o` or `h`.
pub fn cpe(s: &str) -> Option<Cpe> {
    let t = s.trim().to_lowercase();
    let (body, uri) = if let Some(rest) = t.strip_prefix("cpe:2.3:") {
        (rest.to_string(), false)
    } else if let Some(rest) = t.strip_prefix("cpe:/") {
        (rest.to_string(), true)
    } else {
        return None;
    };
    // Split on unescaped colons, keeping escapes in the components.
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ':' => parts.push(std::mem::take(&mut cur)),
            c if c.is_control() || c.is_whitespace() => return None,
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let part = match parts.first().map(String::as_str) {
        Some("a") => 'a',
        Some("o") => 'o',
        Some("h") => 'h',
        _ => return None,
    };
    if parts.len() > 11 {
        return None;
    }
    let value = |i: usize| -> Option<String> {
        let raw = parts.get(i)?;
        let raw = if uri { percent_decode(raw) } else { raw.clone() };
        if raw.is_empty() || raw == "*" || raw == "-" {
            return None;
        }
        let mut out = String::with_capacity(raw.len());
        let mut it = raw.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                if let Some(n) = it.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        Some(out)
    };
    let mut components: Vec<String> = parts.iter().map(|p| if p.is_empty() { "*".into() } else { p.clone() }).collect();
    if uri {
        components = components.iter().map(|p| escape_23(&percent_decode(p))).collect();
    }
    components.resize(11, "*".to_string());
    Some(Cpe {
        formatted: format!("cpe:2.3:{}", components.join(":")),
        part,
        vendor: value(1),
        product: value(2),
        version: value(3),
    })
}

/// `%xx` escapes of a CPE 2.2 URI component decoded (invalid ones kept).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escape what CPE 2.3's formatted string escapes (everything but letters,
/// digits, `_`, `-`, `.`, and a bare `*`).
fn escape_23(s: &str) -> String {
    if s == "*" || s == "-" || s.is_empty() {
        return if s.is_empty() { "*".into() } else { s.into() };
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A finding state from the names vendors use (ignoring case and
/// punctuation): `open`/`active`/`new`/`detected` -> open; `fixed`/`resolved`/
/// `closed`/`remediated`/`mitigated`/`patched` -> fixed; `reopened`/`reopen`
/// -> reopened; `accepted`/`risk accepted`/`exception`/`false positive`/
/// `suppressed`/`ignored`/`wont fix` -> accepted; else `None`.
pub fn finding_state(s: &str) -> Option<FindingState> {
    let t = s.trim();
    if is_nullish(t) {
        return None;
    }
    const OPEN: &[&str] = &["open", "opened", "active", "new", "detected", "notfixed", "unresolved", "vulnerable"];
    const FIXED: &[&str] = &["fixed", "resolved", "closed", "remediated", "mitigated", "patched", "inactive"];
    const REOPENED: &[&str] = &["reopened", "reopen", "reactivated"];
    const ACCEPTED: &[&str] = &[
        "accepted",
        "riskaccepted",
        "acceptedrisk",
        "exception",
        "falsepositive",
        "suppressed",
        "ignored",
        "wontfix",
        "disabled",
    ];
    if alnum_in(t, OPEN) {
        Some(FindingState::Open)
    } else if alnum_in(t, FIXED) {
        Some(FindingState::Fixed)
    } else if alnum_in(t, REOPENED) {
        Some(FindingState::Reopened)
    } else if alnum_in(t, ACCEPTED) {
        Some(FindingState::Accepted)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::Severity::*;

    #[test]
    fn severity_names() {
        let cases: &[(&str, Option<Severity>)] = &[
            ("Critical", Some(Critical)),
            (" URGENT ", Some(Critical)),
            ("high", Some(High)),
            ("Important", Some(High)),
            ("Serious", Some(High)),
            ("medium", Some(Medium)),
            ("Moderate", Some(Medium)),
            ("low", Some(Low)),
            ("informational", Some(Info)),
            ("Info", Some(Info)),
            ("None", Some(Info)),
            ("7.5", Some(High)),
            ("9.8", Some(Critical)),
            ("0", Some(Info)),
            ("11", None),
            ("", None),
            ("n/a", None),
            ("bad", None),
            ("NaN", None),
        ];
        for (input, want) in cases {
            assert_eq!(severity(input), *want, "severity({input:?})");
        }
    }

    #[test]
    fn severity_scales() {
        use SeverityScale::*;
        let cases: &[(f64, SeverityScale, Option<Severity>)] = &[
            (0.0, ZeroToFour, Some(Info)),
            (1.0, ZeroToFour, Some(Low)),
            (2.0, ZeroToFour, Some(Medium)),
            (3.0, ZeroToFour, Some(High)),
            (4.0, ZeroToFour, Some(Critical)),
            (5.0, ZeroToFour, None),
            (-1.0, ZeroToFour, None),
            (2.5, ZeroToFour, None),
            (0.0, OneToFive, None),
            (1.0, OneToFive, Some(Info)),
            (3.0, OneToFive, Some(Medium)),
            (5.0, OneToFive, Some(Critical)),
            (6.0, OneToFive, None),
            (0.0, Cvss, Some(Info)),
            (0.1, Cvss, Some(Low)),
            (3.9, Cvss, Some(Low)),
            (4.0, Cvss, Some(Medium)),
            (6.9, Cvss, Some(Medium)),
            (7.0, Cvss, Some(High)),
            (8.9, Cvss, Some(High)),
            (9.0, Cvss, Some(Critical)),
            (10.0, Cvss, Some(Critical)),
            (10.1, Cvss, None),
            (f64::NAN, Cvss, None),
            (f64::INFINITY, ZeroToFour, None),
        ];
        for (n, scale, want) in cases {
            assert_eq!(severity_scaled(*n, *scale), *want, "severity_scaled({n}, {scale:?})");
        }
        assert_eq!(cvss_score(7.25), Some(7.3));
        assert_eq!(cvss_score(-0.1), None);
        assert_eq!(score(f64::NAN), None);
        assert_eq!(score(27.5), Some(27.5));
    }

    #[test]
    fn cve_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            ("CVE-2024-3094", Some("CVE-2024-3094")),
            (" cve-2021-44228 ", Some("CVE-2021-44228")),
            ("Cve-1999-0001", Some("CVE-1999-0001")),
            ("CVE-2024-1234567", Some("CVE-2024-1234567")),
            ("CVE-2024-123", None),
            ("CVE-1998-0001", None),
            ("CVE-24-1234", None),
            ("CVE-2024-12a4", None),
            ("CVE_2024_1234", None),
            ("2024-1234", None),
            ("", None),
            ("CVE-２０２４-1234", None),
        ];
        for (input, want) in cases {
            assert_eq!(cve(input).as_deref(), *want, "cve({input:?})");
        }
        assert_eq!(
            cves(["CVE-2024-3094, cve-2021-44228", "CVE-2024-3094;bogus", " CVE-2023-0001\tCVE-2023-0002"]),
            ["CVE-2024-3094", "CVE-2021-44228", "CVE-2023-0001", "CVE-2023-0002"]
        );
    }

    #[test]
    fn cpe_names() {
        let c = cpe("cpe:2.3:a:OpenSSL:openssl:3.0.2:*:*:*:*:*:*:*").expect("cpe 2.3");
        assert_eq!(c.formatted, "cpe:2.3:a:openssl:openssl:3.0.2:*:*:*:*:*:*:*");
        assert_eq!(
            (c.part, c.vendor.as_deref(), c.product.as_deref(), c.version.as_deref()),
            ('a', Some("openssl"), Some("openssl"), Some("3.0.2"))
        );
        let c = cpe(r"cpe:2.3:a:microsoft:internet_explorer:8.0.6001:beta:*:*:*:*:*:*").expect("ie");
        assert_eq!(c.product.as_deref(), Some("internet_explorer"));
        let c = cpe(r"cpe:2.3:a:hp:insight_diagnostics:7.4.0.1570:-:*:*:online:win2003:x64:*").expect("hp");
        assert_eq!(c.version.as_deref(), Some("7.4.0.1570"));
        let c = cpe(r"cpe:2.3:a:foo\:bar:baz:1.0").expect("escaped colon, short");
        assert_eq!(c.vendor.as_deref(), Some("foo:bar"));
        assert_eq!(c.formatted, r"cpe:2.3:a:foo\:bar:baz:1.0:*:*:*:*:*:*:*");
        let c = cpe("cpe:/o:microsoft:windows_10:1909").expect("2.2 uri");
        assert_eq!(c.formatted, "cpe:2.3:o:microsoft:windows_10:1909:*:*:*:*:*:*:*");
        assert_eq!((c.part, c.version.as_deref()), ('o', Some("1909")));
        let c = cpe("cpe:/a:vendor%21:product").expect("percent");
        assert_eq!(c.vendor.as_deref(), Some("vendor!"));
        assert_eq!(c.formatted, r"cpe:2.3:a:vendor\!:product:*:*:*:*:*:*:*:*");
        let c = cpe("cpe:2.3:h:*:-:*").expect("no values");
        assert_eq!((c.vendor, c.product, c.version), (None, None, None));
        for bad in [
            "",
            "cpe:2.3:x:a:b:c",
            "cpe:2.2:a:b",
            "openssl 3.0",
            "cpe:2.3:a:b c:d",
            "cpe:2.3:a:1:2:3:4:5:6:7:8:9:10:11",
        ] {
            assert_eq!(cpe(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn finding_states() {
        use FindingState::*;
        let cases: &[(&str, Option<FindingState>)] = &[
            ("OPEN", Some(Open)),
            ("Active", Some(Open)),
            ("new", Some(Open)),
            ("fixed", Some(Fixed)),
            ("Resolved", Some(Fixed)),
            ("closed", Some(Fixed)),
            ("REOPENED", Some(Reopened)),
            ("re-opened", Some(Reopened)),
            ("Risk Accepted", Some(Accepted)),
            ("risk_accepted", Some(Accepted)),
            ("false positive", Some(Accepted)),
            ("", None),
            ("unknown", None),
            ("pending", None),
        ];
        for (input, want) in cases {
            assert_eq!(finding_state(input), *want, "finding_state({input:?})");
        }
    }
}
