//! Jamf Pro's computers inventory as a kit spec ([`spec`]) and its records ([`computers`]).
//!
//! What the simulator reproduces (Jamf Pro API, `v1/computers-inventory`):
//! - **Auth**: `POST /api/v1/auth/token` with HTTP Basic (`client_id:client_secret`
//!   of the [`SimConfig`](crate::SimConfig) credentials) answers
//!   `{"token": "...", "expires": "2025-06-01T12:20:00.000Z"}`: a bearer token that
//!   lives 20 minutes (`Faults::token_ttl` shortens it, `token_ttl_hidden` keeps the
//!   announced 20 minutes while the token dies early). `POST /api/v1/auth/keep-alive`
//!   with a still-valid token answers a new token and **invalidates the old one**; an
//!   expired token is refused there too (401: the client must log in with Basic
//!   again). `POST /api/v1/auth/invalidate-token` ends a token (204). Data requests
//!   take only `Authorization: Bearer`; Basic on them is a 401. Counters: endpoint
//!   labels `kit.token`, `kit.keep_alive`, `kit.invalidate`; `tokens_issued`; fault
//!   `token_expired` for each request refused with an expired token.
//! - **Listing**: `GET /api/v1/computers-inventory?page=N&page-size=M&section=...&sort=id:asc`,
//!   pages numbered from **0**, `page-size` default 100 (maximum 2000 here: the
//!   real maximum is not documented in what we have, a guess); the body is
//!   `{"totalCount": <all records>, "results": [...]}`; a page past the end has an
//!   empty `results`. `sort` is accepted and ignored (records always come in id order).
//! - **Sections**: `section=GENERAL&section=HARDWARE` (repeated, or comma-joined)
//!   picks the parts of each record: `GENERAL` → `general`, `HARDWARE` →
//!   `hardware`, `OPERATING_SYSTEM` → `operatingSystem`, `USER_AND_LOCATION` →
//!   `userAndLocation`. Without `section` only `GENERAL` is returned (as Jamf does);
//!   a section not asked for is `null`; `id` and `udid` are always there. A section
//!   name outside those four is a 400 here (the real API knows more sections, e.g.
//!   `APPLICATIONS`; they are not simulated).
//! - **Rate limits**: Jamf Pro has no request-rate limit and sends no rate-limit
//!   headers. Its scalability guidance asks clients to keep to **at most 5
//!   concurrent connections**; a real server does not refuse the sixth, it gets
//!   slower for everyone (and the server's other work suffers). The simulator makes
//!   the breach visible instead of silent: by default a request arriving while 5
//!   are already in flight is refused with **503** in Jamf's error shape and counted
//!   as fault `over_concurrency`. [`spec_with`] with [`OverLimit::Slow`] serves it
//!   slowed instead (closer to the real server, for throughput tests). Either way
//!   `Counters::max_in_flight` and `max_connections_open` show what the client did.
//! - **Errors**: `{"httpStatus": 401, "errors": [{"code", "description", "id", "field"}]}`.
//!
//! Records (`computers`): `id` (a decimal string, as Jamf sends it), `udid`
//! (uppercase UUID, stable across generations even when the record is replaced:
//! a re-enrolled Mac keeps its hardware UDID but gets a new Jamf id),
//! `general{name, lastIpAddress, lastContactTime, platform}`,
//! `hardware{make, model, modelIdentifier, serialNumber, macAddress, altMacAddress}`
//! (MACs in upper-case colon form; `altMacAddress` often `null`),
//! `operatingSystem{name, version, build}`, `userAndLocation{username, realname, email}`
//! (the email is sometimes empty).

use std::time::Duration;

use serde_json::{Value, json};

use super::{ErrorStyle, KitAuth, KitSpec, OverLimit, Pagination, RateHeaders};
use crate::data::{self, Gen};

pub const LIST_PATH: &str = "/api/v1/computers-inventory";
pub const TOKEN_PATH: &str = "/api/v1/auth/token";
pub const KEEP_ALIVE_PATH: &str = "/api/v1/auth/keep-alive";
pub const INVALIDATE_PATH: &str = "/api/v1/auth/invalidate-token";
/// A token's nominal lifetime.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(20 * 60);
/// Jamf's advised maximum of concurrent connections.
pub const MAX_CONCURRENT: usize = 5;

/// `(section name, record field)`.
pub const SECTIONS: [(&str, &str); 4] = [
    ("GENERAL", "general"),
    ("HARDWARE", "hardware"),
    ("OPERATING_SYSTEM", "operatingSystem"),
    ("USER_AND_LOCATION", "userAndLocation"),
];

/// The Jamf Pro computers-inventory API (see the module docs), refusing a
/// sixth concurrent request with 503.
pub fn spec(seed: u64) -> KitSpec {
    spec_with(seed, OverLimit::Refuse(503))
}

/// [`spec`] with another answer to a request beyond 5 in flight.
pub fn spec_with(seed: u64, over: OverLimit) -> KitSpec {
    KitSpec::new(LIST_PATH, computers(seed))
        .name("jamf")
        .auth(KitAuth::TokenFromBasic {
            token_path: TOKEN_PATH.into(),
            keep_alive_path: Some(KEEP_ALIVE_PATH.into()),
            invalidate_path: Some(INVALIDATE_PATH.into()),
            lifetime: TOKEN_LIFETIME,
        })
        .records_at(&["results"])
        .total_at(&["totalCount"])
        .pagination(Pagination::page_number("page", 0))
        .limit_param("page-size")
        .page_size(100, 2000)
        .rate_headers(RateHeaders::None)
        .retry_after(false)
        .sections("section", &SECTIONS, &["GENERAL"])
        .concurrency(MAX_CONCURRENT, over)
        .error_style(ErrorStyle::Jamf)
        .index_of(move |id, generation| index_of(seed, id, usize::MAX, generation))
}

const SALT: u64 = 0x1A3F;

/// Jamf id of record `index` at `generation`: `index + 1` for most records; a
/// replaced record (see [`crate::data`]) gets a new, larger id.
pub fn computer_id(seed: u64, index: u64, generation: u64) -> String {
    (data::id_payload(seed, index, generation) + 1).to_string()
}

/// The index of a current Jamf id among `size` records.
pub fn index_of(seed: u64, id: &str, size: usize, generation: u64) -> Option<u64> {
    let n: u64 = id.parse().ok()?;
    data::index_from_payload(seed, n.checked_sub(1)?, size, generation)
}

/// Every id served with `size` records at `generation`, in listing order
/// (computed from the ids alone, no record is generated).
pub fn ids(seed: u64, size: usize, generation: u64) -> Vec<String> {
    (0..size as u64).map(|i| computer_id(seed, i, generation)).collect()
}

const MODELS: [(&str, &str); 6] = [
    ("MacBook Pro (14-inch, 2023)", "Mac14,9"),
    ("MacBook Pro (16-inch, 2021)", "MacBookPro18,1"),
    ("MacBook Air (M2, 2022)", "Mac14,2"),
    ("Mac mini (2023)", "Mac14,3"),
    ("iMac (24-inch, M3, 2023)", "Mac15,4"),
    ("Mac Studio (2023)", "Mac14,13"),
];

const MACOS: [(&str, &str); 5] =
    [("13.6.7", "22G720"), ("14.4.1", "23E224"), ("14.5", "23F79"), ("14.6.1", "23G93"), ("15.0", "24A335")];

/// A generator of computers-inventory records with every section filled
/// (the kit nulls the sections a request did not ask for).
pub fn computers(seed: u64) -> impl Fn(u64, u64) -> Value + Send + Sync + 'static {
    move |index, generation| {
        let mut g = Gen::new(seed, SALT, index);
        let epoch = data::state_epoch(seed, index, generation);
        let udid = data::guid(g.next(), g.next()).to_ascii_uppercase();
        let (model, model_id) = MODELS[g.below(MODELS.len() as u64) as usize];
        let os = MACOS[((g.below(MACOS.len() as u64) + epoch) % MACOS.len() as u64) as usize];
        let (first, last, stem) = data::person(&mut g, index);
        let mac = data::Mac(data::mac_bytes(g.next()), data::MacStyle::ColonUpper).to_string();
        let alt = g.pct();
        let alt_mac = (alt < 30).then(|| data::Mac(data::mac_bytes(g.next()), data::MacStyle::ColonUpper).to_string());
        let serial = format!("C02{}", &data::base62(g.next(), 11)[..9]).to_ascii_uppercase();
        let ip = data::private_ip(g.next() ^ epoch.wrapping_mul(0x9E37)).to_string();
        let contact = data::T0 + epoch as i64 * data::DAY - g.below(7 * data::DAY as u64) as i64;
        let email = if g.pct() < 12 { String::new() } else { format!("{stem}@example.com") };
        let name = if g.pct() < 50 {
            format!("{first}'s {}", model.split(" (").next().unwrap_or(model))
        } else {
            format!("MAC-{index:06}")
        };
        json!({
            "id": computer_id(seed, index, generation),
            "udid": udid,
            "general": {
                "name": name,
                "lastIpAddress": ip,
                "lastContactTime": data::iso_millis(contact, g.below(1000)),
                "platform": "Mac",
            },
            "hardware": {
                "make": "Apple",
                "model": model,
                "modelIdentifier": model_id,
                "serialNumber": serial,
                "macAddress": mac,
                "altMacAddress": alt_mac,
            },
            "operatingSystem": {"name": "macOS", "version": os.0, "build": os.1},
            "userAndLocation": {"username": stem, "realname": format!("{first} {last}"), "email": email},
        })
    }
}
