//! Field normalizer throughput over realistic, mixed vendor input.
//!
//! Each benchmark runs one normalizer over a fixed vector of spellings as
//! CrowdStrike, Intune, Okta, Tenable, Jamf, SentinelOne, ... send them,
//! including placeholders and garbage in roughly the proportion seen in
//! real inventories. Throughput is reported per input value.
//!
//! Run: `cargo bench -p corral-workspace --bench normalizers`

use std::hint::black_box;

use corral_core::fields;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The binary's allocator, so that the bench measures what `corral` runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MACS: &[&str] = &[
    "aa-bb-cc-dd-ee-ff", // CrowdStrike
    "00-1B-63-84-45-E6",
    "001B638445E6", // Intune ethernetMacAddress
    "a4c3f0851a2b",
    "00:50:56:9a:3b:4c", // VMware, Tenable
    "F0:18:98:12:34:56", // Jamf
    "0123.4567.89ab",    // Cisco
    "0:1b:63:84:45:e6",  // macOS arp
    "  3c:22:fb:01:02:03  ",
    "00:00:00:00:00:00", // placeholders
    "ff:ff:ff:ff:ff:ff",
    "",
    "null",
    "aa:bb:cc:dd:ee",
    "not-a-mac-address",
    "02:42:ac:11:00:02", // docker
];

const IPS: &[&str] = &[
    "10.0.0.5",
    "192.168.1.254",
    "172.16.4.20",
    "  10.20.30.40 ",
    "10.0.0.5/24",
    "8.8.8.8",
    "2001:db8::1",
    "fe80::1ff:fe23:4567:890a%12",
    "fe80::1%eth0",
    "[2001:db8::1]",
    "::ffff:10.0.0.5",
    "0.0.0.0",
    "::",
    "",
    "N/A",
    "10.0.0.256",
];

const HOSTNAMES: &[&str] = &[
    "DESKTOP-AB12CD3",
    "host1.corp.example.com",
    "CORP\\LAPTOP-0042",
    "ip-10-0-0-5.ec2.internal",
    "Johns-MacBook-Pro.local",
    "web-01.prod.example.com.",
    "SRV-SQL-01",
    "HOST1$",
    "10.0.0.5",
    "localhost",
    "",
    "unknown",
    "MÜNCHEN-PC.firma.de",
    "build-agent-17",
    "fe80::1",
    "John's MacBook Pro",
];

const SERIALS: &[&str] = &[
    "C02XK1ABJG5H",
    "5CG1234ABC",
    "PF2ABCDE",
    "VMware-42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8",
    "0000-0014-7310-1234-5678-9012-34",
    "ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8",
    "  FVFXK2ABCDEF  ",
    "To be filled by O.E.M.",
    "Default string",
    "System Serial Number",
    "0",
    "00000000",
    "None",
    "",
    "123456789",
    "R9XN12345AB",
];

const TIMESTAMPS: &[&str] = &[
    "2024-01-02T03:04:05Z",         // CrowdStrike
    "2024-01-02T03:04:05.1234567Z", // Graph
    "2024-01-02T03:04:05.000Z",     // Okta
    "2024-01-02T03:04:05.123456Z",  // SentinelOne
    "2024-01-02T03:04:05+01:00",
    "2024-01-02 03:04:05", // ServiceNow
    "2024-01-02T03:04:05",
    "2024-01-02",
    "1704164645",    // epoch seconds
    "1704164645123", // epoch millis
    "0001-01-01T00:00:00Z",
    "20240102030405.0Z", // LDAP
    "133486382450000000",
    "",
    "never",
    "Tue, 02 Jan 2024 03:04:05 GMT",
];

const OSES: &[(Option<&str>, Option<&str>)] = &[
    (Some("Windows"), Some("10.0.19045.3803")),
    (Some("Windows"), Some("Windows 11")),
    (Some("Microsoft Windows Server 2019 Standard"), None),
    (Some("macOS"), Some("14.2.1")),
    (Some("Mac OS X"), Some("10.15.7")),
    (Some("iOS"), Some("17.2")),
    (Some("iPadOS"), Some("17.1.2")),
    (Some("Android"), Some("14")),
    (Some("AndroidForWork"), Some("13")),
    (Some("Ubuntu 22.04.3 LTS"), None),
    (Some("Red Hat Enterprise Linux Server 7.9"), None),
    (Some("Amazon Linux 2"), Some("5.10.205-195.807.amzn2.x86_64")),
    (Some("ChromeOS"), Some("120.0.6099.235")),
    (Some("AIX 7.3"), None),
    (Some("Cisco IOS XE"), Some("17.9")),
    (None, None),
];

fn bench_str(c: &mut Criterion, name: &str, inputs: &[&str], f: impl Fn(&str) -> bool) {
    let mut group = c.benchmark_group("fields");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut kept = 0usize;
            for s in black_box(inputs) {
                kept += usize::from(f(black_box(s)));
            }
            kept
        });
    });
    group.finish();
}

fn normalizers(c: &mut Criterion) {
    bench_str(c, "mac", MACS, |s| black_box(fields::mac(s)).is_some());
    bench_str(c, "ip", IPS, |s| black_box(fields::ip(s)).is_some());
    bench_str(c, "hostname", HOSTNAMES, |s| black_box(fields::hostname(s)).hostname.is_some());
    bench_str(c, "serial", SERIALS, |s| black_box(fields::serial(s)).is_some());
    bench_str(c, "timestamp", TIMESTAMPS, |s| black_box(fields::timestamp(s)).is_some());

    let mut group = c.benchmark_group("fields");
    group.throughput(Throughput::Elements(OSES.len() as u64));
    group.bench_function("os", |b| {
        b.iter(|| {
            let mut known = 0usize;
            for (name, version) in black_box(OSES) {
                let os = fields::os(black_box(*name), black_box(*version));
                known += usize::from(os.family.as_deref().is_some_and(|f| f != "other"));
                black_box(os);
            }
            known
        });
    });
    // The list forms adapters call on Tenable-style arrays.
    group.throughput(Throughput::Elements(MACS.len() as u64));
    group.bench_function("macs", |b| b.iter(|| fields::macs(black_box(MACS).iter().copied())));
    group.throughput(Throughput::Elements(IPS.len() as u64));
    group.bench_function("ips", |b| b.iter(|| fields::ips(black_box(IPS).iter().copied())));
    group.finish();
}

criterion_group!(benches, normalizers);
criterion_main!(benches);
