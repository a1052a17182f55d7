//! Okta user records -> [`corral_core::User`]. Pure CPU work; never panics.
//!
//! A page is the JSON array `/api/v1/users` returns. A body that is not a
//! JSON array (truncated, an HTML error page, garbage) fails the page; inside
//! a valid array, a record that is not an object or has no `id` is a reject
//! and the rest of the page still loads.

use corral_core::{Asset, NormalizedPage, RawPage, Reject, User, fields};
use serde_json::Value;

/// Statuses of accounts that can sign in (or will, once the user acts).
/// `STAGED` (never activated), `SUSPENDED` and `DEPROVISIONED` cannot.
const ACTIVE_STATUSES: &[&str] = &["ACTIVE", "PROVISIONED", "RECOVERY", "PASSWORD_EXPIRED", "LOCKED_OUT"];
const INACTIVE_STATUSES: &[&str] = &["STAGED", "SUSPENDED", "DEPROVISIONED"];

/// Normalize one page of `/api/v1/users`.
pub fn normalize_page(page: &RawPage, keep_raw: bool) -> NormalizedPage {
    let records: Vec<Value> = match serde_json::from_slice::<Value>(&page.body) {
        Ok(Value::Array(records)) => records,
        Ok(other) => {
            return NormalizedPage::page_failed(format!("expected a JSON array of users, got {}", json_type(&other)));
        }
        Err(e) => return NormalizedPage::page_failed(format!("not valid JSON: {e}")),
    };
    let mut out = NormalizedPage { assets: Vec::with_capacity(records.len()), ..Default::default() };
    for (i, record) in records.into_iter().enumerate() {
        let reject = |reason: &str, detail: String| {
            Reject::new(format!("record {i} of {}", page.locator), reason, detail)
                .with_raw(&serde_json::to_vec(&record).unwrap_or_default())
        };
        if !record.is_object() {
            out.rejects.push(reject("invalid_record", format!("expected a user object, got {}", json_type(&record))));
            continue;
        }
        match user(&record) {
            Ok(user) => {
                let asset = with_attributes(Asset::user(&page.stream, user), &record);
                let raw = keep_raw.then_some(record);
                out.assets.push(asset.with_raw(raw));
            }
            Err(detail) => out.rejects.push(reject("missing_key", detail)),
        }
    }
    out
}

/// The vendor attributes of a user (declared in [`crate::users_stream`]).
pub fn with_attributes(asset: Asset, v: &Value) -> Asset {
    let provider = v.get("credentials").and_then(|c| c.get("provider"));
    let text = |v: Option<&Value>| v.and_then(Value::as_str).and_then(fields::text);
    asset
        .with_attr_opt("okta_status", text(v.get("status")))
        .with_attr_opt("credentials_provider_type", text(provider.and_then(|p| p.get("type"))))
        .with_attr_opt("credentials_provider_name", text(provider.and_then(|p| p.get("name"))))
        .with_attr_opt("status_changed", v.get("statusChanged").and_then(fields::timestamp_json))
        .with_attr_opt("password_changed", v.get("passwordChanged").and_then(fields::timestamp_json))
}

/// Map one user object; `Err` (a detail) when it has no usable `id`.
pub fn user(v: &Value) -> Result<User, String> {
    let source_id = match v.get("id") {
        None | Some(Value::Null) => return Err("the user has no `id`".into()),
        Some(Value::String(s)) => fields::text(s).ok_or("the user's `id` is empty")?,
        Some(other) => return Err(format!("the user's `id` is {}, not a string", json_type(other))),
    };
    let profile = v.get("profile");
    let p = |key: &str| profile.and_then(|p| p.get(key)).and_then(Value::as_str);
    let first_name = p("firstName").and_then(fields::text);
    let last_name = p("lastName").and_then(fields::text);
    let display_name = p("displayName").and_then(fields::text).or_else(|| join_name(&first_name, &last_name));
    let status = str_at(v, "status").and_then(fields::text).map(|s| s.to_ascii_uppercase());
    let active = status.as_deref().and_then(|s| {
        if ACTIVE_STATUSES.contains(&s) {
            Some(true)
        } else if INACTIVE_STATUSES.contains(&s) {
            Some(false)
        } else {
            None
        }
    });
    let provider = v.get("credentials").and_then(|c| c.get("provider")).and_then(|p| p.get("type"));
    let tags = provider
        .and_then(Value::as_str)
        .and_then(fields::text)
        .map(|t| vec![format!("provider:{t}")])
        .unwrap_or_default();
    Ok(User {
        source_id,
        username: p("login").and_then(fields::text),
        email: p("email").and_then(fields::email),
        display_name,
        first_name,
        last_name,
        active,
        status,
        created: v.get("created").and_then(fields::timestamp_json),
        last_login: v.get("lastLogin").and_then(fields::timestamp_json),
        tags,
    })
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn join_name(first: &Option<String>, last: &Option<String>) -> Option<String> {
    match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(n), None) | (None, Some(n)) => Some(n.clone()),
        (None, None) => None,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
