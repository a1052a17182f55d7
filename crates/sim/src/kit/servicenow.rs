//! ServiceNow's Table API on `cmdb_ci_computer` as a kit spec ([`spec`]) and its
//! records ([`computers`]).
//!
//! What the simulator reproduces:
//! - **Auth**: HTTP Basic (`client_id:client_secret` of the
//!   [`SimConfig`](crate::SimConfig) credentials as user and password) or an OAuth
//!   bearer token from `POST /oauth_token.do` (form `grant_type=client_credentials`,
//!   `client_id`, `client_secret`; answers `{"access_token", "token_type", "expires_in": 1800}`),
//!   chosen by [`Auth`]; `Auth::Either` takes both on the same endpoint, as an
//!   instance does.
//! - **Listing**: `GET /api/now/table/cmdb_ci_computer?sysparm_offset=&sysparm_limit=`
//!   → `{"result": [...]}`. The client counts offsets; `sysparm_limit` defaults to
//!   and is capped at 10,000. Every page carries `X-Total-Count` (all records) and
//!   ONE `Link` header, comma-joined: `<url>;rel="first",<url>;rel="prev",<url>;rel="next",<url>;rel="last"`
//!   (no `prev` on the first page, no `next` on the last); each URL repeats the
//!   request's other parameters. An offset past the end is an empty `result`.
//! - `sysparm_query`: only `ORDERBY<field>` terms joined by `^` are accepted (the
//!   order is always the table's, by index); anything else, `ORDERBYDESC`
//!   included, is a 400 "not simulated" rather than silently ignored.
//!   `sysparm_fields=a,b` returns only those fields (unknown names are left out).
//! - **Display values**: `sysparm_display_value=false` (default) gives values and
//!   references as `{"link", "value"}` (the sys_id); `true` gives display values
//!   (choice labels, dates in the user's time zone, here UTC-7) and references as
//!   `{"display_value", "link"}`; `all` gives EVERY field as
//!   `{"display_value", "value"}` and references with `link` too.
//!   `sysparm_exclude_reference_link=true` makes references bare strings. An
//!   empty reference is `""`. Every value is a string, numbers and booleans too.
//!   Reference fields: `assigned_to` (sys_user), `company` and `manufacturer`
//!   (core_company); choice fields `install_status`, `operational_status`,
//!   `sys_class_name`; dates `sys_updated_on`, `sys_created_on`
//!   (`YYYY-MM-DD HH:MM:SS`, UTC in the value).
//! - **Rate limits**: with a rate limit, every answer has `X-RateLimit-Limit` and
//!   `X-RateLimit-Reset` (epoch seconds; no remaining count), and a request over
//!   it is **429** with `Retry-After` (seconds). Fixed windows (ServiceNow's
//!   rules count per hour).
//! - **Errors**: `{"error": {"message", "detail"}, "status": "failure"}`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ErrorStyle, KitAuth, KitSpec, Pagination, RateHeaders, ResetStyle};
use crate::data::{self, Gen};

pub const LIST_PATH: &str = "/api/now/table/cmdb_ci_computer";
pub const TOKEN_PATH: &str = "/oauth_token.do";
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(1800);

/// How clients authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Basic,
    OAuth,
    /// Basic or an OAuth token.
    Either,
}

/// The Table API on `cmdb_ci_computer` (see the module docs).
pub fn spec(seed: u64, auth: Auth) -> KitSpec {
    let oauth = KitAuth::oauth2(TOKEN_PATH, TOKEN_LIFETIME);
    let auth = match auth {
        Auth::Basic => KitAuth::Basic,
        Auth::OAuth => oauth,
        Auth::Either => KitAuth::AnyOf(vec![KitAuth::Basic, oauth]),
    };
    KitSpec::new(LIST_PATH, computers(seed))
        .name("servicenow")
        .auth(auth)
        .records_at(&["result"])
        .pagination(Pagination::offset_limit("sysparm_offset"))
        .limit_param("sysparm_limit")
        .page_size(10_000, 10_000)
        .offset_links(true)
        .total_header("X-Total-Count")
        .rate_headers(RateHeaders::named(Some("X-RateLimit-Limit"), None, Some("X-RateLimit-Reset"), ResetStyle::Epoch))
        .retry_after(true)
        .display_values("sysparm_display_value", "sysparm_exclude_reference_link")
        .fields_param("sysparm_fields")
        .param_check(check_params)
        .id_field("sys_id")
        .error_style(ErrorStyle::ServiceNow)
        .index_of(move |id, generation| index_of(seed, id, usize::MAX, generation))
}

fn check_params(pairs: &[(String, String)]) -> Result<(), String> {
    for (k, v) in pairs {
        if k != "sysparm_query" {
            continue;
        }
        for term in v.split('^').map(str::trim).filter(|t| !t.is_empty()) {
            let field = term.strip_prefix("ORDERBY").filter(|f| !f.starts_with("DESC"));
            if !field.is_some_and(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
                return Err(format!("sysparm_query term {term:?} is not simulated (only ORDERBY<field>)"));
            }
        }
    }
    Ok(())
}

const SALT: u64 = 0x5E41;
const SALT_KEY: u64 = 0x5E42;

/// sys_id of record `index` at `generation`: 32 hex digits; a replaced record gets a new one.
pub fn sys_id(seed: u64, index: u64, generation: u64) -> String {
    let payload = data::id_payload(seed, index, generation);
    let hi = data::permute(payload, data::h3(seed, SALT_KEY, 0));
    format!("{hi:016x}{:016x}", data::h3(seed, SALT_KEY, hi))
}

/// The index of a current sys_id among `size` records.
pub fn index_of(seed: u64, id: &str, size: usize, generation: u64) -> Option<u64> {
    if id.len() != 32 || sys_id_check(seed, id).is_none() {
        return None;
    }
    let hi = u64::from_str_radix(id.get(..16)?, 16).ok()?;
    data::index_from_payload(seed, data::unpermute(hi, data::h3(seed, SALT_KEY, 0)), size, generation)
}

fn sys_id_check(seed: u64, id: &str) -> Option<()> {
    let hi = u64::from_str_radix(id.get(..16)?, 16).ok()?;
    let lo = u64::from_str_radix(id.get(16..)?, 16).ok()?;
    (lo == data::h3(seed, SALT_KEY, hi)).then_some(())
}

/// Every sys_id served with `size` records at `generation`, in listing order.
pub fn ids(seed: u64, size: usize, generation: u64) -> Vec<String> {
    (0..size as u64).map(|i| sys_id(seed, i, generation)).collect()
}

/// `YYYY-MM-DD HH:MM:SS`, ServiceNow's date-time form.
fn glide_time(secs: i64) -> String {
    data::iso(secs).trim_end_matches('Z').replace('T', " ")
}

fn hex32(a: u64, b: u64) -> String {
    format!("{a:016x}{b:016x}")
}

fn reference(table: &str, id: String, name: String) -> Value {
    json!({"value": id, "display_value": name, "link": format!("/api/now/table/{table}/{id}")})
}

const OSES: [(&str, &str); 5] = [
    ("Windows 10 Enterprise", "10.0.19045"),
    ("Windows 11 Enterprise", "10.0.22631"),
    ("Windows Server 2022 Standard", "10.0.20348"),
    ("Linux Red Hat", "9.4"),
    ("Mac OS 10 (OS/X)", "14.5"),
];

const COMPANIES: [&str; 4] = ["ACME North America", "ACME EMEA", "ACME APAC", "ACME Corporation"];
const MANUFACTURERS: [&str; 4] = ["Dell Inc.", "Lenovo", "HP", "Apple"];
const INSTALL: [(&str, &str); 4] = [("1", "Installed"), ("1", "Installed"), ("6", "In Stock"), ("7", "Retired")];

/// A generator of `cmdb_ci_computer` records in the kit's display-value form
/// (see [`crate::kit::DisplayValues`]).
pub fn computers(seed: u64) -> impl Fn(u64, u64) -> Value + Send + Sync + 'static {
    move |index, generation| {
        let mut g = Gen::new(seed, SALT, index);
        let epoch = data::state_epoch(seed, index, generation);
        let (os, os_version) = OSES[g.below(OSES.len() as u64) as usize];
        let name = format!("{}-{index:06}", if os.starts_with("Windows Server") { "SRV" } else { "WS" });
        let fqdn = format!("{}.corp.example.com", name.to_ascii_lowercase());
        let mac = data::messy_mac(data::mac_bytes(g.next()), g.pct(), data::MacStyle::ColonLower);
        let ip = data::private_ip(g.next() ^ epoch.wrapping_mul(0x51ED)).to_string();
        let serial = if g.pct() < 3 {
            data::PLACEHOLDER_SERIALS[g.below(5) as usize].to_string()
        } else {
            data::base62(g.next(), 10).to_ascii_uppercase()
        };
        let (first, last, _) = data::person(&mut g, index);
        let assigned = if g.pct() < 15 {
            json!({"value": "", "display_value": "", "link": "/api/now/table/sys_user/"})
        } else {
            reference("sys_user", hex32(data::h3(seed, 0x5E43, index), g.next()), format!("{first} {last}"))
        };
        let c = g.below(COMPANIES.len() as u64);
        let company = reference("core_company", hex32(data::h3(seed, 0x5E44, c), c), COMPANIES[c as usize].into());
        let m = g.below(MANUFACTURERS.len() as u64);
        let manufacturer =
            reference("core_company", hex32(data::h3(seed, 0x5E45, m), m), MANUFACTURERS[m as usize].into());
        let (status, status_label) = INSTALL[g.below(INSTALL.len() as u64) as usize];
        let created = data::T0 - 400 * data::DAY + g.below(300 * data::DAY as u64) as i64;
        let updated = data::T0 + epoch as i64 * data::DAY - g.below(30 * data::DAY as u64) as i64;
        let when = |t: i64| json!({"value": glide_time(t), "display_value": glide_time(t - 7 * 3600)});
        json!({
            "sys_id": sys_id(seed, index, generation),
            "name": name,
            "fqdn": fqdn,
            "dns_domain": "corp.example.com",
            "serial_number": serial,
            "mac_address": mac,
            "ip_address": ip,
            "os": os,
            "os_version": os_version,
            "asset_tag": format!("P{:07}", index),
            "cpu_count": (2u64 << g.below(4)).to_string(),
            "ram": (4096u64 << g.below(4)).to_string(),
            "virtual": if g.pct() < 20 { "true" } else { "false" },
            "assigned_to": assigned,
            "company": company,
            "manufacturer": manufacturer,
            "install_status": {"value": status, "display_value": status_label},
            "operational_status": {"value": "1", "display_value": "Operational"},
            "sys_class_name": {"value": "cmdb_ci_computer", "display_value": "Computer"},
            "sys_created_on": when(created),
            "sys_updated_on": when(updated),
        })
    }
}
