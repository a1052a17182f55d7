//! Deterministic, lazily generated datasets.
//!
//! Every record is a pure function of `(seed, index, generation)`: nothing is held in
//! memory, so a simulator can serve a million hosts by generating each page on demand.
//! The `Vec` functions in the vendor modules are conveniences for small test sizes.
//!
//! How `generation` changes the data (same rules for every vendor):
//! - about 10 % of records are *volatile*: their mutable fields (last seen, IPs, OS
//!   version, ...) move every 1 to 3 generations;
//! - about 2 % of records are *replaced* every 2 to 4 generations: same machine/person,
//!   new id (the old id disappears, a new one appears);
//! - everything else is stable across generations.

pub mod aws;
pub mod crowdstrike;
pub mod msgraph;
pub mod okta;
pub mod qualys;
mod render;
pub mod tenable;

pub(crate) use render::{Buf, Hex32, Hex128, Ipv4, Iso, Mac, NumStr, Render, iso, iso_millis, render_as_string};

/// SplitMix64 finaliser: a good 64-bit mixing function.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a seed, a salt (one per purpose) and a value.
#[inline]
pub(crate) fn h3(seed: u64, salt: u64, v: u64) -> u64 {
    mix64(mix64(seed ^ salt.wrapping_mul(0xA24B_AED4_963E_E407)) ^ v)
}

/// A tiny deterministic stream of random numbers for one record.
pub(crate) struct Gen(u64);

impl Gen {
    pub(crate) fn new(seed: u64, salt: u64, index: u64) -> Self {
        Gen(h3(seed, salt, index))
    }
    #[inline]
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Percentile roll in `0..100`.
    #[inline]
    pub(crate) fn pct(&mut self) -> u64 {
        self.below(100)
    }
    pub(crate) fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }
}

const C1: u64 = 0xD6E8_FEB8_6659_FD93;
const C2: u64 = 0xFF51_AFD7_ED55_8CCD;

fn mul_inverse(c: u64) -> u64 {
    // Newton iteration for the inverse of an odd number modulo 2^64.
    let mut inv = c;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(inv)));
    }
    inv
}

/// A keyed bijection on u64, so ids look random but decode back to an index.
pub(crate) fn permute(x: u64, key: u64) -> u64 {
    let mut x = x ^ key;
    x = x.wrapping_mul(C1);
    x ^= x >> 32;
    x = x.wrapping_mul(C2);
    x ^= x >> 29;
    x
}

/// Inverse of [`permute`].
pub(crate) fn unpermute(y: u64, key: u64) -> u64 {
    let mut x = y ^ (y >> 29) ^ (y >> 58);
    x = x.wrapping_mul(mul_inverse(C2));
    x ^= x >> 32;
    x = x.wrapping_mul(mul_inverse(C1));
    x ^ key
}

const SALT_VOLATILE: u64 = 0x5601;
const SALT_REPLACED: u64 = 0x5602;

/// Epoch of a record's mutable fields at `generation` (0 for stable records).
pub(crate) fn state_epoch(seed: u64, index: u64, generation: u64) -> u64 {
    let h = h3(seed, SALT_VOLATILE, index);
    if h.is_multiple_of(10) { generation / (1 + (h >> 8) % 3) } else { 0 }
}

/// Epoch of a record's id at `generation` (bumped when the record is "replaced").
pub(crate) fn id_epoch(seed: u64, index: u64, generation: u64) -> u64 {
    let h = h3(seed, SALT_REPLACED, index);
    if h % 100 < 2 { (generation / (2 + (h >> 8) % 3)) & 0xFF_FFFF } else { 0 }
}

/// Id payload: index in the low 40 bits, id epoch above.
pub(crate) fn id_payload(seed: u64, index: u64, generation: u64) -> u64 {
    (index & 0xFF_FFFF_FFFF) | (id_epoch(seed, index, generation) << 40)
}

/// Decode an id payload back to an index, checking that the id is the current one.
pub(crate) fn index_from_payload(seed: u64, payload: u64, size: usize, generation: u64) -> Option<u64> {
    let index = payload & 0xFF_FFFF_FFFF;
    if index >= size as u64 || (payload >> 40) != id_epoch(seed, index, generation) {
        return None;
    }
    Some(index)
}

/// Fixed reference instant for generated timestamps (data never depends on the clock).
pub(crate) const T0: i64 = 1_748_736_000; // 2025-06-01T00:00:00Z
pub(crate) const DAY: i64 = 86_400;

/// The spelling a percentile roll picks (mostly `default`).
pub(crate) fn mac_style(roll: u64, default: MacStyle) -> MacStyle {
    match roll {
        0..=54 => default,
        55..=64 => MacStyle::DashUpper,
        65..=74 => MacStyle::ColonLower,
        75..=79 => MacStyle::ColonUpper,
        80..=86 => MacStyle::BareUpper,
        87..=89 => MacStyle::BareLower,
        _ => MacStyle::CiscoDotted,
    }
}

/// A MAC address in one of the spellings seen in the wild.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MacStyle {
    DashLower,
    DashUpper,
    ColonLower,
    ColonUpper,
    BareUpper,
    BareLower,
    CiscoDotted,
}

pub(crate) fn mac_bytes(h: u64) -> [u8; 6] {
    const OUIS: [[u8; 3]; 8] = [
        [0x00, 0x50, 0x56], // VMware
        [0x3c, 0x22, 0xfb], // Apple
        [0xf8, 0x75, 0xa4], // Dell
        [0x00, 0x1a, 0x2b], // Cisco-ish
        [0x54, 0xe1, 0xad], // Lenovo
        [0xa4, 0xbb, 0x6d], // Intel
        [0x00, 0x15, 0x5d], // Hyper-V
        [0xb4, 0x2e, 0x99], // Gigabyte
    ];
    let oui = OUIS[(h % 8) as usize];
    let b = (h >> 8).to_le_bytes();
    [oui[0], oui[1], oui[2], b[0], b[1], b[2]]
}

/// A MAC in the spelling chosen by a percentile roll (mostly `default`).
pub(crate) fn messy_mac(m: [u8; 6], roll: u64, default: MacStyle) -> String {
    Mac(m, mac_style(roll, default)).to_string()
}

pub(crate) const PLACEHOLDER_SERIALS: [&str; 5] =
    ["To be filled by O.E.M.", "0", "Default string", "System Serial Number", "None"];

pub(crate) const FIRST_NAMES: [&str; 24] = [
    "Alice", "Bob", "Carol", "David", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj", "Olivia",
    "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "José", "Zoë", "Søren", "Chloé", "Łukasz",
];

pub(crate) const LAST_NAMES: [&str; 24] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Martinez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Jackson",
    "Müller",
    "O'Brien",
    "Nguyễn",
    "Øvergård",
    "van der Berg",
    "García-Márquez",
    "Kowalski",
    "Dubois",
];

/// Non-ASCII names that stay in the pool (CJK, Cyrillic, Greek).
pub(crate) const UNICODE_NAMES: [(&str, &str); 6] = [
    ("雷", "李"),
    ("Анна", "Иванова"),
    ("Νίκος", "Παπαδόπουλος"),
    ("さくら", "佐藤"),
    ("Ömer", "Yılmaz"),
    ("Đặng", "Thảo"),
];

/// Person for a user-like record: (first, last, ascii login stem).
pub(crate) fn person(g: &mut Gen, index: u64) -> (String, String, String) {
    if g.pct() < 4 {
        let (f, l) = UNICODE_NAMES[g.below(UNICODE_NAMES.len() as u64) as usize];
        return (f.to_string(), l.to_string(), format!("user{index}"));
    }
    let f = g.pick(&FIRST_NAMES);
    let l = g.pick(&LAST_NAMES);
    let stem = format!("{}.{}{}", ascii_fold(f), ascii_fold(l), index);
    (f.to_string(), l.to_string(), stem)
}

/// Lower-case ASCII version of a name for logins and e-mail addresses.
pub(crate) fn ascii_fold(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            let c = match c {
                'á' | 'à' | 'ä' | 'â' | 'Á' => 'a',
                'é' | 'è' | 'ë' | 'É' => 'e',
                'í' | 'ï' => 'i',
                'ó' | 'ö' | 'ø' | 'Ø' | 'Ö' => 'o',
                'ú' | 'ü' | 'Ü' => 'u',
                'ñ' => 'n',
                'ł' | 'Ł' => 'l',
                'ễ' => 'e',
                'å' => 'a',
                c => c,
            };
            (c.is_ascii_alphanumeric()).then(|| c.to_ascii_lowercase())
        })
        .collect()
}

/// A v4-looking GUID built from two 64-bit halves.
pub(crate) fn guid(hi: u64, lo: u64) -> String {
    let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000;
    let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

const B62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Fixed-width base62 of a u64 (11 characters).
pub(crate) fn base62(mut v: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = B62[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

pub(crate) fn unbase62(s: &str) -> Option<u64> {
    let mut v: u64 = 0;
    for c in s.bytes() {
        let d = B62.iter().position(|&b| b == c)? as u64;
        v = v.checked_mul(62)?.checked_add(d)?;
    }
    Some(v)
}

/// Dotted IPv4 from a hash, inside a private range.
pub(crate) fn private_ip(h: u64) -> Ipv4 {
    let b = h.to_le_bytes();
    Ipv4(match b[7] % 3 {
        0 => [10, b[0], b[1], 1 + b[2] % 254],
        1 => [172, 16 + b[0] % 16, b[1], 1 + b[2] % 254],
        _ => [192, 168, b[1], 1 + b[2] % 254],
    })
}

/// Public-looking IPv4 (documentation ranges, never routable).
pub(crate) fn public_ip(h: u64) -> Ipv4 {
    let b = h.to_le_bytes();
    Ipv4(match b[7] % 3 {
        0 => [203, 0, 113, 1 + b[0] % 254],
        1 => [198, 51, 100, 1 + b[0] % 254],
        _ => [192, 0, 2, 1 + b[0] % 254],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_chrono() {
        use chrono::{DateTime, SecondsFormat, Utc};
        for t in [0i64, T0, T0 + 12_345, 951_782_400, 4_102_444_799, -86_401] {
            let c = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
            assert_eq!(iso(t), c.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
        assert_eq!(iso_millis(T0, 7), "2025-06-01T00:00:00.007Z");
    }

    #[test]
    fn permute_roundtrips() {
        for (x, k) in [(0u64, 1u64), (12345, 99), (u64::MAX, 7), (1 << 40, 0xdead)] {
            assert_eq!(unpermute(permute(x, k), k), x);
        }
    }

    #[test]
    fn guid_and_base62_roundtrip() {
        let g = guid(0x1234_5678_9abc_0def, 0x0123_4567_89ab_cdef);
        assert_eq!(g, "12345678-9abc-4def-8123-456789abcdef");
        assert_eq!(unbase62(&base62(987_654_321, 11)), Some(987_654_321));
    }
}
