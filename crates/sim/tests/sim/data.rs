use std::collections::HashSet;

use corral_sim::{NULL_DATE, crowdstrike_hosts, msgraph_devices, msgraph_users, okta_users};
use serde_json::Value;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

#[test]
fn datasets_are_deterministic_and_seeded() {
    assert_eq!(crowdstrike_hosts(1, 50, 0), crowdstrike_hosts(1, 50, 0));
    assert_ne!(crowdstrike_hosts(1, 50, 0), crowdstrike_hosts(2, 50, 0));
    assert_eq!(okta_users(3, 50, 1), okta_users(3, 50, 1));
    assert_eq!(msgraph_devices(3, 50, 1), msgraph_devices(3, 50, 1));
    // A prefix of a bigger dataset is the smaller dataset.
    assert_eq!(crowdstrike_hosts(1, 100, 0)[..50], crowdstrike_hosts(1, 50, 0)[..]);
}

#[test]
fn crowdstrike_records_are_big_and_messy() {
    let hosts = crowdstrike_hosts(1, 3000, 0);
    let bytes: usize = hosts.iter().map(|h| h.to_string().len()).sum();
    let avg = bytes / hosts.len();
    assert!((1100..=1600).contains(&avg), "average host is {avg} bytes");
    let macs: Vec<&str> = hosts.iter().map(|h| s(&h["mac_address"])).collect();
    assert!(macs.iter().filter(|m| m.len() == 17 && m.contains('-')).count() > 1500);
    assert!(macs.iter().any(|m| m.contains(':')));
    assert!(macs.iter().any(|m| m.len() == 14 && m.contains('.')));
    assert!(macs.iter().any(|m| m.len() == 12));
    assert!(macs.iter().any(|m| m.chars().any(|c| c.is_ascii_uppercase())));
    let names: Vec<&str> = hosts.iter().map(|h| s(&h["hostname"])).collect();
    assert!(names.iter().any(|n| n.contains('\\')));
    assert!(names.iter().any(|n| n.ends_with(".corp.example.com")));
    assert!(names.iter().any(|n| !n.is_ascii()));
    assert!(hosts.iter().any(|h| h.get("hostname").is_none()));
    let serials: Vec<&str> = hosts.iter().map(|h| s(&h["serial_number"])).collect();
    for placeholder in ["To be filled by O.E.M.", "0", "Default string"] {
        assert!(serials.contains(&placeholder), "{placeholder}");
    }
    assert!(hosts.iter().any(|h| h.get("serial_number").is_none()));
    // Re-installed sensors: same serial and hostname under another device_id.
    let mut seen = HashSet::new();
    let dups = hosts
        .iter()
        .filter(|h| h["serial_number"].as_str().is_some_and(|s| s.len() > 6))
        .filter(|h| !seen.insert((s(&h["hostname"]).to_string(), s(&h["serial_number"]).to_string())))
        .count();
    assert!(dups > 5, "{dups} duplicate machines");
}

#[test]
fn generations_change_some_records_and_replace_a_few() {
    let g0 = crowdstrike_hosts(8, 2000, 0);
    let g3 = crowdstrike_hosts(8, 2000, 3);
    let changed = g0.iter().zip(&g3).filter(|(a, b)| a != b).count();
    assert!(changed > 20 && changed < 400, "{changed} changed");
    let ids0: HashSet<&str> = g0.iter().map(|h| s(&h["device_id"])).collect();
    let replaced = g3.iter().filter(|h| !ids0.contains(s(&h["device_id"]))).count();
    assert!(replaced > 0 && replaced < 100, "{replaced} replaced");
    let u0 = okta_users(8, 2000, 0);
    let u3 = okta_users(8, 2000, 3);
    assert!(u0.iter().zip(&u3).any(|(a, b)| a != b));
}

#[test]
fn graph_and_okta_mess() {
    let devices = msgraph_devices(1, 3000, 0);
    assert!(devices.iter().any(|d| d["lastSyncDateTime"] == NULL_DATE));
    let eth: Vec<&str> = devices.iter().filter_map(|d| d["ethernetMacAddress"].as_str()).collect();
    assert!(eth.iter().filter(|m| m.len() == 12).count() > eth.len() / 3);
    assert!(devices.iter().any(|d| d["userPrincipalName"] == ""));
    assert!(devices.iter().any(|d| d["serialNumber"] == "To be filled by O.E.M."));
    let users = msgraph_users(1, 500, 0);
    assert!(users.iter().any(|u| s(&u["userPrincipalName"]).contains("#EXT#")));
    assert!(users.iter().any(|u| u["mail"].is_null()));
    assert!(users.iter().any(|u| u["accountEnabled"] == false));
    let okta = okta_users(1, 500, 0);
    assert!(okta.iter().any(|u| u["lastLogin"].is_null()));
    assert!(okta.iter().any(|u| u["status"] == "STAGED" && u["activated"].is_null()));
    assert!(okta.iter().any(|u| !s(&u["profile"]["lastName"]).is_ascii()));
    let ids: HashSet<&str> = okta.iter().map(|u| s(&u["id"])).collect();
    assert_eq!(ids.len(), okta.len());
}
