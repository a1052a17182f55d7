//! `normalize` on fixture pages: field mapping, rejects, undecodable pages.

use bytes::Bytes;
use corral_adapter_okta::OktaAdapter;
use corral_adapter_okta::normalize::normalize_page;
use corral_core::fields::timestamp as at;
use corral_core::{Adapter, AssetBody, NormalizedPage, RawPage, User};
use serde_json::{Value, json};

const PAGE: &[u8] = include_bytes!("fixtures/users_page.json");

fn adapter(keep_raw: bool) -> OktaAdapter {
    OktaAdapter::from_config(
        "okta-test",
        json!({ "base_url": "https://acme.okta.com", "token": "t0ken", "keep_raw": keep_raw }),
    )
    .expect("valid config")
}

fn raw_page(body: &[u8]) -> RawPage {
    RawPage::new("users", Bytes::copy_from_slice(body), "page 1 (fixture)")
}

fn normalize(body: &[u8], keep_raw: bool) -> NormalizedPage {
    normalize_page(&raw_page(body), keep_raw)
}

fn users(page: &NormalizedPage) -> Vec<&User> {
    page.assets
        .iter()
        .map(|a| match &a.body {
            AssetBody::User(u) => u,
            other => panic!("not a user: {other:?}"),
        })
        .collect()
}

#[test]
fn maps_okta_users() {
    let page = normalize(PAGE, false);
    assert_eq!(page.page_error, None);
    let u = users(&page);
    assert_eq!(u.len(), 6);
    assert!(page.assets.iter().all(|a| a.stream == "users" && a.raw.is_none()));

    assert_eq!(
        *u[0],
        User {
            source_id: "00ub0oNGTSWTBKOLGLNR".into(),
            username: Some("isaac.brock@example.com".into()),
            email: Some("isaac.brock@example.com".into()),
            display_name: Some("Isaac Brock".into()),
            first_name: Some("Isaac".into()),
            last_name: Some("Brock".into()),
            active: Some(true),
            status: Some("ACTIVE".into()),
            created: at("2013-06-24T16:39:18Z"),
            last_login: at("2013-06-24T17:39:19Z"),
            tags: vec!["provider:ACTIVE_DIRECTORY".into()],
        }
    );
    // Staged: never activated, no login yet, no first name.
    assert_eq!(
        *u[1],
        User {
            source_id: "00u1staged000000000A".into(),
            username: Some("odegard@legacy.example.co.uk".into()),
            email: Some("odegard+contractor@example.co.uk".into()),
            display_name: Some("Ødegård".into()),
            first_name: None,
            last_name: Some("Ødegård".into()),
            active: Some(false),
            status: Some("STAGED".into()),
            created: at("2024-02-29T08:00:00Z"),
            last_login: None,
            tags: vec!["provider:OKTA".into()],
        }
    );
    // profile.displayName wins over first + last; an invalid e-mail is dropped.
    assert_eq!(u[2].display_name.as_deref(), Some("Pepe Núñez"));
    assert_eq!(u[2].email, None);
    assert_eq!(u[2].username.as_deref(), Some("jose.nunez"));
    assert_eq!(u[2].active, Some(true), "LOCKED_OUT is an active account");
    assert_eq!(u[2].last_login, at("2025-03-04T05:06:07.890Z"));
    // Placeholders and garbage become None; values are trimmed.
    assert_eq!(
        *u[3],
        User {
            source_id: "00u3suspended00000C".into(),
            username: Some("s.user@example.com".into()),
            email: Some("suspended@example.com".into()),
            active: Some(false),
            status: Some("SUSPENDED".into()),
            ..User::default()
        }
    );
    assert_eq!(*u[4], User { source_id: "00u4minimal00000000D".into(), ..User::default() });
    // Unknown status: no opinion on `active`; a profile that is not an object is ignored.
    assert_eq!(u[5].status.as_deref(), Some("SOMETHING_NEW"));
    assert_eq!(u[5].active, None);
    assert!(u[5].tags.is_empty());
}

#[test]
fn records_without_an_id_or_not_objects_are_rejects() {
    let page = normalize(PAGE, false);
    let got: Vec<(&str, &str)> = page.rejects.iter().map(|r| (r.record.as_str(), r.reason.as_str())).collect();
    assert_eq!(
        got,
        [
            ("record 3 of page 1 (fixture)", "missing_key"),
            ("record 4 of page 1 (fixture)", "missing_key"),
            ("record 5 of page 1 (fixture)", "invalid_record"),
        ]
    );
    let raw: Value =
        serde_json::from_str(page.rejects[0].raw.as_deref().expect("raw kept")).expect("raw is the record");
    assert_eq!(raw["profile"]["login"], "no.id@example.com");
    assert!(page.rejects[1].detail.contains("a number"), "{}", page.rejects[1].detail);
}

#[test]
fn keep_raw_keeps_each_record() {
    let page = adapter(true).normalize(&raw_page(PAGE));
    let raw = page.assets[0].raw.as_ref().expect("raw kept");
    assert_eq!(raw["id"], "00ub0oNGTSWTBKOLGLNR");
    assert_eq!(raw["credentials"]["provider"]["name"], "corp.example.com");
    assert!(adapter(false).normalize(&raw_page(PAGE)).assets.iter().all(|a| a.raw.is_none()));
}

#[test]
fn undecodable_pages_fail_as_a_whole() {
    let truncated = &PAGE[..PAGE.len() / 2];
    let html: &[u8] = b"<!DOCTYPE html><html><body>Service Unavailable</body></html>";
    let error_object: &[u8] = br#"{"errorCode":"E0000047","errorSummary":"API call exceeded rate limit"}"#;
    for (body, want) in [
        (truncated, "not valid JSON"),
        (html, "not valid JSON"),
        (error_object, "got an object"),
        (b"", "not valid JSON"),
    ] {
        let page = normalize(body, false);
        let err = page.page_error.unwrap_or_default();
        assert!(err.contains(want), "{err}");
        assert!(page.assets.is_empty() && page.rejects.is_empty());
    }
    let empty = normalize(b"[]", false);
    assert_eq!(empty.page_error, None);
    assert!(empty.assets.is_empty());
}

#[test]
fn simulator_pages_normalize_cleanly() {
    let sim_users = corral_sim::okta_users(17, 400, 0);
    let body = serde_json::to_vec(&sim_users).expect("serialize");
    let page = normalize(&body, false);
    assert_eq!(page.page_error, None);
    assert!(page.rejects.is_empty(), "{:?}", page.rejects);
    let u = users(&page);
    assert_eq!(u.len(), sim_users.len());
    for (user, raw) in u.iter().zip(&sim_users) {
        assert_eq!(Some(user.source_id.as_str()), raw["id"].as_str());
        assert_eq!(user.username.as_deref(), raw["profile"]["login"].as_str());
        assert_eq!(user.email, raw["profile"]["email"].as_str().map(str::to_lowercase));
        assert_eq!(user.status.as_deref(), raw["status"].as_str());
        assert_eq!(user.last_login.is_some(), raw["lastLogin"].is_string());
        assert!(user.created.is_some());
        let status = raw["status"].as_str().unwrap_or_default();
        assert_eq!(user.active, Some(!matches!(status, "STAGED" | "SUSPENDED" | "DEPROVISIONED")), "{status}");
        assert_eq!(user.tags.len(), 1);
    }
}

/// Mangled pages never panic (a panic would fail the page in the engine, but
/// must not happen at all).
#[test]
fn never_panics_on_mangled_input() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut body = PAGE.to_vec();
        let cuts = (x % 4) as usize + 1;
        for k in 0..cuts {
            let pos = (x.rotate_left(k as u32 * 11) % body.len() as u64) as usize;
            match (x >> (k * 3)) % 3 {
                0 => body[pos] = (x >> 8) as u8,
                1 => {
                    body.remove(pos);
                }
                _ => body.truncate(pos),
            }
            if body.is_empty() {
                break;
            }
        }
        let _ = normalize(&body, true);
    }
    for body in [&b"null"[..], b"[null]", b"[[]]", b"[{}]", b"[{\"id\":null}]", b"[{\"id\":\"\"}]", b"{}", b"1e999"] {
        let _ = normalize(body, true);
    }
}

/// Users carry the attributes the stream declares, of their declared types.
#[test]
fn users_carry_declared_attributes() {
    use corral_core::{AdapterFactory, AttrValue};
    let info = corral_adapter_okta::OktaFactory.info();
    assert!(info.problems().is_empty(), "{:?}", info.problems());
    let stream = info.stream("users").expect("users stream");
    let page = normalize(PAGE, false);
    for a in &page.assets {
        assert_eq!(stream.check_attributes(a), Ok(()), "{a:?}");
    }
    let first = &page.assets[0].attributes;
    assert_eq!(first.get("okta_status"), Some(&AttrValue::String("ACTIVE".into())));
    assert_eq!(first.get("credentials_provider_type"), Some(&AttrValue::String("ACTIVE_DIRECTORY".into())));
    assert_eq!(first.get("credentials_provider_name"), Some(&AttrValue::String("corp.example.com".into())));
    assert_eq!(
        first.get("password_changed"),
        corral_core::fields::timestamp("2013-07-02T21:36:25.344Z").map(AttrValue::Timestamp).as_ref()
    );
}
