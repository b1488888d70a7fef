//! Public data types: what callers pass in and get back (JS, Rust, C ABI and JNI share them).
//! All serialize in camelCase; the TypeScript types in `guest-js` mirror them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Delivery priority across entities. Within one entity, enqueue order always wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Priority {
    /// Stored rank: higher drains first.
    pub(crate) fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        }
    }

    pub(crate) fn from_rank(rank: i64) -> Self {
        match rank {
            i64::MIN..=0 => Priority::Low,
            1 => Priority::Normal,
            2 => Priority::High,
            _ => Priority::Critical,
        }
    }
}

/// The entity a mutation changes. Mutations of one entity are delivered strictly in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRef {
    /// Entity type, e.g. `"visit"`.
    pub kind: String,
    /// Entity id: a server id, or the temporary id of an entity created offline.
    pub id: String,
}

/// A mutation to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMutation {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Path relative to the configured base URL (`/visits/tmp-1`), or an absolute URL on an
    /// allowed origin.
    pub path: String,
    /// JSON body; omitted for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Extra request headers (no hop-by-hop, Host, Authorization or Idempotency-Key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: Priority,
    pub entity: EntityRef,
    /// Set on a create of an entity made offline: the temporary id the server id will replace.
    /// Later mutations that contain this exact string as a path segment or JSON string value
    /// wait for the create and are rewritten with the server id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_id: Option<String>,
    /// Caller-chosen idempotency key (e.g. to dedupe a retried enqueue); generated if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Opt in to coalescing with the entity's unsent neighbours (README "Coalescing"): this
    /// mutation may fold into the one queued just before it, and later ones into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<Coalesce>,
}

/// How a mutation folds into the unsent mutation of its entity queued just before it. Both
/// must have opted in, neither may carry `headers`, and the earlier one must never have been
/// handed to a drain (a request cancelled or cut by a crash counts as sent); otherwise both are
/// sent as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Coalesce {
    /// A `PATCH` whose body is a JSON merge patch (RFC 7396): composed with an earlier `PATCH`
    /// of the same path, or applied to the body of an earlier `PUT` of that path or of the
    /// entity's unsent create. Use it only if the server applies `PATCH` as a merge patch.
    Merge,
    /// A `PUT` (or a `PATCH` whose body is the whole new state): its body replaces the earlier
    /// one's (same method and path, or the entity's unsent create).
    Replace,
}

/// Lifecycle of a queued mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MutationState {
    Pending,
    InFlight,
    Dead,
}

impl MutationState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MutationState::Pending => "pending",
            MutationState::InFlight => "in_flight",
            MutationState::Dead => "dead",
        }
    }
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "in_flight" => MutationState::InFlight,
            "dead" => MutationState::Dead,
            _ => MutationState::Pending,
        }
    }
}

/// A queued (not yet delivered) mutation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mutation {
    pub id: String,
    /// Global enqueue order.
    pub seq: i64,
    pub idempotency_key: String,
    pub priority: Priority,
    pub entity: EntityRef,
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub state: MutationState,
    /// Temp ids this mutation waits for (unresolved creates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// What `enqueue` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enqueued {
    pub id: String,
    /// Position in the outbox; for a coalesced mutation the position of the row it folded
    /// into, for a cancelled one 0.
    pub seq: i64,
    pub idempotency_key: String,
    /// Set when the mutation folded into an unsent one (`coalesce`): the id of that row,
    /// which carries both. This id still gets its own `delivered`/`dead` outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesced_into: Option<String>,
    /// True when this delete cancelled its entity's unsent create (and what came between):
    /// nothing is sent, and every id involved is told in one `cancelled` event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// Exponential backoff with full jitter: attempt `n` (0-based) waits a uniform random time in
/// `[0, min(max_ms, initial_ms * multiplier^n)]`, never less than a server's `Retry-After`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackoffConfig {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            max_ms: 5 * 60_000,
            multiplier: 2.0,
        }
    }
}

/// Optional batch endpoint: several mutations in one request with per-item results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchConfig {
    /// Path of the batch endpoint on the base URL.
    pub path: String,
    /// Most mutations per request.
    pub max_items: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            path: "/batch".into(),
            max_items: 50,
        }
    }
}

/// OS background work settings (Android WorkManager constraints, iOS BGTask kinds, desktop timer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackgroundConfig {
    /// Minutes between periodic runs (Android and iOS clamp to >= 15).
    pub interval_minutes: u32,
    pub requires_network: bool,
    pub requires_charging: bool,
    pub requires_battery_not_low: bool,
    /// Budget of one background drain, in ms (iOS app refresh gives about 30 s).
    pub budget_ms: u64,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            interval_minutes: 15,
            requires_network: true,
            requires_charging: false,
            requires_battery_not_low: true,
            budget_ms: 25_000,
        }
    }
}

/// Durability of a committed enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Durability {
    /// WAL + `synchronous=FULL`: an acknowledged enqueue survives power loss.
    #[default]
    Full,
    /// WAL + `synchronous=NORMAL`: survives an app crash; a power cut may lose the last commits.
    Relaxed,
}

/// Sync configuration, persisted in the outbox database so a cold background process can drain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SyncConfig {
    /// Base URL of the app's REST API, e.g. `https://api.example.com/v1`.
    pub base_url: String,
    /// Further origins mutations may target (scheme://host[:port]); the base URL's origin is
    /// always allowed.
    pub allowed_origins: Vec<String>,
    /// Allow plain `http://` to non-loopback hosts (never needed in production).
    pub allow_insecure_http: bool,
    /// JSON pointer to the server id in a create's response body.
    pub id_pointer: String,
    /// Per-request timeout.
    pub request_timeout_ms: u64,
    /// Attempts before a transiently failing mutation goes to the dead letter. The default
    /// (100) outlasts a backend outage of about four hours with the default backoff; the fleet
    /// simulation (`benches/fleet.rs`) shows 10 leaving most of a fleet's writes in dead
    /// letters after a 30-minute outage.
    pub max_attempts: u32,
    pub backoff: BackoffConfig,
    /// Independent entities sent at once.
    pub concurrency: u32,
    /// When set, mutations are sent through the batch endpoint.
    pub batch: Option<BatchConfig>,
    /// Delivered rows are kept this long (for history), then pruned.
    pub retention_ms: u64,
    /// Largest accepted body (serialized JSON bytes).
    pub max_payload_bytes: u64,
    /// Most open (pending + dead) mutations; further enqueues fail with `limitExceeded`.
    pub max_queue_len: u64,
    /// Headers added to every request (e.g. an API version).
    pub default_headers: BTreeMap<String, String>,
    pub background: BackgroundConfig,
    pub durability: Durability,
    /// How long the single-drainer lease lasts without renewal.
    pub lease_ttl_ms: u64,
    /// Background file uploads.
    pub uploads: UploadConfig,
    /// While the app runs, sync automatically: shortly after enqueues (at once for high and
    /// critical), on reconnect, when a backoff ends and on the interval, whether or not OS
    /// background work is enabled (`enable()` gates only work the OS starts). `false`: nothing
    /// is sent until `syncNow()` (or, on desktop, while background sync is enabled).
    pub auto_sync: bool,
    /// Which certificate authorities the API's and storage's TLS certificates may chain to.
    pub tls: TlsConfig,
    /// Keep a delivered mutation's response body (up to this many bytes, at most 65,536) for
    /// its `delivered` event and `delivered()` row, so an app can take server-computed fields
    /// without a refetch. 0 (the default) keeps none; a larger body is left out, the event
    /// still comes. Kept bodies live as long as the delivered row (`retentionMs`).
    pub outcome_body_max_bytes: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            allowed_origins: Vec::new(),
            allow_insecure_http: false,
            id_pointer: "/id".into(),
            request_timeout_ms: 10_000,
            max_attempts: 100,
            backoff: BackoffConfig::default(),
            concurrency: 4,
            batch: None,
            retention_ms: 7 * 24 * 3_600_000,
            max_payload_bytes: 1024 * 1024,
            max_queue_len: 100_000,
            default_headers: BTreeMap::new(),
            background: BackgroundConfig::default(),
            durability: Durability::Full,
            lease_ttl_ms: 30_000,
            uploads: UploadConfig::default(),
            auto_sync: true,
            tls: TlsConfig::default(),
            outcome_body_max_bytes: 0,
        }
    }
}

/// TLS trust. Persisted with the rest of the configuration, so background runs in a cold
/// process trust the same roots without the webview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsConfig {
    /// Further root certificates, PEM (each string may hold several `CERTIFICATE` blocks):
    /// a private CA of an MDM-managed fleet or of a TLS-inspecting corporate proxy.
    pub extra_roots_pem: Vec<String>,
    /// Also trust the bundled Mozilla roots (webpki-roots). `false`: only `extra_roots_pem`.
    pub built_in_roots: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            extra_roots_pem: Vec::new(),
            built_in_roots: true,
        }
    }
}

/// File uploads: where signed URLs come from, which hosts may receive file bytes, limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UploadConfig {
    /// Path on the API (relative to `baseUrl`) that returns upload URLs for a batch of files.
    pub sign_path: String,
    /// Most files per sign request.
    pub sign_batch_size: u32,
    /// Uploads in flight at once.
    pub concurrency: u32,
    /// Origins that may receive file bytes through signed URLs only (a storage host such as
    /// `https://api.cloudinary.com`). Mutations can never target them.
    pub storage_origins: Vec<String>,
    /// JSON pointer to the resulting URL or id in the upload response. When the response has
    /// none, the sign response's `resultUrl` is used.
    pub result_pointer: String,
    /// Largest accepted file.
    pub max_file_bytes: u64,
    /// Most open (pending + dead) uploads.
    pub max_queued: u64,
    /// Directories the webview may upload from, besides the app's data and cache directories.
    /// (The Rust API is not restricted.)
    pub allowed_dirs: Vec<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            sign_path: "/uploads/sign".into(),
            sign_batch_size: 20,
            concurrency: 10,
            storage_origins: Vec::new(),
            result_pointer: "/url".into(),
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            max_queued: 10_000,
            allowed_dirs: Vec::new(),
        }
    }
}

/// Where an upload's bytes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum UploadDestination {
    /// Ask the API's sign endpoint (`uploads.signPath`, batched) for a URL, then send the file
    /// there without the app's bearer token. An expired URL is signed again.
    #[default]
    Signed,
    /// Send the file to a URL on the API's origins, with the bearer token and the
    /// `Idempotency-Key` header.
    Direct {
        /// Path relative to `baseUrl`, or an absolute URL on an allowed origin.
        url: String,
        /// `PUT` (default) or `POST`.
        #[serde(default = "default_upload_method")]
        method: String,
    },
}

fn default_upload_method() -> String {
    "PUT".into()
}

fn default_true() -> bool {
    true
}

fn default_content_type() -> String {
    "application/octet-stream".into()
}

/// A file to upload in the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUpload {
    /// Absolute path of the file.
    pub file_path: String,
    /// Copy the file into the plugin's directory now (default), so the app may delete or the
    /// OS may purge the original; `false` uploads the file in place, which must then exist
    /// until the upload is done.
    #[serde(default = "default_true")]
    pub copy: bool,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Name reported to the sign endpoint (defaults to the file's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default)]
    pub destination: UploadDestination,
    #[serde(default)]
    pub priority: Priority,
    /// The record the file belongs to (informational; listed with the upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityRef>,
    /// The string mutations use to reference the file's result (generated `att_<uuid>` when
    /// absent). A mutation containing it as a path segment or JSON string value waits for the
    /// upload and is sent with the result URL/id in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Lifecycle of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UploadState {
    Pending,
    InFlight,
    Dead,
    Done,
}

impl UploadState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UploadState::Pending => "pending",
            UploadState::InFlight => "in_flight",
            UploadState::Dead => "dead",
            UploadState::Done => "done",
        }
    }
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "in_flight" => UploadState::InFlight,
            "dead" => UploadState::Dead,
            "done" => UploadState::Done,
            _ => UploadState::Pending,
        }
    }
}

/// A queued, failed or finished upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    pub id: String,
    pub placeholder: String,
    pub idempotency_key: String,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityRef>,
    pub file_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub destination: UploadDestination,
    pub created_at: i64,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub state: UploadState,
    /// The URL or id the file got (what the placeholder is replaced with).
    pub result: Option<String>,
    pub finished_at: Option<i64>,
}

/// What `enqueue_upload` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueuedUpload {
    pub id: String,
    /// Put this string in mutations that reference the file.
    pub placeholder: String,
    pub size: u64,
}

/// Credentials. Stored in the outbox database, never logged, never returned to JS.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthConfig {
    /// Sent as `Authorization: Bearer <token>`.
    pub access_token: Option<String>,
    /// Exchanged at `refresh_url` on a 401 (once per drain), or before a drain when the access
    /// token expires within a minute (`expires_at`), headless.
    pub refresh_token: Option<String>,
    /// Path on the base URL (or absolute URL on an allowed origin) of the refresh exchange.
    pub refresh_url: Option<String>,
    /// How the refresh exchange is spoken (default: the plugin's JSON exchange).
    pub refresh_mode: RefreshMode,
    /// OAuth 2.0 only: the `client_id` sent with the refresh grant (required in that mode; a
    /// device is a public client, so there is no client secret).
    pub client_id: Option<String>,
    /// OAuth 2.0 only: the `scope` of the refresh grant; omitted, the server keeps the scope
    /// granted before (RFC 6749 §6).
    pub scope: Option<String>,
    /// When the access token expires (ms since the Unix epoch), if known: set from
    /// `expires_in`/`expiresIn` by every refresh, or by the app.
    pub expires_at: Option<i64>,
}

/// The wire format of the token refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RefreshMode {
    /// POST `{"refreshToken": "..."}` as JSON; the answer has `accessToken` (or
    /// `access_token`), optionally a rotated `refreshToken` and `expiresIn` (seconds).
    #[default]
    #[serde(rename = "json")]
    Json,
    /// The OAuth 2.0 refresh grant (RFC 6749 §6): POST form-encoded
    /// `grant_type=refresh_token&refresh_token=…&client_id=…[&scope=…]`; the answer (§5.1)
    /// has `access_token`, `token_type` `Bearer`, optionally `expires_in` and a rotated
    /// `refresh_token`.
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("access_token", &self.access_token.as_ref().map(|_| "<redacted>"))
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("refresh_url", &self.refresh_url)
            .field("refresh_mode", &self.refresh_mode)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a drain stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// Nothing left to send.
    Empty,
    /// Everything left is waiting (backoff, dead letter ahead in its entity, unresolved temp id).
    Waiting,
    /// The budget ran out; no request was started that could not finish in time.
    Deadline,
    /// Cancelled by the caller (iOS expiration, WorkManager stop, app exit).
    Cancelled,
    /// Background sync is disabled (background entries only).
    Disabled,
    /// The device reported no network.
    NoNetwork,
    /// A 401 persisted after a refresh, or no credentials to refresh with.
    AuthFailed,
    /// Another drain holds the lease.
    AlreadyRunning,
    /// `configure` was never called.
    NotConfigured,
    /// Storage failed mid-drain; see `lastError`.
    Error,
}

/// Result of one drain run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    pub run_id: String,
    /// What started the run: `foreground`, `timer`, `reconnect`, `android-worker`, `ios-refresh`...
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: i64,
    /// HTTP requests started (a batch counts once).
    pub requests: u32,
    /// Mutation sends attempted.
    pub sent: u32,
    /// Delivered (2xx).
    pub done: u32,
    /// Transient failures rescheduled with backoff.
    pub retried: u32,
    /// Moved to the dead letter in this run.
    pub dead: u32,
    /// Queued items left: pending mutations plus pending uploads.
    pub remaining: u64,
    /// Dead letters in the queue after the run.
    pub dead_total: u64,
    pub stop_reason: StopReason,
    /// Earliest time a remaining mutation becomes eligible, if any.
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    /// Files uploaded in this run.
    #[serde(default)]
    pub uploaded: u32,
    /// Upload failures rescheduled with backoff (re-signing an expired URL included).
    #[serde(default)]
    pub upload_retried: u32,
    /// Uploads moved to the dead letter in this run.
    #[serde(default)]
    pub upload_dead: u32,
    /// File bytes sent in this run (finished uploads only).
    #[serde(default)]
    pub bytes_uploaded: u64,
    /// Pending uploads left (included in `remaining`).
    #[serde(default)]
    pub uploads_remaining: u64,
}

/// Coarse state of the sync engine, as in the seeds' status stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SyncState {
    Idle,
    Scheduled,
    Running,
    Completed,
    Failed,
}

/// Snapshot of the outbox and the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    pub state: SyncState,
    pub enabled: bool,
    pub configured: bool,
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// Pending mutations waiting for an unresolved temp id.
    pub blocked: u64,
    pub last_sync_at: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub last_report: Option<DrainReport>,
    /// Uploads waiting or in flight.
    pub uploads_pending: u64,
    /// Uploads in the dead letter.
    pub uploads_dead: u64,
}

/// Events on the status stream (tagged by `type` for the TypeScript union).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum StatusEvent {
    /// State or counts changed.
    Status(SyncStatus),
    /// Mutations finished (delivered, dead-lettered or rescheduled) during a drain: sent after
    /// each settled round of requests, with running totals.
    Progress {
        #[serde(rename = "runId")]
        run_id: String,
        done: u32,
        dead: u32,
        remaining: u64,
    },
    /// Bytes sent of one file upload (throttled; always sent at the end of a file).
    UploadProgress {
        id: String,
        placeholder: String,
        #[serde(rename = "bytesSent")]
        bytes_sent: u64,
        total: u64,
    },
    /// A drain ended.
    Report(DrainReport),
    /// One mutation was delivered (2xx). Sent once its outcome is durable.
    Delivered(Delivered),
    /// One mutation moved to the dead letter (the server refused it, or its retries ran out).
    Dead {
        id: String,
        entity: EntityRef,
        status: Option<u16>,
        error: String,
    },
    /// A delete cancelled its entity's create before either was sent (`coalesce`): nothing
    /// reached the server, and these enqueued ids (the create, what came between, the delete)
    /// are settled. Their temp id never resolves; later references to it are refused.
    Cancelled { ids: Vec<String>, entity: EntityRef },
    /// One file upload finished: its placeholder now resolves to `result` (the URL or id the
    /// file got), and the mutations that reference it can go. Sent once that is durable.
    Uploaded {
        id: String,
        placeholder: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entity: Option<EntityRef>,
        status: u16,
        result: String,
    },
    /// One file upload moved to the dead letter (the file is gone, the storage host refused
    /// it, or its retries ran out); mutations that reference it wait until it is retried or
    /// discarded.
    UploadDead {
        id: String,
        placeholder: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entity: Option<EntityRef>,
        status: Option<u16>,
        error: String,
    },
    /// A round of outcomes is durable: the ids delivered and dead-lettered in it, so an app
    /// refreshes its state once per round rather than once per mutation. Sent after that
    /// round's `delivered`/`dead` events.
    Settled {
        #[serde(rename = "runId")]
        run_id: String,
        delivered: Vec<String>,
        dead: Vec<String>,
    },
}

/// A delivered mutation, from the `delivered` table (kept for `retentionMs`): what the app needs
/// to replace a temp id in its own records and to show "synced".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivered {
    /// The mutation's id (as returned by `enqueue`).
    pub id: String,
    pub entity: EntityRef,
    pub method: String,
    pub path: String,
    /// The 2xx status the server answered.
    pub status: u16,
    /// The temp id this mutation created the entity under, if it was a create with `tempId`.
    pub temp_id: Option<String>,
    /// The id the server assigned (a create's `id` in its response), if any.
    pub server_id: Option<String>,
    /// When it was confirmed (ms since the Unix epoch, the engine's clock).
    pub delivered_at: i64,
    /// The server's response (JSON, or a string when it is not JSON), when
    /// `outcomeBodyMaxBytes` asked for it and it fitted. Mutations coalesced into one request
    /// share its response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// Filters of [`BackgroundSync::delivered`](crate::BackgroundSync::delivered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeliveredQuery {
    /// Only mutations confirmed at or after this time (ms since the Unix epoch).
    pub since: Option<i64>,
    /// Only mutations of this entity.
    pub entity: Option<EntityRef>,
    /// At most this many, oldest first (default 100, at most 1,000).
    pub limit: Option<u32>,
}

/// A past drain run, from the history table.
pub type HistoryEntry = DrainReport;

/// Apply a partial configuration (any subset of fields, nested objects merged) over the stored
/// one or the defaults. `null` resets a field to its default.
#[doc(hidden)]
pub fn merge_config(existing: Option<SyncConfig>, patch: Value) -> crate::Result<SyncConfig> {
    if !patch.is_object() {
        return Err(crate::Error::invalid("config must be a JSON object"));
    }
    let mut base = serde_json::to_value(existing.unwrap_or_default())?;
    let defaults = serde_json::to_value(SyncConfig::default())?;
    merge(&mut base, patch, Some(&defaults));
    serde_json::from_value(base).map_err(|e| crate::Error::invalid(format!("config: {e}")))
}

/// RFC 7396-style merge, except that `null` resets a field to its default at the same depth
/// (`{"uploads":{"concurrency":null}}` gives the default of `uploads.concurrency`).
fn merge(base: &mut Value, patch: Value, defaults: Option<&Value>) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                let default = defaults.and_then(|d| d.get(&k));
                match b.get_mut(&k) {
                    Some(slot) if v.is_object() && slot.is_object() => merge(slot, v, default),
                    Some(slot) if v.is_null() => {
                        *slot = default.cloned().unwrap_or(Value::Null);
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, p) => *b = p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_config_merges_over_stored() {
        let stored = SyncConfig {
            base_url: "https://a.example".into(),
            concurrency: 8,
            ..Default::default()
        };
        let c = merge_config(
            Some(stored),
            json!({"backoff": {"maxMs": 1000}, "maxAttempts": 3}),
        )
        .unwrap();
        assert_eq!(c.base_url, "https://a.example");
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.backoff.max_ms, 1000);
        assert_eq!(c.backoff.initial_ms, 1000);
        assert_eq!(c.max_attempts, 3);
        let c = merge_config(Some(c), json!({"concurrency": null})).unwrap();
        assert_eq!(c.concurrency, 4);
        assert!(merge_config(None, json!([1])).is_err());
        assert!(merge_config(None, json!({"concurrency": "many"})).is_err());
    }

    #[test]
    fn priorities_parse_strictly() {
        assert_eq!(
            serde_json::from_value::<Priority>(json!("critical")).unwrap(),
            Priority::Critical
        );
        assert!(serde_json::from_value::<Priority>(json!("urgent")).is_err());
        assert!(
            Priority::Critical > Priority::High
                && Priority::High > Priority::Normal
                && Priority::Normal > Priority::Low
        );
    }

    #[test]
    fn auth_debug_redacts_tokens() {
        let a = AuthConfig {
            access_token: Some("secret-a".into()),
            refresh_token: Some("secret-r".into()),
            refresh_url: None,
            ..Default::default()
        };
        let s = format!("{a:?}");
        assert!(!s.contains("secret"), "{s}");
    }
}
