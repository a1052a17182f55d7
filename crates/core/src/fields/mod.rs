//! Shared field normalizers: every adapter turns vendor spellings into
//! canonical values with these, so the same MAC, hostname or serial compares
//! equal whichever product reported it.
//!
//! All functions are pure, never panic on any input, and allocate only for
//! the value they return. Each returns `None` (or drops the item) for input
//! that is empty, malformed, or a known vendor placeholder.
//!
//! | function | canonical form |
//! |---|---|
//! | [`text`] | trimmed string; `null`, `n/a`, `unknown`, ... are `None` |
//! | [`mac`] / [`macs`] | [`MacAddr`], serialized `aa:bb:cc:dd:ee:ff` |
//! | [`ip`] / [`ips`] | [`std::net::IpAddr`], IPv4-mapped IPv6 folded to IPv4 |
//! | [`hostname`] / [`hostname_with_domain`] | [`HostName`]: lowercase host label and domain |
//! | [`serial`] | trimmed serial, OEM placeholders dropped |
//! | [`manufacturer`] | trimmed manufacturer, OEM placeholders dropped |
//! | [`os`] | [`crate::asset::Os`] with a family |
//! | [`timestamp`] / [`timestamp_json`] | UTC instant, 1980 <= t < 2200 |
//! | [`email`] | trimmed, lowercased address |
//! | [`tags`] | trimmed, deduplicated, order kept |
//! | [`severity`] / [`severity_scaled`] / [`severity_from_cvss`] | [`crate::asset::Severity`] from names, 0-4, 1-5 and CVSS scales |
//! | [`cvss_score`] / [`score`] | a finite score (CVSS: 0-10, one decimal) |
//! | [`cve`] / [`cves`] | `CVE-YYYY-NNNN`, validated, upper-cased |
//! | [`cpe`] | [`Cpe`]: CPE 2.3 formatted string split into vendor, product, version |
//! | [`finding_state`] | [`crate::asset::FindingState`] from vendor state names |

mod host;
mod ip;
mod mac;
mod os;
mod serial;
mod text;
mod time;
mod vuln;

pub use host::{HostName, hostname, hostname_with_domain};
pub use ip::{ip, ips};
pub use mac::{MacAddr, ParseMacError, mac, macs};
pub use os::os;
pub use serial::{manufacturer, serial};
pub use text::{email, tags, text};
pub use time::{timestamp, timestamp_json};
pub use vuln::{
    Cpe, SeverityScale, cpe, cve, cves, cvss_score, finding_state, score, severity, severity_from_cvss, severity_scaled,
};

/// Splits one vendor string holding several values (`a, b; c d`) into its
/// non-empty items. Shared by [`macs`] and [`ips`].
pub(crate) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c == ';' || c.is_whitespace()).filter(|p| !p.is_empty())
}

/// Pushes `item` unless already present, keeping first-seen order. Lists of
/// addresses on one asset are short, so a linear scan beats hashing.
pub(crate) fn push_unique<T: PartialEq>(out: &mut Vec<T>, item: T) {
    if !out.contains(&item) {
        out.push(item);
    }
}

/// Compares `s` to a lowercase alphanumeric `key`, ignoring ASCII case and
/// every character that is not an ASCII letter or digit, so
/// `"To Be Filled By O.E.M."`, `"to be filled by OEM"` and
/// `"TO_BE_FILLED_BY_O.E.M"` all match `"tobefilledbyoem"`. No allocation.
pub(crate) fn alnum_eq(s: &str, key: &str) -> bool {
    let mut a = s.bytes().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_lowercase());
    let mut k = key.bytes();
    loop {
        match (a.next(), k.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

/// Whether `s` matches any of the lowercase alphanumeric `keys` (see [`alnum_eq`]).
pub(crate) fn alnum_in(s: &str, keys: &[&str]) -> bool {
    keys.iter().any(|k| alnum_eq(s, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_list_splits_on_commas_semicolons_and_whitespace() {
        let got: Vec<&str> = split_list(" a, b;c\td\n\r\n e,,;  ").collect();
        assert_eq!(got, ["a", "b", "c", "d", "e"]);
        assert_eq!(split_list("").count(), 0);
        assert_eq!(split_list(" ,; ").count(), 0);
    }

    #[test]
    fn alnum_eq_ignores_case_and_punctuation() {
        let cases: &[(&str, &str, bool)] = &[
            ("To Be Filled By O.E.M.", "tobefilledbyoem", true),
            ("to be filled by OEM", "tobefilledbyoem", true),
            ("TO_BE_FILLED_BY_O.E.M", "tobefilledbyoem", true),
            ("To be filled by O.E.M. 2", "tobefilledbyoem", false),
            ("N/A", "na", true),
            ("-", "", true),
            ("", "", true),
            ("x", "", false),
            ("", "x", false),
            ("Ünknown", "nknown", true),
        ];
        for (s, key, want) in cases {
            assert_eq!(alnum_eq(s, key), *want, "alnum_eq({s:?}, {key:?})");
        }
    }

    /// Every normalizer on hostile input: odd Unicode, control characters,
    /// separators in odd places, huge strings. Only checks nothing panics.
    #[test]
    fn nothing_panics_on_hostile_input() {
        let mut inputs: Vec<String> = [
            "",
            " ",
            "\0",
            "\u{feff}",
            "\u{200b}",
            "\u{202e}gnp.exe",
            "İ",
            "ß",
            "ﬁ",
            "Σ",
            "\r\n\t",
            "\\",
            "\\\\",
            "@",
            "@@",
            ".",
            "..",
            ":",
            "::",
            "[",
            "]",
            "[]",
            "[:",
            "%",
            "/",
            "//",
            "-",
            "+",
            "$",
            "0",
            "00",
            "ff",
            "🚀",
            "👨‍👩‍👧",
            "日本語",
            "e\u{301}",
            "\u{10ffff}",
            "a\u{0}b",
            "1e400",
            "-0",
            "NaN",
            "inf",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        inputs.push("a".repeat(1 << 20));
        inputs.push("🚀".repeat(10_000));
        inputs.push("1".repeat(5_000));
        inputs.push(":".repeat(17));
        inputs.push("aa:".repeat(6));
        inputs.push("\\".repeat(1_000));
        // Deterministic pseudo-random strings over a nasty alphabet.
        let alphabet: Vec<char> = "aZ09:-./\\@%[] ,;\té日🚀\u{0}\u{301}TzZ+".chars().collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|i| {
                    let k = (x.rotate_left(i as u32 * 5) % alphabet.len() as u64) as usize;
                    alphabet[k]
                })
                .collect();
            inputs.push(s);
        }
        for s in &inputs {
            let _ = text(s);
            let _ = mac(s);
            let _ = s.parse::<MacAddr>();
            let _ = ip(s);
            let _ = hostname(s);
            let _ = hostname_with_domain(s, Some(s));
            let _ = serial(s);
            let _ = manufacturer(s);
            let _ = os(Some(s), Some(s));
            let _ = timestamp(s);
            let _ = timestamp_json(&serde_json::Value::String(s.clone()));
            let _ = email(s);
            let _ = severity(s);
            let _ = cve(s);
            let _ = cpe(s);
            let _ = cpe(&format!("cpe:2.3:{s}"));
            let _ = cpe(&format!("cpe:/{s}"));
            let _ = finding_state(s);
        }
        let all: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let _ = macs(all.iter().copied());
        let _ = ips(all.iter().copied());
        let _ = tags(all.iter().copied());
        let _ = cves(all.iter().copied());
    }

    #[test]
    fn push_unique_keeps_first_seen_order() {
        let mut v = Vec::new();
        for x in [3, 1, 3, 2, 1] {
            push_unique(&mut v, x);
        }
        assert_eq!(v, [3, 1, 2]);
    }
}
