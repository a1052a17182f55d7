//! Writing to stdout and stderr without panicking.
//!
//! std's `println!` panics when stdout is gone ("failed printing to stdout:
//! Broken pipe"): `corral assets --list | head -1` closes the pipe after one
//! line. Rust ignores SIGPIPE, so such a write fails with EPIPE instead of
//! killing the process; this module turns that into what a Unix tool does:
//! stop at once, print nothing, exit with [`EXIT_STDOUT_CLOSED`] (141, what a
//! shell reports for a process SIGPIPE killed, as `cat big | head -1`'s `cat`
//! is). Whatever the command had done by then stays done (a sync's runs are
//! stored before its summary is printed).
//!
//! `main.rs` shadows `println!`, `print!`, `eprintln!` and `eprint!` for the
//! whole crate with macros that call [`stdout`] and [`stderr`], so no output
//! of any command can take the std path.

use std::fmt;
use std::io::{self, Write};

/// Exit code when stdout was closed before all output was written:
/// 128 + SIGPIPE (13), as a shell reports a process SIGPIPE killed.
pub const EXIT_STDOUT_CLOSED: u8 = 141;

/// Write to stdout. A closed stdout ends the process quietly with
/// [`EXIT_STDOUT_CLOSED`]; another write error (a full disk behind a
/// redirection) ends it with an error message and exit code 1.
pub fn stdout(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        stdout_failed(&e);
    }
}

/// Flush what stdout still buffers (a last line without a newline), with
/// [`stdout`]'s handling of errors. `main` calls it before exiting.
pub fn flush_stdout() {
    if let Err(e) = io::stdout().lock().flush() {
        stdout_failed(&e);
    }
}

fn stdout_failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(EXIT_STDOUT_CLOSED));
    }
    stderr(format_args!("error: writing to stdout: {e}\n"));
    std::process::exit(i32::from(crate::EXIT_ERROR));
}

/// Write to stderr; nothing sensible is left to do when stderr is gone.
pub fn stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}
