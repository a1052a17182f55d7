//! Strings rendered without allocation: timestamps, hex ids, IPs, MACs. The
//! CrowdStrike records (a million per benchmark run) serialise from these.

use std::fmt::Write;

use super::{DAY, MacStyle};

/// `YYYY-MM-DDTHH:MM:SSZ` (hand-rolled: it runs several times per generated record).
pub(crate) fn iso(secs: i64) -> String {
    let mut s = String::with_capacity(24);
    let _ = push_iso(&mut s, secs);
    s.push('Z');
    s
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn iso_millis(secs: i64, millis: u64) -> String {
    let mut s = String::with_capacity(28);
    let _ = push_iso(&mut s, secs);
    let _ = write!(s, ".{:03}Z", millis % 1000);
    s
}

fn push_iso(s: &mut impl Write, secs: i64) -> std::fmt::Result {
    let (y, m, d) = civil(secs.div_euclid(DAY));
    let tod = secs.rem_euclid(DAY);
    write!(s, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", tod / 3600, tod % 3600 / 60, tod % 60)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as u64, d as u64)
}

/// A small stack buffer that short strings are rendered into without the `fmt`
/// machinery: the CrowdStrike records (a million per benchmark run) are built from the
/// types below, which serialise straight from this buffer.
pub(crate) struct Buf {
    b: [u8; 64],
    n: usize,
}

impl Buf {
    pub(crate) fn new() -> Self {
        Buf { b: [0; 64], n: 0 }
    }
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.b[..self.n]).unwrap_or("")
    }
    pub(crate) fn str(&mut self, s: &str) {
        let end = (self.n + s.len()).min(self.b.len());
        let len = end - self.n;
        self.b[self.n..end].copy_from_slice(&s.as_bytes()[..len]);
        self.n = end;
    }
    fn byte(&mut self, c: u8) {
        if self.n < self.b.len() {
            self.b[self.n] = c;
            self.n += 1;
        }
    }
    pub(crate) fn hex(&mut self, v: u64, digits: u32, upper: bool) {
        let table = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
        for i in (0..digits).rev() {
            self.byte(table[((v >> (4 * i)) & 0xF) as usize]);
        }
    }
    /// Decimal, zero-padded to at least `width` digits.
    pub(crate) fn dec(&mut self, v: u64, width: usize) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        let mut v = v;
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for _ in (tmp.len() - i)..width {
            self.byte(b'0');
        }
        for &c in &tmp[i..] {
            self.byte(c);
        }
    }
}

/// A value rendered into a [`Buf`]; gets `Display` and string `Serialize` for free.
pub(crate) trait Render {
    fn render(&self, b: &mut Buf);
}

macro_rules! render_as_string {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut b = Buf::new();
                self.render(&mut b);
                s.serialize_str(b.as_str())
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut b = Buf::new();
                self.render(&mut b);
                f.write_str(b.as_str())
            }
        }
    )*};
}
pub(crate) use render_as_string;
render_as_string!(Iso, Hex128, Hex32, Ipv4, Mac, NumStr);

/// A timestamp rendered `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Iso(pub i64);

impl Render for Iso {
    fn render(&self, b: &mut Buf) {
        let (y, m, d) = civil(self.0.div_euclid(DAY));
        let tod = self.0.rem_euclid(DAY) as u64;
        b.dec(y.max(0) as u64, 4);
        b.byte(b'-');
        b.dec(m, 2);
        b.byte(b'-');
        b.dec(d, 2);
        b.byte(b'T');
        b.dec(tod / 3600, 2);
        b.byte(b':');
        b.dec(tod % 3600 / 60, 2);
        b.byte(b':');
        b.dec(tod % 60, 2);
        b.byte(b'Z');
    }
}

/// 32 lower-case hex digits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hex128(pub u64, pub u64);

impl Render for Hex128 {
    fn render(&self, b: &mut Buf) {
        b.hex(self.0, 16, false);
        b.hex(self.1, 16, false);
    }
}

/// 8 lower-case hex digits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hex32(pub u32);

impl Render for Hex32 {
    fn render(&self, b: &mut Buf) {
        b.hex(self.0 as u64, 8, false);
    }
}

/// A dotted IPv4 address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ipv4(pub [u8; 4]);

impl Ipv4 {
    pub(crate) fn gateway(self) -> Ipv4 {
        Ipv4([self.0[0], self.0[1], self.0[2], 1])
    }
}

impl Render for Ipv4 {
    fn render(&self, b: &mut Buf) {
        for (i, octet) in self.0.iter().enumerate() {
            if i > 0 {
                b.byte(b'.');
            }
            b.dec(*octet as u64, 1);
        }
    }
}

/// A number sent as a JSON string.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NumStr(pub u64);

impl Render for NumStr {
    fn render(&self, b: &mut Buf) {
        b.dec(self.0, 1);
    }
}

/// A MAC address in a given spelling.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mac(pub [u8; 6], pub MacStyle);

impl Render for Mac {
    fn render(&self, b: &mut Buf) {
        let (sep, upper) = match self.1 {
            MacStyle::DashLower => (Some(b'-'), false),
            MacStyle::DashUpper => (Some(b'-'), true),
            MacStyle::ColonLower => (Some(b':'), false),
            MacStyle::ColonUpper => (Some(b':'), true),
            MacStyle::BareUpper => (None, true),
            MacStyle::BareLower | MacStyle::CiscoDotted => (None, false),
        };
        for (i, octet) in self.0.iter().enumerate() {
            match (self.1, sep) {
                (MacStyle::CiscoDotted, _) if i == 2 || i == 4 => b.byte(b'.'),
                (_, Some(c)) if i > 0 => b.byte(c),
                _ => {}
            }
            b.hex(*octet as u64, 2, upper);
        }
    }
}
