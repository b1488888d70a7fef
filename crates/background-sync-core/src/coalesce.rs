//! Coalescing rules, free of I/O: whether a new mutation folds into the unsent one queued just
//! before it in its entity's lane, and the body the two become. The store asks, and writes the
//! answer in the enqueue's transaction.
//!
//! The rule every branch keeps: the server ends in the state it would reach if both were sent
//! one after the other. For `merge` that means composing two JSON merge patches (RFC 7396),
//! which is not always possible as one patch; then nothing folds.

use crate::models::Coalesce;
use serde_json::{Map, Value};

/// The lane's last queued row, as the store read it.
#[derive(Debug, Clone)]
pub(crate) struct Tail<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: Option<&'a Value>,
    /// Set on a create (the entity's temp id).
    pub temp_id: Option<&'a str>,
    pub opted_in: bool,
    pub has_headers: bool,
    /// Never handed to a drain (any request that went out, even one cancelled or cut by a
    /// crash with no attempt counted, may be held by the server under the row's idempotency
    /// key, so its body must not change).
    pub unsent: bool,
}

/// The mutation being enqueued.
#[derive(Debug, Clone)]
pub(crate) struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: Option<&'a Value>,
    pub mode: Coalesce,
    pub has_headers: bool,
}

/// The tail's new body when `incoming` folds into it, or `None` when both must be sent.
pub(crate) fn fold(tail: &Tail, incoming: &Incoming) -> Option<Value> {
    if !tail.opted_in || !tail.unsent || tail.has_headers || incoming.has_headers {
        return None;
    }
    let same_path = tail.path == incoming.path;
    // The entity's unsent create, addressed by its temp id as the last path segment.
    let into_create = tail.method == "POST"
        && tail
            .temp_id
            .is_some_and(|t| last_segment(incoming.path) == Some(t) && !mentions(incoming.body, t));
    match incoming.mode {
        Coalesce::Merge => {
            let patch = incoming.body.filter(|b| b.is_object())?;
            if incoming.method != "PATCH" {
                return None;
            }
            let earlier = tail.body.filter(|b| b.is_object())?;
            match tail.method {
                "PATCH" if same_path => compose(earlier, patch),
                // The earlier body is a whole state: the patch applies to it exactly.
                "PUT" if same_path => Some(apply(earlier, patch)),
                "POST" if into_create => Some(apply(earlier, patch)),
                _ => None,
            }
        }
        Coalesce::Replace => {
            if !matches!(incoming.method, "PUT" | "PATCH") {
                return None;
            }
            let body = incoming.body?;
            if (tail.method == incoming.method && same_path) || into_create {
                Some(body.clone())
            } else {
                None
            }
        }
    }
}

/// RFC 7396 applied to a known document.
pub(crate) fn apply(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// One merge patch with the effect of `a` then `b` on every document, if there is one.
///
/// Where `b` puts an object over a key `a` set to a non-object (a scalar, an array, or null to
/// remove it), sending both makes that key exactly `b`'s object, whatever the document held;
/// a single merge patch would instead merge `b`'s object into the document's: no composition.
pub(crate) fn compose(a: &Value, b: &Value) -> Option<Value> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return None;
    };
    let mut out: Map<String, Value> = a.clone();
    for (k, bv) in b {
        let merged = match (a.get(k), bv) {
            (_, bv) if !bv.is_object() => bv.clone(),
            (None, bv) => bv.clone(),
            (Some(av @ Value::Object(_)), bv) => compose(av, bv)?,
            (Some(_), _) => return None,
        };
        out.insert(k.clone(), merged);
    }
    Some(Value::Object(out))
}

fn last_segment(path: &str) -> Option<&str> {
    path.split(['?', '#']).next()?.rsplit('/').find(|s| !s.is_empty())
}

/// Whether `body` holds `s` as a string value anywhere: the create's own temp id in a folded
/// body would not be rewritten to the server id as the separate mutation's would.
fn mentions(body: Option<&Value>, s: &str) -> bool {
    match body {
        Some(Value::String(v)) => v == s,
        Some(Value::Array(a)) => a.iter().any(|x| mentions(Some(x), s)),
        Some(Value::Object(o)) => o.values().any(|x| mentions(Some(x), s)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    fn value(rng: &mut rand_chacha::ChaCha8Rng, depth: u32) -> Value {
        match rng.gen_range(0..9) {
            0..=2 => json!(rng.gen_range(0..3)),
            3 | 4 => Value::Null,
            5 => json!([rng.gen_range(0..2)]),
            _ if depth < 3 => object(rng, depth + 1),
            _ => json!("s"),
        }
    }

    fn object(rng: &mut rand_chacha::ChaCha8Rng, depth: u32) -> Value {
        let mut o = Map::new();
        for k in ["a", "b", "c"] {
            if rng.gen_bool(0.6) {
                o.insert(k.into(), value(rng, depth));
            }
        }
        Value::Object(o)
    }

    /// The oracle is json-patch's RFC 7396 `merge`: composing must equal applying one after
    /// the other, on documents of every shape.
    #[test]
    fn a_composed_patch_has_the_effect_of_both_in_turn() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7396);
        let (mut composed, cases) = (0, 20_000);
        for case in 0..cases {
            let (a, b) = (object(&mut rng, 0), object(&mut rng, 0));
            let Some(c) = compose(&a, &b) else { continue };
            composed += 1;
            for _ in 0..8 {
                let doc = if rng.gen_bool(0.2) {
                    value(&mut rng, 0)
                } else {
                    object(&mut rng, 0)
                };
                let stepwise = apply(&apply(&doc, &a), &b);
                assert_eq!(
                    apply(&doc, &c),
                    stepwise,
                    "case {case}: doc {doc} a {a} b {b} composed {c}"
                );
            }
        }
        assert!(composed * 2 > cases, "only {composed} of {cases} pairs composed");
    }

    #[test]
    fn an_object_over_a_removed_or_scalar_key_does_not_compose() {
        assert_eq!(compose(&json!({"a": 1}), &json!({"a": {"x": 1}})), None);
        assert_eq!(compose(&json!({"a": null}), &json!({"a": {"x": 1}})), None);
        assert_eq!(
            compose(&json!({"a": 1, "b": 2}), &json!({"a": null, "c": {"x": null}})),
            Some(json!({"a": null, "b": 2, "c": {"x": null}})),
            "removals are kept: the server must still remove"
        );
    }

    fn tail<'a>(method: &'a str, path: &'a str, body: Option<&'a Value>) -> Tail<'a> {
        Tail {
            method,
            path,
            body,
            temp_id: None,
            opted_in: true,
            has_headers: false,
            unsent: true,
        }
    }

    fn incoming<'a>(method: &'a str, path: &'a str, body: Option<&'a Value>, mode: Coalesce) -> Incoming<'a> {
        Incoming {
            method,
            path,
            body,
            mode,
            has_headers: false,
        }
    }

    #[test]
    fn folds_only_what_the_contract_allows() {
        let a = json!({"a": 1});
        let b = json!({"b": 2});
        let merge = |t: &Tail| fold(t, &incoming("PATCH", "/v/1", Some(&b), Coalesce::Merge));
        assert_eq!(
            merge(&tail("PATCH", "/v/1", Some(&a))),
            Some(json!({"a": 1, "b": 2}))
        );
        assert_eq!(
            merge(&tail("PUT", "/v/1", Some(&a))),
            Some(json!({"a": 1, "b": 2}))
        );
        assert_eq!(merge(&tail("PATCH", "/v/2", Some(&a))), None, "another path");
        assert_eq!(merge(&tail("DELETE", "/v/1", None)), None);
        for t in [
            Tail {
                opted_in: false,
                ..tail("PATCH", "/v/1", Some(&a))
            },
            Tail {
                unsent: false,
                ..tail("PATCH", "/v/1", Some(&a))
            },
            Tail {
                has_headers: true,
                ..tail("PATCH", "/v/1", Some(&a))
            },
        ] {
            assert_eq!(merge(&t), None, "{t:?}");
        }
        let with_headers = Incoming {
            has_headers: true,
            ..incoming("PATCH", "/v/1", Some(&b), Coalesce::Merge)
        };
        assert_eq!(fold(&tail("PATCH", "/v/1", Some(&a)), &with_headers), None);
        let create = Tail {
            temp_id: Some("tmp-1"),
            ..tail("POST", "/v", Some(&a))
        };
        assert_eq!(
            fold(
                &create,
                &incoming("PATCH", "/v/tmp-1?x=1", Some(&b), Coalesce::Merge)
            ),
            Some(json!({"a": 1, "b": 2}))
        );
        let self_ref = json!({"me": "tmp-1"});
        assert_eq!(
            fold(
                &create,
                &incoming("PATCH", "/v/tmp-1", Some(&self_ref), Coalesce::Merge)
            ),
            None,
            "the create's own temp id in the folded body would stay unresolved"
        );
        assert_eq!(
            fold(&create, &incoming("PUT", "/v/tmp-1", Some(&b), Coalesce::Replace)),
            Some(b.clone())
        );
        assert_eq!(
            fold(
                &tail("PUT", "/v/1", Some(&a)),
                &incoming("PUT", "/v/1", Some(&b), Coalesce::Replace)
            ),
            Some(b.clone())
        );
        assert_eq!(
            fold(
                &tail("PATCH", "/v/1", Some(&a)),
                &incoming("PUT", "/v/1", Some(&b), Coalesce::Replace)
            ),
            None,
            "replace keeps the method"
        );
        assert_eq!(
            fold(
                &tail("POST", "/v", Some(&a)),
                &incoming("POST", "/v", Some(&b), Coalesce::Replace)
            ),
            None,
            "two creates stay two"
        );
    }
}
