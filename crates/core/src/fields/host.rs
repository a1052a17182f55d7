//! Hostnames and their domains.

use super::ip::parse_any;
use super::text::is_nullish;

/// A device name split into its host label and its domain, both lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HostName {
    /// The first label: `host1` for `HOST1.corp.example.com` or `CORP\HOST1`.
    pub hostname: Option<String>,
    /// The rest of an FQDN, the explicit domain given to
    /// [`hostname_with_domain`], or the NetBIOS domain before a `\`, in
    /// that order of preference (see [`hostname_with_domain`]).
    pub domain: Option<String>,
}

/// The longest name accepted, in characters (DNS caps a name at 253).
const MAX_NAME: usize = 253;

/// Domains that say nothing about where a device lives.
const NON_DOMAINS: &[&str] = &["local", "localdomain", "workgroup", "(none)"];

/// Splits a vendor device name into host label and domain.
///
/// - Lowercased (Unicode-aware; internationalized names are kept).
/// - `CORP\host1` -> host `host1`, domain `corp`; `CORP\host1.corp.example.com`
///   -> domain `corp.example.com` (the FQDN is more specific).
/// - `host1.corp.example.com` -> host `host1`, domain `corp.example.com`.
/// - Trailing dots, a trailing `:port` and an AD computer account's
///   trailing `$` (`HOST1$`) are dropped.
/// - IP addresses (v4, v6, bracketed, with prefix), all-numeric dotted names,
///   `localhost`, empty/`null`/`unknown`-like values, names over 253
///   characters, and names with control characters or other colons are not
///   hostnames: `hostname` is `None`.
/// - The domains `local` (mDNS), `localdomain` and `workgroup` are dropped.
pub fn hostname(raw: &str) -> HostName {
    let name = split_name(raw);
    HostName { hostname: name.host, domain: name.fqdn.or(name.netbios) }
}

/// Like [`hostname`], with an explicit domain field (CrowdStrike
/// `machine_domain`, SentinelOne `domain`, a file's `domain` column). The
/// explicit domain is cleaned the same way (trimmed, lowercased,
/// placeholders dropped) and is kept even when the name is not a valid
/// hostname.
///
/// Which domain wins, most specific first:
/// 1. the rest of an FQDN name (`host1.eu.example.com` -> `eu.example.com`);
/// 2. an explicit DNS domain (one with a dot): `CORP\srv-1` with
///    `corp.example.com` -> `corp.example.com`, not the NetBIOS `corp`;
/// 3. the NetBIOS domain of a `DOMAIN\name` prefix;
/// 4. an explicit single-label domain (`CORP`).
pub fn hostname_with_domain(raw: &str, domain: Option<&str>) -> HostName {
    let name = split_name(raw);
    let explicit = domain.and_then(clean_domain);
    let (explicit_dns, explicit_label) = match explicit {
        Some(d) if d.contains('.') => (Some(d), None),
        other => (None, other),
    };
    HostName { hostname: name.host, domain: name.fqdn.or(explicit_dns).or(name.netbios).or(explicit_label) }
}

/// A name taken apart: the host label, the domain of an FQDN, the NetBIOS
/// domain of a `DOMAIN\` prefix.
struct SplitName {
    host: Option<String>,
    fqdn: Option<String>,
    netbios: Option<String>,
}

fn split_name(raw: &str) -> SplitName {
    let none = SplitName { host: None, fqdn: None, netbios: None };
    let mut t = raw.trim();
    // Even fully multibyte, a valid name is at most 4 bytes per character.
    if is_nullish(t) || t.len() > MAX_NAME * 4 || t.chars().any(char::is_control) {
        return none;
    }
    let mut netbios = None;
    if let Some((dom, host)) = t.split_once('\\') {
        netbios = clean_domain(dom);
        t = host.trim();
        if t.contains('\\') {
            return none;
        }
    }
    let Some(host) = host_part(t) else { return SplitName { netbios, ..none } };
    match host.split_once('.') {
        None => SplitName { host: Some(host), fqdn: None, netbios },
        Some((label, rest)) => {
            let label = (!label.is_empty()).then(|| label.to_owned());
            SplitName { host: label, fqdn: clean_domain(rest), netbios }
        }
    }
}

/// The lowercased full name after `\` handling, or `None` when it is not a hostname.
fn host_part(t: &str) -> Option<String> {
    let mut t = t.trim_end_matches('.');
    if is_nullish(t) || parse_any(t).is_some() {
        return None;
    }
    if let Some((name, port)) = t.rsplit_once(':') {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t = name.trim_end_matches('.');
        if t.contains(':') || parse_any(t).is_some() {
            return None;
        }
    }
    t = t.strip_suffix('$').unwrap_or(t);
    if t.is_empty() || t.chars().count() > MAX_NAME {
        return None;
    }
    // All-numeric dotted names (`10.0.0`, `1.2.3.4.5`) are mangled addresses.
    if t.contains('.') && t.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let lower = t.to_lowercase();
    if lower == "localhost" || lower.starts_with("localhost.") {
        return None;
    }
    Some(lower)
}

/// A lowercase domain without leading/trailing dots, or `None` for placeholders.
fn clean_domain(d: &str) -> Option<String> {
    let d = d.trim().trim_matches('.');
    if is_nullish(d) || d.chars().count() > MAX_NAME || d.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    if parse_any(d).is_some() || NON_DOMAINS.iter().any(|n| d.eq_ignore_ascii_case(n)) {
        return None;
    }
    Some(d.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hn(h: Option<&str>, d: Option<&str>) -> HostName {
        HostName { hostname: h.map(str::to_owned), domain: d.map(str::to_owned) }
    }

    #[test]
    fn hostname_table() {
        let long_label = "a".repeat(300);
        let long_fqdn = format!("{}.example.com", "b".repeat(250));
        let huge = "x".repeat(1_000_000);
        let cases: Vec<(&str, HostName)> = vec![
            // Plain names, lowercased.
            ("host1", hn(Some("host1"), None)),
            ("HOST1", hn(Some("host1"), None)),
            ("  Host1  ", hn(Some("host1"), None)),
            ("DESKTOP-AB12CD3", hn(Some("desktop-ab12cd3"), None)),
            ("web_01", hn(Some("web_01"), None)),
            ("12345", hn(Some("12345"), None)),
            // FQDNs.
            ("host1.corp.example.com", hn(Some("host1"), Some("corp.example.com"))),
            ("HOST1.CORP.EXAMPLE.COM", hn(Some("host1"), Some("corp.example.com"))),
            ("host1.corp.example.com.", hn(Some("host1"), Some("corp.example.com"))),
            ("host1.", hn(Some("host1"), None)),
            ("host1...", hn(Some("host1"), None)),
            ("ip-10-0-0-5.ec2.internal", hn(Some("ip-10-0-0-5"), Some("ec2.internal"))),
            ("host1.corp.example.com:8443", hn(Some("host1"), Some("corp.example.com"))),
            ("host1:22", hn(Some("host1"), None)),
            (".corp.example.com", hn(None, Some("corp.example.com"))),
            // NetBIOS DOMAIN\host.
            ("CORP\\host1", hn(Some("host1"), Some("corp"))),
            ("CORP\\HOST1", hn(Some("host1"), Some("corp"))),
            (" corp \\ host1 ", hn(Some("host1"), Some("corp"))),
            ("CORP\\host1.corp.example.com", hn(Some("host1"), Some("corp.example.com"))),
            ("\\host1", hn(Some("host1"), None)),
            ("CORP\\", hn(None, Some("corp"))),
            ("WORKGROUP\\HOST1", hn(Some("host1"), None)),
            ("CORP\\a\\b", hn(None, None)),
            ("CORP\\10.0.0.5", hn(None, Some("corp"))),
            // AD computer accounts.
            ("HOST1$", hn(Some("host1"), None)),
            ("CORP\\HOST1$", hn(Some("host1"), Some("corp"))),
            ("$", hn(None, None)),
            // Pseudo-domains dropped.
            ("Johns-MacBook-Pro.local", hn(Some("johns-macbook-pro"), None)),
            ("build.localdomain", hn(Some("build"), None)),
            // Not hostnames.
            ("", hn(None, None)),
            ("   ", hn(None, None)),
            ("null", hn(None, None)),
            ("N/A", hn(None, None)),
            ("Unknown", hn(None, None)),
            ("-", hn(None, None)),
            ("localhost", hn(None, None)),
            ("LOCALHOST", hn(None, None)),
            ("localhost.", hn(None, None)),
            ("localhost.localdomain", hn(None, None)),
            ("10.0.0.5", hn(None, None)),
            (" 10.0.0.5 ", hn(None, None)),
            ("10.0.0.5.", hn(None, None)),
            ("10.0.0.5/24", hn(None, None)),
            ("10.0.0.5:8080", hn(None, None)),
            ("0.0.0.0", hn(None, None)),
            ("10.0.0", hn(None, None)),
            ("10.0.0.256", hn(None, None)),
            ("fe80::1", hn(None, None)),
            ("fe80::1%eth0", hn(None, None)),
            ("[2001:db8::1]", hn(None, None)),
            ("[2001:db8::1]:443", hn(None, None)),
            ("::", hn(None, None)),
            ("a:b:c", hn(None, None)),
            ("host1:http", hn(None, None)),
            ("host\u{0}1", hn(None, None)),
            ("host1\u{7f}", hn(None, None)),
            (&long_label, hn(None, None)),
            (&long_fqdn, hn(None, None)),
            (&huge, hn(None, None)),
            // Unicode kept, lowercased.
            ("MÜNCHEN-PC", hn(Some("münchen-pc"), None)),
            ("Büro-01.Firma.DE", hn(Some("büro-01"), Some("firma.de"))),
            ("ΣΕΡΒΕΡ.example.gr", hn(Some("σερβερ"), Some("example.gr"))),
            ("東京サーバ", hn(Some("東京サーバ"), None)),
            ("xn--mnchen-3ya.example", hn(Some("xn--mnchen-3ya"), Some("example"))),
            // Device names with spaces (Jamf) are kept.
            ("John's MacBook Pro", hn(Some("john's macbook pro"), None)),
        ];
        for (input, want) in cases {
            assert_eq!(hostname(input), want, "hostname({input:?})");
        }
    }

    #[test]
    fn hostname_with_domain_table() {
        let cases: &[(&str, Option<&str>, HostName)] = &[
            // CrowdStrike hostname + machine_domain.
            ("HOST1", Some("corp.example.com"), hn(Some("host1"), Some("corp.example.com"))),
            ("HOST1", Some("CORP.EXAMPLE.COM."), hn(Some("host1"), Some("corp.example.com"))),
            ("HOST1", Some("  CORP  "), hn(Some("host1"), Some("corp"))),
            // The name's own FQDN wins.
            ("host1.eu.example.com", Some("example.com"), hn(Some("host1"), Some("eu.example.com"))),
            ("CORP\\srv-1.eu.example.com", Some("corp.example.com"), hn(Some("srv-1"), Some("eu.example.com"))),
            // An explicit DNS domain wins over a NetBIOS prefix.
            ("CORP\\srv-1", Some("corp.example.com"), hn(Some("srv-1"), Some("corp.example.com"))),
            ("EU\\host1", Some("example.com"), hn(Some("host1"), Some("example.com"))),
            ("CORP\\10.0.0.5", Some("corp.example.com"), hn(None, Some("corp.example.com"))),
            // A NetBIOS prefix wins over an explicit NetBIOS-style label, and
            // stays when the explicit domain is a placeholder.
            ("EU\\host1", Some("CORP"), hn(Some("host1"), Some("eu"))),
            ("CORP\\srv-1", Some("WORKGROUP"), hn(Some("srv-1"), Some("corp"))),
            ("CORP\\srv-1", None, hn(Some("srv-1"), Some("corp"))),
            // Placeholder domain fields.
            ("HOST1", None, hn(Some("host1"), None)),
            ("HOST1", Some(""), hn(Some("host1"), None)),
            ("HOST1", Some("null"), hn(Some("host1"), None)),
            ("HOST1", Some("WORKGROUP"), hn(Some("host1"), None)),
            ("HOST1", Some("10.0.0.1"), hn(Some("host1"), None)),
            ("HOST1", Some("bad domain"), hn(Some("host1"), None)),
            ("HOST1.local", Some("corp.example.com"), hn(Some("host1"), Some("corp.example.com"))),
            // The explicit domain survives an unusable name.
            ("", Some("corp.example.com"), hn(None, Some("corp.example.com"))),
            ("10.0.0.5", Some("corp.example.com"), hn(None, Some("corp.example.com"))),
            ("localhost", Some("Firma.DE"), hn(None, Some("firma.de"))),
            ("host", Some("Bücher.DE"), hn(Some("host"), Some("bücher.de"))),
        ];
        for (input, domain, want) in cases {
            assert_eq!(hostname_with_domain(input, *domain), *want, "hostname_with_domain({input:?}, {domain:?})");
        }
    }
}
