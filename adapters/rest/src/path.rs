//! Record paths, parsed once into segments: `a.b`, `a[0]`, `a[].b` (every
//! element), `['@odata.nextLink']` (a key with dots or brackets), `.` (the
//! value itself).

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
    /// Every element of an array.
    Each,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path {
    pub segs: Vec<Seg>,
    pub text: String,
}

impl Path {
    /// Parse `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Path, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("is empty (use `.` for the value itself)".into());
        }
        if t == "." {
            return Ok(Path { segs: Vec::new(), text: t.to_string() });
        }
        let b = t.as_bytes();
        let mut segs = Vec::new();
        let mut i = 0;
        let mut after_dot = true;
        while i < b.len() {
            match b[i] {
                b'.' => {
                    if after_dot {
                        return Err(format!("has an empty segment at character {}", i + 1));
                    }
                    after_dot = true;
                    i += 1;
                }
                b'[' => {
                    let close = t[i..]
                        .find(']')
                        .map(|c| c + i)
                        .ok_or_else(|| format!("has an unclosed `[` at character {}", i + 1))?;
                    let inner = &t[i + 1..close];
                    if inner.is_empty() {
                        segs.push(Seg::Each);
                    } else if let Some(q) = inner.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
                        if q.is_empty() {
                            return Err("has an empty quoted key `['']`".into());
                        }
                        segs.push(Seg::Key(q.to_string()));
                    } else if inner.bytes().all(|c| c.is_ascii_digit()) {
                        let n = inner.parse().map_err(|_| format!("has an index too large: `[{inner}]`"))?;
                        segs.push(Seg::Index(n));
                    } else {
                        return Err(format!(
                            "has `[{inner}]`: inside brackets write nothing (every element), a number, or a quoted key `['{inner}']`"
                        ));
                    }
                    after_dot = false;
                    i = close + 1;
                }
                b']' => return Err(format!("has a `]` without `[` at character {}", i + 1)),
                _ => {
                    if !after_dot {
                        return Err(format!("needs a `.` before the key at character {}", i + 1));
                    }
                    let end = t[i..].find(['.', '[', ']']).map_or(t.len(), |e| e + i);
                    let key = &t[i..end];
                    if key.chars().any(|c| c.is_whitespace() || c == '\'' || c == '{' || c == '}') {
                        return Err(format!("has `{key}`: keys with spaces, quotes or braces need `['...']`"));
                    }
                    segs.push(Seg::Key(key.to_string()));
                    after_dot = false;
                    i = end;
                }
            }
        }
        if after_dot {
            return Err("ends with `.`".into());
        }
        Ok(Path { segs, text: t.to_string() })
    }

    /// Whether the path visits every element of some array (so it may give several values).
    pub fn is_multi(&self) -> bool {
        self.segs.contains(&Seg::Each)
    }

    /// Only object keys (what `corral_http::BodyCursor` can follow).
    pub fn keys(&self) -> Option<Vec<&str>> {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Key(k) => Some(k.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The value at this path when it visits no array wildcard.
    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut cur = v;
        for s in &self.segs {
            cur = match (s, cur) {
                (Seg::Key(k), Value::Object(m)) => m.get(k)?,
                (Seg::Index(n), Value::Array(a)) => a.get(*n)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Every value at this path (array wildcards expanded; a null is no value).
    pub fn collect<'a>(&self, v: &'a Value, out: &mut Vec<&'a Value>) {
        walk(&self.segs, v, out);
    }
}

fn walk<'a>(segs: &[Seg], v: &'a Value, out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = segs.split_first() else {
        if !v.is_null() {
            out.push(v);
        }
        return;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(next) = m.get(k) {
                walk(rest, next, out);
            }
        }
        (Seg::Index(n), Value::Array(a)) => {
            if let Some(next) = a.get(*n) {
                walk(rest, next, out);
            }
        }
        (Seg::Each, Value::Array(a)) => {
            for next in a {
                walk(rest, next, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_walks() {
        let p = Path::parse("networkInterfaces[].inet[]").expect("valid");
        assert_eq!(p.segs, vec![Seg::Key("networkInterfaces".into()), Seg::Each, Seg::Key("inet".into()), Seg::Each]);
        let v =
            json!({"networkInterfaces": [{"inet": ["10.0.0.1", "10.0.0.2"]}, {"inet": []}, {"inet": ["10.0.0.3"]}]});
        let mut out = Vec::new();
        p.collect(&v, &mut out);
        assert_eq!(out, vec![&json!("10.0.0.1"), &json!("10.0.0.2"), &json!("10.0.0.3")]);
        let q = Path::parse("['@odata.nextLink']").expect("valid");
        assert_eq!(q.get(&json!({"@odata.nextLink": "u"})), Some(&json!("u")));
        assert_eq!(Path::parse("a[1].b").expect("valid").get(&json!({"a": [0, {"b": 2}]})), Some(&json!(2)));
        assert_eq!(Path::parse(".").expect("valid").get(&json!([1])), Some(&json!([1])));
        assert_eq!(Path::parse("a.b").expect("valid").get(&json!({"a": 1})), None);
    }

    #[test]
    fn malformed_paths_say_why() {
        for (p, want) in [
            ("", "empty"),
            ("a..b", "empty segment"),
            ("a.", "ends with"),
            ("a[", "unclosed"),
            ("a]", "without `[`"),
            ("a[x]", "quoted key"),
            ("a[0]b", "needs a `.`"),
            ("a b", "spaces"),
            ("{config.x}", "braces"),
        ] {
            let err = Path::parse(p).expect_err(p);
            assert!(err.contains(want), "{p}: {err}");
        }
    }
}
