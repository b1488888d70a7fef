//! What the app is told about settled outcomes: one status event per delivered or dead
//! mutation and per finished or dead upload, and the response bodies it asked to keep. Pure;
//! used by both passes, the facade's replay and the lag recovery.

use crate::models::StatusEvent;
use crate::store::Applied;

/// The response body an app asked to keep (`outcomeBodyMaxBytes`), as JSON text: JSON as the
/// server sent it (compacted), anything else as a JSON string. Nothing when bodies are off,
/// the body is empty, or it is larger than the cap (an event never carries half a body).
pub(crate) fn kept_body(body: Option<&[u8]>, max_bytes: u32) -> Option<String> {
    let b = body.filter(|b| !b.is_empty() && b.len() <= max_bytes as usize)?;
    Some(match serde_json::from_slice::<serde_json::Value>(b) {
        Ok(v) => v.to_string(),
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()).to_string(),
    })
}

/// One event per delivered or dead mutation (each coalesced original under its own id), then
/// one `settled` listing them: what a durable round, or a replay of outcomes nobody heard,
/// tells the app.
pub(crate) fn outcome_events(applied: &[Applied], run_id: &str) -> Vec<StatusEvent> {
    let mut events = Vec::new();
    let (mut delivered, mut dead) = (Vec::new(), Vec::new());
    for a in applied {
        match a {
            Applied::Delivered(told) => {
                for d in told {
                    delivered.push(d.id.clone());
                    events.push(StatusEvent::Delivered(d.clone()));
                }
            }
            Applied::Dead {
                id,
                entity,
                status,
                error,
                absorbed,
            } => {
                for id in std::iter::once(id).chain(absorbed) {
                    dead.push(id.clone());
                    events.push(StatusEvent::Dead {
                        id: id.clone(),
                        entity: entity.clone(),
                        status: *status,
                        error: error.clone(),
                    });
                }
            }
            Applied::Upload(told) => events.push(told.clone()),
            Applied::Yes | Applied::No => {}
        }
    }
    if !delivered.is_empty() || !dead.is_empty() {
        events.push(StatusEvent::Settled {
            run_id: run_id.to_string(),
            delivered,
            dead,
        });
    }
    events
}
