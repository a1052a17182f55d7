//! AWS EC2: the instances of each (account, region), for `DescribeInstances`.
//!
//! Accounts: [`accounts`] gives the simulator's three accounts (the first
//! owns the long-term access key; the others are reached by assuming
//! [`ROLE_NAME`] in them). Regions: [`REGIONS`]. Each (account, region) holds
//! [`AwsData::count`] instances, between half and one and a half times
//! `size`, in a fixed listing order; instance `i` of a scope is a pure
//! function of `(seed, account, region, i, generation)`, so a page is
//! rendered from an index range and nothing is held in memory. Generations
//! follow [`crate::data`]: a few instances change state or public IP, a few
//! are replaced (a new instance id in the same slot). Messiness: stopped
//! instances without a public IP, terminated ones with no addresses and an
//! empty private DNS name, Windows instances (`platform`), instances with a
//! second network interface and secondary private IPs, tags with characters
//! XML must escape.

use std::fmt::Write;

use super::{DAY, Gen, T0, h3, id_epoch, state_epoch};

/// The role the simulator lets the long-term key assume in every account.
pub const ROLE_NAME: &str = "CorralReadOnly";

/// Regions the simulator serves (others are unknown endpoints).
pub const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
];

const SALT_ACCOUNT: u64 = 0xA301;
const SALT_SCOPE: u64 = 0xA302;
const SALT_INSTANCE: u64 = 0xA303;
const SALT_ID: u64 = 0xA304;

const TYPES: [&str; 8] =
    ["t3.micro", "t3.medium", "m5.large", "m6i.xlarge", "c6g.2xlarge", "r5.large", "t4g.small", "m7i.4xlarge"];
const TEAMS: [&str; 5] = ["platform", "payments", "data & analytics", "web <edge>", "security"];

/// The simulator's accounts: 12-digit ids from the seed.
pub fn accounts(seed: u64) -> [String; 3] {
    [0u64, 1, 2].map(|i| format!("{:012}", 100_000_000_000 + h3(seed, SALT_ACCOUNT, i) % 899_999_999_999))
}

/// One instance's facts.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub index: u64,
    pub id: String,
    pub reservation: String,
    pub instance_type: &'static str,
    /// (code, name): 16 running, 80 stopped, 48 terminated.
    pub state: (u16, &'static str),
    /// Empty for a terminated instance.
    pub private_dns: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub windows: bool,
    pub launch_time: i64,
    /// Network interfaces: (id, MAC, private IPs, the first primary).
    pub enis: Vec<(String, String, Vec<String>)>,
    pub tags: Vec<(String, String)>,
}

/// The instances of one (account, region) at one generation.
#[derive(Clone, Debug)]
pub struct AwsData {
    pub seed: u64,
    pub size: usize,
    pub generation: u64,
    pub account: String,
    pub region: String,
    scope: u64,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl AwsData {
    pub fn new(seed: u64, size: usize, generation: u64, account: &str, region: &str) -> Self {
        let scope = fnv(account) ^ fnv(region).rotate_left(17);
        AwsData { seed, size, generation, account: account.into(), region: region.into(), scope }
    }

    /// Instances in this scope: between `size / 2` and `size * 3 / 2`.
    pub fn count(&self) -> u64 {
        let size = self.size as u64;
        if size == 0 {
            return 0;
        }
        size / 2 + h3(self.seed, SALT_SCOPE, self.scope) % (size + 1)
    }

    fn key(&self, index: u64) -> u64 {
        self.scope ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Instance `index`'s id (`i-` and 17 hex digits); a replaced instance gets a new one.
    pub fn instance_id(&self, index: u64) -> String {
        let epoch = id_epoch(self.seed, self.key(index), self.generation);
        let h = h3(self.seed, SALT_ID, self.key(index) ^ epoch.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        format!("i-0{:016x}", h)
    }

    /// Every instance id of the scope, in listing order.
    pub fn instance_ids(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.count()).map(|i| self.instance_id(i))
    }

    /// The instance's ARN.
    pub fn arn(&self, id: &str) -> String {
        format!("arn:aws:ec2:{}:{}:instance/{id}", self.region, self.account)
    }

    fn domain(&self) -> String {
        if self.region == "us-east-1" { "ec2.internal".into() } else { format!("{}.compute.internal", self.region) }
    }

    pub fn instance(&self, index: u64) -> Instance {
        let key = self.key(index);
        let mut g = Gen::new(self.seed, SALT_INSTANCE, key);
        let epoch = state_epoch(self.seed, key, self.generation);
        let id = self.instance_id(index);
        let ip = [10u8, g.below(256) as u8, g.below(256) as u8, 4 + g.below(250) as u8];
        let private_ip = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
        let roll = (g.pct() + epoch * 37) % 100;
        let state = match roll {
            0..=79 => (16, "running"),
            80..=94 => (80, "stopped"),
            _ => (48, "terminated"),
        };
        let terminated = state.1 == "terminated";
        let public = state.1 == "running" && g.pct() < 55;
        let public_ip = public.then(|| {
            let h = h3(self.seed, SALT_INSTANCE ^ 0xFF, key ^ epoch);
            format!(
                "{}.{}.{}.{}",
                [3, 18, 34, 52, 54][(h % 5) as usize],
                (h >> 8) as u8,
                (h >> 16) as u8,
                1 + (h >> 24) as u8 % 254
            )
        });
        let vpc = format!("vpc-{:08x}", h3(self.seed, 0xA305, self.scope ^ (index % 3)) as u32);
        let subnet = format!("subnet-{:08x}", h3(self.seed, 0xA306, self.scope ^ (index % 7)) as u32);
        let mut enis = Vec::new();
        if !terminated {
            let n = if g.pct() < 15 { 2 } else { 1 };
            for e in 0..n {
                let h = h3(self.seed, 0xA307, key ^ (e << 56));
                let mac = format!(
                    "0{:x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    (h & 0x7) * 2 + 2,
                    (h >> 8) as u8,
                    (h >> 16) as u8,
                    (h >> 24) as u8,
                    (h >> 32) as u8,
                    (h >> 40) as u8
                );
                let mut ips = if e == 0 {
                    vec![private_ip.clone()]
                } else {
                    vec![format!("10.{}.{}.{}", (h >> 48) as u8, (h >> 56) as u8, 4 + (h % 250))]
                };
                if g.pct() < 10 {
                    ips.push(format!("10.{}.{}.{}", ip[1], ip[2].wrapping_add(1), 4 + g.below(250)));
                }
                enis.push((format!("eni-0{:016x}", h3(self.seed, 0xA308, key ^ e)), mac, ips));
            }
        }
        let mut tags =
            vec![("Name".to_string(), format!("{}-{index:05}", ["web", "api", "batch", "db"][(key % 4) as usize]))];
        if g.pct() < 80 {
            tags.push(("team".into(), TEAMS[g.below(TEAMS.len() as u64) as usize].into()));
        }
        if g.pct() < 50 {
            tags.push(("env".into(), ["prod", "staging", "dev"][g.below(3) as usize].into()));
        }
        Instance {
            index,
            reservation: format!("r-0{:016x}", h3(self.seed, 0xA309, self.scope ^ (index / 3))),
            instance_type: TYPES[g.below(TYPES.len() as u64) as usize],
            state,
            private_dns: if terminated {
                String::new()
            } else {
                format!("ip-{}-{}-{}-{}.{}", ip[0], ip[1], ip[2], ip[3], self.domain())
            },
            private_ip: (!terminated).then_some(private_ip),
            public_ip,
            vpc: (!terminated).then_some(vpc),
            subnet: (!terminated).then_some(subnet),
            windows: g.pct() < 25,
            launch_time: T0 - g.below(400) as i64 * DAY + epoch as i64 * DAY - g.below(DAY as u64) as i64,
            enis,
            tags,
            id,
        }
    }

    /// `<item>` elements of the reservations holding instances `from..to`
    /// (consecutive instances of one reservation share its element).
    pub fn render_reservations(&self, out: &mut String, from: u64, to: u64, broken: Option<u64>) {
        let mut open: Option<String> = None;
        for i in from..to {
            let inst = self.instance(i);
            if open.as_deref() != Some(inst.reservation.as_str()) {
                if open.is_some() {
                    out.push_str("            </instancesSet>\n        </item>\n");
                }
                let _ = write!(
                    out,
                    "        <item>\n            <reservationId>{}</reservationId>\n            <ownerId>{}</ownerId>\n            <groupSet/>\n            <instancesSet>\n",
                    inst.reservation, self.account
                );
                open = Some(inst.reservation.clone());
            }
            let before = out.len();
            render_instance(out, &inst, &self.region);
            if broken == Some(i) {
                let bad = out[before..].replacen("</instanceType>", "</instanceTypo>", 1);
                out.truncate(before);
                out.push_str(&bad);
            }
        }
        if open.is_some() {
            out.push_str("            </instancesSet>\n        </item>\n");
        }
    }
}

/// XML text escaping.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn render_instance(out: &mut String, i: &Instance, region: &str) {
    let _ = write!(
        out,
        "                <item>\n                    <instanceId>{}</instanceId>\n                    <imageId>ami-0{:016x}</imageId>\n                    <instanceState>\n                        <code>{}</code>\n                        <name>{}</name>\n                    </instanceState>\n",
        i.id,
        i.index.wrapping_mul(0x9E37_79B9),
        i.state.0,
        i.state.1
    );
    if i.private_dns.is_empty() {
        out.push_str("                    <privateDnsName/>\n                    <dnsName/>\n");
    } else {
        let _ = writeln!(
            out,
            "                    <privateDnsName>{}</privateDnsName>\n                    <dnsName/>",
            i.private_dns
        );
    }
    let _ = write!(
        out,
        "                    <instanceType>{}</instanceType>\n                    <launchTime>{}</launchTime>\n                    <placement>\n                        <availabilityZone>{region}{}</availabilityZone>\n                        <tenancy>default</tenancy>\n                    </placement>\n",
        i.instance_type,
        super::iso_millis(i.launch_time, 0),
        ['a', 'b', 'c'][(i.index % 3) as usize]
    );
    if i.windows {
        out.push_str("                    <platform>windows</platform>\n");
    }
    out.push_str("                    <monitoring>\n                        <state>disabled</state>\n                    </monitoring>\n");
    if let Some(s) = &i.subnet {
        let _ = writeln!(out, "                    <subnetId>{s}</subnetId>");
    }
    if let Some(v) = &i.vpc {
        let _ = writeln!(out, "                    <vpcId>{v}</vpcId>");
    }
    if let Some(ip) = &i.private_ip {
        let _ = writeln!(out, "                    <privateIpAddress>{ip}</privateIpAddress>");
    }
    if let Some(ip) = &i.public_ip {
        let _ = writeln!(out, "                    <ipAddress>{ip}</ipAddress>");
    }
    out.push_str("                    <architecture>x86_64</architecture>\n                    <rootDeviceType>ebs</rootDeviceType>\n");
    if i.enis.is_empty() {
        out.push_str("                    <networkInterfaceSet/>\n");
    } else {
        out.push_str("                    <networkInterfaceSet>\n");
        for (n, (id, mac, ips)) in i.enis.iter().enumerate() {
            let _ = write!(
                out,
                "                        <item>\n                            <networkInterfaceId>{id}</networkInterfaceId>\n                            <status>in-use</status>\n                            <macAddress>{mac}</macAddress>\n                            <privateIpAddress>{}</privateIpAddress>\n                            <attachment>\n                                <deviceIndex>{n}</deviceIndex>\n                            </attachment>\n                            <privateIpAddressesSet>\n",
                ips[0]
            );
            for (k, ip) in ips.iter().enumerate() {
                let _ = write!(
                    out,
                    "                                <item>\n                                    <privateIpAddress>{ip}</privateIpAddress>\n                                    <primary>{}</primary>\n                                </item>\n",
                    k == 0
                );
            }
            out.push_str("                            </privateIpAddressesSet>\n                        </item>\n");
        }
        out.push_str("                    </networkInterfaceSet>\n");
    }
    out.push_str("                    <tagSet>\n");
    for (k, v) in &i.tags {
        let _ = write!(
            out,
            "                        <item>\n                            <key>{}</key>\n                            <value>{}</value>\n                        </item>\n",
            escape(k),
            escape(v)
        );
    }
    out.push_str("                    </tagSet>\n                </item>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_scoped() {
        let a = AwsData::new(7, 40, 0, "111122223333", "eu-west-1");
        let b = AwsData::new(7, 40, 0, "111122223333", "us-east-1");
        assert!((20..=60).contains(&a.count()));
        assert_eq!(a.instance(3), a.instance(3));
        assert_ne!(a.instance_id(3), b.instance_id(3));
        let ids: std::collections::BTreeSet<String> = a.instance_ids().collect();
        assert_eq!(ids.len() as u64, a.count(), "ids are unique");
        assert!(a.instance_ids().all(|id| id.len() == 19 && id.starts_with("i-0")));
        let accts = accounts(7);
        assert!(accts.iter().all(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())));
    }

    #[test]
    fn a_later_generation_replaces_some_ids() {
        let ids = |g| AwsData::new(7, 400, g, "111122223333", "eu-west-1").instance_ids().collect::<Vec<_>>();
        let (g0, g8) = (ids(0), ids(8));
        let changed = g0.iter().zip(&g8).filter(|(a, b)| a != b).count();
        assert!(changed > 0 && changed < 40, "{changed}");
    }
}
