//! Microsoft Graph: Intune managed devices and Entra ID users.
//!
//! Devices, mess on purpose: `ethernetMacAddress`/`wiFiMacAddress` mostly 12 bare hex
//! digits (also empty, null and other spellings), placeholder serials, Intune's null date
//! `0001-01-01T00:00:00Z`, empty `userPrincipalName` for shared devices, the all-zero
//! `azureADDeviceId`, unicode device names. About 0.4 % of listing positions repeat an
//! earlier device verbatim (same `id`): a device that moved between pages while the
//! listing was read. So the listing has `size` entries but slightly fewer distinct ids.
//!
//! Users: guests (`#EXT#` UPNs, no `mail`), disabled accounts, unicode names. The full
//! record includes `accountEnabled`, `userType`, `createdDateTime`, ... but, like the real
//! API, `GET /users` returns only the default property set unless `$select` asks.

use serde_json::{Value, json};

use super::{
    DAY, Gen, MacStyle, PLACEHOLDER_SERIALS, T0, guid, h3, id_payload, iso, mac_bytes, messy_mac, person, state_epoch,
};

const SALT_DEV: u64 = 0x6D01;
const SALT_DUP: u64 = 0x6D02;
const SALT_DSTATE: u64 = 0x6D03;
const SALT_USER: u64 = 0x6D04;
const SALT_ULIFE: u64 = 0x6D05;
const SALT_ID: u64 = 0x6D06;

/// Intune's "never" timestamp.
pub const NULL_DATE: &str = "0001-01-01T00:00:00Z";
/// Tenant domain used in generated UPNs.
pub const TENANT_DOMAIN: &str = "corralsim.onmicrosoft.com";

/// Properties `GET /v1.0/users` returns when there is no `$select`.
pub const USER_DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

#[derive(Clone, Debug)]
pub struct GraphData {
    pub seed: u64,
    pub size: usize,
    pub generation: u64,
}

impl GraphData {
    pub fn new(seed: u64, size: usize, generation: u64) -> Self {
        GraphData { seed, size, generation }
    }

    fn object_id(&self, kind: u64, index: u64) -> String {
        let payload = id_payload(self.seed, index, self.generation);
        guid(h3(self.seed, SALT_ID ^ kind, payload), h3(self.seed, SALT_ID, payload ^ kind))
    }

    fn device_source(&self, pos: u64) -> u64 {
        let is_dup = |i: u64| i > 20 && h3(self.seed, SALT_DUP, i).is_multiple_of(250);
        if !is_dup(pos) {
            return pos;
        }
        let mut src = pos - 1 - h3(self.seed, SALT_DUP, !pos) % 10;
        while is_dup(src) {
            src -= 1;
        }
        src
    }

    /// The managed device at listing position `pos`.
    pub fn device(&self, pos: u64) -> Value {
        let index = self.device_source(pos);
        let mut g = Gen::new(self.seed, SALT_DEV, index);
        let epoch = state_epoch(self.seed, index, self.generation);
        let mut st = Gen::new(self.seed ^ epoch.wrapping_mul(0x77), SALT_DSTATE, index);
        // Stable fields hang off the fixed reference instant; volatile ones move with
        // their state epoch, so a record changes only when its epoch does.
        let now = T0;
        let moved = T0 + epoch as i64 * DAY;
        let (os, manufacturer, model, os_version) = match g.pct() {
            0..=59 => {
                let (m, md) = [
                    ("Dell Inc.", "Latitude 7440"),
                    ("LENOVO", "21HD003GUS"),
                    ("HP", "HP EliteBook 840 G9"),
                    ("Microsoft Corporation", "Surface Laptop 5"),
                ][g.below(4) as usize];
                let v = ["10.0.19045.4291", "10.0.22631.3447", "10.0.22621.3296"];
                ("Windows", m, md, v[st.below(3) as usize])
            }
            60..=74 => ("iOS", "Apple", "iPhone 14", ["17.4.1", "17.5", "16.7.8"][st.below(3) as usize]),
            75..=84 => ("macOS", "Apple", "MacBookPro18,3", ["14.4.1", "13.6.6"][st.below(2) as usize]),
            _ => ("Android", "samsung", "SM-G991B", ["14", "13"][st.below(2) as usize]),
        };
        let user = self.user_index_for(&mut g);
        let shared = g.pct() < 6;
        let upn = if shared { String::new() } else { self.user_upn(user) };
        let n = index;
        let device_name = match g.pct() {
            0..=54 if os == "Windows" => format!("DESKTOP-{:07X}", g.below(0xFFF_FFFF)),
            0..=54 => format!("{}_{}_{}", upn.split('@').next().unwrap_or("user"), os, n),
            55..=69 => format!("CORP-LT-{n:05}"),
            70..=79 => format!("{}’s {}", self.user_given_name(user), model),
            80..=84 => format!("Büro-{n}"),
            85..=94 => format!("lt-{n:05}.corp.example.com"),
            _ => format!("CORP\\LT-{n:05}"),
        };
        let real_serial = match manufacturer {
            "Apple" => format!("F{:010X}", g.below(0xFF_FFFF_FFFF)),
            "samsung" => format!("R58{:08X}", g.below(0xFFFF_FFFF)),
            _ => format!("{:08X}", g.below(0xFFFF_FFFF)),
        };
        let serial = match g.pct() {
            0..=79 => real_serial,
            80..=89 => g.pick(&PLACEHOLDER_SERIALS).to_string(),
            _ => String::new(),
        };
        let wifi = match g.pct() {
            0..=74 => Value::String(messy_mac(mac_bytes(g.next()), g.pct(), MacStyle::BareUpper)),
            75..=89 => Value::String(String::new()),
            _ => Value::Null,
        };
        let ethernet = match (os, g.pct()) {
            ("Windows" | "macOS", 0..=69) => {
                Value::String(messy_mac(mac_bytes(g.next()), g.pct(), MacStyle::BareUpper))
            }
            (_, 0..=49) => Value::String(String::new()),
            _ => Value::Null,
        };
        let enrolled = now - (20 + g.below(800) as i64) * DAY + g.below(DAY as u64) as i64;
        let never_synced = g.pct() < 3;
        let last_sync = if never_synced {
            NULL_DATE.to_string()
        } else if epoch > 0 {
            iso(moved - st.below(DAY as u64) as i64)
        } else {
            iso(now - (1 + g.below(40) as i64) * DAY + g.below(DAY as u64) as i64)
        };
        let enrolled = if g.pct() < 2 { NULL_DATE.to_string() } else { iso(enrolled) };
        let aad_id =
            if g.pct() < 7 { "00000000-0000-0000-0000-000000000000".to_string() } else { guid(g.next(), g.next()) };
        let compliance =
            ["compliant", "compliant", "compliant", "noncompliant", "inGracePeriod", "unknown"][st.below(6) as usize];
        let total = [128u64, 256, 512, 1024][g.below(4) as usize] * 1_000_000_000;
        json!({
            "id": self.object_id(1, index),
            "userId": if shared { Value::Null } else { Value::String(self.user_id(user)) },
            "deviceName": device_name,
            "managedDeviceOwnerType": if g.pct() < 85 { "company" } else { "personal" },
            "enrolledDateTime": enrolled,
            "lastSyncDateTime": last_sync,
            "operatingSystem": os,
            "complianceState": compliance,
            "jailBroken": if os == "Windows" { "Unknown" } else { "False" },
            "managementAgent": "mdm",
            "osVersion": os_version,
            "easActivated": false,
            "easDeviceId": "",
            "easActivationDateTime": NULL_DATE,
            "azureADRegistered": true,
            "deviceEnrollmentType": if os == "Windows" { "windowsAzureADJoin" } else { "userEnrollment" },
            "activationLockBypassCode": Value::Null,
            "emailAddress": if shared { String::new() } else { upn.clone() },
            "azureADDeviceId": aad_id,
            "deviceRegistrationState": "registered",
            "deviceCategoryDisplayName": "Unknown Category",
            "isSupervised": false,
            "exchangeLastSuccessfulSyncDateTime": NULL_DATE,
            "exchangeAccessState": "none",
            "exchangeAccessStateReason": "none",
            "remoteAssistanceSessionUrl": Value::Null,
            "isEncrypted": st.pct() < 90,
            "userPrincipalName": upn,
            "model": model,
            "manufacturer": manufacturer,
            "imei": "",
            "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z",
            "serialNumber": serial,
            "phoneNumber": "",
            "androidSecurityPatchLevel": "",
            "userDisplayName": if shared { String::new() } else { self.user_display_name(user) },
            "wiFiMacAddress": wifi,
            "ethernetMacAddress": ethernet,
            "subscriberCarrier": "",
            "meid": "",
            "totalStorageSpaceInBytes": total,
            "freeStorageSpaceInBytes": total / 100 * (5 + st.below(80)),
            "managedDeviceName": format!("{}_{}_{}", self.user_given_name(user), os, n),
            "partnerReportedThreatState": "unknown",
            "deviceHealthAttestationState": Value::Null,
        })
    }

    fn user_index_for(&self, g: &mut Gen) -> u64 {
        g.below(self.size.max(1) as u64)
    }

    fn user_person(&self, index: u64) -> (String, String, String) {
        let mut p = Gen::new(self.seed, SALT_USER, index);
        person(&mut p, index)
    }

    fn user_is_guest(&self, index: u64) -> bool {
        h3(self.seed, SALT_USER ^ 0x99, index) % 100 < 5
    }

    fn user_upn(&self, index: u64) -> String {
        let (_, _, stem) = self.user_person(index);
        if self.user_is_guest(index) {
            format!("{stem}_partner.example#EXT#@{TENANT_DOMAIN}")
        } else {
            format!("{stem}@{TENANT_DOMAIN}")
        }
    }

    fn user_given_name(&self, index: u64) -> String {
        self.user_person(index).0
    }

    fn user_display_name(&self, index: u64) -> String {
        let (f, l, _) = self.user_person(index);
        format!("{f} {l}")
    }

    fn user_id(&self, index: u64) -> String {
        self.object_id(2, index)
    }

    /// The full user record at `index` (every property `$select` can ask for).
    pub fn user(&self, index: u64) -> Value {
        let (first, last, stem) = self.user_person(index);
        let guest = self.user_is_guest(index);
        let mut life = Gen::new(self.seed, SALT_ULIFE, index);
        let epoch = state_epoch(self.seed, index, self.generation);
        let mut st = Gen::new(self.seed ^ epoch.wrapping_mul(0x33), SALT_ULIFE, !index);
        let now = T0;
        let mail = match (guest, life.pct()) {
            (true, _) => Value::String(format!("{stem}@partner.example")),
            (false, 0..=79) => Value::String(format!("{stem}@example.com")),
            (false, 80..=89) => Value::String(format!("{stem}@example.com").to_uppercase()),
            _ => Value::Null,
        };
        let job = ["Engineer", "Sales Rep", "Analyst", "IT Admin", "Manager"];
        json!({
            "id": self.user_id(index),
            "businessPhones": if life.pct() < 50 { json!([format!("+1 555 01{:02}", life.below(100))]) } else { json!([]) },
            "displayName": format!("{first} {last}"),
            "givenName": first,
            "surname": last,
            "jobTitle": if life.pct() < 70 { Value::String(job[life.below(5) as usize].into()) } else { Value::Null },
            "mail": mail,
            "mobilePhone": Value::Null,
            "officeLocation": if life.pct() < 40 { Value::String(format!("Building {}", life.below(9))) } else { Value::Null },
            "preferredLanguage": if life.pct() < 60 { Value::String("en-US".into()) } else { Value::Null },
            "userPrincipalName": self.user_upn(index),
            "accountEnabled": st.pct() >= 8,
            "userType": if guest { "Guest" } else { "Member" },
            "createdDateTime": iso(now - (5 + life.below(2000) as i64) * DAY + life.below(DAY as u64) as i64),
            "onPremisesSyncEnabled": if life.pct() < 60 { Value::Bool(true) } else { Value::Null },
            "employeeId": if guest { Value::Null } else { Value::String(format!("{:06}", index)) },
            "department": if life.pct() < 70 { Value::String(["Engineering", "Sales", "Finance", "IT"][life.below(4) as usize].into()) } else { Value::Null },
        })
    }
}

/// Every managed device, in listing order (includes the documented repeats).
pub fn msgraph_devices(seed: u64, size: usize, generation: u64) -> Vec<Value> {
    let d = GraphData::new(seed, size, generation);
    (0..size as u64).map(|i| d.device(i)).collect()
}

/// Every user (full records), in listing order.
pub fn msgraph_users(seed: u64, size: usize, generation: u64) -> Vec<Value> {
    let d = GraphData::new(seed, size, generation);
    (0..size as u64).map(|i| d.user(i)).collect()
}

/// How many distinct assets a full sync of the dataset stores: managed
/// devices (the listing repeats some) plus users, each id once.
pub fn msgraph_asset_count(seed: u64, size: usize, generation: u64) -> usize {
    let distinct = |records: Vec<Value>| {
        records.iter().filter_map(|r| r["id"].as_str()).collect::<std::collections::BTreeSet<_>>().len()
    };
    distinct(msgraph_devices(seed, size, generation)) + distinct(msgraph_users(seed, size, generation))
}

/// Keep only the named properties of a record (`$select` / default property set).
pub fn project(record: &Value, properties: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(obj) = record.as_object() {
        for p in properties {
            if let Some(v) = obj.get(*p) {
                out.insert((*p).to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}
