//! Test support for the MongoDB tests (not used by corral itself):
//!
//! - a private nx-27017 server (MongoDB wire protocol, backed by SQLite) for
//!   tests that must stop and restart their MongoDB: started from the project's
//!   virtualenv (`CORRAL_VENV`, default `<repo>/.venv`, made by
//!   `scripts/mongo-test-server.sh install`);
//! - the skip rule every MongoDB test follows ([`mongodb_uri`], [`require_binary`]):
//!   without a server (or the nx-27017 binary) a test **fails**, unless
//!   `CORRAL_SKIP_MONGO=1` (exactly) is set outside CI (`CI` set and not
//!   `0`/`false`); a skipping test prints a banner and leaves a marker file in
//!   [`skip_dir`], which `scripts/test.sh` lists at the end of the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether this is a CI run: `CI` is set to something other than "", "0" or "false".
pub fn in_ci() -> bool {
    is_ci(std::env::var("CI").ok().as_deref())
}

fn is_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// May a test skip, given `CI` and `CORRAL_SKIP_MONGO`? `Ok` only for
/// `CORRAL_SKIP_MONGO=1` outside CI; otherwise the reason it may not.
pub fn skip_allowed(ci: Option<&str>, skip: Option<&str>) -> Result<(), String> {
    match (is_ci(ci), skip) {
        (true, Some(_)) => Err("CORRAL_SKIP_MONGO is set, but skipping is not allowed in CI".into()),
        (true, None) => Err("in CI the MongoDB tests never skip".into()),
        (false, Some("1")) => Ok(()),
        (false, Some(other)) => Err(format!("CORRAL_SKIP_MONGO={other:?}: only CORRAL_SKIP_MONGO=1 skips")),
        (false, None) => Err("set CORRAL_SKIP_MONGO=1 to skip the MongoDB tests".into()),
    }
}

/// Where skipping tests leave their markers: `CORRAL_SKIP_DIR`, default `<repo>/target/test-skips`.
pub fn skip_dir() -> PathBuf {
    match std::env::var_os("CORRAL_SKIP_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-skips"),
    }
}

/// `test` lacks `missing`: panic, unless skipping is allowed ([`skip_allowed`]);
/// then print a banner and leave a marker in [`skip_dir`] (so the skip shows
/// even when cargo captures the output) and return.
pub fn skip_or_fail(test: &str, missing: &str) {
    let ci = std::env::var("CI").ok();
    let skip = std::env::var("CORRAL_SKIP_MONGO").ok();
    if let Err(why) = skip_allowed(ci.as_deref(), skip.as_deref()) {
        panic!(
            "{test}: {missing}; {why}. Run scripts/test.sh (it installs and starts nx-27017), or \
             `bash scripts/mongo-test-server.sh install && export \"$(bash scripts/mongo-test-server.sh start)\"`"
        );
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPING {test}: {missing} (CORRAL_SKIP_MONGO=1)");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    let dir = skip_dir();
    let name: String = test.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let written =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(name), format!("{test}: {missing}\n")));
    if let Err(e) = written {
        eprintln!("!!! could not write the skip marker in {}: {e}", dir.display());
    }
}

/// `MONGODB_URI` for `test`, or `None` when the test is to skip (see [`skip_or_fail`]).
pub fn mongodb_uri(test: &str) -> Option<String> {
    match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.trim().is_empty() => Some(uri),
        _ => {
            skip_or_fail(test, "MONGODB_URI is not set");
            None
        }
    }
}

/// The nx-27017 binary for `test`, or `None` when the test is to skip (see [`skip_or_fail`]).
pub fn require_binary(test: &str) -> Option<PathBuf> {
    match binary() {
        Some(bin) => Some(bin),
        None => {
            skip_or_fail(test, &format!("{} has no bin/nx-27017 (or set CORRAL_VENV)", venv_dir().display()));
            None
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_needs_exactly_corral_skip_mongo_1_outside_ci() {
        assert!(skip_allowed(None, Some("1")).is_ok());
        assert!(skip_allowed(Some("0"), Some("1")).is_ok(), "CI=0 is not CI");
        assert!(skip_allowed(Some("false"), Some("1")).is_ok());
        for value in ["", "0", "yes", "true", "2"] {
            assert!(skip_allowed(None, Some(value)).is_err(), "CORRAL_SKIP_MONGO={value:?} must not skip");
        }
        assert!(skip_allowed(None, None).is_err(), "no opt-in: fail");
        assert!(skip_allowed(Some("1"), Some("1")).is_err(), "never in CI");
        assert!(skip_allowed(Some("true"), None).is_err());
    }
}
