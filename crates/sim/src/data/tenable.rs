//! Tenable Vulnerability Management: assets and the findings on them.
//!
//! `size` assets; asset `i` carries `findings_on(i)` findings (between 0 and
//! `2 × findings_per_asset`, stable across generations), finding `(i, j)` for
//! `j < findings_on(i)`. Everything is a pure function of
//! `(seed, i, j, generation)`: an export chunk of N assets costs the memory of
//! its N assets' findings, whatever the dataset's size, and the expected
//! dataset is walked, never stored ([`TenableData::finding_ids`] is an iterator).
//!
//! Time in the data: generation `g` "happens" at `T0 + g days`
//! ([`generation_time`], T0 = 2025-06-01T00:00:00Z), never at the wall clock. About
//! 10 % of findings are volatile: every 1 to 3 generations their state moves
//! (FIXED, then REOPENED, then FIXED ...) and `last_found` (or `last_fixed`)
//! moves to the generation where that happened; the rest keep dates before T0.
//! A vulnerability export with `since = generation_time(g - 1) + 1` therefore returns
//! exactly the findings that changed in generation `g` (and that pass the state
//! and severity filters).
//!
//! Asset uuids change for the ~2 % of assets that are "replaced" (see
//! [`crate::data`]); their findings follow them, so findings always reference
//! an asset of the same generation's asset export.

use serde_json::{Value, json};

use super::{
    DAY, Gen, MacStyle, T0, guid, h3, id_payload, index_from_payload, iso_millis, mac_bytes, messy_mac, permute,
    private_ip, unpermute,
};

const SALT_ID: u64 = 0x7E01;
const SALT_ASSET: u64 = 0x7E02;
const SALT_COUNT: u64 = 0x7E03;
const SALT_FINDING: u64 = 0x7E04;
const SALT_VOLATILE: u64 = 0x7E05;
const SALT_AGENT: u64 = 0x7E06;

/// When generation `g` happens in the data (epoch seconds).
pub fn generation_time(generation: u64) -> i64 {
    T0 + generation as i64 * DAY
}

/// A finding's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FindingState {
    Open,
    Reopened,
    Fixed,
}

impl FindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingState::Open => "OPEN",
            FindingState::Reopened => "REOPENED",
            FindingState::Fixed => "FIXED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "OPEN" => Some(FindingState::Open),
            "REOPENED" => Some(FindingState::Reopened),
            "FIXED" => Some(FindingState::Fixed),
            _ => None,
        }
    }
}

pub const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// Which findings a vulnerability export returns. `Default` is Tenable's
/// default: OPEN and REOPENED, any severity, no `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VulnFilter {
    pub since: Option<i64>,
    pub states: Vec<FindingState>,
    /// Severity ids (0 info .. 4 critical); empty: all.
    pub severities: Vec<u8>,
}

impl Default for VulnFilter {
    fn default() -> Self {
        VulnFilter { since: None, states: vec![FindingState::Open, FindingState::Reopened], severities: Vec::new() }
    }
}

impl VulnFilter {
    /// Every state, every severity.
    pub fn all() -> Self {
        VulnFilter { states: vec![FindingState::Open, FindingState::Reopened, FindingState::Fixed], ..Self::default() }
    }
}

/// The facts of one finding, before rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingFacts {
    pub asset: u64,
    pub slot: u64,
    pub state: FindingState,
    pub severity_id: u8,
    pub plugin: u64,
    /// When it last changed (what `since` compares).
    pub changed_at: i64,
}

/// The dataset at one generation.
#[derive(Clone, Debug)]
pub struct TenableData {
    pub seed: u64,
    /// Assets.
    pub size: usize,
    pub generation: u64,
    /// Mean findings per asset.
    pub findings_per_asset: u32,
    key: u64,
}

struct Plugin {
    id: u64,
    name: &'static str,
    family: &'static str,
    cves: &'static [&'static str],
    severity_id: u8,
    cvss3: f64,
    cvss2: f64,
    vpr: f64,
    port: u16,
    protocol: &'static str,
    service: &'static str,
}

const PLUGINS: [Plugin; 10] = [
    Plugin {
        id: 19506,
        name: "Nessus Scan Information",
        family: "Settings",
        cves: &[],
        severity_id: 0,
        cvss3: 0.0,
        cvss2: 0.0,
        vpr: 0.0,
        port: 0,
        protocol: "TCP",
        service: "general",
    },
    Plugin {
        id: 57582,
        name: "SSL Self-Signed Certificate",
        family: "General",
        cves: &[],
        severity_id: 2,
        cvss3: 6.5,
        cvss2: 6.4,
        vpr: 0.0,
        port: 443,
        protocol: "TCP",
        service: "www",
    },
    Plugin {
        id: 97833,
        name: "MS17-010: Security Update for Microsoft Windows SMB Server",
        family: "Windows",
        cves: &["CVE-2017-0143", "CVE-2017-0144", "CVE-2017-0145"],
        severity_id: 4,
        cvss3: 8.1,
        cvss2: 9.3,
        vpr: 9.7,
        port: 445,
        protocol: "TCP",
        service: "cifs",
    },
    Plugin {
        id: 156860,
        name: "Apache Log4j < 2.15.0 Remote Code Execution",
        family: "Misc.",
        cves: &["CVE-2021-44228"],
        severity_id: 4,
        cvss3: 10.0,
        cvss2: 9.3,
        vpr: 9.9,
        port: 8080,
        protocol: "TCP",
        service: "www",
    },
    Plugin {
        id: 187315,
        name: "SSH Terrapin Prefix Truncation Weakness",
        family: "Misc.",
        cves: &["CVE-2023-48795"],
        severity_id: 2,
        cvss3: 5.9,
        cvss2: 4.3,
        vpr: 6.1,
        port: 22,
        protocol: "TCP",
        service: "ssh",
    },
    Plugin {
        id: 51192,
        name: "SSL Certificate Cannot Be Trusted",
        family: "General",
        cves: &[],
        severity_id: 2,
        cvss3: 6.5,
        cvss2: 6.4,
        vpr: 0.0,
        port: 443,
        protocol: "TCP",
        service: "www",
    },
    Plugin {
        id: 192709,
        name: "Google Chrome < 123.0.6312.105 Multiple Vulnerabilities",
        family: "Windows",
        cves: &["CVE-2024-3156", "CVE-2024-3158", "CVE-2024-3159"],
        severity_id: 3,
        cvss3: 8.8,
        cvss2: 6.8,
        vpr: 7.4,
        port: 445,
        protocol: "TCP",
        service: "cifs",
    },
    Plugin {
        id: 10114,
        name: "ICMP Timestamp Request Remote Date Disclosure",
        family: "General",
        cves: &["CVE-1999-0524"],
        severity_id: 1,
        cvss3: 0.0,
        cvss2: 2.1,
        vpr: 4.2,
        port: 0,
        protocol: "ICMP",
        service: "general",
    },
    Plugin {
        id: 201218,
        name: "OpenSSH < 9.8 RCE (regreSSHion)",
        family: "Misc.",
        cves: &["CVE-2024-6387"],
        severity_id: 3,
        cvss3: 8.1,
        cvss2: 9.3,
        vpr: 8.4,
        port: 22,
        protocol: "TCP",
        service: "ssh",
    },
    Plugin {
        id: 42873,
        name: "SSL Medium Strength Cipher Suites Supported (SWEET32)",
        family: "General",
        cves: &["CVE-2016-2183"],
        severity_id: 3,
        cvss3: 7.5,
        cvss2: 5.0,
        vpr: 5.1,
        port: 3389,
        protocol: "TCP",
        service: "msrdp",
    },
];

const SOFTWARE: [&str; 10] = [
    "cpe:/a:google:chrome:126.0.6478.127",
    "cpe:/a:mozilla:firefox:127.0.2",
    "cpe:/a:microsoft:edge:126.0.2592.87",
    "cpe:/a:openbsd:openssh:8.9p1",
    "cpe:/a:apache:log4j:2.14.1",
    "cpe:/a:oracle:jre:1.8.0_381",
    "cpe:/a:7-zip:7-zip:23.01",
    "cpe:/a:python:python:3.11.9",
    "cpe:/a:openssl:openssl:3.0.13",
    "cpe:/a:zoom:zoom:6.0.11",
];

const OSES: [&str; 5] = [
    "Microsoft Windows 10 Enterprise",
    "Microsoft Windows Server 2019",
    "Linux Kernel 5.15 on Ubuntu 22.04",
    "macOS 14.5",
    "Red Hat Enterprise Linux 9",
];

impl TenableData {
    pub fn new(seed: u64, size: usize, generation: u64, findings_per_asset: u32) -> Self {
        TenableData {
            seed,
            size,
            generation,
            findings_per_asset: findings_per_asset.min(127),
            key: h3(seed, SALT_ID, 0),
        }
    }

    /// Asset `i`'s uuid (a new one when the asset is replaced).
    pub fn asset_uuid(&self, index: u64) -> String {
        let payload = id_payload(self.seed, index, self.generation);
        guid(permute(payload, self.key), h3(self.seed, SALT_ID, payload))
    }

    /// The index of a current asset uuid.
    pub fn asset_index(&self, uuid: &str) -> Option<u64> {
        let hex: String = uuid.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return None;
        }
        let hi = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
        // `guid` forces the version nibble: try the 16 values it hid.
        (0..16u64).find_map(|nib| {
            let candidate = (hi & !0xF000) | (nib << 12);
            let payload = unpermute(candidate, self.key);
            let index = index_from_payload(self.seed, payload, self.size, self.generation)?;
            (self.asset_uuid(index) == uuid).then_some(index)
        })
    }

    /// Every asset uuid in export order.
    pub fn asset_ids(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.size as u64).map(|i| self.asset_uuid(i))
    }

    /// How many findings asset `i` carries (any state).
    pub fn findings_on(&self, asset: u64) -> u64 {
        h3(self.seed, SALT_COUNT, asset) % (2 * u64::from(self.findings_per_asset) + 1)
    }

    fn volatile(&self, asset: u64, slot: u64) -> (u64, u64) {
        let h = h3(self.seed, SALT_VOLATILE, asset << 8 | slot);
        if h.is_multiple_of(10) {
            let period = 1 + (h >> 8) % 3;
            (self.generation / period, period)
        } else {
            (0, 1)
        }
    }

    /// The facts of finding `(asset, slot)`.
    pub fn facts(&self, asset: u64, slot: u64) -> FindingFacts {
        let mut g = Gen::new(self.seed, SALT_FINDING, asset << 8 | slot);
        let plugin = g.below(PLUGINS.len() as u64);
        let roll = g.pct();
        let base_last = T0 - g.below(20 * DAY as u64) as i64 - DAY;
        let (epoch, period) = self.volatile(asset, slot);
        let (state, changed_at) = if epoch == 0 {
            let state = match roll {
                0..=84 => FindingState::Open,
                85..=94 => FindingState::Fixed,
                _ => FindingState::Reopened,
            };
            (state, base_last)
        } else {
            let state = if epoch % 2 == 1 { FindingState::Fixed } else { FindingState::Reopened };
            (state, generation_time(epoch * period) - g.below(3600) as i64)
        };
        FindingFacts { asset, slot, state, severity_id: PLUGINS[plugin as usize].severity_id, plugin, changed_at }
    }

    /// Whether a finding passes `filter`.
    pub fn passes(facts: &FindingFacts, filter: &VulnFilter) -> bool {
        filter.states.contains(&facts.state)
            && (filter.severities.is_empty() || filter.severities.contains(&facts.severity_id))
            && filter.since.is_none_or(|s| facts.changed_at >= s)
    }

    /// The findings on `assets` that pass `filter`, in export order.
    pub fn findings_in(
        &self,
        assets: std::ops::Range<u64>,
        filter: &VulnFilter,
    ) -> impl Iterator<Item = FindingFacts> + '_ {
        let filter = filter.clone();
        assets
            .flat_map(move |a| (0..self.findings_on(a)).map(move |s| (a, s)))
            .map(|(a, s)| self.facts(a, s))
            .filter(move |f| Self::passes(f, &filter))
    }

    /// The finding id of a finding (a uuid, stable while its asset keeps its uuid).
    pub fn finding_id(&self, asset: u64, slot: u64) -> String {
        let payload = id_payload(self.seed, asset, self.generation);
        guid(h3(self.seed, SALT_FINDING ^ 0xF1, payload), h3(self.seed, SALT_FINDING ^ 0xF2, payload << 8 | slot))
    }

    /// Every finding id an export with `filter` returns, in export order (lazily).
    pub fn finding_ids<'a>(&'a self, filter: &VulnFilter) -> impl Iterator<Item = String> + 'a {
        self.findings_in(0..self.size as u64, filter).map(|f| self.finding_id(f.asset, f.slot))
    }

    /// How many findings an export with `filter` returns (walks the dataset, holds nothing).
    pub fn finding_count(&self, filter: &VulnFilter) -> u64 {
        self.findings_in(0..self.size as u64, filter).count() as u64
    }

    fn asset_basics(&self, index: u64) -> (Gen, String, String, String, String, Option<String>) {
        let mut g = Gen::new(self.seed, SALT_ASSET, index);
        let host = format!("host-{index:07}");
        let fqdn = format!("{host}.corp.example.com");
        let ip = private_ip(g.next()).to_string();
        let mac = messy_mac(mac_bytes(g.next()), 0, MacStyle::ColonLower);
        let agent = (g.pct() < 70)
            .then(|| guid(h3(self.seed, SALT_AGENT, index), h3(self.seed, SALT_AGENT, !index)).replace('-', ""));
        (g, host, fqdn, ip, mac, agent)
    }

    /// Asset `i` as the asset export serves it (identifiers are arrays).
    pub fn asset(&self, index: u64) -> Value {
        let (mut g, host, fqdn, ip, mac, agent) = self.asset_basics(index);
        let os = OSES[g.below(OSES.len() as u64) as usize];
        let first_seen = T0 - 200 * DAY + g.below(150 * DAY as u64) as i64;
        let (epoch, _) = self.volatile(index, 255);
        let last_seen = T0 + epoch as i64 * DAY - g.below(DAY as u64) as i64;
        let n_soft = g.below(6) as usize;
        let start = g.below(SOFTWARE.len() as u64) as usize;
        let software: Vec<&str> = (0..n_soft).map(|k| SOFTWARE[(start + k) % SOFTWARE.len()]).collect();
        let cloud = g.pct();
        let location = ["HQ", "Branch", "DC-1"][g.below(3) as usize];
        let aws = (cloud < 10).then(|| format!("i-{:017x}", g.next() >> 4));
        json!({
            "id": self.asset_uuid(index),
            "has_agent": agent.is_some(),
            "has_plugin_results": true,
            "agent_uuid": agent,
            "created_at": iso_millis(first_seen, 0),
            "updated_at": iso_millis(last_seen, 0),
            "first_seen": iso_millis(first_seen, 0),
            "last_seen": iso_millis(last_seen, 0),
            "terminated_at": null,
            "deleted_at": null,
            "ipv4s": [ip],
            "ipv6s": [],
            "fqdns": [fqdn],
            "hostnames": [host],
            "netbios_names": [host.to_ascii_uppercase()],
            "mac_addresses": [mac],
            "operating_systems": [os],
            "system_types": [if os.contains("Server") { "general-purpose" } else { "workstation" }],
            "network_interfaces": [{"name": "eth0", "mac_addresses": [mac], "ipv4s": [ip], "ipv6s": [], "fqdns": [fqdn]}],
            "installed_software": software,
            "aws_ec2_instance_id": aws,
            "azure_vm_id": null,
            "serial_number": format!("VMware-{:016x}", g.next()),
            "sources": [{"name": if agent.is_some() { "NESSUS_AGENT" } else { "NESSUS_SCAN" }, "first_seen": iso_millis(first_seen, 0), "last_seen": iso_millis(last_seen, 0)}],
            "tags": [{"key": "Location", "value": location, "uuid": guid(h3(self.seed, 0x7E07, 1), 1), "added_by": "corral-sim", "added_at": iso_millis(T0 - 300 * DAY, 0)}],
        })
    }

    /// Finding `(asset, slot)` as the vulnerability export serves it; `output_bytes`
    /// pads the plugin output (real outputs reach tens of KB).
    pub fn finding(&self, facts: &FindingFacts, output_bytes: usize) -> Value {
        let (mut g, host, fqdn, ip, mac, agent) = self.asset_basics(facts.asset);
        let os = OSES[g.below(OSES.len() as u64) as usize];
        let p = &PLUGINS[facts.plugin as usize % PLUGINS.len()];
        let mut fg = Gen::new(self.seed, SALT_FINDING ^ 0xF3, facts.asset << 8 | facts.slot);
        let first_found = T0 - 300 * DAY + fg.below(250 * DAY as u64) as i64;
        let (last_found, last_fixed) = match facts.state {
            FindingState::Fixed => (facts.changed_at - DAY, Some(facts.changed_at)),
            _ => (facts.changed_at, None),
        };
        let mut output = format!("Plugin {} found on {host} ({ip}).\n", p.id);
        while output.len() < output_bytes {
            output.push_str("Remote version : 1.2.3\nFixed version : 1.2.4\n");
        }
        let score = |v: f64| if v > 0.0 { json!(v) } else { Value::Null };
        json!({
            "finding_id": self.finding_id(facts.asset, facts.slot),
            "asset": {
                "uuid": self.asset_uuid(facts.asset),
                "hostname": host,
                "fqdn": fqdn,
                "ipv4": ip,
                "ipv6": null,
                "mac_address": mac,
                "netbios_name": host.to_ascii_uppercase(),
                "operating_system": [os],
                "agent_uuid": agent,
                "device_type": "general-purpose",
            },
            "plugin": {
                "id": p.id,
                "name": p.name,
                "family": p.family,
                "cve": p.cves,
                "cvss3_base_score": score(p.cvss3),
                "cvss_base_score": score(p.cvss2),
                "vpr": if p.vpr > 0.0 { json!({"score": p.vpr}) } else { json!({}) },
                "synopsis": format!("The remote host is affected by: {}", p.name),
                "solution": "Apply the vendor's update.",
            },
            "port": {"port": p.port, "protocol": p.protocol, "service": p.service},
            "severity": SEVERITIES[p.severity_id as usize],
            "severity_id": p.severity_id,
            "state": facts.state.as_str(),
            "first_found": iso_millis(first_found, 0),
            "last_found": iso_millis(last_found, 0),
            "last_fixed": last_fixed.map(|t| iso_millis(t, 0)),
            "indexed": iso_millis(facts.changed_at, 0),
            "output": output,
            "scan": {"uuid": guid(h3(self.seed, 0x7E08, self.generation), 7), "started_at": iso_millis(generation_time(self.generation) - 7200, 0)},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_uuids_decode_and_replaced_assets_change_uuid() {
        let d = TenableData::new(3, 500, 0, 4);
        for i in [0, 1, 77, 499] {
            assert_eq!(d.asset_index(&d.asset_uuid(i)), Some(i));
        }
        assert_eq!(d.asset_index("not-a-uuid"), None);
        let later = (1..=8).map(|g| TenableData::new(3, 500, g, 4)).find(|l| l.asset_ids().ne(d.asset_ids()));
        assert!(later.is_some(), "some generation replaces an asset");
    }

    #[test]
    fn since_returns_exactly_the_findings_changed_in_a_generation() {
        let g2 = TenableData::new(4, 300, 2, 4);
        let g3 = TenableData::new(4, 300, 3, 4);
        let since = VulnFilter { since: Some(generation_time(2) + 1), ..VulnFilter::all() };
        let returned: Vec<(u64, u64)> = g3.findings_in(0..300, &since).map(|f| (f.asset, f.slot)).collect();
        let changed: Vec<(u64, u64)> = (0..300)
            .flat_map(|a| (0..g3.findings_on(a)).map(move |s| (a, s)))
            .filter(|(a, s)| g2.facts(*a, *s) != g3.facts(*a, *s))
            .collect();
        assert!(!changed.is_empty());
        assert_eq!(returned, changed);
        let all = g3.finding_count(&VulnFilter::all());
        assert!(all > 900 && all < 1500, "about 4 per asset: {all}");
        let default = g3.finding_count(&VulnFilter::default());
        assert!(default < all, "FIXED findings only come when asked for");
    }
}
