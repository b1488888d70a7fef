//! The batch endpoint's answer, split into one outcome per mutation (pure).

use super::{classify, excerpt, Class, Observed};

/// Turn one batch response into per-row outcomes. A batch-level failure applies to every row;
/// a batch-level 4xx other than 401 means the batch endpoint itself is wrong, which is not the
/// mutations' fault, so it is retried (and dead-lettered only at the retry limit).
pub(crate) fn split_batch(
    keys: &[&str],
    observed: Observed,
    body: Option<Vec<u8>>,
) -> Vec<(Observed, Option<Vec<u8>>)> {
    let all =
        |o: Observed, b: Option<Vec<u8>>| keys.iter().map(|_| (o.clone(), b.clone())).collect::<Vec<_>>();
    let status = match &observed {
        Observed::TransportError(_) | Observed::Unreachable(_) | Observed::Tls(_) => {
            return all(observed, None)
        }
        Observed::Response { status, .. } => *status,
    };
    if !(200..300).contains(&status) {
        let o = match classify(&observed, 0) {
            Class::Permanent => Observed::Response {
                status: 503,
                retry_after: None,
            },
            _ => observed.clone(),
        };
        let b = body.map(|b| format!("batch endpoint answered HTTP {status}: {}", excerpt(&b)).into_bytes());
        return all(o, b);
    }
    let parsed: Option<Vec<serde_json::Value>> = body
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("items").and_then(|i| i.as_array()).cloned());
    let Some(items) = parsed else {
        return all(
            Observed::TransportError("batch response has no items array".into()),
            None,
        );
    };
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let item = items
                .iter()
                .find(|it| it.get("idempotencyKey").and_then(|k| k.as_str()) == Some(*key))
                .or_else(|| items.get(i).filter(|it| it.get("idempotencyKey").is_none()));
            match item.and_then(|it| it.get("status").and_then(|s| s.as_u64()).map(|s| (s, it))) {
                Some((s, it)) => {
                    let body = it.get("body").map(|b| serde_json::to_vec(b).unwrap_or_default());
                    let retry_after = it
                        .get("retryAfter")
                        .and_then(|r| r.as_u64())
                        .map(|r| r.to_string());
                    (
                        Observed::Response {
                            status: s as u16,
                            retry_after,
                        },
                        body,
                    )
                }
                None => (
                    Observed::TransportError("batch response has no result for this item".into()),
                    None,
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> Observed {
        Observed::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn batch_results_are_matched_by_key() {
        let body = br#"{"items":[{"idempotencyKey":"b","status":422,"body":{"error":"x"}},{"idempotencyKey":"a","status":201,"body":{"id":"s1"}}]}"#;
        let out = split_batch(&["a", "b"], resp(200), Some(body.to_vec()));
        assert_eq!(out[0].0, resp(201));
        assert_eq!(out[1].0, resp(422));
        // Whole-batch 404 (endpoint missing) is retried, not a dead letter for every item.
        let out = split_batch(&["a", "b"], resp(404), Some(b"nope".to_vec()));
        assert!(out.iter().all(|(o, _)| *o == resp(503)));
        // Missing item result: transient.
        let body = br#"{"items":[{"idempotencyKey":"a","status":201,"body":{}}]}"#;
        let out = split_batch(&["a", "b"], resp(200), Some(body.to_vec()));
        assert!(matches!(out[1].0, Observed::TransportError(_)));
    }
}
