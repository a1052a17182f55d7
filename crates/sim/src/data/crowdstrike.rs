//! CrowdStrike Falcon host records (`/devices/entities/devices/v2`), about 1.3 KB of JSON each.
//!
//! Mess on purpose: `mac_address` mostly dash-separated lower case but also every other
//! spelling; hostnames plain, FQDN, `DOMAIN\host`, unicode, missing; placeholder serials;
//! missing fields; about 1 % of records are the same machine as an earlier record (same
//! hostname/serial/MAC, different `device_id`, older `last_seen`: a re-installed sensor).

use serde::Serialize;

use super::{
    Buf, DAY, Gen, Hex32, Hex128, Ipv4, Iso, Mac, MacStyle, NumStr, PLACEHOLDER_SERIALS, Render, T0, h3, id_payload,
    index_from_payload, mac_bytes, mac_style, permute, private_ip, public_ip, render_as_string, state_epoch, unpermute,
};

const SALT_ID: u64 = 0xC501;
const SALT_HW: u64 = 0xC502;
const SALT_DUP: u64 = 0xC503;
const SALT_LIFE: u64 = 0xC504;
const SALT_STATE: u64 = 0xC505;

#[derive(Serialize)]
struct Policy {
    policy_type: &'static str,
    policy_id: Hex128,
    applied: bool,
    settings_hash: Hex32,
    assigned_date: Iso,
    applied_date: Iso,
}

#[derive(Serialize)]
struct DevicePolicies {
    prevention: Policy,
}

#[derive(Serialize)]
struct Meta {
    version: NumStr,
}

/// One Falcon host as the details endpoint returns it. Built from values that serialise
/// without allocating (see `data::Iso` and friends): a benchmark serves a million.
#[derive(Serialize)]
pub struct Host {
    device_id: Hex128,
    cid: Hex128,
    agent_load_flags: &'static str,
    agent_version: AgentVersion,
    bios_manufacturer: &'static str,
    bios_version: BiosVersion,
    config_id_base: &'static str,
    config_id_build: NumStr,
    config_id_platform: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_ip: Option<Ipv4>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac_address: Option<Mac>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    first_seen: Iso,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_login_timestamp: Option<Iso>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_login_user: Option<User>,
    last_seen: Iso,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_ip: Option<Ipv4>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_gateway_ip: Option<Ipv4>,
    #[serde(skip_serializing_if = "Option::is_none")]
    machine_domain: Option<&'static str>,
    major_version: &'static str,
    minor_version: &'static str,
    os_version: &'static str,
    os_build: &'static str,
    platform_id: &'static str,
    platform_name: &'static str,
    reduced_functionality_mode: &'static str,
    device_policies: DevicePolicies,
    groups: Vec<Hex128>,
    product_type_desc: &'static str,
    provision_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_manufacturer: Option<&'static str>,
    system_product_name: &'static str,
    tags: &'static [&'static str],
    modified_timestamp: Iso,
    meta: Meta,
    kernel_version: &'static str,
    chassis_type_desc: &'static str,
}

/// `7.<minor>.<build>.0`
#[derive(Clone, Copy)]
struct AgentVersion(u64, u64);

impl Render for AgentVersion {
    fn render(&self, b: &mut Buf) {
        b.str("7.");
        b.dec(self.0, 1);
        b.str(".");
        b.dec(self.1, 1);
        b.str(".0");
    }
}

#[derive(Clone, Copy)]
struct BiosVersion(u64, u64, u64);

impl Render for BiosVersion {
    fn render(&self, b: &mut Buf) {
        b.dec(self.0, 1);
        b.str(".");
        b.dec(self.1, 1);
        b.str(".");
        b.dec(self.2, 1);
    }
}

/// `userNNNN`, `CORP\\userNNNN` or `Administrator`.
#[derive(Clone, Copy)]
enum User {
    Plain(u64),
    Domain(u64),
    Admin,
}

impl Render for User {
    fn render(&self, b: &mut Buf) {
        match self {
            User::Plain(n) => {
                b.str("user");
                b.dec(*n, 4);
            }
            User::Domain(n) => {
                b.str("CORP\\user");
                b.dec(*n, 4);
            }
            User::Admin => b.str("Administrator"),
        }
    }
}

render_as_string!(AgentVersion, BiosVersion, User);

/// Per-dataset constants shared by all records.
#[derive(Clone, Debug)]
pub struct CsData {
    pub seed: u64,
    pub size: usize,
    pub generation: u64,
    cid: Hex128,
    prefix: u64,
    key: u64,
}

struct Hardware {
    hostname: Option<String>,
    serial: Option<String>,
    mac: Option<Mac>,
    platform: usize,
    manufacturer: usize,
    local_ip_h: u64,
}

const PLATFORMS: [(&str, &str, &str, &str, &str); 3] = [
    // platform_name, platform_id, product_type_desc, kernel, os_build
    ("Windows", "0", "Workstation", "10.0.22631.3447", "22631"),
    ("Mac", "1", "Workstation", "23.4.0", "23E214"),
    ("Linux", "3", "Server", "5.15.0-105-generic", "105"),
];

const WINDOWS_OS: [&str; 4] = ["Windows 10", "Windows 11", "Windows Server 2019", "Windows Server 2022"];
const MAC_OS: [&str; 3] = ["Ventura (13)", "Sonoma (14)", "Sequoia (15)"];
const LINUX_OS: [&str; 4] = ["Ubuntu 22.04", "Ubuntu 24.04", "RHEL 8.9", "Amazon Linux 2"];

const MANUFACTURERS: [(&str, &str, &str); 6] = [
    ("Dell Inc.", "Latitude 5440", "Dell Inc."),
    ("LENOVO", "20XW0026US", "LENOVO"),
    ("HP", "HP EliteBook 840 G8", "HP"),
    ("VMware, Inc.", "VMware7,1", "VMware, Inc."),
    ("Microsoft Corporation", "Virtual Machine", "Microsoft Corporation"),
    ("Apple Inc.", "MacBookPro18,3", "Apple Inc."),
];

const UNICODE_HOSTS: [&str; 6] =
    ["Büro-PC-", "café-kasse-", "收银台-", "Ñandú-ws-", "Jürgen’s MacBook Pro ", "сервер-"];

const DOMAINS: [&str; 3] = ["corp.example.com", "eu.example.net", "lab.example.org"];

impl CsData {
    pub fn new(seed: u64, size: usize, generation: u64) -> Self {
        let cid = Hex128(h3(seed, 0xC1D, 1), h3(seed, 0xC1D, 2));
        CsData { seed, size, generation, cid, prefix: h3(seed, SALT_ID, 0), key: h3(seed, SALT_ID, 1) }
    }

    /// The 32-hex `device_id` of record `index`.
    pub fn device_id(&self, index: u64) -> String {
        self.device_id_hex(index).to_string()
    }

    fn device_id_hex(&self, index: u64) -> Hex128 {
        let payload = id_payload(self.seed, index, self.generation);
        Hex128(self.prefix, permute(payload, self.key))
    }

    /// Index of a current `device_id`, or `None` if unknown (or replaced).
    pub fn index_of(&self, id: &str) -> Option<u64> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let prefix = u64::from_str_radix(id.get(..16)?, 16).ok()?;
        let tail = u64::from_str_radix(id.get(16..)?, 16).ok()?;
        if prefix != self.prefix {
            return None;
        }
        index_from_payload(self.seed, unpermute(tail, self.key), self.size, self.generation)
    }

    /// Which earlier record's machine this record reuses (itself for most records).
    fn hardware_index(&self, index: u64) -> u64 {
        let is_dup = |i: u64| i > 20 && h3(self.seed, SALT_DUP, i).is_multiple_of(100);
        if !is_dup(index) {
            return index;
        }
        let mut src = index - 1 - h3(self.seed, SALT_DUP, index ^ 0xFFFF) % 15;
        while is_dup(src) {
            src -= 1;
        }
        src
    }

    fn hardware(&self, hw: u64) -> Hardware {
        let mut g = Gen::new(self.seed, SALT_HW, hw);
        let platform = match g.pct() {
            0..=69 => 0,
            70..=84 => 1,
            _ => 2,
        };
        let manufacturer = match platform {
            1 => 5,
            2 => [3usize, 4, 0][g.below(3) as usize],
            _ => g.below(5) as usize,
        };
        let n = hw;
        let prefix = match platform {
            0 => ["WS", "LT", "SRV"][g.below(3) as usize],
            1 => "MAC",
            _ => "lnx",
        };
        let domain = DOMAINS[g.below(3) as usize];
        let hostname = match g.pct() {
            0..=49 => Some(format!("{prefix}-{n:05}")),
            50..=62 => Some(format!("{}-{n}.{domain}", prefix.to_lowercase())),
            63..=70 => Some(format!("CORP\\{prefix}-{n:05}")),
            71..=76 => Some(format!("{}{n}", g.pick(&UNICODE_HOSTS))),
            77..=84 => Some(format!("{}-{n:05}", prefix.to_lowercase())),
            85..=89 => Some(format!("{prefix}-{n:05}.{domain}").to_uppercase()),
            90..=95 => {
                let h = g.next().to_le_bytes();
                Some(format!("ip-10-{}-{}-{}.ec2.internal", h[0], h[1], h[2]))
            }
            96 => Some(String::new()),
            _ => None,
        };
        let real_serial = match manufacturer {
            5 => format!("C02{:07X}", g.below(0xFFF_FFFF)),
            3 => format!(
                "VMware-56 4d {:02x} {:02x} {:02x} 1b 2c 3d-4e 5f 60 71 82 93 a4 b5",
                g.below(256),
                g.below(256),
                g.below(256)
            ),
            1 => format!("PF{:06X}", g.below(0xFF_FFFF)),
            2 => format!("5CG{:07X}", g.below(0xFFF_FFFF)),
            _ => format!("{:07X}", g.below(0xFFF_FFFF)),
        };
        let serial = match g.pct() {
            0..=69 => Some(real_serial),
            70..=83 => Some(g.pick(&PLACEHOLDER_SERIALS).to_string()),
            84..=86 => Some(String::new()),
            87..=89 => Some(format!(" {}  ", real_serial.to_lowercase())),
            _ => None,
        };
        let mac_roll = g.pct();
        let mac_h = g.next();
        let mac = match mac_roll {
            0..=93 => Some(Mac(mac_bytes(mac_h), mac_style(g.pct(), MacStyle::DashLower))),
            94..=95 => Some(Mac([0; 6], MacStyle::DashLower)),
            _ => None,
        };
        Hardware { hostname, serial, mac, platform, manufacturer, local_ip_h: g.next() }
    }

    /// Generate record `index` (0-based position in the listing).
    pub fn host(&self, index: u64) -> Host {
        let hw_index = self.hardware_index(index);
        let hw = self.hardware(hw_index);
        let epoch = state_epoch(self.seed, index, self.generation);
        let mut life = Gen::new(self.seed, SALT_LIFE, index);
        let mut st = Gen::new(self.seed ^ epoch.wrapping_mul(0x9E37), SALT_STATE, index);
        // Stable fields hang off the fixed reference instant; volatile ones move with
        // their state epoch, so a record changes only when its epoch does.
        let now = T0;
        let moved = T0 + epoch as i64 * DAY;
        let dup = hw_index != index;
        let id_epoch = super::id_epoch(self.seed, index, self.generation);

        let age_days = 30 + life.below(900) as i64;
        let first_seen = now - age_days * DAY + (id_epoch as i64) * 2 * DAY + life.below(DAY as u64) as i64;
        let mut last_seen = if epoch > 0 {
            moved - st.below(6 * 3600) as i64
        } else {
            now - (1 + life.below(45)) as i64 * DAY + life.below(DAY as u64) as i64
        };
        if dup {
            last_seen -= 60 * DAY;
        }
        let last_seen = last_seen.max(first_seen + 60);
        let (pname, pid, ptype, kernel, build) = PLATFORMS[hw.platform];
        let os_version = match hw.platform {
            0 => {
                if ptype == "Server" || hw.manufacturer == 3 || hw.manufacturer == 4 {
                    WINDOWS_OS[2 + st.below(2) as usize]
                } else {
                    WINDOWS_OS[st.below(2) as usize]
                }
            }
            1 => MAC_OS[st.below(3) as usize],
            _ => LINUX_OS[st.below(4) as usize],
        };
        let (manu, product, bios) = MANUFACTURERS[hw.manufacturer];
        let agent_version = AgentVersion(10 + st.below(8), 17000 + st.below(2000));
        let user = match life.pct() {
            0..=59 => Some(User::Plain(life.below(5000))),
            60..=74 => Some(User::Domain(life.below(5000))),
            75..=84 => Some(User::Admin),
            _ => None,
        };
        let domain = match hw.platform {
            0 => match life.pct() {
                0..=69 => Some("corp.example.com"),
                70..=79 => Some("CORP"),
                _ => None,
            },
            _ => None,
        };
        let local_ip = (life.pct() < 95).then(|| private_ip(hw.local_ip_h ^ epoch));
        let policy = |kind: &'static str, g: &mut Gen| Policy {
            policy_type: kind,
            policy_id: Hex128(g.next(), g.next()),
            applied: g.pct() < 97,
            settings_hash: Hex32(g.next() as u32),
            assigned_date: Iso(first_seen + 3600),
            applied_date: Iso(first_seen + 3700),
        };
        let tags: &'static [&'static str] = match life.pct() {
            0..=39 => &["SensorGroupingTags/prod"],
            40..=59 => &["SensorGroupingTags/prod", "FalconGroupingTags/pci"],
            60..=69 => &["FalconGroupingTags/dev"],
            _ => &[],
        };
        let status = match life.pct() {
            0..=96 => "normal",
            97..=98 => "containment_pending",
            _ => "contained",
        };
        Host {
            device_id: self.device_id_hex(index),
            cid: self.cid,
            agent_load_flags: "0",
            agent_version,
            bios_manufacturer: bios,
            bios_version: BiosVersion(1 + life.below(3), life.below(30), life.below(9)),
            config_id_base: "65994763",
            config_id_build: NumStr(agent_version.1),
            config_id_platform: if hw.platform == 0 { "3" } else { "4" },
            external_ip: (life.pct() < 90).then(|| public_ip(life.next() ^ epoch)),
            mac_address: hw.mac,
            hostname: hw.hostname,
            first_seen: Iso(first_seen),
            last_login_timestamp: user.map(|_| Iso(last_seen - 3600)),
            last_login_user: user,
            last_seen: Iso(last_seen),
            default_gateway_ip: local_ip.map(Ipv4::gateway),
            local_ip,
            machine_domain: domain,
            major_version: "10",
            minor_version: "0",
            os_version,
            os_build: build,
            platform_id: pid,
            platform_name: pname,
            reduced_functionality_mode: "no",
            device_policies: DevicePolicies { prevention: policy("prevention", &mut life) },
            groups: (0..life.below(3)).map(|k| Hex128(h3(self.seed, 0x6A, k), h3(self.seed, 0x6B, k))).collect(),
            product_type_desc: ptype,
            provision_status: "Provisioned",
            serial_number: hw.serial,
            status,
            system_manufacturer: (life.pct() < 97).then_some(manu),
            system_product_name: product,
            tags,
            modified_timestamp: Iso(last_seen + 30),
            meta: Meta { version: NumStr(1 + life.below(5000) + epoch) },
            kernel_version: kernel,
            chassis_type_desc: match hw.manufacturer {
                3 | 4 => "Other",
                _ if hw.platform == 2 => "Rack Mount Chassis",
                _ => "Notebook",
            },
        }
    }

    pub fn host_value(&self, index: u64) -> serde_json::Value {
        serde_json::to_value(self.host(index)).unwrap_or_default()
    }
}

/// Every host of a dataset, in listing order (for small test sizes).
pub fn crowdstrike_hosts(seed: u64, size: usize, generation: u64) -> Vec<serde_json::Value> {
    let d = CsData::new(seed, size, generation);
    (0..size as u64).map(|i| d.host_value(i)).collect()
}

/// Every `device_id` of a dataset, in listing order.
pub fn crowdstrike_device_ids(seed: u64, size: usize, generation: u64) -> Vec<String> {
    let d = CsData::new(seed, size, generation);
    (0..size as u64).map(|i| d.device_id(i)).collect()
}
