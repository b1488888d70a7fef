//! Temporary ids of offline-created entities: finding references and rewriting them.
//!
//! A reference is an exact match: a whole path segment (`/visits/tmp-1/notes`) or a whole JSON
//! string value (`{"visitId": "tmp-1"}`), never a substring, so ids cannot be corrupted by
//! accident. Pure functions; the store decides which candidates are known temp ids.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Every string that could be a temp-id reference: path segments (the query string's values
/// too) and every JSON string value in the body, plus the entity id.
pub(crate) fn candidates(path: &str, body: Option<&Value>, entity_id: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    for seg in p.split('/').filter(|s| !s.is_empty()) {
        out.insert(seg.to_string());
    }
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        if let Some((_, v)) = pair.split_once('=') {
            out.insert(v.to_string());
        }
    }
    if let Some(b) = body {
        collect_strings(b, &mut out);
    }
    out.insert(entity_id.to_string());
    out
}

fn collect_strings(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// Replace whole path segments (and query values) that are mapped temp ids.
pub(crate) fn rewrite_path(path: &str, map: &HashMap<String, String>) -> String {
    if map.is_empty() {
        return path.to_string();
    }
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out: String = p
        .split('/')
        .map(|seg| map.get(seg).map(String::as_str).unwrap_or(seg))
        .collect::<Vec<_>>()
        .join("/");
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => format!("{k}={}", map.get(v).map(String::as_str).unwrap_or(v)),
                None => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Replace whole JSON string values that are mapped temp ids (object keys are left alone).
pub(crate) fn rewrite_body(body: &mut Value, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    match body {
        Value::String(s) => {
            if let Some(server) = map.get(s.as_str()) {
                *s = server.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_body(x, map)),
        Value::Object(o) => o.values_mut().for_each(|x| rewrite_body(x, map)),
        _ => {}
    }
}

/// Read the server id out of a create's response with a JSON pointer (RFC 6901). Numbers are
/// accepted and turned into their decimal text.
pub(crate) fn extract_server_id(response: &Value, pointer: &str) -> Option<String> {
    match response.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn finds_path_segments_body_strings_and_entity() {
        let c = candidates(
            "/visits/tmp-1/notes?owner=tmp-9",
            Some(&json!({"a": ["tmp-2", {"b": "tmp-3"}], "n": 5})),
            "tmp-4",
        );
        for x in ["visits", "tmp-1", "notes", "tmp-9", "tmp-2", "tmp-3", "tmp-4"] {
            assert!(c.contains(x), "{x}");
        }
        assert!(!c.contains("5"));
    }

    #[test]
    fn rewrites_whole_segments_only() {
        let m = map(&[("tmp-1", "srv_9")]);
        assert_eq!(rewrite_path("/visits/tmp-1", &m), "/visits/srv_9");
        assert_eq!(
            rewrite_path("/visits/tmp-1/notes/tmp-10", &m),
            "/visits/srv_9/notes/tmp-10"
        );
        assert_eq!(rewrite_path("/visits/xtmp-1", &m), "/visits/xtmp-1");
        assert_eq!(
            rewrite_path("/notes?visit=tmp-1&x=tmp-1x", &m),
            "/notes?visit=srv_9&x=tmp-1x"
        );
    }

    #[test]
    fn rewrites_whole_string_values_not_keys() {
        let m = map(&[("tmp-1", "srv_9")]);
        let mut b = json!({"tmp-1": "tmp-1", "list": ["tmp-1", "tmp-12"], "note": "see tmp-1"});
        rewrite_body(&mut b, &m);
        assert_eq!(
            b,
            json!({"tmp-1": "srv_9", "list": ["srv_9", "tmp-12"], "note": "see tmp-1"})
        );
    }

    #[test]
    fn extracts_ids_by_pointer() {
        let r = json!({"data": {"id": 42}, "id": "srv_1", "empty": ""});
        assert_eq!(extract_server_id(&r, "/id").as_deref(), Some("srv_1"));
        assert_eq!(extract_server_id(&r, "/data/id").as_deref(), Some("42"));
        assert_eq!(extract_server_id(&r, "/empty"), None);
        assert_eq!(extract_server_id(&r, "/missing"), None);
    }

    proptest! {
        // After rewriting, no mapped temp id survives as a reference, and unmapped strings are
        // untouched.
        #[test]
        fn rewrite_leaves_no_mapped_reference(
            segs in proptest::collection::vec("[a-z0-9-]{1,6}", 1..6),
            vals in proptest::collection::vec("[a-z0-9-]{1,6}", 0..6),
            pick in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let all: Vec<String> = segs.iter().chain(vals.iter()).cloned().collect();
            let m: HashMap<String, String> = all.iter().zip(pick.iter().cycle())
                .filter(|(_, &p)| p)
                .map(|(s, _)| (s.clone(), format!("SRV{}", s.len())))
                .collect();
            let path = format!("/{}", segs.join("/"));
            let mut body = Value::Array(vals.iter().cloned().map(Value::String).collect());
            let new_path = rewrite_path(&path, &m);
            rewrite_body(&mut body, &m);
            let after = candidates(&new_path, Some(&body), "entity");
            for k in m.keys() {
                prop_assert!(!after.contains(k));
            }
            for s in all.iter().filter(|s| !m.contains_key(*s)) {
                prop_assert!(after.contains(s));
            }
        }
    }
}
