//! MAC addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{push_unique, split_list};

/// A MAC address in one canonical form (`aa:bb:cc:dd:ee:ff`).
///
/// Parsing ([`FromStr`], [`TryFrom<String>`], serde) accepts every spelling
/// [`mac`] does but keeps placeholders (all-zero, broadcast, Android's privacy
/// address), so a stored value always round-trips; use [`mac`] to normalize
/// vendor input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `00:00:00:00:00:00`, which vendors send for "no address".
    pub const ZERO: MacAddr = MacAddr([0; 6]);
    /// `ff:ff:ff:ff:ff:ff`, never an interface address.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `02:00:00:00:00:00`: what Android (6.0 and later) hands to any app
    /// that asks for the Wi-Fi or Bluetooth hardware address, since apps may
    /// no longer read the real one. An MDM agent running as an app reports
    /// it as the device's address, so Microsoft Graph (Intune) returns it as
    /// `wiFiMacAddress` for a great many Android devices at once: it names
    /// no interface and would tie unrelated devices together.
    pub const ANDROID_PRIVACY: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0]);

    /// The six octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// All-zero, broadcast or Android's privacy address
    /// ([`MacAddr::ANDROID_PRIVACY`]): a placeholder, not a real interface.
    pub fn is_placeholder(self) -> bool {
        self == Self::ZERO || self == Self::BROADCAST || self == Self::ANDROID_PRIVACY
    }

    /// The locally-administered bit is set: a randomized (private Wi-Fi),
    /// virtual or otherwise non-vendor-assigned address. Still a valid
    /// address, but a weaker correlation key than a burned-in one.
    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The multicast bit is set.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Append the canonical form (`aa:bb:cc:dd:ee:ff`) to `out`: what
    /// [`fmt::Display`] writes, without a formatter (stores derive a
    /// correlation key from every address of every device).
    pub fn push_to(self, out: &mut String) {
        for b in self.canonical() {
            out.push(char::from(b));
        }
    }

    /// The canonical form's 17 ASCII bytes.
    fn canonical(self) -> [u8; 17] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b':'; 17];
        for (i, b) in self.0.into_iter().enumerate() {
            text[3 * i] = HEX[usize::from(b >> 4)];
            text[3 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        text
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.canonical()).map_err(|_| fmt::Error)?)
    }
}

/// The canonical form as a string, written without allocating one (every
/// stored device's addresses are serialized on the load path).
impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.canonical();
        serializer.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

/// A string that is not a MAC address in any accepted spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError(String);

impl ParseMacError {
    /// At most this many characters of the rejected input are kept for the message.
    const KEEP: usize = 64;

    fn new(input: &str) -> Self {
        ParseMacError(input.chars().take(Self::KEEP).collect())
    }
}

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid MAC address `{}`", self.0)
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).ok_or_else(|| ParseMacError::new(s))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = ParseMacError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<&str> for MacAddr {
    type Error = ParseMacError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        let mut s = String::with_capacity(17);
        m.push_to(&mut s);
        s
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses `n` hex digits (n <= 12) into the low bits of a u64.
fn hex_run(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &b| Some(acc << 4 | u64::from(hex(b)?)))
}

fn from_u48(v: u64) -> MacAddr {
    let b = v.to_be_bytes();
    MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Syntax only, placeholders kept. Accepts, after trimming whitespace:
/// - 6 groups of 1-2 hex digits separated by one consistent `:` or `-`
///   (`aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF`, macOS' `0:1b:63:84:45:e6`);
/// - 3 groups of 4 hex digits separated by `.` (Cisco), `-` or `:`;
/// - 12 bare hex digits.
fn parse(s: &str) -> Option<MacAddr> {
    let b = s.trim().as_bytes();
    let quick = match b.len() {
        12 => hex_run(b).map(from_u48),
        14 => parse_3x4(b),
        _ => None,
    };
    match quick {
        Some(m) => Some(m),
        None if (11..=17).contains(&b.len()) => parse_groups(b),
        None => None,
    }
}

/// `aabb.ccdd.eeff` (also with `-` or `:`); `b` is 14 bytes long.
fn parse_3x4(b: &[u8]) -> Option<MacAddr> {
    let sep = b[4];
    if !matches!(sep, b'.' | b'-' | b':') || b[9] != sep {
        return None;
    }
    let hi = hex_run(&b[0..4])?;
    let mid = hex_run(&b[5..9])?;
    let lo = hex_run(&b[10..14])?;
    Some(from_u48(hi << 32 | mid << 16 | lo))
}

/// Six groups of one or two hex digits, one consistent `:` or `-` separator.
fn parse_groups(b: &[u8]) -> Option<MacAddr> {
    let sep = *b.iter().find(|c| matches!(c, b':' | b'-'))?;
    let mut out = [0u8; 6];
    let mut n = 0;
    for group in b.split(|&c| c == sep) {
        if n == 6 || group.is_empty() || group.len() > 2 {
            return None;
        }
        // At most two hex digits: fits in a u8.
        out[n] = u8::try_from(hex_run(group)?).ok()?;
        n += 1;
    }
    (n == 6).then_some(MacAddr(out))
}

/// A canonical MAC address, or `None` when `s` is not one or is a placeholder.
///
/// Accepts `aa-bb-cc-dd-ee-ff` (CrowdStrike), `AA:BB:CC:DD:EE:FF`,
/// `aabbccddeeff` (Intune), `AABB.CCDD.EEFF` (Cisco), single-digit groups
/// (`0:1b:63:84:45:e6`), any case, surrounding whitespace. Rejects wrong
/// lengths, mixed separators, non-hex, EUI-64, and the placeholders: all-zero,
/// broadcast, and Android's privacy address `02:00:00:00:00:00`.
pub fn mac(s: &str) -> Option<MacAddr> {
    parse(s).filter(|m| !m.is_placeholder())
}

/// Every valid MAC address in `iter`, deduplicated in first-seen order.
/// Each item may itself hold several addresses separated by `,`, `;` or
/// whitespace; invalid items and placeholders are dropped.
pub fn macs<'a>(iter: impl IntoIterator<Item = &'a str>) -> Vec<MacAddr> {
    let mut out = Vec::new();
    for item in iter {
        for part in split_list(item) {
            if let Some(m) = mac(part) {
                push_unique(&mut out, m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
    const N: MacAddr = MacAddr([0x00, 0x1b, 0x63, 0x84, 0x45, 0xe6]);
    const P: MacAddr = MacAddr([0x01, 0x23, 0x45, 0x67, 0x89, 0xab]);

    #[test]
    fn mac_table() {
        let long = "aa:".repeat(10_000);
        let cases: &[(&str, Option<MacAddr>)] = &[
            // CrowdStrike: dash separated.
            ("aa-bb-cc-dd-ee-ff", Some(M)),
            ("AA-BB-CC-DD-EE-FF", Some(M)),
            // Colon, any case.
            ("aa:bb:cc:dd:ee:ff", Some(M)),
            ("AA:BB:CC:DD:EE:FF", Some(M)),
            ("Aa:bB:cC:Dd:eE:Ff", Some(M)),
            // Intune: 12 hex digits.
            ("aabbccddeeff", Some(M)),
            ("AABBCCDDEEFF", Some(M)),
            ("001B638445E6", Some(N)),
            // Cisco dotted and other 3x4 forms.
            ("AABB.CCDD.EEFF", Some(M)),
            ("aabb.ccdd.eeff", Some(M)),
            ("0123.4567.89ab", Some(P)),
            ("aabb-ccdd-eeff", Some(M)),
            ("aabb:ccdd:eeff", Some(M)),
            // macOS / BSD single-digit groups.
            ("0:1b:63:84:45:e6", Some(N)),
            ("1:23:45:67:89:ab", Some(P)),
            ("a:bb:c:dd:e:ff", Some(MacAddr([0x0a, 0xbb, 0x0c, 0xdd, 0x0e, 0xff]))),
            ("a:b:c:d:e:ff", Some(MacAddr([0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0xff]))),
            ("a-b-c-d-e-f", Some(MacAddr([0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]))),
            // Whitespace.
            ("  aa:bb:cc:dd:ee:ff  ", Some(M)),
            ("\taabbccddeeff\r\n", Some(M)),
            ("\u{a0}aa-bb-cc-dd-ee-ff\u{2003}", Some(M)),
            // Placeholders.
            ("00:00:00:00:00:00", None),
            ("000000000000", None),
            ("0000.0000.0000", None),
            ("0:0:0:0:0:0", None),
            ("ff:ff:ff:ff:ff:ff", None),
            ("FF-FF-FF-FF-FF-FF", None),
            ("FFFFFFFFFFFF", None),
            // Android 6+'s privacy address (Intune reports it for many devices).
            ("02:00:00:00:00:00", None),
            ("020000000000", None),
            ("02-00-00-00-00-00", None),
            ("0200.0000.0000", None),
            ("2:0:0:0:0:0", None),
            // Its neighbours are real locally administered addresses.
            ("02:00:00:00:00:01", Some(MacAddr([0x02, 0, 0, 0, 0, 1]))),
            ("12:00:00:00:00:00", Some(MacAddr([0x12, 0, 0, 0, 0, 0]))),
            // Wrong lengths and shapes.
            ("", None),
            ("   ", None),
            ("aa:bb:cc:dd:ee", None),
            ("aa:bb:cc:dd:ee:ff:00", None),
            ("aa:bb:cc:dd:ee:ff:00:11", None),
            ("aabbccddeef", None),
            ("aabbccddeeff0", None),
            ("aabbccddeeff00", None),
            ("aa:bb:cc:dd:ee:f", Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]))),
            ("aaa:bb:cc:dd:ee:f", None),
            ("aa::bb:cc:dd:ee:ff", None),
            (":aa:bb:cc:dd:ee:ff", None),
            ("aa:bb:cc:dd:ee:ff:", None),
            ("aa:bb-cc:dd:ee:ff", None),
            ("aa-bb-cc-dd-ee:ff", None),
            ("aa.bb.cc.dd.ee.ff", None),
            ("aa bb cc dd ee ff", None),
            ("aabb.ccdd-eeff", None),
            ("aabb.ccdd.eef", None),
            ("aabbc.cdd.eeff", None),
            ("aa:bb:cc:dd:ee:fg", None),
            ("gg:bb:cc:dd:ee:ff", None),
            ("zzzzzzzzzzzz", None),
            ("+a:bb:cc:dd:ee:ff", None),
            ("0x:bb:cc:dd:ee:ff", None),
            ("aa:bb:cc:dd:ee:ff/24", None),
            ("10.0.0.5", None),
            ("fe80::1", None),
            ("null", None),
            ("unknown", None),
            // Unicode: multibyte characters never split a code point.
            ("ａａ:bb:cc:dd:ee:ff", None),
            ("aa:bb:cc:dd:ee:fé", None),
            ("日本語日本語日本語日本", None),
            ("aa:bb:cc:dd:ee:🚀", None),
            (&long, None),
        ];
        for (input, want) in cases {
            assert_eq!(mac(input), *want, "mac({input:?})");
        }
    }

    #[test]
    fn mac_never_panics_on_any_short_byte_pattern() {
        let alphabet = ["a", "0", ":", "-", ".", " ", "é", "g"];
        // Every string of 11..=17 symbols would be too many; sample lengths around the accepted ones.
        for len in [11usize, 12, 13, 14, 15, 17] {
            for seed in 0..2_000u64 {
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ len as u64;
                let s: String = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        alphabet[(x % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let _ = mac(&s);
            }
        }
    }

    #[test]
    fn display_from_str_and_serde_round_trip() {
        assert_eq!(M.to_string(), "aa:bb:cc:dd:ee:ff");
        assert_eq!(N.to_string(), "00:1b:63:84:45:e6");
        assert_eq!("AA-BB-CC-DD-EE-FF".parse::<MacAddr>(), Ok(M));
        assert_eq!(MacAddr::try_from(String::from("aabb.ccdd.eeff")), Ok(M));
        assert_eq!(MacAddr::try_from("aabbccddeeff"), Ok(M));
        // Placeholders still parse: stored values must round-trip.
        assert_eq!("00:00:00:00:00:00".parse::<MacAddr>(), Ok(MacAddr::ZERO));
        assert_eq!("ff:ff:ff:ff:ff:ff".parse::<MacAddr>(), Ok(MacAddr::BROADCAST));
        assert_eq!("02:00:00:00:00:00".parse::<MacAddr>(), Ok(MacAddr::ANDROID_PRIVACY));
        let err = "nope".parse::<MacAddr>().expect_err("invalid");
        assert_eq!(err.to_string(), "invalid MAC address `nope`");
        let long_err = "x".repeat(10_000).parse::<MacAddr>().expect_err("invalid");
        assert!(long_err.to_string().len() < 100);

        for m in [M, N, P, MacAddr::ZERO, MacAddr::BROADCAST, MacAddr::ANDROID_PRIVACY] {
            let json = serde_json::to_string(&m).expect("serialize");
            assert_eq!(json, format!("\"{m}\""));
            let back: MacAddr = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, m);
            assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m));
            assert_eq!(String::from(m), m.to_string());
        }
        let from_vendor: MacAddr = serde_json::from_str("\"AA-BB-CC-DD-EE-FF\"").expect("deserialize");
        assert_eq!(from_vendor, M);
        assert!(serde_json::from_str::<MacAddr>("\"garbage\"").is_err());
        assert!(serde_json::from_str::<MacAddr>("12").is_err());
    }

    #[test]
    fn mac_flags() {
        assert!(MacAddr::ZERO.is_placeholder());
        assert!(MacAddr::BROADCAST.is_placeholder());
        assert!(MacAddr::ANDROID_PRIVACY.is_placeholder());
        assert!(!MacAddr([0x02, 0, 0, 0, 0, 1]).is_placeholder());
        assert!(!M.is_placeholder());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_locally_administered());
        assert!(MacAddr([0xda, 0xa1, 0x19, 0, 0, 1]).is_locally_administered());
        assert!(!N.is_locally_administered());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!N.is_multicast());
        assert_eq!(MacAddr::from(M.octets()), M);
    }

    #[test]
    fn macs_table() {
        let cases: &[(&[&str], &[MacAddr])] = &[
            (&[], &[]),
            (&["aa:bb:cc:dd:ee:ff"], &[M]),
            // Same address in three spellings: one entry.
            (&["aa-bb-cc-dd-ee-ff", "AABBCCDDEEFF", "aabb.ccdd.eeff"], &[M]),
            // Invalid and placeholders dropped, order kept.
            (&["junk", "00:1b:63:84:45:e6", "", "00:00:00:00:00:00", "aa:bb:cc:dd:ee:ff"], &[N, M]),
            (&["aa:bb:cc:dd:ee:ff", "00:1b:63:84:45:e6", "aa:bb:cc:dd:ee:ff"], &[M, N]),
            // Several in one string, various separators.
            (&["aa:bb:cc:dd:ee:ff,00:1b:63:84:45:e6"], &[M, N]),
            (&["aa:bb:cc:dd:ee:ff; 00:1b:63:84:45:e6 ;0123.4567.89ab"], &[M, N, P]),
            (&["aabbccddeeff 001b638445e6\n0123456789ab"], &[M, N, P]),
            (&[" , ; ", "ff:ff:ff:ff:ff:ff, null"], &[]),
            (&["001B638445E6", "aa-bb-cc-dd-ee-ff, 00-1b-63-84-45-e6"], &[N, M]),
        ];
        for (input, want) in cases {
            assert_eq!(macs(input.iter().copied()), *want, "macs({input:?})");
        }
    }

    #[test]
    fn macs_accepts_owned_and_large_inputs() {
        let owned: Vec<String> = (0..=255u8).map(|i| format!("02:00:00:00:00:{i:02x}")).collect();
        let got = macs(owned.iter().map(String::as_str).chain(owned.iter().map(String::as_str)));
        // 02:00:00:00:00:00 is Android's placeholder; the other 255 are addresses.
        assert_eq!(got.len(), 255);
        assert_eq!(got[0], MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(got[254], MacAddr([2, 0, 0, 0, 0, 255]));
    }
}
