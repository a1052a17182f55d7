//! Cutting a file into raw pages without decoding it.
//!
//! [`Splitter`] is fed the file's bytes in whatever chunks the reader
//! returns and hands back complete pages of `page_records` records each.
//! NDJSON records end at a newline; CSV records end at a newline outside a
//! double-quoted field, with the quoting rules of the `csv` crate (so both
//! agree on where records start). Lines holding only whitespace are not
//! records: they are never counted and never start a page.
//!
//! One CSV rule goes beyond the `csv` crate, to survive a stray quote: a
//! quoted field that spans a line break is *broken* when its closing quote
//! is followed by anything but a delimiter or the end of the record, when
//! the file ends inside it, or when it grows past [`MAX_QUOTED_LINES`] lines
//! or [`MAX_RECORD_BYTES`]. A broken record is cut after its first line
//! (which normalize then rejects) and scanning restarts on the next line, so
//! one bad line such as `7,"broken host,10.0.0.7` costs one reject instead
//! of swallowing the good records after it. Normalize applies the same rule
//! through [`broken_first_line`].
//!
//! Every CSV page body starts with a copy of the file's header record, so
//! normalize can parse any page on its own.

use bytes::Bytes;

use crate::config::Format;

/// The UTF-8 byte order mark some tools write at the start of a file.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The largest single record fetch accepts. A longer CSV quoted field that
/// spans lines counts as broken (see the module docs); a longer single line
/// is skipped up to its newline and reported as a [`TooLong`] page, with
/// only its first [`TOO_LONG_PREFIX`] bytes kept. (A CSV header that long
/// stops fetch: without it no record can be read.)
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of a too-long line kept for the reject.
pub const TOO_LONG_PREFIX: usize = 4096;

/// A quoted CSV field spanning more lines than this counts as broken.
pub const MAX_QUOTED_LINES: u64 = 10_000;

/// One page cut from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPage {
    /// For CSV: the header record, then the page's records. For NDJSON: the records.
    pub body: Bytes,
    /// Line (1-based, the CSV header is line 1) where the page's first record starts.
    pub first_line: u64,
    /// Line where the page's last record ends.
    pub last_line: u64,
    /// Records in the page (blank lines not counted).
    pub records: usize,
    /// Byte offset in the file just after the page's last record.
    pub end_offset: u64,
    /// Set when this "page" is one line longer than [`MAX_RECORD_BYTES`] that
    /// was skipped: `body` then holds no records (just the CSV header).
    pub too_long: Option<TooLong>,
}

/// A line too long to hold, skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    pub line: u64,
    /// Its first [`TOO_LONG_PREFIX`] bytes.
    pub prefix: Bytes,
}

/// Why splitting stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// The CSV header line grew beyond [`MAX_RECORD_BYTES`].
    RecordTooLarge { line: u64 },
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitError::RecordTooLarge { line } => {
                write!(f, "the header, line {line}, is longer than {} MiB", MAX_RECORD_BYTES / (1024 * 1024))
            }
        }
    }
}

impl std::error::Error for SplitError {}

/// Where the CSV scanner is inside the current record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum At {
    /// At the start of a field: a `"` here opens a quoted field.
    #[default]
    FieldStart,
    /// Inside an unquoted field: `"` is a literal.
    Unquoted,
    /// Inside a quoted field: newlines and delimiters are data.
    Quoted,
    /// Just saw `"` inside a quoted field: `""` is an escaped quote, anything else closes it.
    ClosingQuote,
}

/// What scanning a CSV record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The newline at this index ends the record.
    End(usize),
    /// The bytes ran out inside the record.
    More,
    /// The record is broken (see the module docs).
    Broken,
}

/// The CSV record scanner: resumable across chunks, one per record.
#[derive(Debug, Clone, Copy, Default)]
struct CsvScan {
    quote: At,
    /// The current quoted field holds a line break.
    field_multiline: bool,
    /// Line breaks inside the current quoted field.
    field_newlines: u64,
    /// Bytes of the record scanned so far.
    bytes: usize,
}

impl CsvScan {
    fn run(&mut self, input: &[u8], delim: u8) -> Step {
        let base = self.bytes;
        let mut i = 0;
        while i < input.len() {
            if self.quote == At::Quoted {
                // Everything up to the next quote is field data.
                let (j, found) = match input[i..].iter().position(|&c| c == b'"') {
                    Some(j) => (j, true),
                    None => (input.len() - i, false),
                };
                let nl = count_newlines(&input[i..i + j]);
                if nl > 0 {
                    self.field_multiline = true;
                    self.field_newlines += nl;
                }
                i += j;
                if self.field_multiline && (self.field_newlines > MAX_QUOTED_LINES || base + i > MAX_RECORD_BYTES) {
                    self.bytes = base + i;
                    return Step::Broken;
                }
                if found {
                    self.quote = At::ClosingQuote;
                    i += 1;
                }
                continue;
            }
            let b = input[i];
            match self.quote {
                At::FieldStart => {
                    if b == b'"' {
                        self.quote = At::Quoted;
                        self.field_multiline = false;
                        self.field_newlines = 0;
                    } else if b == b'\n' {
                        self.bytes = base + i + 1;
                        return Step::End(i);
                    } else if b != delim {
                        self.quote = At::Unquoted;
                    }
                }
                At::Unquoted => {
                    if b == b'\n' {
                        self.bytes = base + i + 1;
                        return Step::End(i);
                    } else if b == delim {
                        self.quote = At::FieldStart;
                    }
                }
                At::ClosingQuote => {
                    if b == b'"' {
                        self.quote = At::Quoted;
                    } else if b == delim {
                        self.quote = At::FieldStart;
                    } else if b == b'\n' {
                        self.bytes = base + i + 1;
                        return Step::End(i);
                    } else if b == b'\r' {
                        // `"..."\r\n`: wait for the newline.
                    } else if self.field_multiline {
                        self.bytes = base + i;
                        return Step::Broken;
                    } else {
                        // Lenient like the csv crate: `"ab"c` is the field `abc`.
                        self.quote = At::Unquoted;
                    }
                }
                At::Quoted => {}
            }
            i += 1;
        }
        self.bytes = base + input.len();
        Step::More
    }

    /// The input ended here: is the record broken?
    fn broken_at_end(&self) -> bool {
        self.quote == At::Quoted && self.field_multiline
    }
}

/// Normalize's side of the broken-record rule: for one record as the `csv`
/// crate read it (`record` starts at the record, `at_end` when it runs to the
/// end of the page), where its first line ends if the record is broken.
pub(crate) fn broken_first_line(record: &[u8], delim: u8, at_end: bool) -> Option<usize> {
    let mut scan = CsvScan::default();
    let broken = match scan.run(record, delim) {
        Step::Broken => true,
        Step::End(_) => false,
        Step::More => at_end && scan.broken_at_end(),
    };
    if !broken {
        return None;
    }
    record.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// Incremental, I/O-free page splitter.
#[derive(Debug)]
pub struct Splitter {
    format: Format,
    delimiter: u8,
    page_records: usize,

    /// CSV only: the header record (BOM stripped, always ends with `\n`); None until read.
    header: Option<Vec<u8>>,
    /// Lines the header occupies.
    header_lines: u64,

    /// File bytes not yet handed out, starting at file offset `buf_offset`.
    buf: Vec<u8>,
    buf_offset: u64,
    /// Where the current page's first record starts (or will start) in `buf`.
    page_start: usize,
    /// End of the current page's last record in `buf`.
    page_end: usize,
    /// Where the current (incomplete) record starts in `buf`.
    record_start: usize,
    /// How far the current record has been scanned.
    scan_pos: usize,
    scan: CsvScan,
    /// Line on which the current record starts.
    line: u64,

    page_records_so_far: usize,
    page_first_line: u64,
    page_last_line: u64,

    /// Whether the first bytes have been checked for a BOM.
    bom_checked: bool,
    /// Inside a line longer than [`MAX_RECORD_BYTES`], dropping it up to its newline.
    skipping: Option<TooLong>,
}

impl Splitter {
    /// `page_records` is clamped to at least 1.
    pub fn new(format: Format, delimiter: u8, page_records: usize) -> Self {
        Splitter {
            format,
            delimiter,
            page_records: page_records.max(1),
            header: None,
            header_lines: 0,
            buf: Vec::new(),
            buf_offset: 0,
            page_start: 0,
            page_end: 0,
            record_start: 0,
            scan_pos: 0,
            scan: CsvScan::default(),
            line: 1,
            page_records_so_far: 0,
            page_first_line: 0,
            page_last_line: 0,
            bom_checked: false,
            skipping: None,
        }
    }

    /// Continue a file at `offset`, a record boundary on line `line`, with
    /// the CSV header read earlier as `(header, lines it spans)` (None for NDJSON).
    pub fn resume(
        format: Format,
        delimiter: u8,
        page_records: usize,
        header: Option<(Vec<u8>, u64)>,
        offset: u64,
        line: u64,
    ) -> Self {
        let mut s = Splitter::new(format, delimiter, page_records);
        s.bom_checked = true;
        s.buf_offset = offset;
        s.line = line.max(1);
        if let Some((h, lines)) = header.filter(|_| format == Format::Csv) {
            s.header = Some(h);
            s.header_lines = lines;
        }
        s
    }

    /// The CSV header record (without BOM, ending in `\n`), once read.
    pub fn header(&self) -> Option<&[u8]> {
        self.header.as_deref()
    }

    /// How many lines the CSV header spans (0 before it is read and for NDJSON).
    pub fn header_lines(&self) -> u64 {
        self.header_lines
    }

    /// Bytes of the file fed so far (including a skipped BOM).
    pub fn offset(&self) -> u64 {
        self.buf_offset + self.buf.len() as u64
    }

    /// Feed the next chunk of the file; complete pages are appended to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SplitPage>) -> Result<(), SplitError> {
        if self.skipping.is_some() {
            // Nothing is buffered while a too-long line is dropped.
            match chunk.iter().position(|&b| b == b'\n') {
                None => {
                    self.buf_offset += chunk.len() as u64;
                    return Ok(());
                }
                Some(j) => {
                    self.buf_offset += j as u64 + 1;
                    self.end_skip(out);
                    chunk = &chunk[j + 1..];
                }
            }
        }
        // Drop what earlier pages (and skipped blank lines) used.
        let used = self.page_start;
        if used > 0 {
            self.buf.drain(..used);
            self.buf_offset += used as u64;
            self.page_start = 0;
            self.page_end = self.page_end.saturating_sub(used);
            self.record_start -= used;
            self.scan_pos -= used;
        }
        self.buf.extend_from_slice(chunk);
        if !self.bom_checked {
            if self.buf.len() < BOM.len() {
                return Ok(());
            }
            self.skip_bom();
        }
        self.scan(false, out)
    }

    /// End of file: the last page, if any records are left.
    pub fn finish(&mut self, out: &mut Vec<SplitPage>) -> Result<(), SplitError> {
        if self.skipping.is_some() {
            self.end_skip(out);
            return Ok(());
        }
        if !self.bom_checked {
            self.skip_bom();
        }
        self.scan(true, out)?;
        if self.page_records_so_far > 0 {
            self.emit(out);
        }
        Ok(())
    }

    fn skip_bom(&mut self) {
        self.bom_checked = true;
        if self.buf_offset == 0 && self.buf.starts_with(BOM) {
            self.page_start = BOM.len();
            self.record_start = BOM.len();
            self.scan_pos = BOM.len();
        }
    }

    fn scan(&mut self, eof: bool, out: &mut Vec<SplitPage>) -> Result<(), SplitError> {
        loop {
            let step = match self.format {
                Format::Ndjson => match self.buf[self.scan_pos..].iter().position(|&b| b == b'\n') {
                    Some(j) => Step::End(j),
                    None => Step::More,
                },
                Format::Csv => self.scan.run(&self.buf[self.scan_pos..], self.delimiter),
            };
            match step {
                Step::End(j) => {
                    let end = self.scan_pos + j + 1;
                    self.record_done(end, true, out);
                }
                Step::Broken => self.break_record(out),
                Step::More => {
                    self.scan_pos = self.buf.len();
                    if eof {
                        if self.format == Format::Csv && self.scan.broken_at_end() {
                            self.break_record(out);
                            continue;
                        }
                        if self.record_start < self.buf.len() {
                            self.record_done(self.buf.len(), false, out);
                        }
                    } else if self.buf.len() - self.record_start > MAX_RECORD_BYTES {
                        if self.format == Format::Csv && self.header.is_none() {
                            return Err(SplitError::RecordTooLarge { line: self.line });
                        }
                        self.start_skip(out);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The current record is one line past [`MAX_RECORD_BYTES`] with no end
    /// in sight: close the page before it, keep its start, drop the rest.
    fn start_skip(&mut self, out: &mut Vec<SplitPage>) {
        if self.page_records_so_far > 0 {
            self.emit(out);
        }
        let start = self.record_start;
        let end = (start + TOO_LONG_PREFIX).min(self.buf.len());
        let prefix = Bytes::copy_from_slice(&self.buf[start..end]);
        self.skipping = Some(TooLong { line: self.line, prefix });
        // Everything buffered is accounted for: pages emitted, blank lines, this line.
        self.buf_offset += self.buf.len() as u64;
        self.buf.clear();
        self.page_start = 0;
        self.page_end = 0;
        self.record_start = 0;
        self.scan_pos = 0;
        self.scan = CsvScan::default();
    }

    /// The too-long line ended (at a newline or the end of the file).
    fn end_skip(&mut self, out: &mut Vec<SplitPage>) {
        let Some(skipped) = self.skipping.take() else { return };
        let line = skipped.line;
        out.push(SplitPage {
            body: Bytes::from(self.header.clone().unwrap_or_default()),
            first_line: line,
            last_line: line,
            records: 0,
            end_offset: self.buf_offset,
            too_long: Some(skipped),
        });
        self.line = line + 1;
    }

    /// A broken CSV record: its first line becomes a record of its own and
    /// scanning restarts on the next line.
    fn break_record(&mut self, out: &mut Vec<SplitPage>) {
        match self.buf[self.record_start..].iter().position(|&b| b == b'\n') {
            Some(i) => self.record_done(self.record_start + i + 1, true, out),
            None => {
                // Cannot happen (a broken field spans a line break); never loop.
                self.record_done(self.buf.len(), false, out);
            }
        }
    }

    /// The current record is `buf[record_start..end]`.
    fn record_done(&mut self, end: usize, terminated: bool, out: &mut Vec<SplitPage>) {
        let record = &self.buf[self.record_start..end];
        let newlines = match self.format {
            Format::Ndjson => u64::from(terminated),
            Format::Csv => count_newlines(record),
        };
        let first = self.line;
        let last = if terminated { first + newlines - 1 } else { first + newlines };
        // A whitespace delimiter (tab) makes a line of fields, not a blank line.
        let delim = if self.format == Format::Csv { Some(self.delimiter) } else { None };
        let blank = record.iter().all(|&b| b.is_ascii_whitespace() && Some(b) != delim);
        let header_needed = self.format == Format::Csv && self.header.is_none();

        self.line = first + newlines;
        self.scan = CsvScan::default();
        let start = self.record_start;
        self.record_start = end;
        self.scan_pos = end;

        if blank {
            if self.page_records_so_far == 0 {
                // Blank lines never start a page (nor precede the header).
                self.page_start = end;
            }
            return;
        }
        if header_needed {
            let mut header = self.buf[start..end].to_vec();
            if !terminated {
                header.push(b'\n');
            }
            self.header = Some(header);
            self.header_lines = last - first + 1;
            self.page_start = end;
            return;
        }
        if self.page_records_so_far == 0 {
            self.page_first_line = first;
            self.page_start = start;
        }
        self.page_records_so_far += 1;
        self.page_last_line = last;
        self.page_end = end;
        if self.page_records_so_far >= self.page_records {
            self.emit(out);
        }
    }

    /// Close the page after its last record.
    fn emit(&mut self, out: &mut Vec<SplitPage>) {
        let records = &self.buf[self.page_start..self.page_end];
        let header = self.header.as_deref().unwrap_or_default();
        let mut body = Vec::with_capacity(header.len() + records.len());
        body.extend_from_slice(header);
        body.extend_from_slice(records);
        out.push(SplitPage {
            body: Bytes::from(body),
            first_line: self.page_first_line,
            last_line: self.page_last_line,
            records: self.page_records_so_far,
            end_offset: self.buf_offset + self.page_end as u64,
            too_long: None,
        });
        self.page_start = self.page_end;
        self.page_records_so_far = 0;
    }
}

pub(crate) fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Split a whole in-memory file (tests, tools). Feeds it in `chunk` sized pieces.
pub fn split_all(
    format: Format,
    delimiter: u8,
    page_records: usize,
    data: &[u8],
    chunk: usize,
) -> Result<Vec<SplitPage>, SplitError> {
    let mut s = Splitter::new(format, delimiter, page_records);
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        s.feed(piece, &mut out)?;
    }
    s.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(pages: &[SplitPage]) -> Vec<String> {
        pages.iter().map(|p| String::from_utf8_lossy(&p.body).into_owned()).collect()
    }

    fn all_chunk_sizes(format: Format, page_records: usize, data: &[u8]) -> Vec<SplitPage> {
        let reference = split_all(format, b',', page_records, data, data.len().max(1)).expect("split");
        for chunk in 1..=data.len().min(16) {
            let pages = split_all(format, b',', page_records, data, chunk).expect("split");
            assert_eq!(pages, reference, "chunk size {chunk}");
        }
        reference
    }

    #[test]
    fn ndjson_pages_skip_blank_lines_and_track_lines() {
        let data = b"\n{\"a\":1}\n  \n{\"a\":2}\r\n{\"a\":3}\n\n\n{\"a\":4}";
        let pages = all_chunk_sizes(Format::Ndjson, 2, data);
        assert_eq!(bodies(&pages), ["{\"a\":1}\n  \n{\"a\":2}\r\n", "{\"a\":3}\n\n\n{\"a\":4}"]);
        assert_eq!((pages[0].first_line, pages[0].last_line, pages[0].records), (2, 4, 2));
        assert_eq!((pages[1].first_line, pages[1].last_line, pages[1].records), (5, 8, 2));
        assert_eq!(pages[0].end_offset, 21);
        assert_eq!(pages[1].end_offset, data.len() as u64);
        // Trailing blank lines and a BOM are not records.
        let pages = all_chunk_sizes(Format::Ndjson, 5, b"\xEF\xBB\xBF{}\n\n \n");
        assert_eq!(bodies(&pages), ["{}\n"]);
        assert_eq!((pages[0].first_line, pages[0].last_line, pages[0].end_offset), (1, 1, 6));
        let pages = all_chunk_sizes(Format::Ndjson, 5, b"\xEF\xBB{}");
        assert_eq!(pages[0].body.as_ref(), b"\xEF\xBB{}");
    }

    #[test]
    fn csv_header_is_prepended_and_quotes_respected() {
        let data = b"\xEF\xBB\xBFid,name\r\n1,\"a\r\nb\"\r\n\r\n2,\"x,\"\"y\"\"\"\r\n3,plain\"quote\n4,\"\"\n";
        let pages = all_chunk_sizes(Format::Csv, 2, data);
        assert_eq!(
            bodies(&pages),
            ["id,name\r\n1,\"a\r\nb\"\r\n\r\n2,\"x,\"\"y\"\"\"\r\n", "id,name\r\n3,plain\"quote\n4,\"\"\n"]
        );
        assert_eq!((pages[0].first_line, pages[0].last_line, pages[0].records), (2, 5, 2));
        assert_eq!((pages[1].first_line, pages[1].last_line, pages[1].records), (6, 7, 2));
        assert_eq!(pages[1].end_offset, data.len() as u64);
    }

    #[test]
    fn csv_header_only_or_empty_file_yields_nothing() {
        assert!(all_chunk_sizes(Format::Csv, 2, b"id,name\n").is_empty());
        assert!(all_chunk_sizes(Format::Csv, 2, b"id,name").is_empty());
        assert!(all_chunk_sizes(Format::Csv, 2, b"").is_empty());
        assert!(all_chunk_sizes(Format::Ndjson, 2, b"\n\n \n").is_empty());
    }

    #[test]
    fn csv_header_spanning_lines_and_missing_final_newline() {
        let data = b"\n\"i\nd\",x\n1,2";
        let mut s = Splitter::new(Format::Csv, b',', 10);
        let mut out = Vec::new();
        s.feed(data, &mut out).expect("feed");
        s.finish(&mut out).expect("finish");
        assert_eq!(s.header(), Some(&b"\"i\nd\",x\n"[..]));
        assert_eq!(s.header_lines(), 2);
        assert_eq!(bodies(&out), ["\"i\nd\",x\n1,2"]);
        assert_eq!((out[0].first_line, out[0].last_line), (4, 4));
    }

    #[test]
    fn broken_quote_costs_one_line() {
        // Line 3 opens a quote that the quote on line 5 "closes" followed by junk.
        let data = b"id,name,ip\n1,a,x\n2,\"broken,10.0.0.1\n3,b,x\n4,\"c, d\",x\n5,\"ok\nmultiline\",x\n6,e,x\n";
        let pages = all_chunk_sizes(Format::Csv, 100, data);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].records, 6);
        assert_eq!((pages[0].first_line, pages[0].last_line), (2, 8));
        assert_eq!(
            broken_first_line(b"2,\"broken,10.0.0.1\n3,b,x\n4,\"c, d\",x\n", b',', false),
            Some(b"2,\"broken,10.0.0.1\n".len())
        );
        assert_eq!(broken_first_line(b"5,\"ok\nmultiline\",x\n", b',', false), None);

        // Unterminated at the end of the file: same.
        let data = b"id,name\n1,\"never closed\n2,b\n3,c";
        let pages = all_chunk_sizes(Format::Csv, 100, data);
        assert_eq!((pages[0].records, pages[0].first_line, pages[0].last_line), (3, 2, 4));
        assert_eq!(broken_first_line(b"1,\"never closed\n2,b\n3,c", b',', true), Some(16));
        assert_eq!(broken_first_line(b"1,\"never closed\n2,b\n3,c", b',', false), None);
    }

    #[test]
    fn broken_quote_recovers_after_the_line_cap() {
        let mut data = b"id,name\n1,\"open\n".to_vec();
        for i in 0..(MAX_QUOTED_LINES + 50) {
            data.extend_from_slice(format!("{i},x\n").as_bytes());
        }
        data.extend_from_slice(b"last,\"q\"\n");
        let pages = split_all(Format::Csv, b',', 1_000_000, &data, 4096).expect("split");
        assert_eq!(pages[0].records as u64, MAX_QUOTED_LINES + 52);
    }

    #[test]
    fn resume_continues_with_the_same_pages() {
        let data = b"id,n\n1,a\n2,\"b\nc\"\n3,d\n4,e\n";
        let all = all_chunk_sizes(Format::Csv, 1, data);
        let after = all[1].end_offset;
        let mut s = Splitter::resume(Format::Csv, b',', 1, Some((b"id,n\n".to_vec(), 1)), after, all[1].last_line + 1);
        let mut out = Vec::new();
        s.feed(&data[after as usize..], &mut out).expect("feed");
        s.finish(&mut out).expect("finish");
        assert_eq!(out, all[2..]);
    }

    /// A line past the limit is dropped as it streams in (memory stays
    /// bounded), reported as a `too_long` page in its place, and the records
    /// around it are split as usual.
    #[test]
    fn a_huge_line_is_skipped_and_reported_in_its_place() {
        for (format, head, next) in
            [(Format::Ndjson, &b""[..], &b"{\"id\":3}\n{\"id\":4}\n"[..]), (Format::Csv, &b"id\n"[..], &b"3\n4\n"[..])]
        {
            let mut s = Splitter::new(format, b',', 10);
            let mut out = Vec::new();
            let first: &[u8] = if format == Format::Csv { b"1\n" } else { b"{\"id\":1}\n" };
            s.feed(head, &mut out).expect("feed");
            s.feed(first, &mut out).expect("feed");
            let mut fed = (head.len() + first.len()) as u64;
            let piece = vec![b'x'; 1024 * 1024];
            for _ in 0..20 {
                s.feed(&piece, &mut out).expect("a long line never fails the split");
                fed += piece.len() as u64;
                assert!(s.buf.len() <= MAX_RECORD_BYTES + piece.len(), "buffered {}", s.buf.len());
            }
            s.feed(b"tail\n", &mut out).expect("feed");
            s.feed(next, &mut out).expect("feed");
            s.finish(&mut out).expect("finish");
            let line0 = if format == Format::Csv { 2 } else { 1 };
            assert_eq!(out.len(), 3, "{format:?}: {out:?}");
            assert_eq!((out[0].records, out[0].first_line, out[0].too_long.is_none()), (1, line0, true));
            let skipped = out[1].too_long.as_ref().expect("the long line is reported");
            assert_eq!((skipped.line, out[1].records), (line0 + 1, 0));
            assert_eq!(skipped.prefix.len(), TOO_LONG_PREFIX);
            assert_eq!(out[1].end_offset, fed + 5, "the checkpoint resumes after the long line");
            assert_eq!(out[1].body.as_ref(), head, "no records, only the header");
            assert_eq!((out[2].records, out[2].first_line), (2, line0 + 2));
            assert_eq!(out[2].body.as_ref(), [head, next].concat());
        }
        // A header that long is an error: no record could be read without it.
        let mut s = Splitter::new(Format::Csv, b',', 10);
        let piece = vec![b'x'; 1024 * 1024];
        let err = (0..20).find_map(|_| s.feed(&piece, &mut Vec::new()).err());
        assert_eq!(err, Some(SplitError::RecordTooLarge { line: 1 }));
    }
}

#[cfg(test)]
mod fuzz {
    use corral_core::RawPage;

    use super::*;
    use crate::config;

    /// A tiny deterministic generator (no dev-dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    fn settings(format: &str, kind: &str) -> config::Settings {
        config::parse(serde_json::json!({
            "path": "f", "format": format, "kind": kind,
            "columns": {"source_id": "id", "tags": "t"}
        }))
        .expect("valid")
    }

    /// Random CSV/NDJSON-ish bytes: chunking never changes the pages, and
    /// normalize accounts for every record the splitter counted.
    #[test]
    fn random_inputs_split_consistently_and_never_panic() {
        let alphabet: &[&[u8]] = &[
            b"a",
            b"1",
            b",",
            b",",
            b"\"",
            b"\n",
            b"\n",
            b" ",
            b"\xff",
            b"\r",
            b"\t",
            b"{\"id\":\"x\"}",
            b"\"\"",
            b"\xC3\xA9",
        ];
        let mut rng = Lcg(42);
        for round in 0..500 {
            let format = if round % 2 == 0 { Format::Csv } else { Format::Ndjson };
            let mut data = if format == Format::Csv { b"id,t\n".to_vec() } else { Vec::new() };
            let len = (rng.next() % 300) as usize;
            for _ in 0..len {
                data.extend_from_slice(alphabet[(rng.next() as usize) % alphabet.len()]);
            }
            let page_records = 1 + (rng.next() % 5) as usize;
            let whole = split_all(format, b',', page_records, &data, data.len().max(1)).expect("split");
            let chunk = 1 + (rng.next() % 7) as usize;
            assert_eq!(split_all(format, b',', page_records, &data, chunk).expect("split"), whole, "round {round}");

            let s = settings(format.as_str(), "device");
            let mut prev_last = 0;
            for p in &whole {
                assert!(p.first_line > prev_last, "round {round}: pages overlap");
                prev_last = p.last_line;
                let page = RawPage::new("devices", p.body.clone(), "x")
                    .with_first_record(p.first_line)
                    .with_record_hint(p.records);
                let n = crate::normalize::normalize_page(&s, &page);
                assert_eq!(n.page_error, None);
                // (The csv crate also ends records at a lone `\r`; fetch does not.)
                if format == Format::Ndjson || !data.contains(&b'\r') {
                    assert_eq!(n.assets.len() + n.rejects.len(), p.records, "round {round}: {:?}", p.body);
                }
                for r in &n.rejects {
                    let line: u64 = r.record.trim_start_matches("line ").parse().expect("line N");
                    assert!((p.first_line..=p.last_line).contains(&line), "round {round}: {r:?} outside {p:?}");
                }
            }
        }
    }
}
