//! `corral demo`: start the vendor simulators (CrowdStrike, Okta, Microsoft
//! Graph, Tenable, Qualys, AWS) in-process, generate sample exports, and sync all of them, so a new
//! user sees the whole pipeline work with no server and no credentials.

use std::path::Path;

use anyhow::{Context, Result};
use corral_core::{EngineConfig, StalePolicy};
use corral_sim::{Credentials, SimConfig, Vendor};

use crate::commands::{Output, open_store, registry, sync};
use crate::config::{Redactor, StoreConfig};

pub async fn run(
    store: &str,
    devices: u64,
    users: u64,
    vendor_size: usize,
    dir: &Path,
    out: &Output,
    redactor: &Redactor,
) -> Result<u8> {
    let json = out.json;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let devices_path = dir.join("devices.csv");
    let users_path = dir.join("users.ndjson");
    if write_samples(&devices_path, &users_path, devices, users).await? && !json {
        eprintln!(
            "corral demo: {devices} devices in {}, {users} users in {}",
            devices_path.display(),
            users_path.display()
        );
    }

    let store_config = if store.starts_with("mongodb://") || store.starts_with("mongodb+srv://") {
        // The URI may carry credentials: never print it, nor its password.
        redactor.add(store);
        crate::config::add_uri_password(redactor, store);
        let database = uri_database(store).unwrap_or("corral");
        StoreConfig::Mongodb(corral_store::mongo::MongoConfig::new(store, database))
    } else {
        StoreConfig::Sqlite { path: store.into(), cache_mib: None, lookup_log_rows: None }
    };
    let mut columns = serde_json::Map::new();
    for (field, column) in [
        ("source_id", "Device ID"),
        ("hostname", "Host Name"),
        ("ip_addresses", "IP Addresses"),
        ("mac_addresses", "MAC"),
        ("serial_number", "Serial"),
        ("os_name", "OS"),
        ("os_version", "OS Version"),
        ("manufacturer", "Vendor"),
        ("model", "Model"),
        ("last_seen", "Last Seen"),
        ("owner", "Owner"),
        ("tags", "Tags"),
    ] {
        columns.insert(field.into(), column.into());
    }
    let device_config = serde_json::json!({
        "path": devices_path, "format": "csv", "kind": "device", "columns": columns,
    });
    let user_config = serde_json::json!({
        "path": users_path, "format": "ndjson", "kind": "user",
        "columns": {
            "source_id": "id", "username": "profile.login", "email": "profile.email",
            "first_name": "profile.firstName", "last_name": "profile.lastName",
            "status": "status", "active": "active", "created": "created", "last_login": "lastLogin",
        },
    });
    let registry = registry();
    let mut conns = Vec::new();
    // A build without some adapters (cargo features) demos the others.
    let left_out = |adapter: &str, name: &str| {
        let missing = registry.get(adapter).is_none();
        if missing && !json {
            eprintln!("corral demo: this build has no `{adapter}` adapter; `{name}` is left out");
        }
        missing
    };
    for (name, config) in [("demo-devices", device_config), ("demo-users", user_config)] {
        if left_out("file", name) {
            continue;
        }
        let adapter = registry.build("file", name, config).with_context(|| format!("connection `{name}`"))?;
        conns.push(corral_core::Connection {
            name: name.into(),
            adapter,
            streams: vec![],
            stale: StalePolicy::Mark { delete_after: None },
        });
    }
    // The simulated vendor APIs, each on its own thread and loopback port.
    let sim = |vendor| corral_sim::start(vendor, SimConfig::new(42, vendor_size).latency_ms(5));
    let crowdstrike = sim(Vendor::CrowdStrike).await.context("starting the CrowdStrike simulator")?;
    let okta = sim(Vendor::Okta).await.context("starting the Okta simulator")?;
    let graph = sim(Vendor::MsGraph).await.context("starting the Microsoft Graph simulator")?;
    let tenable = sim(Vendor::Tenable).await.context("starting the Tenable simulator")?;
    let qualys = sim(Vendor::Qualys).await.context("starting the Qualys simulator")?;
    // AWS: two accounts (the key's own and one reached by an assumed role) in
    // three regions, about `vendor_size` instances in all.
    let aws = corral_sim::start(Vendor::Aws, SimConfig::new(42, aws_scope_size(vendor_size)).latency_ms(5))
        .await
        .context("starting the AWS simulator")?;
    let aws_role =
        format!("arn:aws:iam::{}:role/{}", corral_sim::data::aws::accounts(42)[1], corral_sim::data::aws::ROLE_NAME);
    let creds = Credentials::default();
    let vendors = [
        (
            "demo-crowdstrike",
            "crowdstrike",
            serde_json::json!({
                "base_url": crowdstrike.base_url, "client_id": creds.client_id, "client_secret": creds.client_secret,
            }),
        ),
        ("demo-okta", "okta", serde_json::json!({ "base_url": okta.base_url, "token": creds.token })),
        (
            "demo-msgraph",
            "msgraph",
            serde_json::json!({
                "tenant_id": creds.tenant, "client_id": creds.client_id, "client_secret": creds.client_secret,
                "login_base_url": graph.base_url, "graph_base_url": graph.base_url,
            }),
        ),
        (
            "demo-tenable",
            "tenable",
            serde_json::json!({
                "base_url": tenable.base_url, "access_key": creds.client_id, "secret_key": creds.client_secret,
                // The simulator finishes its export jobs at once: no need to wait Tenable's seconds between polls.
                "poll_interval_ms": 50, "max_poll_interval_ms": 500,
            }),
        ),
        (
            "demo-qualys",
            "qualys",
            serde_json::json!({
                "base_url": qualys.base_url, "username": creds.client_id, "password": creds.client_secret,
            }),
        ),
        (
            "demo-aws",
            "aws",
            serde_json::json!({
                "access_key_id": creds.client_id, "secret_access_key": creds.client_secret,
                "regions": AWS_DEMO_REGIONS, "accounts": [{}, {"role_arn": aws_role}],
                "endpoint": format!("{}/{{region}}", aws.base_url), "sts_endpoint": format!("{}/sts", aws.base_url),
            }),
        ),
    ];
    for (name, adapter, config) in vendors {
        if left_out(adapter, name) {
            continue;
        }
        let adapter = registry.build(adapter, name, config).with_context(|| format!("connection `{name}`"))?;
        conns.push(corral_core::Connection {
            name: name.into(),
            adapter,
            streams: vec![],
            stale: StalePolicy::Mark { delete_after: None },
        });
    }
    if !json {
        eprintln!(
            "corral demo: simulated CrowdStrike at {}, Okta at {}, Microsoft Graph at {}, Tenable at {}, Qualys at {}, \
             AWS at {} ({vendor_size} records each)",
            crowdstrike.base_url, okta.base_url, graph.base_url, tenable.base_url, qualys.base_url, aws.base_url
        );
    }

    if conns.is_empty() {
        anyhow::bail!(
            "this build has none of the demo's adapters (file, crowdstrike, okta, msgraph, tenable, qualys, aws)"
        );
    }
    let store = open_store(&store_config).await?;
    let described = store.describe();
    let code = sync(store, EngineConfig::default(), conns, out, redactor).await?;
    for handle in [crowdstrike, okta, graph, tenable, qualys, aws] {
        handle.shutdown().await;
    }
    if !json {
        eprintln!("\nassets are in {described}: try `corral assets` and `corral assets --list --kind device`");
    }
    Ok(code)
}

/// The regions of the demo's AWS connection.
const AWS_DEMO_REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];

/// The AWS simulator's size for a demo of `vendor_size` records: two
/// accounts in three regions hold about `vendor_size` instances.
fn aws_scope_size(vendor_size: usize) -> usize {
    (vendor_size / 6).max(1)
}

/// Writes the sample exports the file adapter's demo connections read;
/// false when this build has no file adapter.
#[cfg(feature = "corral-adapter-file")]
async fn write_samples(devices_path: &Path, users_path: &Path, devices: u64, users: u64) -> Result<bool> {
    use corral_adapter_file::sample::{self, SampleOptions};
    let (dp, up) = (devices_path.to_path_buf(), users_path.to_path_buf());
    // Writing files is blocking I/O: keep it off the runtime's workers.
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        sample::write_devices_csv(&dp, devices, SampleOptions::default())?;
        sample::write_users_ndjson(&up, users, SampleOptions::default())
    })
    .await
    .context("generating the sample exports")?
    .context("writing the sample exports")?;
    Ok(true)
}

#[cfg(not(feature = "corral-adapter-file"))]
async fn write_samples(_: &Path, _: &Path, _: u64, _: u64) -> Result<bool> {
    Ok(false)
}

/// The database in a `scheme://host/database?options` URI, if it names one.
fn uri_database(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let path = rest.split('?').next()?.split_once('/')?.1;
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn uri_database_is_found() {
        assert_eq!(super::uri_database("mongodb://app:pw@db:27017/inventory?tls=true"), Some("inventory"));
        assert_eq!(super::uri_database("mongodb://db:27017/?tls=true"), None);
        assert_eq!(super::uri_database("mongodb://db:27017"), None);
        assert_eq!(super::uri_database("mongodb+srv://cluster.example/demo"), Some("demo"));
    }
}
