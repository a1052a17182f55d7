//! Qualys VMDR: the Host List Detection API, the Host List API and the
//! KnowledgeBase, in XML. Data: [`crate::data::qualys`].
//!
//! What it reproduces:
//! - **Auth**: HTTP Basic (`client_id:client_secret` of the
//!   [`SimConfig`](crate::SimConfig) credentials) **and** an `X-Requested-With`
//!   header (any value) on every request. Bad credentials: **401** with
//!   `<SIMPLE_RETURN>` "Bad Login/Password" (with `Faults::echo_credentials`,
//!   followed by the refused login and password). A missing `X-Requested-With`: **400**
//!   with `<SIMPLE_RETURN>` (code 1903) naming the header. (Qualys documents the
//!   header as required; the exact status and code of its refusal are our
//!   choice, not confirmed.)
//! - `GET` or `POST` (form body) `/api/2.0/fo/asset/host/vm/detection/?action=list`
//!   → `HOST_LIST_VM_DETECTION_OUTPUT/RESPONSE/{DATETIME, HOST_LIST/HOST{ID, IP,
//!   TRACKING_METHOD, OS, DNS, NETBIOS, LAST_SCAN_DATETIME, DETECTION_LIST/DETECTION{QID,
//!   TYPE, SEVERITY, PORT, PROTOCOL, RESULTS, STATUS, FIRST_FOUND_DATETIME,
//!   LAST_FOUND_DATETIME}}, WARNING}`. Text values in CDATA as Qualys sends them.
//!   Only hosts with a matching detection are listed. `truncation_limit` hosts
//!   per answer (default 1000, `0` = all); when more remain, a
//!   `WARNING{CODE 1980, TEXT, URL}` whose URL (in CDATA) repeats the request's
//!   parameters with `id_min=<next host ID>`. `show_results=0` leaves `RESULTS` out;
//!   `status=New,Active,...` filters detections (default: every status; a
//!   guess). `id_min`, `ids` (comma list of host IDs) are honoured.
//! - `/api/2.0/fo/asset/host/?action=list` → `HOST_LIST_OUTPUT/RESPONSE/HOST_LIST/HOST{ID,
//!   IP, TRACKING_METHOD, DNS, NETBIOS, OS, LAST_VULN_SCAN_DATETIME}` with the same
//!   truncation (every host, detections or not).
//! - `/api/2.0/fo/knowledge_base/vuln/?action=list&ids=1,2` →
//!   `KNOWLEDGE_BASE_VULN_LIST_OUTPUT/RESPONSE/VULN_LIST/VULN{QID, VULN_TYPE,
//!   SEVERITY_LEVEL, TITLE, CVE_LIST/CVE{ID, URL}}` (QID → CVEs).
//! - A missing `action` is a 400 (code 1903); an unknown one 400 (code 1905).
//! - **Limits**: every answer carries `X-RateLimit-Limit`, `X-RateLimit-Window-Sec`,
//!   `X-RateLimit-Remaining`, `X-RateLimit-ToWait-Sec`, `X-Concurrency-Limit-Limit`
//!   and `X-Concurrency-Limit-Running`. Over the rate limit: **409** (not 429) with
//!   code 1965 and `X-RateLimit-ToWait-Sec`; more than `Behavior::qualys_concurrency`
//!   calls at once: **409** with code 1960. Both count in `rate_limited` and as faults
//!   `rate_limit_409` / `concurrency_409`. Sliding window.
//! - **Streaming**: answers are generated and written a few hosts at a time, never
//!   held whole (a 100 MB answer costs the simulator a few KB). The shared
//!   5xx/slow/hang faults apply; `truncate` cuts the stream (with
//!   `Truncation::Connection` the connection drops; otherwise the XML just ends);
//!   the random `malformed` draws are not applied to streamed XML, but
//!   `malformed_pages` are: answer `p` (0-based: the one whose first host
//!   index lies in `[p * truncation_limit, (p + 1) * truncation_limit)`; for
//!   the host list exactly the p-th answer) renders its first host broken
//!   (variant `p % 3`: a mismatched end tag, an unescaped `&`, or the host
//!   cut short before `</HOST>`), the rest of the document intact. Its ID
//!   stays readable, as in a real corrupted record.
//! - Endpoint labels: `qualys.detection`, `qualys.host`, `qualys.kb`, `qualys.other`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::get;

use crate::data::iso;
use crate::data::qualys::{Detection, Host, QIDS, QualysData, STATUSES};
use crate::ratelimit::Decision;
use crate::server::{Kind, Sim};
use crate::util::{get as qget, parse_form, parse_query, percent_encode};

pub const DETECTION_PATH: &str = "/api/2.0/fo/asset/host/vm/detection/";
pub const HOST_PATH: &str = "/api/2.0/fo/asset/host/";
pub const KB_PATH: &str = "/api/2.0/fo/knowledge_base/vuln/";

/// Marks a response whose body is a stream: the request layer passes it on
/// without buffering it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Streamed;

/// How many hosts are rendered per piece of a streamed body.
const HOSTS_PER_PIECE: u64 = 64;

pub(crate) fn router() -> Router<Arc<Sim>> {
    let route = || get(listing).post(listing);
    Router::new()
        .route(DETECTION_PATH, route())
        .route(DETECTION_PATH.trim_end_matches('/'), route())
        .route(HOST_PATH, route())
        .route(HOST_PATH.trim_end_matches('/'), route())
        .route(KB_PATH, route())
        .route(KB_PATH.trim_end_matches('/'), route())
        .fallback(not_found)
}

pub(crate) fn classify(_method: &Method, path: &str) -> (&'static str, Kind) {
    let p = path.trim_end_matches('/');
    if p == DETECTION_PATH.trim_end_matches('/') {
        ("qualys.detection", Kind::Data)
    } else if p == HOST_PATH.trim_end_matches('/') {
        ("qualys.host", Kind::Data)
    } else if p == KB_PATH.trim_end_matches('/') {
        ("qualys.kb", Kind::Data)
    } else {
        ("qualys.other", Kind::Other)
    }
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    resp
}

/// Qualys's `SIMPLE_RETURN` error document.
fn simple_return(status: StatusCode, code: Option<u32>, text: &str) -> Response {
    let code = code.map(|c| format!("<CODE>{c}</CODE>")).unwrap_or_default();
    xml_response(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<!DOCTYPE SIMPLE_RETURN SYSTEM \"https://qualysapi.qualys.com/api/2.0/simple_return.dtd\">\n<SIMPLE_RETURN>\n  <RESPONSE>\n    <DATETIME>{}</DATETIME>\n    {code}\n    <TEXT>{}</TEXT>\n  </RESPONSE>\n</SIMPLE_RETURN>\n",
            iso(now_secs()),
            escape(text)
        ),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Text in CDATA (a `]]>` inside is split, as XML requires).
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    simple_return(status, Some(999), "Internal error. Please contact customer support.")
}

fn wait_secs(d: &Decision) -> u64 {
    (d.reset_at.saturating_duration_since(Instant::now()).as_secs_f64().ceil() as u64).max(1)
}

/// Over the rate limit: 409 with code 1965 and `X-RateLimit-ToWait-Sec`.
pub(crate) fn too_many(sim: &Sim, d: &Decision) -> Response {
    sim.counters.fault("rate_limit_409");
    sim.counters.rate_limited_answer();
    let wait = wait_secs(d);
    let mut resp = simple_return(
        StatusCode::CONFLICT,
        Some(1965),
        &format!("This API cannot be run again for another {wait} seconds."),
    );
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert("X-RateLimit-ToWait-Sec", v);
    }
    resp
}

/// More calls running than the concurrency limit: 409 with code 1960.
pub(crate) fn too_many_running(sim: &Sim, running: u64) -> Response {
    sim.counters.fault("concurrency_409");
    sim.counters.rate_limited_answer();
    simple_return(
        StatusCode::CONFLICT,
        Some(1960),
        &format!(
            "This API cannot be run again until {} currently running instance(s) have finished.",
            running.saturating_sub(1)
        ),
    )
}

pub(crate) fn rate_headers(sim: &Sim, headers: &mut HeaderMap, d: &Decision) {
    let window = sim.config.rate_limit.map_or(3600, |l| l.per.as_secs().max(1));
    let to_wait = if d.allowed { 0 } else { wait_secs(d) };
    let running = sim.counters.in_flight_now();
    for (name, value) in [
        ("X-RateLimit-Limit", u64::from(d.limit)),
        ("X-RateLimit-Window-Sec", window),
        ("X-RateLimit-Remaining", u64::from(d.remaining)),
        ("X-RateLimit-ToWait-Sec", to_wait),
        ("X-Concurrency-Limit-Limit", sim.config.behavior.qualys_concurrency as u64),
        ("X-Concurrency-Limit-Running", running),
    ] {
        if !headers.contains_key(name)
            && let Ok(v) = HeaderValue::from_str(&value.to_string())
        {
            headers.insert(name, v);
        }
    }
}

async fn not_found() -> Response {
    simple_return(StatusCode::NOT_FOUND, None, "Page not found")
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(crate::kit::std_b64_decode(b64.trim())?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    let c = &sim.config.credentials;
    match basic(headers) {
        Some((u, p)) if u == c.client_id && p == c.client_secret && sim.static_token_works() => {}
        Some((u, p)) if sim.config.faults.echo_credentials => {
            // `Faults::echo_credentials`: the refused login quoted back.
            return Err(simple_return(StatusCode::UNAUTHORIZED, None, &format!("Bad Login/Password ({u}:{p})")));
        }
        _ => return Err(simple_return(StatusCode::UNAUTHORIZED, None, "Bad Login/Password")),
    }
    if headers.get("x-requested-with").is_none_or(|v| v.as_bytes().is_empty()) {
        return Err(simple_return(
            StatusCode::BAD_REQUEST,
            Some(1903),
            "Missing required header: X-Requested-With. Please add it to the request.",
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Detection,
    Host,
    Kb,
}

async fn listing(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&sim, &headers) {
        return r;
    }
    let mut pairs = parse_query(q.as_deref());
    if method == Method::POST {
        pairs.extend(parse_form(&body));
    }
    let api = match classify(&method, uri.path()).0 {
        "qualys.detection" => Api::Detection,
        "qualys.host" => Api::Host,
        _ => Api::Kb,
    };
    match qget(&pairs, "action") {
        None => return simple_return(StatusCode::BAD_REQUEST, Some(1903), "Missing required parameter(s): action"),
        Some("list") => {}
        Some(other) => {
            return simple_return(
                StatusCode::BAD_REQUEST,
                Some(1905),
                &format!("parameter action has invalid value: {other}"),
            );
        }
    }
    if api == Api::Kb {
        return knowledge_base(&pairs);
    }
    let number = |name: &str, default: u64| -> Result<u64, Response> {
        match qget(&pairs, name).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                simple_return(StatusCode::BAD_REQUEST, Some(1905), &format!("parameter {name} has invalid value: {v}"))
            }),
        }
    };
    let limit = match number("truncation_limit", 1000) {
        Ok(0) => u64::MAX,
        Ok(n) => n,
        Err(r) => return r,
    };
    let id_min = match number("id_min", 0) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let show_results = qget(&pairs, "show_results").map(str::trim) != Some("0");
    let statuses: Vec<&'static str> = match qget(&pairs, "status") {
        None | Some("") => STATUSES.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for s in list.split(',').map(str::trim) {
                match STATUSES.iter().find(|x| x.eq_ignore_ascii_case(s)) {
                    Some(x) => out.push(*x),
                    None => {
                        return simple_return(
                            StatusCode::BAD_REQUEST,
                            Some(1905),
                            &format!("parameter status has invalid value: {s}"),
                        );
                    }
                }
            }
            out
        }
    };
    let ids: Option<Vec<u64>> = match qget(&pairs, "ids") {
        None | Some("") => None,
        Some(list) => match list.split(',').map(|s| s.trim().parse::<u64>()).collect::<Result<Vec<_>, _>>() {
            Ok(v) => Some(v),
            Err(_) => return simple_return(StatusCode::BAD_REQUEST, Some(1905), "parameter ids has invalid value"),
        },
    };
    let data =
        QualysData::new(sim.config.seed, sim.config.size, sim.generation(), sim.config.behavior.findings_per_asset);
    let origin = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| sim.base_url.clone(), |h| format!("http://{h}"));
    let kept: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != "id_min")
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    let next_url = format!("{origin}{}?{}", uri.path(), kept.join("&"));
    let page = if limit == u64::MAX { 0 } else { data.first_index_from(id_min) / limit };
    let label = if api == Api::Detection { "qualys.detection" } else { "qualys.host" };
    let malformed = usize::try_from(page).ok().filter(|p| sim.serve_malformed_page(label, *p)).map(|p| (p % 3) as u8);
    let plan = Plan { api, data, limit, id_min, show_results, statuses, ids, next_url, malformed };
    let mut resp = Response::new(Body::from_stream(plan.stream()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    resp.extensions_mut().insert(Streamed);
    resp
}

struct Plan {
    api: Api,
    data: QualysData,
    limit: u64,
    id_min: u64,
    show_results: bool,
    statuses: Vec<&'static str>,
    ids: Option<Vec<u64>>,
    next_url: String,
    /// Render the answer's first host broken, in this variant.
    malformed: Option<u8>,
}

/// Where a streamed listing is.
enum Step {
    Head,
    Hosts { index: u64, listed: u64 },
    Tail { next_id: Option<u64> },
    Done,
}

impl Plan {
    fn root(&self) -> &'static str {
        match self.api {
            Api::Detection => "HOST_LIST_VM_DETECTION_OUTPUT",
            _ => "HOST_LIST_OUTPUT",
        }
    }

    fn stream(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let start = self.data.first_index_from(self.id_min);
        futures::stream::unfold((self, Step::Head, start), |(plan, step, start)| async move {
            let (piece, next) = plan.piece(step, start);
            piece.map(|p| (Ok(Bytes::from(p)), (plan, next, start)))
        })
    }

    fn wanted(&self, host: &Host) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&host.id))
    }

    /// The next piece of the document and the step after it.
    fn piece(&self, step: Step, start: u64) -> (Option<String>, Step) {
        let size = self.data.size as u64;
        match step {
            Step::Head => {
                let root = self.root();
                let dtd = match self.api {
                    Api::Detection => "asset/host/vm/detection/host_list_vm_detection_output.dtd",
                    _ => "asset/host/host_list_output.dtd",
                };
                let head = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<!DOCTYPE {root} SYSTEM \"https://qualysapi.qualys.com/api/2.0/fo/{dtd}\">\n<{root}>\n  <RESPONSE>\n    <DATETIME>{}</DATETIME>\n    <HOST_LIST>\n",
                    iso(now_secs())
                );
                (Some(head), Step::Hosts { index: start, listed: 0 })
            }
            Step::Hosts { mut index, mut listed } => {
                let mut out = String::with_capacity(32 * 1024);
                let mut rendered = 0;
                while index < size && rendered < HOSTS_PER_PIECE {
                    if listed >= self.limit {
                        let next_id = Some(self.data.host_id(index));
                        return (Some(out), Step::Tail { next_id });
                    }
                    let host = self.data.host(index);
                    index += 1;
                    rendered += 1;
                    if !self.wanted(&host) {
                        continue;
                    }
                    let before = out.len();
                    match self.api {
                        Api::Detection => {
                            let dets: Vec<Detection> = self
                                .data
                                .detections(host.index)
                                .into_iter()
                                .filter(|d| self.statuses.contains(&d.status))
                                .collect();
                            if dets.is_empty() {
                                continue;
                            }
                            render_host(&mut out, &host, Some(&dets), self.show_results);
                        }
                        _ => render_host(&mut out, &host, None, false),
                    }
                    if listed == 0
                        && let Some(v) = self.malformed
                    {
                        let broken = break_host(&out[before..], v);
                        out.truncate(before);
                        out.push_str(&broken);
                    }
                    listed += 1;
                }
                if index >= size {
                    (Some(out), Step::Tail { next_id: None })
                } else {
                    (Some(out), Step::Hosts { index, listed })
                }
            }
            Step::Tail { next_id } => {
                let mut out = String::from("    </HOST_LIST>\n");
                if let Some(id) = next_id {
                    out.push_str(&format!(
                        "    <WARNING>\n      <CODE>1980</CODE>\n      <TEXT>{} record limit exceeded. Use URL to get next batch of results.</TEXT>\n      <URL>{}</URL>\n    </WARNING>\n",
                        self.limit,
                        cdata(&format!("{}&id_min={id}", self.next_url))
                    ));
                }
                out.push_str(&format!("  </RESPONSE>\n</{}>\n", self.root()));
                (Some(out), Step::Done)
            }
            Step::Done => (None, Step::Done),
        }
    }
}

/// A rendered host made malformed: a mismatched end tag, an unescaped `&`,
/// or cut short before its `</HOST>`.
fn break_host(host: &str, variant: u8) -> String {
    match variant {
        0 => host.replacen("</IP>", "</IPX>", 1),
        1 => host.replacen("<IP>", "<IP>& ", 1),
        _ => match host.find("<OS>") {
            Some(at) => host[..at].to_string(),
            None => String::new(),
        },
    }
}

fn render_host(out: &mut String, h: &Host, detections: Option<&[Detection]>, show_results: bool) {
    use std::fmt::Write;
    let scan_tag = if detections.is_some() { "LAST_SCAN_DATETIME" } else { "LAST_VULN_SCAN_DATETIME" };
    let _ = write!(
        out,
        "      <HOST>\n        <ID>{}</ID>\n        <IP>{}</IP>\n        <TRACKING_METHOD>{}</TRACKING_METHOD>\n        <OS>{}</OS>\n        <DNS>{}</DNS>\n        <NETBIOS>{}</NETBIOS>\n        <{scan_tag}>{}</{scan_tag}>\n",
        h.id,
        h.ip,
        h.tracking,
        cdata(h.os),
        cdata(&h.dns),
        cdata(&h.netbios),
        iso(h.last_scan)
    );
    if let Some(dets) = detections {
        out.push_str("        <DETECTION_LIST>\n");
        for d in dets {
            let (qid, _, severity, kind, _, port, protocol) = *d.qid;
            let _ = write!(
                out,
                "          <DETECTION>\n            <QID>{qid}</QID>\n            <TYPE>{kind}</TYPE>\n            <SEVERITY>{severity}</SEVERITY>\n"
            );
            if let Some(p) = port {
                let _ = writeln!(out, "            <PORT>{p}</PORT>");
            }
            if let Some(p) = protocol {
                let _ = writeln!(out, "            <PROTOCOL>{p}</PROTOCOL>");
            }
            if show_results {
                let _ = writeln!(
                    out,
                    "            <RESULTS>{}</RESULTS>",
                    cdata(&format!("QID {qid} detected on {} <{}>", h.dns, h.ip))
                );
            }
            let _ = write!(
                out,
                "            <STATUS>{}</STATUS>\n            <FIRST_FOUND_DATETIME>{}</FIRST_FOUND_DATETIME>\n            <LAST_FOUND_DATETIME>{}</LAST_FOUND_DATETIME>\n          </DETECTION>\n",
                d.status,
                iso(d.first_found),
                iso(d.last_found)
            );
        }
        out.push_str("        </DETECTION_LIST>\n");
    }
    out.push_str("      </HOST>\n");
}

fn knowledge_base(pairs: &[(String, String)]) -> Response {
    use std::fmt::Write;
    let wanted: Option<Vec<u64>> = qget(pairs, "ids")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect());
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<!DOCTYPE KNOWLEDGE_BASE_VULN_LIST_OUTPUT SYSTEM \"https://qualysapi.qualys.com/api/2.0/fo/knowledge_base/vuln/knowledge_base_vuln_list_output.dtd\">\n<KNOWLEDGE_BASE_VULN_LIST_OUTPUT>\n  <RESPONSE>\n    <DATETIME>{}</DATETIME>\n    <VULN_LIST>\n",
        iso(now_secs())
    );
    for (qid, title, severity, kind, cves, _, _) in QIDS.iter() {
        if wanted.as_ref().is_some_and(|w| !w.contains(qid)) {
            continue;
        }
        let vuln_type = if *kind == "Info" { "Information Gathered" } else { "Vulnerability" };
        let _ = write!(
            out,
            "      <VULN>\n        <QID>{qid}</QID>\n        <VULN_TYPE>{vuln_type}</VULN_TYPE>\n        <SEVERITY_LEVEL>{severity}</SEVERITY_LEVEL>\n        <TITLE>{}</TITLE>\n",
            cdata(title)
        );
        if !cves.is_empty() {
            out.push_str("        <CVE_LIST>\n");
            for c in *cves {
                let _ = write!(
                    out,
                    "          <CVE>\n            <ID>{}</ID>\n            <URL>{}</URL>\n          </CVE>\n",
                    cdata(c),
                    cdata(&format!("https://cve.mitre.org/cgi-bin/cvename.cgi?name={c}"))
                );
            }
            out.push_str("        </CVE_LIST>\n");
        }
        out.push_str("      </VULN>\n");
    }
    out.push_str("    </VULN_LIST>\n  </RESPONSE>\n</KNOWLEDGE_BASE_VULN_LIST_OUTPUT>\n");
    xml_response(StatusCode::OK, out)
}
