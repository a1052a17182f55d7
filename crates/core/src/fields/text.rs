//! Free text, email addresses and tags.

/// Spellings vendors use for "no value", compared case-insensitively after trimming.
const NULLISH: &[&str] = &[
    "null",
    "none",
    "n/a",
    "na",
    "-",
    "--",
    "unknown",
    "nil",
    "undefined",
    "(null)",
    "<null>",
    "(none)",
    "<none>",
    "not available",
    "not applicable",
];

/// Whether `s` (already trimmed) is a "no value" spelling.
pub(crate) fn is_nullish(s: &str) -> bool {
    s.is_empty() || (s.len() <= 16 && NULLISH.iter().any(|n| s.eq_ignore_ascii_case(n)))
}

/// A trimmed free-text value, or `None` when it is empty or a "no value"
/// spelling: `null`, `none`, `n/a`, `na`, `-`, `unknown` (and a few more:
/// `--`, `nil`, `undefined`, `(null)`, `<null>`, `(none)`, `<none>`,
/// `not available`, `not applicable`), compared case-insensitively.
pub fn text(s: &str) -> Option<String> {
    let t = s.trim();
    if is_nullish(t) { None } else { Some(t.to_owned()) }
}

/// A trimmed, lowercased email address, or `None` unless it has exactly one
/// `@`, a non-empty local part and a dotted domain (no empty labels) and no
/// whitespace or control characters. A `mailto:` prefix and a
/// `Display Name <addr>` wrapper are removed.
pub fn email(s: &str) -> Option<String> {
    let mut t = s.trim();
    if let (Some(open), true) = (t.rfind('<'), t.ends_with('>')) {
        t = t[open + 1..t.len() - 1].trim();
    }
    if t.len() >= 7 && t.as_bytes()[..7].eq_ignore_ascii_case(b"mailto:") {
        t = t[7..].trim_start();
    }
    // RFC 5321 caps a path at 254 octets; longer input is garbage.
    if t.len() > 254 || t.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>') {
        return None;
    }
    let (local, domain) = t.split_once('@')?;
    if local.is_empty() || domain.contains('@') || !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return None;
    }
    Some(t.to_lowercase())
}

/// Trimmed tags with empty ones dropped and duplicates removed (exact
/// comparison), in first-seen order.
pub fn tags<'a>(iter: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in iter {
        let t = t.trim();
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_table() {
        let long = "x".repeat(100_000);
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", Some("hello")),
            ("  hello world  ", Some("hello world")),
            ("\t\nvalue\r\n", Some("value")),
            ("", None),
            ("   ", None),
            ("\u{a0}\u{2003}", None),
            ("null", None),
            ("NULL", None),
            ("Null", None),
            (" none ", None),
            ("None", None),
            ("n/a", None),
            ("N/A", None),
            ("na", None),
            ("NA", None),
            ("-", None),
            ("--", None),
            ("unknown", None),
            ("Unknown", None),
            ("UNKNOWN", None),
            ("nil", None),
            ("undefined", None),
            ("(null)", None),
            ("<NULL>", None),
            ("Not Available", None),
            ("not applicable", None),
            ("unknown device", Some("unknown device")),
            ("nullable", Some("nullable")),
            ("---x", Some("---x")),
            ("0", Some("0")),
            ("Zoë Ünicode 日本", Some("Zoë Ünicode 日本")),
            ("  Ελληνικά  ", Some("Ελληνικά")),
            ("🚀", Some("🚀")),
            (&long, Some(&long)),
        ];
        for (input, want) in cases {
            assert_eq!(text(input).as_deref(), *want, "text({input:?})");
        }
    }

    #[test]
    fn email_table() {
        let long_local = format!("{}@example.com", "a".repeat(300));
        let cases: &[(&str, Option<&str>)] = &[
            ("alice@example.com", Some("alice@example.com")),
            ("  Alice.Smith@Example.COM  ", Some("alice.smith@example.com")),
            ("bob+tag@corp.example.co.uk", Some("bob+tag@corp.example.co.uk")),
            ("first.last@sub.domain.io", Some("first.last@sub.domain.io")),
            ("mailto:carol@example.com", Some("carol@example.com")),
            ("MAILTO:Carol@Example.com", Some("carol@example.com")),
            ("Carol Jones <Carol@Example.com>", Some("carol@example.com")),
            ("<dave@example.org>", Some("dave@example.org")),
            ("Jürgen@Bücher.de", Some("jürgen@bücher.de")),
            ("user_1@xn--bcher-kva.example", Some("user_1@xn--bcher-kva.example")),
            ("", None),
            ("   ", None),
            ("null", None),
            ("n/a", None),
            ("alice", None),
            ("alice@", None),
            ("@example.com", None),
            ("alice@localhost", None),
            ("alice@@example.com", None),
            ("alice@bob@example.com", None),
            ("alice@.example.com", None),
            ("alice@example.com.", None),
            ("alice@example..com", None),
            ("alice smith@example.com", None),
            ("alice@exa mple.com", None),
            ("alice@example.com\u{0}", None),
            ("a\tb@example.com", None),
            ("<>", None),
            ("<@>", None),
            (&long_local, None),
        ];
        for (input, want) in cases {
            assert_eq!(email(input).as_deref(), *want, "email({input:?})");
        }
    }

    #[test]
    fn tags_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["a", "b", "c"], &["a", "b", "c"]),
            (&[" prod ", "prod", "PROD"], &["prod", "PROD"]),
            (&["", "  ", "\t"], &[]),
            (
                &["FalconGroupingTags/Servers", "SensorGroupingTags/dc1"],
                &["FalconGroupingTags/Servers", "SensorGroupingTags/dc1"],
            ),
            (&["b", "a", "b", "a", "c"], &["b", "a", "c"]),
            (&["env:prod,tier:1"], &["env:prod,tier:1"]),
            (&["日本", " 日本 ", "🚀"], &["日本", "🚀"]),
        ];
        for (input, want) in cases {
            assert_eq!(tags(input.iter().copied()), *want, "tags({input:?})");
        }
    }

    #[test]
    fn tags_accepts_owned_strings_by_ref() {
        let owned = [String::from(" x "), String::from("y"), String::from("x")];
        assert_eq!(tags(owned.iter().map(String::as_str)), ["x", "y"]);
    }
}
