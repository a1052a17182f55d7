//! Logs: tracing to stderr, every line scrubbed of resolved secrets, and
//! printed above the progress bars (never through them) while they are drawn.

use std::io::Write;
use std::sync::{Arc, Mutex};

use corral_core::Redactor;
use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go. Cheap to clone.
#[derive(Clone, Default)]
pub struct LogSink {
    redactor: Redactor,
    bars: Arc<Mutex<Option<MultiProgress>>>,
}

impl LogSink {
    pub fn new(redactor: Redactor) -> Self {
        LogSink { redactor, bars: Arc::default() }
    }

    /// While `bars` is set, log lines are printed with the bars suspended.
    pub fn set_bars(&self, bars: Option<MultiProgress>) {
        if let Ok(mut slot) = self.bars.lock() {
            *slot = bars;
        }
    }

    fn write_line(&self, bytes: &[u8]) {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        self.redactor.redact_in_place(&mut text);
        let bars = self.bars.lock().ok().and_then(|b| b.clone());
        let print = || {
            // Nothing sensible to do if stderr is gone.
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        };
        match bars {
            Some(bars) => bars.suspend(print),
            None => print(),
        }
    }
}

/// One event's writer: the formatter writes the whole line, then it is
/// scrubbed and printed at once when the writer is dropped.
pub struct LineWriter {
    sink: LogSink,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.write_line(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { sink: self.clone(), buf: Vec::with_capacity(256) }
    }
}
