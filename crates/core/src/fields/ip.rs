//! IP addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{push_unique, split_list};

/// Syntax only: any address, including the unspecified one, in canonical
/// form (IPv4-mapped IPv6 folded to IPv4). Accepts surrounding whitespace,
/// a CIDR suffix (`10.0.0.5/24`, prefix checked against the family), an
/// IPv6 zone (`fe80::1%eth0`), brackets (`[::1]`, `[::1]:443`).
pub(crate) fn parse_any(s: &str) -> Option<IpAddr> {
    let mut t = s.trim();
    // Shortest address is `::` (2), longest textual IPv6 with zone/prefix is
    // well under 100; refuse long garbage before scanning it.
    if t.len() < 2 || t.len() > 100 {
        return None;
    }
    let mut prefix = None;
    if let Some(rest) = t.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        // After the bracket only a `:port` may follow.
        if !after.is_empty() {
            let port = after.strip_prefix(':')?;
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        t = inside;
    }
    if let Some((addr, bits)) = t.split_once('/') {
        if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        prefix = Some(bits.parse::<u8>().ok()?);
        t = addr;
    }
    let addr = if t.contains(':') {
        // An IPv6 zone is any non-empty run after `%`; the address is before it.
        let bare = match t.split_once('%') {
            Some((a, zone)) if !zone.is_empty() => a,
            Some(_) => return None,
            None => t,
        };
        IpAddr::V6(bare.parse::<Ipv6Addr>().ok()?)
    } else {
        IpAddr::V4(t.parse::<Ipv4Addr>().ok()?)
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix.is_some_and(|p| p > max) {
        return None;
    }
    Some(addr.to_canonical())
}

/// A canonical IP address, or `None` when `s` is not one or is a placeholder.
///
/// Accepts IPv4 and IPv6 with surrounding whitespace, a CIDR suffix
/// (`10.0.0.5/24`), an IPv6 zone (`fe80::1%eth0`), brackets (`[::1]`,
/// `[2001:db8::1]:443`). IPv4-mapped IPv6 (`::ffff:10.0.0.5`) becomes the
/// IPv4 address so the same host compares equal across vendors. Rejects the
/// unspecified addresses (`0.0.0.0`, `::`) and the limited broadcast
/// `255.255.255.255`, which are placeholders, never a host's address.
pub fn ip(s: &str) -> Option<IpAddr> {
    parse_any(s).filter(|a| !a.is_unspecified() && *a != IpAddr::V4(Ipv4Addr::BROADCAST))
}

/// Every valid IP address in `iter`, deduplicated in first-seen order. Each
/// item may hold several addresses separated by `,`, `;` or whitespace;
/// invalid items and placeholders are dropped.
pub fn ips<'a>(iter: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for item in iter {
        for part in split_list(item) {
            if let Some(a) = ip(part) {
                push_unique(&mut out, a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    fn v6(s: &str) -> Option<IpAddr> {
        Some(IpAddr::V6(s.parse().expect("test literal")))
    }

    #[test]
    fn ip_table() {
        let long = "1".repeat(100_000);
        let cases: Vec<(&str, Option<IpAddr>)> = vec![
            ("10.0.0.5", v4(10, 0, 0, 5)),
            ("  10.0.0.5  ", v4(10, 0, 0, 5)),
            ("\t192.168.1.254\n", v4(192, 168, 1, 254)),
            ("127.0.0.1", v4(127, 0, 0, 1)),
            ("8.8.8.8", v4(8, 8, 8, 8)),
            ("255.255.255.254", v4(255, 255, 255, 254)),
            // CIDR.
            ("10.0.0.5/24", v4(10, 0, 0, 5)),
            ("10.0.0.5/32", v4(10, 0, 0, 5)),
            ("10.0.0.5/0", v4(10, 0, 0, 5)),
            ("10.0.0.5/33", None),
            ("10.0.0.5/", None),
            ("10.0.0.5/abc", None),
            ("10.0.0.5/-1", None),
            ("10.0.0.5/1000", None),
            ("10.0.0.5/24/8", None),
            ("2001:db8::1/64", v6("2001:db8::1")),
            ("2001:db8::1/128", v6("2001:db8::1")),
            ("2001:db8::1/129", None),
            // IPv6 forms.
            ("2001:db8::1", v6("2001:db8::1")),
            ("2001:DB8:0:0:0:0:0:1", v6("2001:db8::1")),
            ("2001:0db8:0000:0000:0000:0000:0000:0001", v6("2001:db8::1")),
            ("::1", v6("::1")),
            ("fe80::1%eth0", v6("fe80::1")),
            ("fe80::1ff:fe23:4567:890a%12", v6("fe80::1ff:fe23:4567:890a")),
            ("fe80::1%", None),
            ("fe80::1%eth0/64", v6("fe80::1")),
            ("[::1]", v6("::1")),
            ("[2001:db8::1]", v6("2001:db8::1")),
            ("[2001:db8::1]:443", v6("2001:db8::1")),
            ("[2001:db8::1]:", None),
            ("[2001:db8::1]:http", None),
            ("[2001:db8::1]x", None),
            ("[2001:db8::1", None),
            ("[10.0.0.5]", v4(10, 0, 0, 5)),
            // IPv4-mapped folds to IPv4.
            ("::ffff:10.0.0.5", v4(10, 0, 0, 5)),
            ("::FFFF:0a00:0005", v4(10, 0, 0, 5)),
            // Placeholders.
            ("0.0.0.0", None),
            ("0.0.0.0/0", None),
            ("::", None),
            ("[::]", None),
            ("::/0", None),
            ("::ffff:0.0.0.0", None),
            ("255.255.255.255", None),
            // Garbage.
            ("", None),
            (" ", None),
            ("null", None),
            ("N/A", None),
            ("localhost", None),
            ("host1.corp.example.com", None),
            ("10.0.0", None),
            ("10.0.0.256", None),
            ("10.0.0.5.6", None),
            ("010.000.000.005", None),
            ("10.0.0.5:8080", None),
            ("1.2.3.4 5.6.7.8", None),
            ("2001:db8:::1", None),
            ("2001:db8::g", None),
            ("aa:bb:cc:dd:ee:ff", None),
            ("１０.0.0.5", None),
            ("10.0.0.5\u{0}", None),
            ("🚀::1", None),
            (&long, None),
        ];
        for (input, want) in cases {
            assert_eq!(ip(input), want, "ip({input:?})");
        }
    }

    #[test]
    fn parse_any_keeps_placeholders() {
        assert_eq!(parse_any("0.0.0.0"), v4(0, 0, 0, 0));
        assert_eq!(parse_any("::"), v6("::"));
        assert_eq!(parse_any("nope"), None);
    }

    #[test]
    fn ips_table() {
        let a = v4(10, 0, 0, 5).expect("a");
        let b = v6("2001:db8::1").expect("b");
        let c = v4(192, 168, 1, 10).expect("c");
        let cases: &[(&[&str], &[IpAddr])] = &[
            (&[], &[]),
            (&["10.0.0.5"], &[a]),
            (&["10.0.0.5", "10.0.0.5/24", "::ffff:10.0.0.5"], &[a]),
            (&["junk", "2001:db8::1", "", "0.0.0.0", "10.0.0.5"], &[b, a]),
            (&["10.0.0.5,2001:db8::1;192.168.1.10"], &[a, b, c]),
            (&["10.0.0.5 2001:db8::1\n192.168.1.10", "192.168.1.10"], &[a, b, c]),
            (&[" , ;", "::, 0.0.0.0, null"], &[]),
            // Tenable ipv4s[] plus ipv6s[] chained.
            (&["192.168.1.10", "10.0.0.5", "fe80::1%eth0", "2001:db8::1"], &[c, a, v6("fe80::1").expect("ll"), b]),
        ];
        for (input, want) in cases {
            assert_eq!(ips(input.iter().copied()), *want, "ips({input:?})");
        }
    }
}
