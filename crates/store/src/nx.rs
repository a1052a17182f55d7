//! A private nx-27017 server (MongoDB wire protocol, backed by SQLite) for
//! tests that must stop and restart their MongoDB: started from the project's
//! virtualenv (`CORRAL_VENV`, default `<repo>/.venv`, made by
//! `scripts/mongo-test-server.sh install`). Test support, not used by corral itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The virtualenv holding nx-27017.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("CORRAL_VENV") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
    }
}

/// The nx-27017 executable, if the virtualenv has it.
pub fn binary() -> Option<PathBuf> {
    let bin = venv_dir().join("bin/nx-27017");
    bin.exists().then_some(bin)
}

/// A port nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running nx-27017; killed when dropped.
pub struct NxServer {
    child: Child,
    pub port: u16,
}

impl NxServer {
    /// Start on `port` with its data under `data` and wait (up to 60 s) until it accepts connections.
    /// `run` numbers the log files so a restart keeps the earlier logs.
    pub fn start(bin: &Path, port: u16, data: &Path, run: u32) -> std::io::Result<NxServer> {
        let out_path = data.join(format!("nx-{run}.out"));
        let log = std::fs::File::create(&out_path)?;
        let log2 = log.try_clone()?;
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(data.join("db"))
            .arg("--pid-file")
            .arg(data.join(format!("nx-{run}.pid")))
            .arg("--log-file")
            .arg(data.join(format!("nx-{run}.log")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()?;
        let mut server = NxServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                let out = std::fs::read_to_string(&out_path).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "nx-27017 exited with {status} before accepting connections:\n{out}"
                )));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(format!(
                    "nx-27017 did not accept connections on port {port} within 60 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NxServer {
    fn drop(&mut self) {
        self.kill();
    }
}
