//! An adapter that lives outside corral's repository: `inventory-json`,
//! devices from an in-house inventory service that answers
//! `GET {base_url}/devices` with `{"devices": [{"id", "hostname", "serial"}]}`
//! and a bearer token.
//!
//! It depends on corral-core (the `Adapter` trait, the asset model) and
//! corral-http (retries, rate limits, secret scrubbing); `src/main.rs` runs
//! the whole corral CLI with it registered:
//!
//! ```toml
//! [[connection]]
//! name = "inventory"
//! adapter = "inventory-json"
//! [connection.config]
//! base_url = "https://inventory.example.com/api"
//! token = "${INVENTORY_TOKEN}"
//! ```
//!
//! docs/ADAPTERS.md ("Outside this repository") walks through it.

use std::sync::Arc;

use async_trait::async_trait;
use corral_core::{
    Adapter, AdapterFactory, AdapterInfo, AdapterNotes, Asset, AssetKind, CheckOutcome, ConfigError, ConfigField,
    Device, FetchContext, FetchError, FieldType, NormalizedPage, RawPage, Registry, Reject, StreamInfo, fields,
};
use corral_http::{Auth, HttpClient, HttpConfig, RateConfig};
use secrecy::SecretString;
use serde::Deserialize;

/// The one stream.
pub const DEVICES: &str = "devices";

/// Registers the adapter (what `main` passes to `corral::main_with`).
pub fn register(registry: &mut Registry) {
    registry.register(InventoryFactory);
}

/// Builds `inventory-json` adapters.
#[derive(Debug, Clone, Copy)]
pub struct InventoryFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    base_url: String,
    token: SecretString,
    #[serde(default = "default_rpm")]
    requests_per_minute: u32,
}

fn default_rpm() -> u32 {
    120
}

impl AdapterFactory for InventoryFactory {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "inventory-json".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Devices from an in-house inventory service (example of an adapter outside corral)".into(),
            streams: vec![
                StreamInfo::new(DEVICES, AssetKind::Device, "id", "GET /devices")
                    .fills("hostname", "`hostname`")
                    .fills("serial_number", "`serial`"),
            ],
            config: vec![
                ConfigField::required("base_url", FieldType::Url, "The service's API root"),
                ConfigField::required("token", FieldType::String, "Bearer token").secret(),
                ConfigField::optional("requests_per_minute", FieldType::Integer, "Request quota (default 120)"),
            ],
            notes: AdapterNotes {
                auth: "A bearer token (`Authorization: Bearer <token>`).".into(),
                permissions: vec!["Read access to /devices.".into()],
                rate_limits: "Paced at `requests_per_minute`; 429s are waited out.".into(),
            },
        }
    }

    fn build(&self, connection: &str, config: serde_json::Value) -> Result<Arc<dyn Adapter>, ConfigError> {
        let c: Config = corral_core::parse_config(config)?;
        let http = HttpConfig::new(&c.base_url)
            .with_connection(connection)
            .with_auth(Auth::Bearer(c.token))
            .with_rate(RateConfig::per_minute(c.requests_per_minute));
        let http = HttpClient::new(http, Arc::default()).map_err(|e| ConfigError::field("base_url", e.to_string()))?;
        Ok(Arc::new(InventoryAdapter { info: self.info(), http }))
    }
}

/// A configured `inventory-json` connection.
#[derive(Debug)]
pub struct InventoryAdapter {
    info: AdapterInfo,
    http: HttpClient,
}

#[async_trait]
impl Adapter for InventoryAdapter {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    async fn check(&self) -> CheckOutcome {
        self.http.check_within("devices", corral_http::CHECK_TIMEOUT).await
    }

    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        if ctx.stream.name != DEVICES {
            return Err(FetchError::UnknownStream(ctx.stream.name));
        }
        let client = self.http.with_metrics(ctx.requests.clone()).with_stream(DEVICES);
        let resp = client.get("devices").send_bytes().await?;
        let locator = resp.endpoint().to_string();
        ctx.sink.send(RawPage::new(DEVICES, resp.body, locator)).await?;
        Ok(())
    }

    /// Runs on the normalize pool, never on the async runtime.
    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        #[derive(Deserialize)]
        struct Body {
            devices: Vec<serde_json::Value>,
        }
        let body: Body = match serde_json::from_slice(&page.body) {
            Ok(b) => b,
            Err(e) => return NormalizedPage::page_failed(format!("not a device list: {e}")),
        };
        let mut out = NormalizedPage::default();
        for (i, record) in body.devices.into_iter().enumerate() {
            let text = |k: &str| record.get(k).and_then(serde_json::Value::as_str).and_then(fields::text);
            let Some(id) = text("id") else {
                out.rejects.push(Reject::new(format!("record {i} of {}", page.locator), "missing_key", "no `id`"));
                continue;
            };
            let device = Device {
                source_id: id,
                hostname: text("hostname").map(|h| h.to_lowercase()),
                serial_number: text("serial"),
                ..Default::default()
            };
            out.assets.push(Asset::device(&page.stream, device));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_what_it_fills_and_registers() {
        assert!(InventoryFactory.info().problems().is_empty(), "{:?}", InventoryFactory.info().problems());
        let mut r = Registry::new();
        register(&mut r);
        assert!(r.get("inventory-json").is_some());
    }

    #[test]
    fn normalize_maps_devices_and_rejects_records_without_an_id() {
        let adapter = InventoryFactory
            .build("inv", serde_json::json!({ "base_url": "http://127.0.0.1:9", "token": "t0ken-t0ken" }))
            .expect("config");
        let body = br#"{"devices":[{"id":"d1","hostname":"WEB-01","serial":"S1"},{"hostname":"no-id"}]}"#;
        let page = adapter.normalize(&RawPage::new(DEVICES, body.to_vec().into(), "GET /devices"));
        assert_eq!(page.assets.len(), 1);
        assert_eq!(page.assets[0].source_id(), "d1");
        assert_eq!(page.rejects.len(), 1);
        assert!(adapter.normalize(&RawPage::new(DEVICES, b"<html>".to_vec().into(), "x")).page_error.is_some());
    }
}
