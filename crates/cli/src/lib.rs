//! `corral`: sync security product inventories into one asset store.
//!
//! The whole command line as a library: `src/main.rs` is
//! `corral::main_with(|_| {})`. A binary of one's own runs the same CLI with
//! adapters from outside this repository registered too (see
//! examples/external-adapter):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     corral::main_with(|registry| {
//!         // registry.register(my_adapter::MyFactory);
//!         let _ = registry;
//!     })
//! }
//! ```
//!
//! The adapters of this build are the `corral-adapter-*` dependencies in
//! this crate's Cargo.toml that are enabled (each is an optional dependency,
//! and so a cargo feature, all on by default); build.rs generates their
//! registration: each such crate has `pub fn register(&mut Registry)`.
//!
//! Exit codes: 0 success, 1 error (bad config, store unreachable),
//! 2 usage error, 3 partial (some records rejected or streams failed),
//! 4 failed (a connection or check failed, or the run was interrupted),
//! 5 skipped (another run of a connection held its lease; nothing else failed),
//! 130 interrupted twice (exited without waiting), 141 stdout closed before
//! all output was written (`corral assets --list | head -1`; no message).

/// `println!` and `print!` for this whole crate: [`output::stdout`], which
/// never panics (a closed stdout exits quietly with code 141).
macro_rules! println {
    () => {
        $crate::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` and `eprint!` for this whole crate: [`output::stderr`], which
/// never panics.
macro_rules! eprintln {
    () => {
        $crate::output::stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*))
    };
}

mod commands;
mod config;
mod demo;
mod docs;
mod limits;
mod logging;
mod new_adapter;
mod output;
mod progress;
mod record;
#[cfg(test)]
mod schema_doc;
mod serve;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral_core::RunStatus;

pub const EXIT_ERROR: u8 = 1;
/// Bad usage: a `--where` that does not parse, as clap's own errors.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_PARTIAL: u8 = 3;
pub const EXIT_FAILED: u8 = 4;
/// A connection was not synced because another run of it was in progress
/// (and nothing worse happened).
pub const EXIT_SKIPPED: u8 = 5;
/// A second Ctrl-C / SIGTERM: exited without waiting (128 + SIGINT, as shells do).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(name = "corral", version, about = "Sync security product inventories into one asset store")]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short, global = true, default_value = "corral.toml", env = "CORRAL_CONFIG")]
    config: PathBuf,
    /// Log as JSON lines (default: human-readable).
    #[arg(long, global = true)]
    log_json: bool,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sync connections: fetch, normalize, load, handle stale assets.
    Sync {
        /// Only these connections (repeatable); default: all.
        #[arg(long = "connection", short = 'n')]
        connections: Vec<String>,
        /// Print run summaries as JSON.
        #[arg(long)]
        json: bool,
        /// When another run of a connection is in progress (here or on
        /// another machine sharing the store), wait for it to finish instead
        /// of skipping the connection (exit code 5).
        #[arg(long)]
        wait: bool,
    },
    /// Verify each connection's credentials and reachability with one cheap call.
    Check {
        #[arg(long = "connection", short = 'n')]
        connections: Vec<String>,
        #[arg(long)]
        json: bool,
        /// How long each connection's check may take, retries of transient
        /// failures included (e.g. 15s, 1m).
        #[arg(long, default_value = "15s", value_parser = parse_check_timeout)]
        timeout: std::time::Duration,
    },
    /// List the adapters this build knows, their streams and config fields.
    Adapters {
        #[arg(long)]
        json: bool,
    },
    /// Sync one connection for real (into a throwaway store) and save its
    /// HTTP exchanges, redacted, as a cassette that corral-testkit replays.
    Record {
        /// The connection to record.
        #[arg(long = "connection", short = 'n')]
        connection: String,
        /// Directory for the cassette (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
        /// A JSON field whose values get a stable stand-in in the cassette
        /// (repeatable): names, emails, serial numbers you must not share.
        #[arg(long = "redact-field", value_name = "FIELD")]
        redact_fields: Vec<String>,
        /// Print the run summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one Markdown page per adapter of this build (streams, fields,
    /// attributes, config, auth and permissions, rate limits) and an index,
    /// and the asset schema (every field, and how each adapter fills it).
    Docs {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "docs/adapters")]
        out: PathBuf,
        /// Where the asset schema goes.
        #[arg(long, value_name = "FILE", default_value = "docs/SCHEMA.md")]
        schema: PathBuf,
        /// Write nothing; exit 1 if a page in --out or the schema differs from what this build writes.
        #[arg(long)]
        check: bool,
    },
    /// Create a new adapter crate, adapters/NAME (a REST adapter with its
    /// testkit test against a generated simulator), and add it to this binary
    /// (crates/cli/Cargo.toml).
    NewAdapter {
        /// The adapter's name: lowercase letters, digits and '-', starting with a letter.
        name: String,
        /// The workspace root (default: the nearest directory above the
        /// current one whose Cargo.toml has a [workspace] table).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Only write the files: do not run `cargo fmt` on the new crate nor
        /// build corral to write its docs pages and the schema (run
        /// `cargo run -p corral -- docs` yourself before the tests).
        #[arg(long)]
        no_build: bool,
    },
    /// Show recent run summaries, or the rejected records of one run.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show the rejected records kept for this sync id.
        #[arg(long, value_name = "SYNC_ID")]
        rejects: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Count (default) or list stored assets. Counts show live and stale assets apart.
    Assets {
        #[arg(long)]
        connection: Option<String>,
        /// device, user, vulnerability, software or cloud_resource
        #[arg(long)]
        kind: Option<corral_core::AssetKind>,
        /// Only assets whose FIELD equals VALUE (repeatable; all must hold): a
        /// canonical field (`hostname`, `serial_number`, `os.family`,
        /// `severity`, ...; a list field such as `mac_addresses` or `cves`
        /// matches an element; a cloud resource's tag is `tags.KEY`), or a
        /// vendor attribute as `attributes.NAME`. docs/SCHEMA.md lists the fields.
        #[arg(long = "where", value_name = "FIELD=VALUE")]
        wheres: Vec<String>,
        /// Only assets that reference this asset (a vulnerability or software
        /// on a device, a device owned by a user).
        #[arg(long, num_args = 3, value_names = ["CONNECTION", "KIND", "SOURCE_ID"])]
        points_at: Vec<String>,
        /// List assets instead of counting them.
        #[arg(long)]
        list: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Include assets marked stale.
        #[arg(long)]
        include_stale: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run as a service: sync connections on their schedules; HTTP API,
    /// /metrics and a web page ([serve] in corral.toml). SIGHUP reloads
    /// the config; SIGTERM stops after running syncs finish (grace period).
    Serve {
        /// Address to listen on (overrides `[serve] listen`; default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Sync simulated CrowdStrike, Okta and Graph APIs plus sample exports into the embedded store (./corral.db).
    Demo {
        /// Store to load into: a SQLite path or a mongodb:// URI, whose path
        /// names the database (default `corral`). Set CORRAL_DEMO_STORE
        /// instead to keep a URI with credentials out of the process list.
        #[arg(long, default_value = "corral.db", env = "CORRAL_DEMO_STORE", hide_env_values = true)]
        store: String,
        /// Devices to generate.
        #[arg(long, default_value_t = 20_000)]
        devices: u64,
        /// Users to generate.
        #[arg(long, default_value_t = 5_000)]
        users: u64,
        /// Records each simulated vendor API serves.
        #[arg(long, default_value_t = 5_000)]
        vendor_size: usize,
        /// Where the sample files go.
        #[arg(long, default_value = ".corral-demo")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// A `--timeout` value: a humantime duration, at least 100 ms.
fn parse_check_timeout(v: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(v).map_err(|e| format!("{e} (e.g. 15s, 1m)"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(d)
}

/// Runs the corral command line with this build's adapters and those
/// `register` adds (an adapter of the same name replaces the built-in one).
pub fn main_with(register: fn(&mut corral_core::Registry)) -> ExitCode {
    // The first call decides; a second one in one process changes nothing.
    let _ = commands::EXTRA_ADAPTERS.set(register);
    let cli = Cli::parse();
    // A service logs (info) and draws no progress bars.
    let interactive = std::io::stderr().is_terminal() && !matches!(cli.command, Command::Serve { .. });
    let redactor = config::Redactor::default();
    let logs = logging::LogSink::new(redactor.clone());
    init_logging(cli.verbose, cli.log_json, interactive, logs.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("corral-io").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(commands::run(cli, redactor.clone(), interactive, logs));
    output::flush_stdout();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Secrets resolved from the config never reach the terminal.
            eprintln!("error: {}", redactor.redact(&format!("{e:#}")));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(verbose: u8, json: bool, interactive: bool, sink: logging::LogSink) {
    use tracing_subscriber::EnvFilter;
    // With progress bars on a terminal, only warnings interrupt them.
    let default = match (verbose, interactive) {
        (0, true) => "warn",
        (0, false) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let filter = without_signing_traces(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(sink);
    if json {
        tracing_subscriber::registry().with(layer.json().with_filter(filter)).init();
    } else {
        tracing_subscriber::registry().with(layer.with_ansi(interactive).with_filter(filter)).init();
    }
}

/// aws-sigv4 traces the requests it signs (headers, a session token among
/// them): never logged, whatever RUST_LOG or -vv asks. Not a directive added
/// to `filter`: a more specific one in RUST_LOG
/// (`aws_sigv4::http_request=trace`) would win over it. A second filter that
/// both must pass.
fn without_signing_traces<S>(filter: tracing_subscriber::EnvFilter) -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    filter.and(filter_fn(|meta| {
        let target = meta.target();
        !(target == "aws_sigv4" || target.starts_with("aws_sigv4::"))
    }))
}

/// The exit code for a set of run summaries.
pub fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Success => 0,
        RunStatus::Skipped => EXIT_SKIPPED,
        RunStatus::Partial => EXIT_PARTIAL,
        RunStatus::Failed => EXIT_FAILED,
    }
}

#[cfg(test)]
mod log_filter_tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a subscriber with `RUST_LOG=<rust_log>` writes of a signing trace
    /// and of an ordinary trace.
    fn logged(rust_log: &str) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_filter(super::without_signing_traces(EnvFilter::new(rust_log)));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "aws_sigv4::http_request::sign", "x-amz-security-token: SESSION-TOKEN");
            tracing::trace!(target: "corral_adapter_aws", "signed a DescribeInstances request");
        });
        let bytes = lines.0.lock().expect("lines").clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn signing_traces_are_never_logged_whatever_rust_log_asks() {
        for rust_log in
            ["trace", "aws_sigv4=trace", "trace,aws_sigv4=trace", "aws_sigv4::http_request=trace", "[{x}]=trace"]
        {
            let text = logged(rust_log);
            assert!(!text.contains("SESSION-TOKEN"), "RUST_LOG={rust_log}: {text}");
        }
        // The filter still lets the rest through.
        assert!(logged("trace").contains("signed a DescribeInstances request"));
    }
}
