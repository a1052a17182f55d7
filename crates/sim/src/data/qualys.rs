//! Qualys VMDR: hosts, their detections, and the KnowledgeBase entries of the QIDs.
//!
//! `size` hosts; host `i` has ID `1_000_000 + 16 i + (replacement epoch mod 16)`
//! (IDs grow with `i`, so `id_min` continues a listing; a "replaced" host, see
//! [`crate::data`], gets a new ID in its slot). Host `i` carries between 0 and
//! `2 × findings_per_asset` detections (at most [`QIDS`]`.len()`), each with its
//! own QID. Hosts without a detection are left out of detection listings, as
//! Qualys does. Everything is a pure function of `(seed, i, generation)`.

use super::{DAY, Gen, T0, h3, id_epoch, private_ip};

const BASE_ID: u64 = 1_000_000;
const SALT_HOST: u64 = 0x9A01;
const SALT_COUNT: u64 = 0x9A02;
const SALT_DET: u64 = 0x9A03;
const SALT_VOL: u64 = 0x9A04;

/// A QID of the KnowledgeBase: (qid, title, severity 1..5, type, CVEs, port, protocol).
pub type Qid = (u64, &'static str, u8, &'static str, &'static [&'static str], Option<u16>, Option<&'static str>);

pub const QIDS: [Qid; 12] = [
    (
        38173,
        "SSL Certificate - Signature Verification Failed Vulnerability",
        2,
        "Confirmed",
        &[],
        Some(443),
        Some("tcp"),
    ),
    (
        91345,
        "Microsoft Windows Security Update for March 2017",
        5,
        "Confirmed",
        &["CVE-2017-0143", "CVE-2017-0144"],
        None,
        None,
    ),
    (
        376157,
        "Apache Log4j Remote Code Execution (Log4Shell)",
        5,
        "Potential",
        &["CVE-2021-44228"],
        Some(8080),
        Some("tcp"),
    ),
    (
        38909,
        "SSH Prefix Truncation Vulnerability (Terrapin)",
        3,
        "Confirmed",
        &["CVE-2023-48795"],
        Some(22),
        Some("tcp"),
    ),
    (
        105489,
        "Google Chrome Prior to 123.0.6312.105 Multiple Vulnerabilities",
        4,
        "Confirmed",
        &["CVE-2024-3156", "CVE-2024-3159"],
        None,
        None,
    ),
    (82003, "ICMP Timestamp Request", 1, "Confirmed", &["CVE-1999-0524"], None, Some("icmp")),
    (
        42366,
        "OpenSSH Remote Unauthenticated Code Execution (regreSSHion)",
        4,
        "Potential",
        &["CVE-2024-6387"],
        Some(22),
        Some("tcp"),
    ),
    (
        38657,
        "Birthday attacks against TLS ciphers with 64bit block size (Sweet32)",
        3,
        "Confirmed",
        &["CVE-2016-2183"],
        Some(3389),
        Some("tcp"),
    ),
    (45038, "Host Scan Time - Scanner", 1, "Info", &[], None, None),
    (6, "DNS Host Name", 1, "Info", &[], None, None),
    (11827, "HTTP Security Header Not Detected", 2, "Confirmed", &[], Some(443), Some("tcp")),
    (100413, "Microsoft Internet Explorer Cumulative Security Update", 4, "Potential", &["CVE-2019-1367"], None, None),
];

/// A detection's status.
pub const STATUSES: [&str; 4] = ["New", "Active", "Fixed", "Re-Opened"];

/// One host's facts.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub index: u64,
    pub id: u64,
    pub ip: String,
    pub dns: String,
    pub netbios: String,
    pub os: &'static str,
    pub tracking: &'static str,
    pub last_scan: i64,
}

/// One detection's facts.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub qid: &'static Qid,
    pub status: &'static str,
    pub first_found: i64,
    pub last_found: i64,
}

const OSES: [&str; 4] = [
    "Windows 10 Enterprise 64 bit Edition Version 22H2",
    "Windows Server 2019 Standard",
    "Ubuntu Linux 22.04",
    "Red Hat Enterprise Linux 9.4",
];

/// The dataset at one generation.
#[derive(Clone, Debug)]
pub struct QualysData {
    pub seed: u64,
    pub size: usize,
    pub generation: u64,
    pub findings_per_asset: u32,
}

impl QualysData {
    pub fn new(seed: u64, size: usize, generation: u64, findings_per_asset: u32) -> Self {
        QualysData { seed, size, generation, findings_per_asset }
    }

    pub fn host_id(&self, index: u64) -> u64 {
        BASE_ID + 16 * index + id_epoch(self.seed, index, self.generation) % 16
    }

    /// The first host index whose ID is at least `id_min`.
    pub fn first_index_from(&self, id_min: u64) -> u64 {
        let i = id_min.saturating_sub(BASE_ID) / 16;
        if i < self.size as u64 && self.host_id(i) < id_min { i + 1 } else { i }
    }

    pub fn host(&self, index: u64) -> Host {
        let mut g = Gen::new(self.seed, SALT_HOST, index);
        let name = format!("qhost-{index:07}");
        let epoch = super::state_epoch(self.seed, index, self.generation);
        Host {
            index,
            id: self.host_id(index),
            ip: private_ip(g.next()).to_string(),
            dns: format!("{name}.corp.example.com"),
            netbios: name.to_ascii_uppercase(),
            os: OSES[g.below(OSES.len() as u64) as usize],
            tracking: if g.pct() < 60 { "QAGENT" } else { "IP" },
            last_scan: T0 + epoch as i64 * DAY - g.below(DAY as u64) as i64,
        }
    }

    /// Host `index`'s detections (any status).
    pub fn detections(&self, index: u64) -> Vec<Detection> {
        let n =
            (h3(self.seed, SALT_COUNT, index) % (2 * u64::from(self.findings_per_asset) + 1)).min(QIDS.len() as u64);
        let start = h3(self.seed, SALT_DET, index) % QIDS.len() as u64;
        (0..n)
            .map(|j| {
                let mut g = Gen::new(self.seed, SALT_DET, index << 8 | j);
                let qid = &QIDS[((start + j) % QIDS.len() as u64) as usize];
                let vol = h3(self.seed, SALT_VOL, index << 8 | j);
                let epoch = if vol.is_multiple_of(10) { self.generation / (1 + (vol >> 8) % 3) } else { 0 };
                let base = match g.pct() {
                    0..=19 => 0,
                    20..=84 => 1,
                    85..=94 => 2,
                    _ => 3,
                };
                let status = if epoch == 0 {
                    STATUSES[base]
                } else if epoch % 2 == 1 {
                    "Fixed"
                } else {
                    "Re-Opened"
                };
                let first_found = T0 - 300 * DAY + g.below(250 * DAY as u64) as i64;
                let last_found = T0 + epoch as i64 * DAY - g.below(DAY as u64) as i64 - DAY;
                Detection { qid, status, first_found, last_found }
            })
            .collect()
    }

    /// Every host ID in host-list order.
    pub fn host_ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.size as u64).map(|i| self.host_id(i))
    }

    /// Every `(host ID, QID)` a detection listing with these statuses returns, in order.
    pub fn detection_keys<'a>(&'a self, statuses: &'a [&'a str]) -> impl Iterator<Item = (u64, u64)> + 'a {
        (0..self.size as u64).flat_map(move |i| {
            let id = self.host_id(i);
            self.detections(i)
                .into_iter()
                .filter(|d| statuses.contains(&d.status))
                .map(move |d| (id, d.qid.0))
                .collect::<Vec<_>>()
        })
    }
}
