/*
 * tauri-plugin-background-sync — C ABI of the headless drain (used by the iOS shim; usable
 * from any native host). The symbols are defined in your app's library by
 * `tauri_plugin_background_sync::export_native_entries!();` in the app crate's lib.rs.
 *
 * Every function returns a NUL-terminated UTF-8 JSON string that the caller owns and must
 * release with bgsync_free():
 *   {"ok":true, ...}                                  success ("report", "status", "enqueued")
 *   {"ok":false,"error":{"kind":"...","message":"..."}} failure; kind is one of invalidInput,
 *       originNotAllowed, limitExceeded, notConfigured, notFound, conflict, storage, migration,
 *       network, auth, alreadyRunning, platform, internal
 * No function panics across the boundary or returns NULL. All are blocking and thread-safe;
 * call them off the main thread. The JSON shapes are those of the JavaScript API.
 */
#ifndef BGSYNC_H
#define BGSYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Merge a (partial) SyncConfig JSON object over the stored configuration and persist it. */
char *bgsync_configure(const char *db_path, const char *config_json);

/* Durably queue one NewMutation JSON object (README "JavaScript API": the same fields, `coalesce`
 * included). Returns {"ok":true,"enqueued":{id,seq,idempotencyKey[,coalescedInto][,cancelled]}}. */
char *bgsync_enqueue(const char *db_path, const char *mutation_json);

/*
 * Drain for at most budget_ms (capped at 9 minutes) as a background run: does nothing when
 * background sync is disabled. Stops promptly once *cancel_flag != 0 (polled every 10 ms from
 * another thread; NULL = never cancelled); the flag must stay valid until the call returns.
 * Returns {"ok":true,"report":{...DrainReport}}; report.stopReason says why it stopped.
 */
char *bgsync_drain(const char *db_path, uint64_t budget_ms, const volatile int32_t *cancel_flag);

/* Same, with a trigger name recorded in the report ("ios-refresh", "ios-processing",
 * "reconnect"...). "foreground" ignores the enabled toggle. */
char *bgsync_drain_with_trigger(const char *db_path, uint64_t budget_ms, const char *trigger,
                                const volatile int32_t *cancel_flag);

/* {"ok":true,"status":{...SyncStatus}} */
char *bgsync_status(const char *db_path);

/* Persist the background-sync toggle (enabled != 0). */
char *bgsync_set_enabled(const char *db_path, int32_t enabled);

/* What will run in the background and why not: {"ok":true,"diagnostics":{...Diagnostics}}
 * (README "Diagnostics"). facts_json: the platform's facts as the shim collects them, e.g.
 * {"platform":"ios","backgroundRefreshStatus":"denied","missingIdentifiers":[],
 * "pendingRequests":[],"lowPowerMode":false}; NULL for the engine's side only. */
char *bgsync_diagnostics(const char *db_path, const char *facts_json);

/* Outcomes no listener heard (README "Outcomes"): what runs settled while no webview listened,
 * one page per call, marked told as returned (so not replayed to the webview afterwards).
 * {"ok":true,"events":[{"type":"delivered",...},{"type":"dead",...},{"type":"settled",...},
 * {"type":"uploaded",...},{"type":"uploadDead",...}]}; call again until "events" is empty. */
char *bgsync_take_outcomes(const char *db_path);

/* The key that seals the stored credentials (README "Credentials at rest"): exactly 32 bytes
 * the host keeps in the platform's secure store (the iOS Keychain), handed over once per process
 * before any other call; key NULL or len 0 forgets it. Without it, credentials sealed by the app
 * cannot be read (a drain reports an "auth" error and sends nothing). {"ok":true}, or
 * {"ok":false,"error":{"kind":"invalidInput",...}} for another length. Since: unreleased. */
char *bgsync_set_secret_key(const uint8_t *key, size_t len);

/* Release a string returned by any bgsync_* function. NULL is ignored. */
void bgsync_free(char *s);

#ifdef __cplusplus
}
#endif

#endif /* BGSYNC_H */
