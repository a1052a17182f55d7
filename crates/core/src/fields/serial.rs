//! Hardware serial numbers and manufacturers.

use super::alnum_in;
use super::text::is_nullish;

/// Serial placeholders written by firmware and vendors, as lowercase
/// alphanumerics only (see [`super::alnum_eq`]): `"To Be Filled By O.E.M."`
/// is `tobefilledbyoem`. Strings with no letter or digit at all (`"---"`)
/// are rejected separately.
const SERIAL_PLACEHOLDERS: &[&str] = &[
    "tobefilledbyoem",
    "tobefilled",
    "defaultstring",
    "default",
    "systemserialnumber",
    "chassisserialnumber",
    "baseboardserialnumber",
    "serialnumber",
    "serial",
    "123456789",
    "0123456789",
    "1234567890",
    "12345678",
    "none",
    "null",
    "nil",
    "na",
    "notspecified",
    "notavailable",
    "notapplicable",
    "unknown",
    "undefined",
    "invalid",
    "empty",
    "oem",
    "tbd",
    "notset",
];

/// Manufacturer placeholders, in the same alphanumeric-only form.
const MANUFACTURER_PLACEHOLDERS: &[&str] = &[
    "tobefilledbyoem",
    "tobefilled",
    "defaultstring",
    "default",
    "systemmanufacturer",
    "chassismanufacturer",
    "baseboardmanufacturer",
    "manufacturer",
    "oem",
    "none",
    "null",
    "nil",
    "na",
    "notspecified",
    "notavailable",
    "notapplicable",
    "unknown",
    "undefined",
    "invalid",
    "empty",
    "tbd",
    "notset",
];

/// Every letter/digit in `s` is the same character from `fill` (case-insensitive),
/// ignoring separators: `0000-0000`, `XXXXXXXX`, `x x x`.
fn all_filler(s: &str, fill: &[u8]) -> bool {
    let mut alnum = s.bytes().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_lowercase()).peekable();
    match alnum.peek().copied() {
        Some(first) if fill.contains(&first) && s.is_ascii() => alnum.all(|b| b == first),
        _ => false,
    }
}

/// No letter or digit in any script: `---`, `???`, `***`.
fn no_alnum(s: &str) -> bool {
    !s.chars().any(char::is_alphanumeric)
}

/// A trimmed hardware serial number, or `None` for placeholders.
///
/// Dropped, case- and punctuation-insensitively: `To be filled by O.E.M.`,
/// `Default string`, `System Serial Number`, `Chassis Serial Number`,
/// `None`, `Not Specified`, `Not Available`, `N/A`, `INVALID`,
/// `123456789`, `0123456789`, any all-zeros string (`0`, `00000000`,
/// `0000-0000`), any all-`x` string (`xxxxxxxx`), strings with no letter or
/// digit, and anything shorter than 3 characters. The value is otherwise
/// kept exactly as sent (VMware's `VMware-42 1a 2b ...` included).
pub fn serial(s: &str) -> Option<String> {
    let t = s.trim();
    if t.chars().nth(2).is_none() || is_nullish(t) || no_alnum(t) || all_filler(t, b"0x") {
        return None;
    }
    // Placeholders are short; skip the table scan for long values.
    if t.len() <= 64 && alnum_in(t, SERIAL_PLACEHOLDERS) {
        return None;
    }
    Some(t.to_owned())
}

/// A trimmed manufacturer name, or `None` for [`super::text`] placeholders and
/// firmware defaults (`To be filled by O.E.M.`, `System manufacturer`,
/// `Default string`, `OEM`, `Not Specified`, ...), compared case- and
/// punctuation-insensitively. The name is otherwise kept as sent.
pub fn manufacturer(s: &str) -> Option<String> {
    let t = s.trim();
    if is_nullish(t) || no_alnum(t) || (t.len() <= 64 && alnum_in(t, MANUFACTURER_PLACEHOLDERS)) {
        return None;
    }
    Some(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_table() {
        let long = "S".repeat(100_000);
        let cases: &[(&str, Option<&str>)] = &[
            // Real serials across vendors.
            ("C02XK1ABJG5H", Some("C02XK1ABJG5H")),
            ("  5CG1234ABC  ", Some("5CG1234ABC")),
            ("PF2ABCDE", Some("PF2ABCDE")),
            ("abc", Some("abc")),
            ("0000-0014-7310-1234-5678-9012-34", Some("0000-0014-7310-1234-5678-9012-34")),
            (
                "VMware-42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8",
                Some("VMware-42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8"),
            ),
            (
                "VMware-56 4d 00 00 00 00 00 00-00 00 00 00 00 00 00 01",
                Some("VMware-56 4d 00 00 00 00 00 00-00 00 00 00 00 00 00 01"),
            ),
            ("Parallels-12 34 56 78", Some("Parallels-12 34 56 78")),
            ("ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8", Some("ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8")),
            ("00000001", Some("00000001")),
            ("X1234567", Some("X1234567")),
            ("1234567891", Some("1234567891")),
            ("Serial-ÄÖÜ-42", Some("Serial-ÄÖÜ-42")),
            ("日本製123", Some("日本製123")),
            ("日本製", Some("日本製")),
            ("№№№", None),
            (&long, Some(&long)),
            // Placeholders, any case and punctuation.
            ("To be filled by O.E.M.", None),
            ("To Be Filled By O.E.M.", None),
            ("TO BE FILLED BY O.E.M.", None),
            ("To be filled by O.E.M", None),
            ("  to be filled by oem  ", None),
            ("Default string", None),
            ("DEFAULT STRING", None),
            ("System Serial Number", None),
            ("Chassis Serial Number", None),
            ("Base Board Serial Number", None),
            ("SerialNumber", None),
            ("0", None),
            ("00", None),
            ("000", None),
            ("00000000", None),
            ("0000000000000000000000", None),
            ("0000-0000-0000", None),
            ("00 00 00 00", None),
            ("123456789", None),
            ("0123456789", None),
            ("None", None),
            ("NONE", None),
            ("null", None),
            ("Not Specified", None),
            ("Not Available", None),
            ("Not Applicable", None),
            ("N/A", None),
            ("n/a", None),
            ("INVALID", None),
            ("Invalid", None),
            ("xxxxxxxx", None),
            ("XXXXXXXX", None),
            ("xxx-xxx", None),
            ("Unknown", None),
            ("Default", None),
            ("OEM", None),
            ("---", None),
            ("...", None),
            ("***", None),
            // Too short.
            ("", None),
            ("  ", None),
            ("A", None),
            ("AB", None),
            (" AB ", None),
            ("é", None),
        ];
        for (input, want) in cases {
            assert_eq!(serial(input).as_deref(), *want, "serial({input:?})");
        }
    }

    #[test]
    fn manufacturer_table() {
        let long = "Dell ".repeat(10_000);
        let cases: &[(&str, Option<&str>)] = &[
            ("Dell Inc.", Some("Dell Inc.")),
            ("  LENOVO ", Some("LENOVO")),
            ("HP", Some("HP")),
            ("Apple", Some("Apple")),
            ("Microsoft Corporation", Some("Microsoft Corporation")),
            ("VMware, Inc.", Some("VMware, Inc.")),
            ("innotek GmbH", Some("innotek GmbH")),
            ("Amazon EC2", Some("Amazon EC2")),
            ("ASUSTeK COMPUTER INC.", Some("ASUSTeK COMPUTER INC.")),
            ("Gigabyte Technology Co., Ltd.", Some("Gigabyte Technology Co., Ltd.")),
            ("Fujitsu Österreich", Some("Fujitsu Österreich")),
            ("富士通", Some("富士通")),
            ("OEM Systems Ltd", Some("OEM Systems Ltd")),
            (long.trim(), Some(long.trim())),
            ("To be filled by O.E.M.", None),
            ("To Be Filled By O.E.M.", None),
            ("System manufacturer", None),
            ("System Manufacturer", None),
            ("Default string", None),
            ("OEM", None),
            ("O.E.M.", None),
            ("Not Specified", None),
            ("Not Available", None),
            ("INVALID", None),
            ("Manufacturer", None),
            ("", None),
            ("  ", None),
            ("null", None),
            ("None", None),
            ("Unknown", None),
            ("N/A", None),
            ("-", None),
            ("???", None),
        ];
        for (input, want) in cases {
            assert_eq!(manufacturer(input).as_deref(), *want, "manufacturer({input:?})");
        }
    }
}
