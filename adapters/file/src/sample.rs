//! Deterministic sample exports for the demo, tests and benchmarks: the
//! spellings real exports contain (MACs with dashes, bare hex or colons,
//! `DOMAIN\host`, FQDNs, placeholder serials), generated as a stream so a
//! million rows never sit in memory.

use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Options for [`write_devices_csv`] and [`write_users_ndjson`].
#[derive(Debug, Clone, Copy)]
pub struct SampleOptions {
    pub seed: u64,
    /// Every n-th data line is malformed (None: no malformed lines).
    pub malformed_every: Option<u64>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions { seed: 1, malformed_every: None }
    }
}

/// A small, fast, deterministic generator (SplitMix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// The CSV header of [`write_devices_csv`], also the column mapping to use.
pub const DEVICE_COLUMNS: &[&str] = &[
    "Device ID",
    "Host Name",
    "IP Addresses",
    "MAC",
    "Serial",
    "OS",
    "OS Version",
    "Vendor",
    "Model",
    "Last Seen",
    "Owner",
    "Tags",
];

const OSES: &[(&str, &str)] = &[
    ("Windows 11 Enterprise", "10.0.22631"),
    ("Windows Server 2019", "10.0.17763"),
    ("macOS", "14.4.1"),
    ("Ubuntu", "22.04"),
    ("Red Hat Enterprise Linux", "9.3"),
];
const VENDORS: &[&str] = &["Dell Inc.", "LENOVO", "HP", "Apple Inc.", "To be filled by O.E.M.", "VMware, Inc."];
const SERIAL_PLACEHOLDERS: &[&str] = &["To be filled by O.E.M.", "0", "Default string", "System Serial Number"];

fn mac(m: &mut Mix, i: u64) -> String {
    let b = (i.wrapping_mul(2_654_435_761) ^ 0x00a0_c9d4_0000_0000).to_be_bytes();
    let bytes = [0x00, 0x50, b[4], b[5], b[6], b[7]];
    match m.next() % 4 {
        0 => bytes.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"),
        1 => bytes.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join("-"),
        2 => bytes.iter().map(|x| format!("{x:02X}")).collect(),
        _ => format!(
            "{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}",
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]
        ),
    }
}

/// Write `n` devices as CSV with the [`DEVICE_COLUMNS`] header.
pub fn write_devices_csv(path: &Path, n: u64, opts: SampleOptions) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "{}", DEVICE_COLUMNS.join(","))?;
    let mut m = Mix(opts.seed);
    for i in 1..=n {
        if opts.malformed_every.is_some_and(|k| k > 0 && i % k == 0) {
            // Unterminated quote and the wrong number of fields.
            writeln!(out, "dev-{i},\"broken host,10.0.0.1")?;
            continue;
        }
        let host = match m.next() % 4 {
            0 => format!("CORP\\WKS-{i:06}"),
            1 => format!("srv-{i:06}.corp.example.com"),
            2 => format!("LAPTOP-{i:06}"),
            _ => format!("büro-{i:06}"),
        };
        let ip = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        let ips = if m.next().is_multiple_of(5) { format!("\"{ip}, fe80::{:x}\"", i & 0xffff) } else { ip };
        let serial = if m.next().is_multiple_of(10) {
            m.pick(SERIAL_PLACEHOLDERS).to_string()
        } else {
            format!("SN{:010}", i * 7919)
        };
        let (os, ver) = OSES[(m.next() % OSES.len() as u64) as usize];
        let vendor = m.pick(VENDORS);
        let vendor = if vendor.contains(',') { format!("\"{vendor}\"") } else { vendor.to_string() };
        let model = format!("Model {}", m.next() % 40);
        let seen = format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", 1 + i % 12, 1 + i % 28, i % 24, i % 60);
        let owner = format!("user{}@example.com", i % 5000);
        let tags = if i % 3 == 0 { "\"prod;pci\"" } else { "dev" };
        let mac = mac(&mut m, i);
        writeln!(out, "dev-{i},{host},{ips},{mac},{serial},{os},{ver},{vendor},{model},{seen},{owner},{tags}")?;
    }
    out.flush()
}

/// Write `n` users as NDJSON with nested profile objects (Okta-like).
pub fn write_users_ndjson(path: &Path, n: u64, opts: SampleOptions) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut m = Mix(opts.seed ^ 0x5555);
    const FIRST: &[&str] = &["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Zoë", "José"];
    const LAST: &[&str] = &["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Müller", "García"];
    for i in 1..=n {
        if opts.malformed_every.is_some_and(|k| k > 0 && i % k == 0) {
            writeln!(out, "{{\"id\": \"u{i}\", \"profile\": {{")?;
            continue;
        }
        let (first, last) = (m.pick(FIRST), m.pick(LAST));
        let status = if m.next().is_multiple_of(10) { "DEPROVISIONED" } else { "ACTIVE" };
        let record = serde_json::json!({
            "id": format!("u{i:07}"),
            "status": status,
            "created": format!("2024-{:02}-{:02}T08:00:00.000Z", 1 + i % 12, 1 + i % 28),
            "lastLogin": if i % 7 == 0 { serde_json::Value::Null } else { format!("2026-11-{:02}T09:30:00.000Z", 1 + i % 20).into() },
            "profile": {
                "login": format!("{}.{}{i}@example.com", first.to_lowercase(), last.to_lowercase()),
                "email": format!("{}.{}{i}@EXAMPLE.com", first.to_lowercase(), last.to_lowercase()),
                "firstName": first,
                "lastName": last,
            },
            "active": status == "ACTIVE",
        });
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
