//! The corral-testkit conformance suite against files in a temporary
//! directory. A file has no HTTP and no credentials: the rules about
//! vendors' faults, tokens and connections are reported not applicable.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use corral_adapter_file::FileAdapterFactory;
use corral_core::AdapterFactory;
use corral_testkit::{Dataset, Env, SetupError, Vendor};
use serde_json::{Value, json};

const ROWS: usize = 120;

struct Files;

/// A CSV export of devices in a temporary directory.
struct FileEnv {
    dir: tempfile::TempDir,
    ids: Mutex<Vec<String>>,
}

impl FileEnv {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("devices.csv")
    }

    fn write(&self, ids: &[String]) -> Result<(), SetupError> {
        let mut csv = String::from("id,hostname\n");
        for id in ids {
            csv.push_str(&format!("{id},host-{id}\n"));
        }
        std::fs::write(self.path(), csv).map_err(|e| SetupError::failed(format!("writing the file: {e}")))
    }
}

#[async_trait]
impl Env for FileEnv {
    fn config(&self) -> Value {
        json!({
            "path": self.path().display().to_string(),
            "columns": {"source_id": "id", "hostname": "hostname"},
            "page_records": 10,
        })
    }

    fn expected(&self) -> Dataset {
        let ids = self.ids.lock().map(|i| i.iter().cloned().collect()).unwrap_or_default();
        Dataset::from([("devices".to_string(), ids)])
    }

    async fn remove_records(&self) -> Result<(), SetupError> {
        let mut ids = self.ids.lock().map_err(|_| SetupError::failed("lock poisoned"))?;
        ids.retain(|id| !id.ends_with('7'));
        self.write(&ids)
    }
}

#[async_trait]
impl Vendor for Files {
    fn factory(&self) -> Arc<dyn AdapterFactory> {
        Arc::new(FileAdapterFactory)
    }
    async fn start(&self) -> Result<Box<dyn Env>, SetupError> {
        let dir = tempfile::tempdir().map_err(|e| SetupError::failed(format!("temporary directory: {e}")))?;
        let ids: Vec<String> = (0..ROWS).map(|i| format!("dev-{i:04}")).collect();
        let env = FileEnv { dir, ids: Mutex::new(ids.clone()) };
        env.write(&ids)?;
        Ok(Box::new(env))
    }
    async fn start_with_bad_page(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable(
            "a file has no pages a vendor can cut: a malformed line is one record's reject (tests/csv.rs, tests/ndjson.rs)",
        ))
    }
    async fn start_with_server_errors(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("a file has no HTTP: no 5xx"))
    }
    async fn start_with_hung_request(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("a file has no HTTP: no request to hang"))
    }
    async fn start_rate_limited(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("a file has no HTTP: no rate limit"))
    }
    async fn start_with_expiring_token(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("a file has no token"))
    }
    async fn start_echoing_credentials(&self) -> Result<Box<dyn Env>, SetupError> {
        Err(SetupError::not_applicable("a file has no credentials to echo"))
    }
    fn checkpoints(&self) -> Result<(), SetupError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_passes_the_testkit() {
    corral_testkit::run(&Files).await;
}
