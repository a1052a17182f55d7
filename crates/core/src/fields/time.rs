//! Timestamps.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// 1980-01-01T00:00:00Z: anything earlier is a placeholder (Intune's
/// `0001-01-01T00:00:00Z`, epoch zero, ...), not a real observation.
const MIN_SECS: i64 = 315_532_800;
/// 2200-01-01T00:00:00Z: anything later is a "never" sentinel (`9999-12-31`).
const MAX_SECS: i64 = 7_258_118_400;
/// Seconds from 1601-01-01 (Windows FILETIME epoch) to 1970-01-01.
const FILETIME_EPOCH_OFFSET: i64 = 11_644_473_600;

fn in_range(dt: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (MIN_SECS..MAX_SECS).contains(&dt.timestamp()).then_some(dt)
}

/// An instant in UTC from the spellings vendors use, or `None` for garbage
/// and placeholders.
///
/// Accepted, after trimming:
/// - RFC 3339 / ISO 8601 with `Z` or an offset (`+01:00`, `+0100`, `+01`):
///   `2024-01-02T03:04:05Z` (CrowdStrike), `2024-01-02T03:04:05.1234567Z`
///   (Graph, any number of fractional digits), `2024-01-02T03:04:05.000Z` (Okta);
///   `T`, `t` or a space between date and time; `/` as date separator;
///   seconds optional; a trailing ` UTC`/` GMT`.
/// - No zone (`2024-01-02 03:04:05`, `2024-01-02T03:04:05`): UTC assumed.
/// - Date only (`2024-01-02`): midnight UTC.
/// - Epoch digits, unit by magnitude: seconds (below 1e11, optionally with a
///   fraction `1704164645.5`), milliseconds (below 1e14), microseconds
///   (below 1e17), Windows FILETIME 100 ns ticks since 1601 (below 3e17,
///   Active Directory `lastLogonTimestamp`), nanoseconds above.
/// - LDAP generalized time (`20240102030405.0Z`).
/// - RFC 2822 (`Tue, 02 Jan 2024 03:04:05 GMT`).
///
/// Anything before 1980-01-01 (Intune's null date `0001-01-01T00:00:00Z`,
/// epoch 0) or from 2200-01-01 on (`9999-12-31` "never") is `None`.
pub fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    let t = s.trim();
    if t.len() < 4 || t.len() > 64 {
        return None;
    }
    let b = t.as_bytes();
    let dt = if b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        match epoch(int.parse().ok()?, frac).and_then(in_range) {
            // 14 bare digits out of range as an epoch: generalized time without zone.
            None if b.len() == 14 && frac.is_empty() => generalized(b),
            other => other,
        }
    } else if matches!(b.get(4), Some(b'-' | b'/')) {
        iso(b)
    } else if b.len() > 14 && b[..14].iter().all(u8::is_ascii_digit) {
        generalized(b)
    } else {
        DateTime::parse_from_rfc2822(t).ok().map(|d| d.to_utc())
    };
    dt.and_then(in_range)
}

/// [`timestamp`] for a JSON value: a string is parsed as above, a number is
/// an epoch (unit by magnitude, fractional seconds kept); anything else is `None`.
pub fn timestamp_json(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    match v {
        serde_json::Value::String(s) => timestamp(s),
        serde_json::Value::Number(n) => {
            let dt = match (n.as_u64(), n.as_f64()) {
                (Some(u), _) => epoch(u, ""),
                // Fractional epoch seconds: keep the fraction.
                (None, Some(f)) if (0.0..1e11).contains(&f) => {
                    let secs = f.trunc();
                    let nanos = ((f - secs) * 1e9).round().min(999_999_999.0);
                    // Both in range by construction: secs < 1e11, nanos < 1e9.
                    DateTime::from_timestamp(secs as i64, nanos as u32)
                }
                // A larger float is an integer epoch in a finer unit (`as` saturates).
                (None, Some(f)) if (1e11..1.8e19).contains(&f) => epoch(f as u64, ""),
                _ => None,
            };
            dt.and_then(in_range)
        }
        _ => None,
    }
}

/// An epoch integer, unit by magnitude; `frac` is the digits after a `.`,
/// kept only for seconds.
fn epoch(v: u64, frac: &str) -> Option<DateTime<Utc>> {
    let v = i64::try_from(v).ok()?;
    if v < 100_000_000_000 {
        DateTime::from_timestamp(v, frac_nanos(frac.as_bytes())?)
    } else if v < 100_000_000_000_000 {
        DateTime::from_timestamp_millis(v)
    } else if v < 100_000_000_000_000_000 {
        DateTime::from_timestamp_micros(v)
    } else if v < 300_000_000_000_000_000 {
        let secs = v / 10_000_000 - FILETIME_EPOCH_OFFSET;
        // In 0..10^7, times 100: below 10^9.
        let nanos = u32::try_from(v % 10_000_000).ok()? * 100;
        DateTime::from_timestamp(secs, nanos)
    } else {
        Some(DateTime::from_timestamp_nanos(v))
    }
}

/// Fractional-second digits to nanoseconds: first nine digits, rest ignored.
/// `None` when a byte is not a digit.
fn frac_nanos(frac: &[u8]) -> Option<u32> {
    let mut nanos = 0u32;
    for (i, &c) in frac.iter().enumerate() {
        let d = c.checked_sub(b'0').filter(|d| *d <= 9)?;
        if i < 9 {
            nanos = nanos * 10 + u32::from(d);
        }
    }
    let shown = frac.len().min(9);
    Some(nanos * 10u32.pow(u32::try_from(9 - shown).ok()?))
}

/// Parses `n` ASCII digits at `b[at..at + n]`.
fn num(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = b.get(at..at + n)?;
    digits.iter().try_fold(0u32, |acc, &c| {
        let d = c.checked_sub(b'0').filter(|d| *d <= 9)?;
        Some(acc * 10 + u32::from(d))
    })
}

/// Date and time fields; `rest` is what follows the seconds (fraction, zone).
fn build(y: u32, mo: u32, d: u32, h: u32, mi: u32, sec: u32, rest: &[u8]) -> Option<DateTime<Utc>> {
    let (nanos, rest) = match rest.first() {
        Some(b'.' | b',') => {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            (frac_nanos(&rest[1..=n])?, &rest[1 + n..])
        }
        _ => (0, rest),
    };
    let offset = zone(rest)?;
    // A leap second (`:60`) is 59 plus a second of nanoseconds in chrono.
    let (sec, nanos) = if sec == 60 { (59, nanos + 1_000_000_000) } else { (sec, nanos) };
    let naive = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?.and_hms_nano_opt(h, mi, sec, nanos)?;
    naive.and_utc().checked_sub_signed(TimeDelta::seconds(offset))
}

/// A zone suffix in seconds east of UTC: empty, `Z`, `UTC`, `GMT`,
/// `+HH:MM`, `+HHMM`, `+HH` (optionally after spaces).
fn zone(z: &[u8]) -> Option<i64> {
    let z = z.trim_ascii_start();
    match z {
        [] | [b'Z' | b'z'] => return Some(0),
        _ if z.eq_ignore_ascii_case(b"utc") || z.eq_ignore_ascii_case(b"gmt") => return Some(0),
        _ => {}
    }
    let sign = match z[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = match z.len() {
        3 => (num(z, 1, 2)?, 0),
        5 => (num(z, 1, 2)?, num(z, 3, 2)?),
        6 if z[3] == b':' => (num(z, 1, 2)?, num(z, 4, 2)?),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * i64::from(h * 3600 + m * 60))
}

/// `YYYY-MM-DD[(T|t| )HH:MM[:SS][.frac][zone]]`, `/` allowed in the date.
fn iso(b: &[u8]) -> Option<DateTime<Utc>> {
    let sep = b[4];
    if b.len() < 10 || b[7] != sep {
        return None;
    }
    let (y, mo, d) = (num(b, 0, 4)?, num(b, 5, 2)?, num(b, 8, 2)?);
    if b.len() == 10 {
        return Some(NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?.and_hms_opt(0, 0, 0)?.and_utc());
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.get(13) != Some(&b':') {
        return None;
    }
    let (h, mi) = (num(b, 11, 2)?, num(b, 14, 2)?);
    let (sec, rest) = if b.get(16) == Some(&b':') { (num(b, 17, 2)?, b.get(19..)?) } else { (0, b.get(16..)?) };
    build(y, mo, d, h, mi, sec, rest)
}

/// LDAP generalized time `YYYYMMDDHHMMSS[.frac][zone]`.
fn generalized(b: &[u8]) -> Option<DateTime<Utc>> {
    build(num(b, 0, 4)?, num(b, 4, 2)?, num(b, 6, 2)?, num(b, 8, 2)?, num(b, 10, 2)?, num(b, 12, 2)?, b.get(14..)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(s).expect("test literal").to_utc())
    }

    #[test]
    fn timestamp_table() {
        let long = "2024-01-02T03:04:05Z".repeat(1_000);
        let cases: Vec<(&str, Option<DateTime<Utc>>)> = vec![
            // CrowdStrike.
            ("2024-01-02T03:04:05Z", at("2024-01-02T03:04:05Z")),
            // Graph: 7 fractional digits.
            ("2024-01-02T03:04:05.1234567Z", at("2024-01-02T03:04:05.1234567Z")),
            ("2024-01-02T03:04:05.1234567+00:00", at("2024-01-02T03:04:05.1234567Z")),
            // Okta.
            ("2024-01-02T03:04:05.000Z", at("2024-01-02T03:04:05Z")),
            ("2024-01-02T03:04:05.5Z", at("2024-01-02T03:04:05.5Z")),
            ("2024-01-02T03:04:05.123456789Z", at("2024-01-02T03:04:05.123456789Z")),
            ("2024-01-02T03:04:05.1234567891234Z", at("2024-01-02T03:04:05.123456789Z")),
            ("2024-01-02T03:04:05,25Z", at("2024-01-02T03:04:05.25Z")),
            ("  2024-01-02T03:04:05Z\n", at("2024-01-02T03:04:05Z")),
            ("2024-01-02t03:04:05z", at("2024-01-02T03:04:05Z")),
            // Offsets.
            ("2024-01-02T03:04:05+01:00", at("2024-01-02T02:04:05Z")),
            ("2024-01-02T03:04:05-05:00", at("2024-01-02T08:04:05Z")),
            ("2024-01-02T03:04:05+0530", at("2024-01-01T21:34:05Z")),
            ("2024-01-02T03:04:05+02", at("2024-01-02T01:04:05Z")),
            ("2024-01-02T03:04:05.000-0800", at("2024-01-02T11:04:05Z")),
            ("2024-01-02T23:30:00-01:00", at("2024-01-03T00:30:00Z")),
            ("2024-01-02 03:04:05 UTC", at("2024-01-02T03:04:05Z")),
            ("2024-01-02 03:04:05 GMT", at("2024-01-02T03:04:05Z")),
            ("2024-01-02 03:04:05 +01:00", at("2024-01-02T02:04:05Z")),
            // No zone: UTC.
            ("2024-01-02 03:04:05", at("2024-01-02T03:04:05Z")),
            ("2024-01-02T03:04:05", at("2024-01-02T03:04:05Z")),
            ("2024-01-02T03:04:05.123", at("2024-01-02T03:04:05.123Z")),
            ("2024-01-02 03:04", at("2024-01-02T03:04:00Z")),
            ("2024/01/02 03:04:05", at("2024-01-02T03:04:05Z")),
            // Date only.
            ("2024-01-02", at("2024-01-02T00:00:00Z")),
            ("2024/01/02", at("2024-01-02T00:00:00Z")),
            // Leap second.
            ("2016-12-31T23:59:60Z", at("2016-12-31T23:59:60Z")),
            // Epoch seconds / millis / micros / nanos.
            ("1704164645", at("2024-01-02T03:04:05Z")),
            ("1704164645.5", at("2024-01-02T03:04:05.5Z")),
            ("1704164645123", at("2024-01-02T03:04:05.123Z")),
            ("1704164645123456", at("2024-01-02T03:04:05.123456Z")),
            ("1704164645123456789", at("2024-01-02T03:04:05.123456789Z")),
            ("315532800", at("1980-01-01T00:00:00Z")),
            (" 1704164645 ", at("2024-01-02T03:04:05Z")),
            // Windows FILETIME (AD lastLogonTimestamp).
            ("133486382450000000", at("2024-01-02T03:04:05Z")),
            // LDAP generalized time.
            ("20240102030405.0Z", at("2024-01-02T03:04:05Z")),
            ("20240102030405Z", at("2024-01-02T03:04:05Z")),
            ("20240102030405.123+0100", at("2024-01-02T02:04:05.123Z")),
            ("20240102030405", at("2024-01-02T03:04:05Z")),
            // RFC 2822.
            ("Tue, 02 Jan 2024 03:04:05 GMT", at("2024-01-02T03:04:05Z")),
            ("Tue, 2 Jan 2024 03:04:05 +0000", at("2024-01-02T03:04:05Z")),
            // Placeholders and out of range.
            ("0001-01-01T00:00:00Z", None),
            ("0001-01-01T00:00:00", None),
            ("1601-01-01T00:00:00Z", None),
            ("1970-01-01T00:00:00Z", None),
            ("1979-12-31T23:59:59Z", None),
            ("1980-01-01T00:00:00Z", at("1980-01-01T00:00:00Z")),
            ("1980-01-01T00:30:00+01:00", None),
            ("9999-12-31T23:59:59Z", None),
            ("9999-12-31", None),
            ("2200-01-01T00:00:00Z", None),
            ("2199-12-31T23:59:59Z", at("2199-12-31T23:59:59Z")),
            ("0", None),
            ("0000", None),
            ("-1", None),
            ("-1704164645", None),
            ("9223372036854775807", None),
            ("99999999999999999999999", None),
            ("0.0", None),
            ("1704164645.5.5", None),
            ("1704164645.", at("2024-01-02T03:04:05Z")),
            // Garbage.
            ("", None),
            ("   ", None),
            ("null", None),
            ("N/A", None),
            ("never", None),
            ("yesterday", None),
            ("2024", None),
            ("2024-01", None),
            ("2024-13-01", None),
            ("2024-02-30", None),
            ("2023-02-29", None),
            ("2024-02-29", at("2024-02-29T00:00:00Z")),
            ("2024-01-02T24:00:00Z", None),
            ("2024-01-02T03:60:00Z", None),
            ("2024-01-02T03:04:61Z", None),
            ("2024-01-02T03:04:05.Z", None),
            ("2024-01-02T03:04:05ZZ", None),
            ("2024-01-02T03:04:05+25:00", None),
            ("2024-01-02T03:04:05+01:60", None),
            ("2024-01-02T03:04:05+1", None),
            ("2024-01-02T03:04:05 PST", None),
            ("2024-01-02X03:04:05Z", None),
            ("2024-01-02T3:04:05Z", None),
            ("2024-1-2", None),
            ("2024-01/02", None),
            ("02/01/2024", None),
            ("01/02/2024 03:04:05", None),
            ("２０２４-01-02", None),
            ("2024-01-02T03:04:05Z🚀", None),
            ("🚀🚀🚀🚀🚀", None),
            ("2024-01-02T03:04:05\u{0}", None),
            (&long, None),
        ];
        for (input, want) in cases {
            assert_eq!(timestamp(input), want, "timestamp({input:?})");
        }
    }

    #[test]
    fn timestamp_json_table() {
        use serde_json::json;
        let cases: Vec<(serde_json::Value, Option<DateTime<Utc>>)> = vec![
            (json!("2024-01-02T03:04:05Z"), at("2024-01-02T03:04:05Z")),
            (json!("2024-01-02T03:04:05.1234567Z"), at("2024-01-02T03:04:05.1234567Z")),
            (json!("1704164645"), at("2024-01-02T03:04:05Z")),
            (json!(1704164645), at("2024-01-02T03:04:05Z")),
            (json!(1704164645123u64), at("2024-01-02T03:04:05.123Z")),
            (json!(1704164645.25), at("2024-01-02T03:04:05.25Z")),
            (json!(1704164645123.0), at("2024-01-02T03:04:05.123Z")),
            (json!(133486382450000000u64), at("2024-01-02T03:04:05Z")),
            (json!(0), None),
            (json!(-1), None),
            (json!(-1704164645.0), None),
            (json!(1e300), None),
            (json!(u64::MAX), None),
            (json!("0001-01-01T00:00:00Z"), None),
            (json!(""), None),
            (json!(null), None),
            (json!(true), None),
            (json!([1704164645]), None),
            (json!({"t": 1704164645}), None),
        ];
        for (input, want) in cases {
            assert_eq!(timestamp_json(&input), want, "timestamp_json({input})");
        }
    }

    #[test]
    fn timestamp_never_panics_on_mangled_iso() {
        let base = "2024-01-02T03:04:05.123+01:00";
        let junk = ['x', ':', '-', '.', '9', 'Z', ' ', 'é', '+'];
        for cut in 0..=base.len() {
            let _ = timestamp(&base[..cut]);
            for j in junk {
                let mut s = String::from(&base[..cut]);
                s.push(j);
                s.push_str(&base[cut..]);
                let _ = timestamp(&s);
                if cut < base.len() {
                    let mut r = String::from(&base[..cut]);
                    r.push(j);
                    r.push_str(&base[cut + 1..]);
                    let _ = timestamp(&r);
                }
            }
        }
    }
}
