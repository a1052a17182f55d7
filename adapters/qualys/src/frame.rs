//! Framing an answer without decoding it: where each `<HOST>` element starts
//! and ends, and what the small tail after `</HOST_LIST>` says (the WARNING
//! with the next URL, whether the document ended).
//!
//! The scan is byte-level (memchr): it jumps from one `<` to the next and
//! skips CDATA sections and comments whole, so a `</HOST>` inside a
//! detection's RESULTS never cuts a host in two. It runs on the blocking
//! pool in fetch ([`corral_http::off_runtime`]) and again on the normalize
//! pool to split a page into hosts. Pages are zero-copy slices of the answer
//! ([`Bytes::slice`]): the answer is in memory once, however it is cut.

use bytes::Bytes;
use memchr::memmem;
use quick_xml::Reader;
use quick_xml::events::Event;

/// Qualys's "more records than the truncation limit" warning.
pub const CODE_TRUNCATED: &str = "1980";

/// One `<HOST>` element: byte range within the scanned text. `closed` is
/// false when another `<HOST>` (or the end of the list) came before its
/// `</HOST>`: a host cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpan {
    pub start: usize,
    pub end: usize,
    pub closed: bool,
}

/// The `<HOST>` elements of `text` (a whole answer, or a page of hosts), and
/// where the host list ended (just after `</HOST_LIST>`), if it did.
pub fn host_spans(text: &[u8]) -> (Vec<HostSpan>, Option<usize>) {
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'<', &text[i..]) {
        let at = i + off;
        let rest = &text[at..];
        if rest.starts_with(b"<![CDATA[") {
            match memmem::find(&rest[9..], b"]]>") {
                Some(e) => i = at + 9 + e + 3,
                None => break,
            }
            continue;
        }
        if rest.starts_with(b"<!--") {
            match memmem::find(&rest[4..], b"-->") {
                Some(e) => i = at + 4 + e + 3,
                None => break,
            }
            continue;
        }
        if rest.starts_with(b"<HOST>") {
            if let Some(s) = open.take() {
                spans.push(HostSpan { start: s, end: at, closed: false });
            }
            open = Some(at);
            i = at + 6;
            continue;
        }
        if rest.starts_with(b"</HOST>") {
            let end = at + 7;
            if let Some(s) = open.take() {
                spans.push(HostSpan { start: s, end, closed: true });
            }
            i = end;
            continue;
        }
        if rest.starts_with(b"</HOST_LIST>") {
            if let Some(s) = open.take() {
                spans.push(HostSpan { start: s, end: at, closed: false });
            }
            return (spans, Some(at + 12));
        }
        i = at + 1;
    }
    if let Some(s) = open {
        spans.push(HostSpan { start: s, end: text.len(), closed: false });
    }
    (spans, None)
}

/// What the part of an answer after its host list said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The document's root element closed: the answer is whole.
    pub complete: bool,
    /// WARNING code and URL, when the answer was truncated.
    pub warning_code: Option<String>,
    pub warning_url: Option<String>,
    pub warning_text: Option<String>,
}

/// Read the tail (everything after `</HOST_LIST>`, or the whole answer when
/// it listed no host) with quick-xml: WARNING/CODE, WARNING/URL (CDATA) and
/// whether `</root>` came.
pub fn tail(text: &[u8], root: &str) -> Tail {
    let close = format!("</{root}>");
    let trimmed = text.trim_ascii_end();
    let mut out = Tail { complete: trimmed.ends_with(close.as_bytes()), ..Tail::default() };
    // The WARNING element alone is balanced XML: read it with quick-xml.
    let Some(start) = memmem::find(text, b"<WARNING>") else { return out };
    let Some(len) = memmem::find(&text[start..], b"</WARNING>") else { return out };
    let mut reader = Reader::from_reader(&text[start..start + len + 10]);
    let mut path: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => path.push(e.name().as_ref().to_string()),
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(t)) => append_warning(&mut out, &path, t.trim()),
            Ok(Event::CData(t)) => append_warning(&mut out, &path, t.trim()),
            Ok(Event::GeneralRef(r)) => {
                // `&amp;` in a URL written as text rather than CDATA.
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => crate::normalize::named_entity(&r),
                };
                if let Some(c) = ch {
                    append_warning(&mut out, &path, c.encode_utf8(&mut [0; 4]));
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

fn append_warning(out: &mut Tail, path: &[String], s: &str) {
    let slot = match path {
        [.., w, leaf] if w == "WARNING" => match leaf.as_str() {
            "CODE" => &mut out.warning_code,
            "URL" => &mut out.warning_url,
            "TEXT" => &mut out.warning_text,
            _ => return,
        },
        _ => return,
    };
    slot.get_or_insert_with(String::new).push_str(s);
}

/// An answer cut into pages.
#[derive(Debug, Default)]
pub struct Framed {
    /// Each a slice of the answer holding up to `hosts_per_page` `<HOST>` elements.
    pub pages: Vec<(Bytes, usize)>,
    pub hosts: usize,
    pub tail: Tail,
}

/// Cut `body` into pages of at most `hosts_per_page` hosts (zero-copy) and
/// read its tail. A host cut short stays in its page: normalize reports it.
pub fn frame(body: &Bytes, root: &str, hosts_per_page: usize) -> Framed {
    let (spans, list_end) = host_spans(body);
    let per = hosts_per_page.max(1);
    let mut out = Framed { hosts: spans.len(), ..Framed::default() };
    for group in spans.chunks(per) {
        if let (Some(first), Some(last)) = (group.first(), group.last()) {
            out.pages.push((body.slice(first.start..last.end), group.len()));
        }
    }
    let tail_from = list_end.unwrap_or_else(|| if spans.is_empty() { 0 } else { body.len() });
    out.tail = tail(&body[tail_from..], root);
    if list_end.is_none() && !spans.is_empty() {
        // The list never closed: the answer was cut inside it.
        out.tail.complete = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<!DOCTYPE HOST_LIST_OUTPUT SYSTEM \"x.dtd\">\n\
<HOST_LIST_OUTPUT><RESPONSE><DATETIME>2024-01-01T00:00:00Z</DATETIME><HOST_LIST>\
<HOST><ID>1</ID><DNS><![CDATA[a</HOST>b]]></DNS></HOST>\
<!-- </HOST> --><HOST><ID>2</ID></HOST>\
<HOST><ID>3</ID></HOST>\
</HOST_LIST><WARNING><CODE>1980</CODE><TEXT>3 record limit exceeded.</TEXT>\
<URL><![CDATA[https://q.example/api/2.0/fo/asset/host/?action=list&truncation_limit=3&id_min=4]]></URL></WARNING>\
</RESPONSE></HOST_LIST_OUTPUT>\n";

    #[test]
    fn hosts_are_cut_at_their_end_tags_not_inside_cdata_or_comments() {
        let body = Bytes::from_static(DOC.as_bytes());
        let f = frame(&body, "HOST_LIST_OUTPUT", 2);
        assert_eq!(f.hosts, 3);
        let pages: Vec<&[u8]> = f.pages.iter().map(|(b, _)| b.as_ref()).collect();
        assert_eq!(pages.len(), 2);
        assert!(pages[0].starts_with(b"<HOST><ID>1</ID>") && pages[0].ends_with(b"<ID>2</ID></HOST>"));
        assert_eq!(pages[1], b"<HOST><ID>3</ID></HOST>");
        assert_eq!(f.pages[0].1, 2);
        assert!(f.tail.complete);
        assert_eq!(f.tail.warning_code.as_deref(), Some(CODE_TRUNCATED));
        assert_eq!(
            f.tail.warning_url.as_deref(),
            Some("https://q.example/api/2.0/fo/asset/host/?action=list&truncation_limit=3&id_min=4")
        );
    }

    #[test]
    fn pages_share_the_answer_buffer() {
        let body = Bytes::from(DOC.as_bytes().to_vec());
        let f = frame(&body, "HOST_LIST_OUTPUT", 100);
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        assert!(f.pages.iter().all(|(p, _)| range.contains(&(p.as_ptr() as usize))), "slices, not copies");
    }

    #[test]
    fn a_cut_answer_is_incomplete_and_its_last_host_unclosed() {
        let cut = &DOC[..DOC.find("<ID>3").expect("host 3")];
        let f = frame(&Bytes::from(cut.to_string()), "HOST_LIST_OUTPUT", 100);
        assert!(!f.tail.complete);
        let (spans, end) = host_spans(cut.as_bytes());
        assert_eq!(end, None);
        assert!(!spans[2].closed);
        let full = frame(&Bytes::from_static(DOC.as_bytes()), "HOST_LIST_VM_DETECTION_OUTPUT", 100);
        assert!(!full.tail.complete, "another root is not this answer's end");
    }

    #[test]
    fn an_answer_without_hosts_and_without_warning() {
        let doc = "<HOST_LIST_OUTPUT><RESPONSE><DATETIME>x</DATETIME></RESPONSE></HOST_LIST_OUTPUT>";
        let f = frame(&Bytes::from_static(doc.as_bytes()), "HOST_LIST_OUTPUT", 10);
        assert_eq!(f.hosts, 0);
        assert!(f.pages.is_empty());
        assert!(f.tail.complete);
        assert_eq!(f.tail.warning_url, None);
    }

    #[test]
    fn a_url_written_as_escaped_text_reads_back() {
        let doc =
            "</HOST_LIST><WARNING><CODE>1980</CODE><URL>https://q/x?a=1&amp;id_min=5</URL></WARNING></RESPONSE></R>";
        let t = tail(doc.as_bytes(), "R");
        assert!(t.complete);
        assert_eq!(t.warning_url.as_deref(), Some("https://q/x?a=1&id_min=5"));
    }
}
