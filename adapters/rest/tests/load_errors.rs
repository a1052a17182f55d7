//! A spec with a mistake is refused when loaded, naming the file, the line
//! and the problem; every shipped spec loads and declares its streams cleanly.

use corral_adapter_rest::{SpecError, load_str};
use corral_core::AdapterFactory;

const GOOD: &str = r#"
[adapter]
name = "acme"
description = "Acme devices"

[[config]]
name = "base_url"
type = "url"
required = true
description = "The API URL"

[[config]]
name = "api_key"
type = "string"
required = true
secret = true
description = "An API key"

[http]
base_url = "{config.base_url}"

[auth]
type = "bearer"
token = "{config.api_key}"

[[streams]]
name = "devices"
kind = "device"
description = "Devices"
path = "/api/devices"
query = { limit = "100" }
records = "items"
key = "id"
pagination = { type = "link_header" }
example = '{"items": [{"id": "1", "name": "h1", "mac": "aa:bb:cc:dd:ee:ff"}]}'

[streams.fields]
hostname = "name"
mac_addresses = { path = "mac", transform = "mac" }
"#;

/// The line (1-based) of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).unwrap_or_else(|| panic!("`{needle}` in the spec"));
    text[..at].matches('\n').count() + 1
}

fn refused(text: &str) -> (usize, String) {
    match load_str(text, "specs/acme.toml", Some("acme")) {
        Ok(_) => panic!("the spec should be refused:\n{text}"),
        Err(e @ SpecError::At { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("specs/acme.toml:"), "{msg}");
            (e.line().unwrap_or(0), msg)
        }
        Err(other) => panic!("expected an error at a line, got: {other}"),
    }
}

#[test]
fn the_good_spec_loads() {
    let plan = load_str(GOOD, "specs/acme.toml", Some("acme")).expect("loads");
    assert_eq!(plan.info.name, "acme");
    assert!(plan.info.problems().is_empty(), "{:?}", plan.info.problems());
    let names: Vec<&str> = plan.info.config.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["base_url", "api_key", "timeout_secs", "requests_per_minute", "max_in_flight", "keep_raw"]);
}

#[test]
fn mistakes_name_the_file_line_and_problem() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, the line holding, the message contains)
        ("records = \"items\"", "records = \"items\"\nrecrods = \"x\"", "recrods", "unknown field `recrods`"),
        ("records = \"items\"", "records = \"items..x\"", "records = \"items..x\"", "empty segment"),
        (
            "records = \"items\"",
            "records = \"data\"",
            "example =",
            "records path `data` matches no array in the example",
        ),
        (
            "hostname = \"name\"",
            "hostname = \"hostName\"",
            "hostname = \"hostName\"",
            "path `hostName` is in none of the example's records",
        ),
        ("transform = \"mac\"", "transform = \"macaddr\"", "macaddr", "unknown transform `macaddr`"),
        (
            "transform = \"mac\"",
            "transform = \"time\"",
            "transform = \"time\"",
            "transform `time` gives timestamps, but this field takes MAC addresses",
        ),
        ("hostname = \"name\"", "hostnme = \"name\"", "hostnme", "`hostnme` is not a device field"),
        (
            "query = { limit = \"100\" }",
            "query = { limit = \"100\", key = \"{config.api_key}\" }",
            "query =",
            "secret config field",
        ),
        (
            "path = \"/api/devices\"",
            "path = \"/api/{config.tenant}/devices\"",
            "path = \"/api",
            "config field `tenant`, which the spec does not declare",
        ),
        (
            "token = \"{config.api_key}\"",
            "token = \"abc123\"",
            "token = \"abc123\"",
            "must come from a secret config field",
        ),
        ("name = \"acme\"", "name = \"acme2\"", "name = \"acme2\"", "must be the file's name"),
        // Pagination mistakes name the pagination's line, not the stream's or the records'.
        (
            "pagination = { type = \"link_header\" }",
            "pagination = { type = \"link_header\", cursor = \"next\" }",
            "pagination =",
            "pagination: `cursor` does not apply to type `link_header`",
        ),
        (
            "pagination = { type = \"link_header\" }",
            "pagination = { type = \"offset\", offset_param = \"o\", size = \"10\" }",
            "pagination =",
            "pagination: type `offset` needs `limit_param`",
        ),
        (
            "pagination = { type = \"link_header\" }",
            "pagination = { type = \"page_number\", page_param = \"p\", size_param = \"s\", size = \"10\", total = \"n\", total_header = \"X-Total\" }",
            "pagination =",
            "give `total` or `total_header`, not both",
        ),
        (
            "pagination = { type = \"link_header\" }",
            "pagination = { type = \"page_number\", page_param = \"p\", size_param = \"s\", size = \"10\", first_page = 2 }",
            "pagination =",
            "`first_page` is 0 or 1",
        ),
        (
            "pagination = { type = \"link_header\" }",
            "method = \"POST\"\npagination = { type = \"next_url\", next = \"next\" }",
            "pagination =",
            "`next_url` paging needs method = \"GET\"",
        ),
    ];
    for (from, to, line_text, want) in cases {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replacen(from, to, 1);
        let (line, msg) = refused(&text);
        assert!(msg.contains(want), "{to}: {msg}");
        assert_eq!(line, line_of(&text, line_text), "{to}: {msg}");
        assert!(msg.contains(&format!("specs/acme.toml:{line}: ")), "{msg}");
    }
}

#[test]
fn every_shipped_spec_loads_with_clean_declarations() {
    let factories = corral_adapter_rest::shipped();
    assert_eq!(factories.len(), corral_adapter_rest::SHIPPED.len(), "every shipped spec loads");
    for f in factories {
        let info = f.info();
        assert!(info.problems().is_empty(), "{}: {:?}", info.name, info.problems());
        assert!(!info.notes.auth.is_empty(), "{}: says how it authenticates", info.name);
        let secrets: Vec<&str> = info.config.iter().filter(|c| c.secret).map(|c| c.name.as_str()).collect();
        assert!(!secrets.is_empty(), "{}: its credentials are secret", info.name);
    }
}

#[test]
fn config_errors_name_the_field_and_never_the_value() {
    let plan = load_str(GOOD, "specs/acme.toml", Some("acme")).expect("loads");
    let f = corral_adapter_rest::RestFactory::new(plan);
    let cases = [
        (serde_json::json!({"api_key": "hunter2"}), "config field `base_url`: is required"),
        (serde_json::json!({"base_url": "ftp://x", "api_key": "hunter2"}), "config field `base_url`"),
        (serde_json::json!({"base_url": "https://x", "api_key": 42}), "config field `api_key`: must be a string"),
        (serde_json::json!({"base_url": "https://x", "api_key": "hunter2", "timeout_secs": 0}), "timeout_secs"),
        (
            serde_json::json!({"base_url": "https://x", "api_key": "hunter2", "limit": 1}),
            "config field `limit`: unknown field",
        ),
    ];
    for (cfg, want) in cases {
        let err = f.build("c", cfg.clone()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(want), "{cfg}: {err}");
        assert!(!err.contains("hunter2") && !err.contains("42"), "{err}");
    }
    let plan = std::sync::Arc::new(f.plan().clone());
    let cfg = serde_json::json!({"base_url": "https://x.example", "api_key": "hunter2-secret"});
    let adapter = corral_adapter_rest::RestAdapter::new("c", plan, cfg).expect("valid config");
    assert!(!format!("{adapter:?}").contains("hunter2"));
}

/// The whole example of docs/DECLARATIVE.md loads, and maps its example record as the doc says.
#[test]
fn the_documented_example_loads_and_maps() {
    let doc = include_str!("../../../docs/DECLARATIVE.md");
    let start = doc.find("## A whole example").expect("the example section");
    let block = doc[start..].split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
    let plan = load_str(block, "acme-devices.toml", Some("acme-devices")).expect("the documented example loads");
    let stream = &plan.streams[0];
    let rec = serde_json::json!({"id": "d1", "name": "web-01.corp.example", "mac": "AA-BB-CC-DD-EE-FF",
        "ips": "10.0.0.5, 10.0.0.6", "os": "Ubuntu", "seen": 1714000000000u64, "tags": ["prod"]});
    let asset = stream.mapping.record("devices", &rec).expect("maps");
    let f = asset.fields_json();
    assert_eq!(f["hostname"], "web-01");
    assert_eq!(f["domain"], "corp.example");
    assert_eq!(f["mac_addresses"], serde_json::json!(["aa:bb:cc:dd:ee:ff"]));
    assert_eq!(f["ip_addresses"], serde_json::json!(["10.0.0.5", "10.0.0.6"]));
    assert_eq!(f["os"]["family"], "linux");
    assert_eq!(f["last_seen"], "2024-04-24T23:06:40Z");
    assert_eq!(f["tags"], serde_json::json!(["prod"]));
    assert_eq!(f["attributes"]["environment"], "prod");
}

/// A vendor's ceiling on concurrent requests (`rate_limit.max_in_flight_limit`)
/// binds the spec's own `max_in_flight` and every connection's.
#[test]
fn max_in_flight_stays_under_the_vendors_ceiling() {
    let with = |rate: &str| GOOD.replacen("[auth]", &format!("[rate_limit]\n{rate}\n\n[auth]"), 1);
    for (rate, want) in [
        ("max_in_flight = 8\nmax_in_flight_limit = 4", "rate_limit.max_in_flight (8) is over max_in_flight_limit (4)"),
        ("max_in_flight_limit = 2", "rate_limit.max_in_flight (4, the default) is over max_in_flight_limit (2)"),
        ("max_in_flight_limit = 0", "must be at least 1"),
    ] {
        let err = load_str(&with(rate), "specs/acme.toml", Some("acme")).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains(want)), "{rate}: {err:?}");
    }

    let plan = load_str(&with("max_in_flight = 3\nmax_in_flight_limit = 4"), "specs/acme.toml", Some("acme"))
        .expect("a spec under its ceiling loads");
    let plan = std::sync::Arc::new(plan);
    let cfg = |n: u64| serde_json::json!({"base_url": "https://x.example", "api_key": "k", "max_in_flight": n});
    for n in [1, 4] {
        assert!(corral_adapter_rest::RestAdapter::new("c", plan.clone(), cfg(n)).is_ok(), "max_in_flight {n} allowed");
    }
    let err = corral_adapter_rest::RestAdapter::new("c", plan.clone(), cfg(5)).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("config field `max_in_flight`: must be 1..=4")),
        "over the ceiling: {err:?}"
    );

    // Jamf asks for at most 5 connections: 4 data requests and a token request.
    let jamf = corral_adapter_rest::shipped().into_iter().find(|f| f.info().name == "jamf").expect("jamf ships");
    let jamf_cfg = |n: u64| {
        serde_json::json!({"base_url": "https://acme.jamfcloud.com", "username": "u", "password": "p",
                           "max_in_flight": n})
    };
    assert!(jamf.build("c", jamf_cfg(4)).is_ok(), "jamf: 4 in flight allowed");
    let err = jamf.build("c", jamf_cfg(5)).err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("`max_in_flight`: must be 1..=4")), "jamf, 5: {err:?}");
}
