//! A small subset of CrowdStrike's Falcon Query Language, enough for the filters an
//! adapter sends: clauses joined by `+` (AND), each `field:<op>value` where op is one of
//! `` (equals, `*` wildcards, case-insensitive), `!` (not equals), `>`, `>=`, `<`, `<=`
//! (string comparison, which orders ISO timestamps; numeric when both sides are
//! numbers), and values quoted with `'` or `"`, or a list `['a','b']` (any of). Array
//! fields (tags) match when any element matches.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
struct Clause {
    field: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Filter(Vec<Clause>);

const FIELDS: [&str; 20] = [
    "device_id",
    "hostname",
    "local_ip",
    "external_ip",
    "mac_address",
    "serial_number",
    "os_version",
    "platform_name",
    "first_seen",
    "last_seen",
    "last_login_user",
    "machine_domain",
    "system_manufacturer",
    "agent_version",
    "status",
    "tags",
    "product_type_desc",
    "modified_timestamp",
    "cid",
    "platform_id",
];

impl Filter {
    pub(crate) fn parse(s: &str) -> Result<Filter, String> {
        let mut clauses = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, rest) = part.split_once(':').ok_or_else(|| format!("invalid filter clause {part:?}"))?;
            let field = field.trim().to_string();
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!("invalid filter field {field:?}"));
            }
            let rest = rest.trim();
            let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
                (Op::Ge, v)
            } else if let Some(v) = rest.strip_prefix("<=") {
                (Op::Le, v)
            } else if let Some(v) = rest.strip_prefix('>') {
                (Op::Gt, v)
            } else if let Some(v) = rest.strip_prefix('<') {
                (Op::Lt, v)
            } else if let Some(v) = rest.strip_prefix('!') {
                (Op::Ne, v)
            } else {
                (Op::Eq, rest)
            };
            let value = value.trim();
            let values = if let Some(list) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                list.split(',').map(unquote).collect::<Result<Vec<_>, _>>()?
            } else {
                vec![unquote(value)?]
            };
            clauses.push(Clause { field, op, values });
        }
        if clauses.is_empty() {
            return Err("empty filter".into());
        }
        Ok(Filter(clauses))
    }

    pub(crate) fn matches(&self, record: &Value) -> bool {
        self.0.iter().all(|c| {
            let field = record.get(&c.field);
            let candidates: Vec<&str> = match field {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let any =
                |f: &dyn Fn(&str, &str) -> bool| candidates.iter().any(|cand| c.values.iter().any(|v| f(cand, v)));
            match c.op {
                Op::Eq => any(&|a, b| glob_eq(a, b)),
                Op::Ne => !any(&|a, b| glob_eq(a, b)),
                Op::Gt => any(&|a, b| cmp(a, b).is_gt()),
                Op::Ge => any(&|a, b| cmp(a, b).is_ge()),
                Op::Lt => any(&|a, b| cmp(a, b).is_lt()),
                Op::Le => any(&|a, b| cmp(a, b).is_le()),
            }
        })
    }
}

/// Split on `+` outside quotes.
fn split_top(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                if let Some(p) = out.last_mut() {
                    p.push(c);
                }
            }
            (Some(q), c) if c == q => {
                quote = None;
                if let Some(p) = out.last_mut() {
                    p.push(c);
                }
            }
            (None, '+') => out.push(String::new()),
            (_, c) => {
                if let Some(p) = out.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    out
}

fn unquote(v: &str) -> Result<String, String> {
    let v = v.trim();
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return Ok(v[1..v.len() - 1].to_string());
        }
    }
    if v.is_empty() || v.contains(['\'', '"']) {
        return Err(format!("invalid filter value {v:?}"));
    }
    Ok(v.to_string())
}

fn cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// Case-insensitive equality with `*` wildcards in the pattern.
fn glob_eq(text: &str, pattern: &str) -> bool {
    let text = text.to_lowercase();
    let pattern = pattern.to_lowercase();
    if !pattern.contains('*') {
        return text == pattern;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_match() {
        let r = json!({"platform_name": "Windows", "hostname": "WS-00012",
                       "last_seen": "2025-05-20T10:00:00Z", "tags": ["a/prod", "b"]});
        let ok = |f: &str| Filter::parse(f).map(|f| f.matches(&r));
        assert_eq!(ok("platform_name:'windows'"), Ok(true));
        assert_eq!(ok("platform_name:!'Windows'"), Ok(false));
        assert_eq!(ok("hostname:'ws-*'+last_seen:>='2025-05-01'"), Ok(true));
        assert_eq!(ok("last_seen:<'2025-05-01T00:00:00Z'"), Ok(false));
        assert_eq!(ok("platform_name:['Mac','Windows']"), Ok(true));
        assert_eq!(ok("tags:'b'"), Ok(true));
        assert!(Filter::parse("nosuchfield:'x'").is_err());
        assert!(Filter::parse("hostname").is_err());
    }
}
