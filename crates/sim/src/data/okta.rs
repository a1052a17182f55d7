//! Okta users (`/api/v1/users`).
//!
//! Mess on purpose: `lastLogin`/`activated` null for staged or never-used accounts,
//! unicode names, upper-case and `+tag` e-mails, logins that differ from e-mails,
//! several credential providers, and about 1 % of users who are the same person as an
//! earlier user under a new id (re-hired contractor). No id appears twice. DEPROVISIONED
//! users are not generated: the real list endpoint hides them by default.

use serde_json::{Value, json};

use super::{
    DAY, Gen, T0, base62, h3, id_payload, index_from_payload, iso_millis, permute, person, state_epoch, unbase62,
    unpermute,
};

const SALT_ID: u64 = 0x0C01;
const SALT_P: u64 = 0x0C02;
const SALT_DUP: u64 = 0x0C03;
const SALT_LIFE: u64 = 0x0C04;
const SALT_STATE: u64 = 0x0C05;

/// Org URL used inside records (`_links`), independent of where the simulator listens.
pub const OKTA_ORG_URL: &str = "https://corral-sim.okta.com";

#[derive(Clone, Debug)]
pub struct OktaData {
    pub seed: u64,
    pub size: usize,
    pub generation: u64,
    prefix: String,
    key: u64,
}

impl OktaData {
    pub fn new(seed: u64, size: usize, generation: u64) -> Self {
        OktaData { seed, size, generation, prefix: base62(h3(seed, SALT_ID, 0), 6), key: h3(seed, SALT_ID, 1) }
    }

    /// Okta-shaped id: `00u` + 17 base62 characters.
    pub fn user_id(&self, index: u64) -> String {
        let payload = id_payload(self.seed, index, self.generation);
        format!("00u{}{}", self.prefix, base62(permute(payload, self.key), 11))
    }

    pub fn index_of(&self, id: &str) -> Option<u64> {
        let rest = id.strip_prefix("00u")?;
        if rest.len() != 17 || rest.get(..6)? != self.prefix {
            return None;
        }
        let tail = unbase62(rest.get(6..)?)?;
        index_from_payload(self.seed, unpermute(tail, self.key), self.size, self.generation)
    }

    fn person_index(&self, index: u64) -> u64 {
        let is_dup = |i: u64| i > 20 && h3(self.seed, SALT_DUP, i).is_multiple_of(100);
        if !is_dup(index) {
            return index;
        }
        let mut src = index - 1 - h3(self.seed, SALT_DUP, !index) % 15;
        while is_dup(src) {
            src -= 1;
        }
        src
    }

    pub fn user(&self, index: u64) -> Value {
        let pidx = self.person_index(index);
        let mut p = Gen::new(self.seed, SALT_P, pidx);
        let (first, last, stem) = person(&mut p, pidx);
        let domain = ["example.com", "corp.example.com", "example.co.uk"][p.below(3) as usize];
        let mut life = Gen::new(self.seed, SALT_LIFE, index);
        let epoch = state_epoch(self.seed, index, self.generation);
        let mut st = Gen::new(self.seed ^ epoch.wrapping_mul(0x51), SALT_STATE, index);
        // Stable fields hang off the fixed reference instant; volatile ones move with
        // their state epoch, so a record changes only when its epoch does.
        let now = T0;
        let moved = T0 + epoch as i64 * DAY;

        let email = match life.pct() {
            0..=79 => format!("{stem}@{domain}"),
            80..=89 => format!("{stem}@{domain}").to_uppercase(),
            _ => format!("{stem}+contractor@{domain}"),
        };
        let login = match life.pct() {
            0..=89 => email.clone(),
            _ => format!("{stem}@legacy.{domain}"),
        };
        let status = if pidx != index {
            ["SUSPENDED", "STAGED"][life.below(2) as usize]
        } else {
            match st.pct() {
                0..=79 => "ACTIVE",
                80..=84 => "STAGED",
                85..=88 => "PROVISIONED",
                89..=91 => "PASSWORD_EXPIRED",
                92..=94 => "LOCKED_OUT",
                95..=96 => "RECOVERY",
                _ => "SUSPENDED",
            }
        };
        let created = now - (10 + life.below(1500) as i64) * DAY + life.below(DAY as u64) as i64;
        let ms = life.below(1000);
        let activated = (status != "STAGED").then(|| created + 3600);
        let last_login = match status {
            "STAGED" | "PROVISIONED" => None,
            _ if st.pct() < 8 => None,
            _ if epoch > 0 => Some(moved - st.below(DAY as u64) as i64),
            _ => Some(now - (1 + life.below(60) as i64) * DAY),
        };
        let last_updated = last_login.unwrap_or(created + 7200).max(created + 7200);
        let provider = match life.pct() {
            0..=64 => json!({"type": "OKTA", "name": "OKTA"}),
            65..=89 => json!({"type": "ACTIVE_DIRECTORY", "name": "corp.example.com"}),
            90..=97 => json!({"type": "FEDERATION", "name": "FEDERATION"}),
            _ => json!({"type": "SOCIAL", "name": "GOOGLE"}),
        };
        let id = self.user_id(index);
        let opt = |v: Option<i64>| v.map_or(Value::Null, |t| Value::String(iso_millis(t, ms)));
        json!({
            "id": id,
            "status": status,
            "created": iso_millis(created, ms),
            "activated": opt(activated),
            "statusChanged": opt(activated.map(|a| a + 60)),
            "lastLogin": opt(last_login),
            "lastUpdated": iso_millis(last_updated, ms),
            "passwordChanged": opt(activated.map(|a| a + 120)),
            "type": {"id": format!("oty{}", base62(h3(self.seed, 0x7E, 0), 17))},
            "profile": {
                "firstName": if life.pct() < 2 { Value::Null } else { Value::String(first.clone()) },
                "lastName": last,
                "mobilePhone": Value::Null,
                "secondEmail": if life.pct() < 10 { Value::String(format!("{stem}@gmail.example")) } else { Value::Null },
                "login": login,
                "email": email,
                "department": if life.pct() < 70 { Value::String(["Engineering", "Sales", "Finance", "IT"][life.below(4) as usize].into()) } else { Value::Null },
                "employeeNumber": if life.pct() < 60 { Value::String(format!("E{:06}", pidx)) } else { Value::Null },
            },
            "credentials": {
                "provider": provider,
            },
            "_links": {"self": {"href": format!("{OKTA_ORG_URL}/api/v1/users/{id}")}},
        })
    }

    /// The user behind the API token, for `/api/v1/users/me`.
    pub fn token_owner(&self) -> Value {
        let mut v = self.user(0);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("id".into(), Value::String(format!("00u{}ADMIN000000", self.prefix)));
            obj.insert("status".into(), Value::String("ACTIVE".into()));
        }
        v
    }
}

/// Every user, in listing order (for small test sizes).
pub fn okta_users(seed: u64, size: usize, generation: u64) -> Vec<Value> {
    let d = OktaData::new(seed, size, generation);
    (0..size as u64).map(|i| d.user(i)).collect()
}
