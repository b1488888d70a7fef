// Copyright 2025 the tauri-plugin-background-sync authors
// SPDX-License-Identifier: Apache-2.0
// SPDX-License-Identifier: MIT

/**
 * Durable mutation outbox for offline-first Tauri apps.
 *
 * Mutations (`POST`/`PUT`/`PATCH`/`DELETE` requests to your REST API) are committed to a
 * SQLite outbox on the device, then drained push-only in the background: by a foreground
 * timer, on reconnect, by Android WorkManager and by iOS BGTaskScheduler. Mutations of one
 * entity are delivered strictly in order; entities created offline get a temporary id that
 * later mutations may reference and that is rewritten with the server id once the create is
 * delivered.
 *
 * @example
 * ```ts
 * import { configure, setAuth, enable, enqueue, tempId, onStatus } from 'tauri-plugin-background-sync-api'
 *
 * await configure({ baseUrl: 'https://api.example.com/v1' })
 * await setAuth({ accessToken: token, refreshToken, refreshUrl: '/auth/refresh' })
 * await enable()
 *
 * const id = tempId('visit')
 * await enqueue({ method: 'POST', path: '/visits', body: { id, note: 'hi' }, entity: { kind: 'visit', id }, tempId: id })
 * await enqueue({ method: 'PATCH', path: `/visits/${id}`, body: { note: 'hello' }, entity: { kind: 'visit', id } })
 *
 * const unlisten = await onStatus((e) => console.log(e.type, e))
 * ```
 *
 * @module
 */

import { invoke, Channel } from '@tauri-apps/api/core'
import type { UnlistenFn } from '@tauri-apps/api/event'

export type { UnlistenFn }

/**
 * Stops a status subscription (see {@link onStatus}). Assignable to Tauri's `UnlistenFn`;
 * the returned promise settles once the plugin has dropped the subscription.
 */
export type StatusUnlistenFn = () => Promise<void>

// ---------------------------------------------------------------------------------------------
// Types (mirror the Rust `models.rs`, serialized in camelCase)
// ---------------------------------------------------------------------------------------------

/** All priorities, lowest first. */
export const PRIORITIES = ['low', 'normal', 'high', 'critical'] as const

/**
 * Delivery priority across entities: higher priorities drain first. Within one entity,
 * enqueue order always wins.
 */
export type Priority = (typeof PRIORITIES)[number]

/** HTTP methods a mutation may use. */
export const METHODS = ['POST', 'PUT', 'PATCH', 'DELETE'] as const

/** HTTP method of a mutation. */
export type Method = (typeof METHODS)[number]

/** The entity a mutation changes. Mutations of one entity are delivered strictly in order. */
export interface EntityRef {
  /** Entity type, e.g. `"visit"`. */
  kind: string
  /** Entity id: a server id, or the temporary id of an entity created offline. */
  id: string
}

/** A mutation to enqueue. */
export interface NewMutation {
  /** `POST`, `PUT`, `PATCH` or `DELETE`. */
  method: Method
  /**
   * Path relative to the configured base URL (`/visits/tmp-1`), or an absolute URL on an
   * allowed origin.
   */
  path: string
  /** JSON body; omit (or `null`) for none. */
  body?: unknown
  /** Extra request headers (no hop-by-hop, `Host`, `Authorization` or `Idempotency-Key`). */
  headers?: Record<string, string>
  /** Delivery priority across entities. @defaultValue `'normal'` */
  priority?: Priority
  /** The entity this mutation changes. */
  entity: EntityRef
  /**
   * Set on a create (`POST` or `PUT`) of an entity made offline: the temporary id the server
   * id will replace. Later mutations that contain this exact string as a path segment or JSON
   * string value wait for the create and are rewritten with the server id. See {@link tempId}.
   */
  tempId?: string
  /**
   * Caller-chosen idempotency key (e.g. to dedupe a retried enqueue), 1..255 visible ASCII
   * characters; generated if absent. Sent as the `Idempotency-Key` header.
   */
  idempotencyKey?: string
  /**
   * Opt in to coalescing with this entity's unsent neighbours (see {@link Coalesce}): this
   * mutation may fold into the one queued just before it, and later ones into it. Every
   * enqueued id still gets its own outcome event.
   * @since Unreleased
   */
  coalesce?: Coalesce
}

/**
 * How a mutation folds into the unsent mutation of its entity queued just before it. Both
 * must have opted in, neither may carry `headers`, and the earlier one must never have been
 * handed to a drain (not in flight, not tried, not dead, not cancelled mid-request); otherwise
 * both are sent as they are.
 *
 * - `'merge'`: a `PATCH` whose body is a JSON merge patch (RFC 7396) is composed with an
 *   earlier `PATCH` of the same path, or applied to the body of an earlier `PUT` of that path
 *   or of the entity's unsent create (`tempId` as the path's last segment). Use it only if
 *   your server applies `PATCH` as a merge patch. Where two patches cannot be one (an object
 *   over a key the first set to a scalar or null), both are sent.
 * - `'replace'`: a `PUT` (or a `PATCH` carrying the whole new state) replaces the earlier
 *   body of the same method and path, or the body of the entity's unsent create.
 *
 * A `DELETE` with `coalesce` set cancels its entity's create when neither was sent (and
 * nothing outside the entity waits for the create's temp id): nothing reaches the server, and
 * a `cancelled` event lists every id involved.
 *
 * @example
 * ```ts
 * // Each keystroke's autosave folds into one request while offline.
 * await enqueue({ method: 'PATCH', path: `/visits/${id}`, body: { notes },
 *                 entity: { kind: 'visit', id }, coalesce: 'merge' })
 * ```
 * @since Unreleased
 */
export type Coalesce = 'merge' | 'replace'

/** Lifecycle of a queued mutation. */
export type MutationState = 'pending' | 'inFlight' | 'dead'

/** A queued (not yet delivered) mutation as stored in the outbox. */
export interface Mutation {
  /** Unique id of the queued mutation. */
  id: string
  /** Global enqueue order. */
  seq: number
  /** Idempotency key sent with every attempt. */
  idempotencyKey: string
  /** Delivery priority across entities. */
  priority: Priority
  /** The entity this mutation changes. */
  entity: EntityRef
  /** HTTP method (normalized to upper case). */
  method: string
  /** Path relative to the base URL, or an absolute URL on an allowed origin. */
  path: string
  /** JSON body; absent for none. */
  body?: unknown
  /** Extra request headers; absent for none. */
  headers?: Record<string, string>
  /** Temporary id this mutation creates, if it is an offline create. */
  tempId?: string
  /** When it was enqueued, in milliseconds since the Unix epoch. */
  createdAt: number
  /** Delivery attempts made so far. */
  attempts: number
  /** Earliest time of the next attempt, in milliseconds since the Unix epoch. */
  nextAttemptAt: number
  /** HTTP status of the last attempt, if any. */
  lastStatus: number | null
  /** Error of the last attempt, if any. */
  lastError: string | null
  /** Lifecycle state. */
  state: MutationState
  /** Temp ids this mutation waits for (unresolved creates); absent when none. */
  waitingFor?: string[]
}

/** What {@link enqueue} returns. */
export interface Enqueued {
  /** Id of the queued mutation (for {@link retry}, {@link discard}, {@link editDeadLetter}). */
  id: string
  /** Global enqueue order. */
  seq: number
  /** Idempotency key that will be sent (the caller's, or a generated one). */
  idempotencyKey: string
  /**
   * Set when the mutation folded into an unsent one ({@link NewMutation.coalesce}): the id of
   * the row that carries both. This id still gets its own `delivered`/`dead` event.
   * @since Unreleased
   */
  coalescedInto?: string
  /**
   * `true` when this delete cancelled its entity's unsent create: nothing is sent, and a
   * `cancelled` event lists every id involved.
   * @since Unreleased
   */
  cancelled?: boolean
}

/**
 * Exponential backoff with full jitter: attempt `n` (0-based) waits a uniform random time in
 * `[0, min(maxMs, initialMs * multiplier^n)]`, never less than a server's `Retry-After`.
 */
export interface BackoffConfig {
  /** Base delay of the first retry, in ms. @defaultValue `1000` */
  initialMs: number
  /** Largest delay, in ms. @defaultValue `300000` (5 minutes) */
  maxMs: number
  /** Growth factor per attempt. @defaultValue `2` */
  multiplier: number
}

/** Optional batch endpoint: several mutations in one request with per-item results. */
export interface BatchConfig {
  /** Path of the batch endpoint on the base URL. @defaultValue `'/batch'` */
  path: string
  /** Most mutations per request. @defaultValue `50` */
  maxItems: number
}

/** OS background work settings (Android WorkManager constraints, iOS BGTask kinds, desktop timer). */
export interface BackgroundConfig {
  /** Minutes between periodic runs (Android and iOS clamp to >= 15). @defaultValue `15` */
  intervalMinutes: number
  /** Run only with network connectivity. @defaultValue `true` */
  requiresNetwork: boolean
  /** Run only while charging. @defaultValue `false` */
  requiresCharging: boolean
  /** Skip runs while the battery is low. @defaultValue `true` */
  requiresBatteryNotLow: boolean
  /** Budget of one background drain, in ms (iOS app refresh gives about 30 s). @defaultValue `25000` */
  budgetMs: number
}

/**
 * Durability of a committed enqueue.
 *
 * - `full`: WAL + `synchronous=FULL`: an acknowledged enqueue survives power loss.
 * - `relaxed`: WAL + `synchronous=NORMAL`: survives an app crash; a power cut may lose the
 *   last commits.
 */
export type Durability = 'full' | 'relaxed'

/** Sync configuration, persisted in the outbox database so a cold background process can drain. */
export interface SyncConfig {
  /** Base URL of the app's REST API, e.g. `https://api.example.com/v1`. @defaultValue `''` */
  baseUrl: string
  /**
   * Further origins mutations may target (`scheme://host[:port]`); the base URL's origin is
   * always allowed. @defaultValue `[]`
   */
  allowedOrigins: string[]
  /** Allow plain `http://` to non-loopback hosts (never needed in production). @defaultValue `false` */
  allowInsecureHttp: boolean
  /** JSON pointer to the server id in a create's response body. @defaultValue `'/id'` */
  idPointer: string
  /** Per-request timeout, in ms. @defaultValue `10000` */
  requestTimeoutMs: number
  /** Attempts before a transiently failing mutation goes to the dead letter (about four hours of failures with the default backoff). @defaultValue `100` */
  maxAttempts: number
  /** Retry backoff. */
  backoff: BackoffConfig
  /** Independent entities sent at once. @defaultValue `4` */
  concurrency: number
  /** When set, mutations are sent through the batch endpoint. @defaultValue `null` */
  batch: BatchConfig | null
  /** Delivered rows are kept this long (for history), then pruned, in ms. @defaultValue `604800000` (7 days) */
  retentionMs: number
  /** Largest accepted body (serialized JSON bytes). @defaultValue `1048576` */
  maxPayloadBytes: number
  /** Most open (pending + dead) mutations; further enqueues fail with `limitExceeded`. @defaultValue `100000` */
  maxQueueLen: number
  /** Headers added to every request (e.g. an API version). @defaultValue `{}` */
  defaultHeaders: Record<string, string>
  /** OS background work settings. */
  background: BackgroundConfig
  /** Durability of a committed enqueue. @defaultValue `'full'` */
  durability: Durability
  /** How long the single-drainer lease lasts without renewal, in ms. @defaultValue `30000` */
  leaseTtlMs: number
  /** Background file uploads. */
  uploads: UploadConfig
  /**
   * While the app runs, sync automatically: shortly after enqueues (at once for high and
   * critical), on reconnect, when a backoff ends and on the interval, whether or not OS
   * background work is enabled (`enable()` gates only work the OS starts). `false`: nothing is
   * sent until {@link syncNow} (or, on desktop, while background sync is enabled).
   * @defaultValue `true`
   * @since 0.1.0 (unreleased): automatic foreground sync by default
   */
  autoSync: boolean
  /** Which certificate authorities the API's and storage's certificates may chain to. */
  tls: TlsConfig
  /**
   * Keep a delivered mutation's response body, up to this many bytes (at most 65,536), for its
   * `delivered` event and {@link delivered} row ({@link Delivered.body}), so the app can take
   * server-computed fields without a refetch. `0` keeps none; a larger body is left out and
   * the event still comes. Kept bodies live as long as the delivered row (`retentionMs`).
   * @defaultValue `0`
   * @since Unreleased
   * @example
   * ```ts
   * await configure({ outcomeBodyMaxBytes: 4096 })
   * await onStatus((e) => {
   *   if (e.type === 'delivered' && e.body) saveServerCopy(e.entity, e.body)
   * })
   * ```
   */
  outcomeBodyMaxBytes: number
}

/**
 * TLS trust, persisted with the configuration so background runs use it too.
 * @since Unreleased
 */
export interface TlsConfig {
  /**
   * Further root certificates, PEM (a string may hold several `CERTIFICATE` blocks): the
   * private CA of an MDM-managed fleet or of a TLS-inspecting proxy. @defaultValue `[]`
   */
  extraRootsPem: string[]
  /** Also trust the bundled Mozilla roots; `false`: only `extraRootsPem`. @defaultValue `true` */
  builtInRoots: boolean
}

/** File uploads: where signed URLs come from, which hosts may receive file bytes, limits. */
export interface UploadConfig {
  /** Path on the API that returns upload URLs for a batch of files. @defaultValue `'/uploads/sign'` */
  signPath: string
  /** Most files per sign request. @defaultValue `20` */
  signBatchSize: number
  /** Uploads in flight at once. @defaultValue `10` */
  concurrency: number
  /**
   * Origins that may receive file bytes through signed URLs only (e.g.
   * `https://api.cloudinary.com`); mutations can never target them. @defaultValue `[]`
   */
  storageOrigins: string[]
  /**
   * JSON pointer to the resulting URL or id in the upload response; the sign response's
   * `resultUrl` is the fallback. @defaultValue `'/url'`
   */
  resultPointer: string
  /** Largest accepted file, in bytes. @defaultValue `2147483648` (2 GiB) */
  maxFileBytes: number
  /** Most open (pending + dead) uploads. @defaultValue `10000` */
  maxQueued: number
  /**
   * Directories the webview may upload from, besides the app's data and cache directories.
   * @defaultValue `[]`
   */
  allowedDirs: string[]
}

/** Keys of {@link SyncConfig} whose values are nested objects merged field by field. */
type NestedConfigKey = 'backoff' | 'batch' | 'background' | 'uploads' | 'tls'

/**
 * What {@link configure} accepts: any subset of {@link SyncConfig}. Nested objects
 * (`backoff`, `batch`, `background`) are merged field by field over the stored configuration;
 * `null` resets a field to its default.
 */
export type SyncConfigInput = {
  [K in keyof SyncConfig]?:
    | (K extends NestedConfigKey
        ? Partial<NonNullable<SyncConfig[K]>>
        : SyncConfig[K])
    | null
}

/**
 * Credentials. Stored sealed (AES-256-GCM, key in the Android Keystore / iOS Keychain / desktop
 * keyring; in memory only where none is reachable: README "Credentials at rest"), never logged,
 * never returned to JS.
 * @since Unreleased: sealed at rest (before: plaintext in the outbox database)
 */
export interface AuthConfig {
  /** Sent as `Authorization: Bearer <token>`. */
  accessToken?: string | null
  /**
   * Exchanged at `refreshUrl` on a 401 (once per drain), or before a drain when `expiresAt`
   * is less than a minute away, headless. A rotated refresh token from the server is kept.
   */
  refreshToken?: string | null
  /** Path on the base URL (or absolute URL on an allowed origin) of the refresh exchange. */
  refreshUrl?: string | null
  /**
   * How the refresh is spoken. `'json'` (default): POST `{"refreshToken": "..."}` as JSON and
   * read `accessToken` (optional `refreshToken`, `expiresIn` in seconds) back. `'oauth2'`: the
   * OAuth 2.0 refresh grant (RFC 6749 §6), form-encoded
   * `grant_type=refresh_token&refresh_token=…&client_id=…[&scope=…]`, reading `access_token`,
   * `token_type` (must be `Bearer`), optional `expires_in` and `refresh_token`.
   */
  refreshMode?: 'json' | 'oauth2'
  /** `'oauth2'` only, required there: the app's (public) OAuth client id. */
  clientId?: string | null
  /** `'oauth2'` only: the scope to ask for; omitted, the server keeps the granted scope. */
  scope?: string | null
  /**
   * When `accessToken` expires, in ms since the Unix epoch, if the app knows it. Set by
   * every refresh from the server's `expires_in`.
   */
  expiresAt?: number | null
}

/**
 * Why a drain stopped.
 *
 * - `empty`: nothing left to send.
 * - `waiting`: everything left is waiting (backoff, dead letter ahead in its entity, unresolved temp id).
 * - `deadline`: the budget ran out; no request was started that could not finish in time.
 * - `cancelled`: cancelled by the caller (iOS expiration, WorkManager stop, app exit).
 * - `disabled`: background sync is disabled (background entries only).
 * - `noNetwork`: the device reported no network.
 * - `authFailed`: a 401 persisted after a refresh, or no credentials to refresh with.
 * - `alreadyRunning`: another drain holds the lease.
 * - `notConfigured`: {@link configure} was never called.
 * - `error`: storage failed mid-drain; see `lastError`.
 */
export type StopReason =
  | 'empty'
  | 'waiting'
  | 'deadline'
  | 'cancelled'
  | 'disabled'
  | 'noNetwork'
  | 'authFailed'
  | 'alreadyRunning'
  | 'notConfigured'
  | 'error'

/** Result of one drain run. */
export interface DrainReport {
  /** Unique id of the run. */
  runId: string
  /** What started the run: `foreground`, `timer`, `reconnect`, `android-worker`, `ios-refresh`... */
  trigger: string
  /** Start, in milliseconds since the Unix epoch. */
  startedAt: number
  /** End, in milliseconds since the Unix epoch. */
  finishedAt: number
  /** HTTP requests started (a batch counts once). */
  requests: number
  /** Mutation sends attempted. */
  sent: number
  /** Delivered (2xx). */
  done: number
  /** Transient failures rescheduled with backoff. */
  retried: number
  /** Moved to the dead letter in this run. */
  dead: number
  /** Queued items left: pending mutations plus pending uploads. */
  remaining: number
  /** Dead letters in the queue after the run. */
  deadTotal: number
  /** Why the run stopped. */
  stopReason: StopReason
  /** Earliest time a remaining mutation becomes eligible, if any (ms since the Unix epoch). */
  nextAttemptAt: number | null
  /** Last error of the run, if any. */
  lastError: string | null
  /** Files uploaded in this run. */
  uploaded: number
  /** Upload failures rescheduled (re-signing an expired URL included). */
  uploadRetried: number
  /** Uploads moved to the dead letter in this run. */
  uploadDead: number
  /** File bytes sent in this run (finished uploads). */
  bytesUploaded: number
  /** Pending uploads left (included in `remaining`). */
  uploadsRemaining: number
}

/** Coarse state of the sync engine. */
export type SyncState =
  'idle' | 'scheduled' | 'running' | 'completed' | 'failed'

/** Snapshot of the outbox and the engine. */
export interface SyncStatus {
  /** Coarse state of the engine. */
  state: SyncState
  /** Whether background sync is enabled. */
  enabled: boolean
  /** Whether {@link configure} has been called on this database. */
  configured: boolean
  /** Pending mutations. */
  pending: number
  /** Mutations being sent right now. */
  inFlight: number
  /** Dead letters. */
  dead: number
  /** Pending mutations waiting for an unresolved temp id. */
  blocked: number
  /** End of the last drain, if any (ms since the Unix epoch). */
  lastSyncAt: number | null
  /** Last error, if any. */
  lastError: string | null
  /** Earliest time a pending mutation becomes eligible, if any (ms since the Unix epoch). */
  nextAttemptAt: number | null
  /** Report of the last drain, if any. */
  lastReport: DrainReport | null
  /** Uploads waiting or in flight. */
  uploadsPending: number
  /** Uploads in the dead letter. */
  uploadsDead: number
}

/** State or counts changed. */
export type StatusChangedEvent = { type: 'status' } & SyncStatus

/** Mutations finished during a drain: sent after each settled round of requests, with running totals. */
export interface ProgressEvent {
  type: 'progress'
  /** Id of the running drain. */
  runId: string
  /** Delivered so far in this run. */
  done: number
  /** Dead-lettered so far in this run. */
  dead: number
  /** Pending mutations left. */
  remaining: number
}

/** Bytes sent of one file upload (at most every 250 ms per file, and once at the end). */
export interface UploadProgressEvent {
  type: 'uploadProgress'
  /** Upload id. */
  id: string
  /** The placeholder mutations use for this file. */
  placeholder: string
  bytesSent: number
  total: number
}

/** A drain ended. */
export type ReportEvent = { type: 'report' } & DrainReport

/** A delivered mutation: what an app needs to swap a temp id for the server's and show "synced". */
export interface Delivered {
  /** The mutation's id (as returned by `enqueue`). */
  id: string
  entity: EntityRef
  method: string
  path: string
  /** The 2xx status the server answered. */
  status: number
  /** The temp id this mutation created its entity under, if it was a create with `tempId`. */
  tempId: string | null
  /** The id the server assigned (the create response's `id`), if any. */
  serverId: string | null
  /** When delivery was confirmed (ms since the Unix epoch). */
  deliveredAt: number
  /**
   * The server's response (JSON, or a string when it was not JSON), only when
   * `outcomeBodyMaxBytes` asked for it and it fitted. Mutations coalesced into one request
   * share its response.
   * @since Unreleased
   */
  body?: unknown
}

/**
 * One mutation was delivered. Sent once its outcome is durable.
 * @since Unreleased
 */
export type DeliveredEvent = { type: 'delivered' } & Delivered

/**
 * One mutation moved to the dead letter.
 * @since Unreleased
 */
export interface DeadEvent {
  type: 'dead'
  id: string
  entity: EntityRef
  /** The HTTP status that buried it, if the server answered. */
  status: number | null
  error: string
}

/**
 * One file upload finished: its placeholder now resolves to `result` (the URL or id the file
 * got), and mutations that reference it can go. Sent once that is durable; replayed like
 * `delivered` when no listener heard it.
 * @since Unreleased
 */
export interface UploadedEvent {
  type: 'uploaded'
  /** Upload id (as returned by {@link enqueueUpload}). */
  id: string
  placeholder: string
  entity?: EntityRef
  status: number
  result: string
}

/**
 * One file upload moved to the dead letter (the file is gone, storage refused it, or its
 * retries ran out). Mutations that reference it wait until it is retried or discarded.
 * @since Unreleased
 */
export interface UploadDeadEvent {
  type: 'uploadDead'
  id: string
  placeholder: string
  entity?: EntityRef
  status: number | null
  error: string
}

/** Options of {@link onStatus}. @since Unreleased */
export interface StatusOptions {
  /**
   * Replay the outcomes no listener heard (default `true`): what a background run delivered
   * or dead-lettered while the app had no webview.
   */
  replay?: boolean
}

/**
 * A round of outcomes is durable: refresh the app's state once here rather than per mutation.
 * Follows that round's `delivered`/`dead` events.
 * @since Unreleased
 */
export interface SettledEvent {
  type: 'settled'
  /**
   * The drain's run id; `'replay'` for outcomes nobody heard, `'discard'` for what a discard
   * dead-lettered, `'recovered'` for outcomes re-read after this subscription fell behind.
   */
  runId: string
  /** Ids of the mutations delivered in this round. */
  delivered: string[]
  /** Ids of the mutations dead-lettered in this round. */
  dead: string[]
}

/**
 * A delete cancelled its entity's create before either was sent ({@link Coalesce}): nothing
 * reached the server and these enqueued ids (the create, what came between, the delete) are
 * settled. The create's temp id never resolves; later references to it are refused.
 * @since Unreleased
 */
export interface CancelledEvent {
  type: 'cancelled'
  ids: string[]
  entity: EntityRef
}

/** Events of the status stream, tagged by `type`. See {@link onStatus}. */
export type StatusEvent =
  | StatusChangedEvent
  | ProgressEvent
  | UploadProgressEvent
  | ReportEvent
  | DeliveredEvent
  | DeadEvent
  | CancelledEvent
  | SettledEvent
  | UploadedEvent
  | UploadDeadEvent

/**
 * Where an upload's bytes go.
 *
 * - `{ type: 'signed' }` (default): ask the API's sign endpoint (`uploads.signPath`, many files
 *   per request) for a URL, then send the file there without the app's token. An expired URL
 *   is signed again.
 * - `{ type: 'direct', url, method }`: send the file to a URL on the API's origins, with the
 *   bearer token and `Idempotency-Key`.
 */
export type UploadDestination =
  { type: 'signed' } | { type: 'direct'; url: string; method?: 'PUT' | 'POST' }

/** A file to upload in the background. */
export interface NewUpload {
  /** Absolute path, inside the app's data or cache directory or `uploads.allowedDirs`. */
  filePath: string
  /**
   * Copy the file next to the outbox now (so the original may be deleted or purged by the OS);
   * `false` uploads it in place. @defaultValue `true`
   */
  copy?: boolean
  /** @defaultValue `'application/octet-stream'` */
  contentType?: string
  /** Name reported to the sign endpoint (defaults to the file's name). */
  fileName?: string
  /** @defaultValue `{ type: 'signed' }` */
  destination?: UploadDestination
  /** @defaultValue `'normal'` */
  priority?: Priority
  /** The record the file belongs to (listed with the upload). */
  entity?: EntityRef
  /**
   * The string mutations use to reference the file's result (generated `att_…` when absent).
   * A mutation enqueued afterwards that contains it as a path segment or JSON string value
   * waits for the upload and is sent with the resulting URL/id in its place.
   */
  placeholder?: string
  /** Caller-chosen idempotency key: a repeated enqueue with it returns the first upload. */
  idempotencyKey?: string
}

/** What {@link enqueueUpload} returns. */
export interface EnqueuedUpload {
  id: string
  /** Put this string in mutations that reference the file. */
  placeholder: string
  /** File size in bytes. */
  size: number
}

/** Lifecycle of an upload. */
export type UploadState = 'pending' | 'inFlight' | 'dead' | 'done'

/** A queued, failed or finished upload. */
export interface Upload {
  id: string
  placeholder: string
  idempotencyKey: string
  priority: Priority
  entity?: EntityRef
  filePath: string
  fileName?: string
  contentType: string
  size: number
  destination: UploadDestination
  createdAt: number
  attempts: number
  nextAttemptAt: number
  lastStatus: number | null
  lastError: string | null
  state: UploadState
  /** The URL or id the file got (what the placeholder is replaced with). */
  result: string | null
  finishedAt: number | null
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** Every error kind the plugin reports. */
export const ERROR_KINDS = [
  'invalidInput',
  'originNotAllowed',
  'limitExceeded',
  'notConfigured',
  'notFound',
  'conflict',
  'storage',
  'corrupt',
  'migration',
  'network',
  'auth',
  'alreadyRunning',
  'platform',
  'internal'
] as const

/**
 * Stable machine-readable error kind.
 *
 * - `invalidInput`: bad method, path, priority, JSON, id...
 * - `originNotAllowed`: a URL outside the configured API origins, or plain http to a non-loopback host.
 * - `limitExceeded`: a payload or the queue is over its configured limit.
 * - `notConfigured`: {@link configure} was never called on this database.
 * - `notFound`: no mutation (or dead letter) with that id.
 * - `conflict`: the row is not in the state the operation needs (e.g. editing a row that is not dead).
 * - `storage`: the database is corrupt, read-only, locked, or the disk is full.
 * - `corrupt`: data stored in the database cannot be read back (a damaged or hand-edited file).
 * - `migration`: the database schema is newer or older than this build can migrate.
 * - `network`: a network-level failure outside a drain (e.g. token refresh).
 * - `auth`: authentication missing or refused.
 * - `alreadyRunning`: another drain holds the lease on this database.
 * - `platform`: the host (Tauri, OS scheduler) failed.
 * - `internal`: a bug.
 */
export type BackgroundSyncErrorKind = (typeof ERROR_KINDS)[number]

/**
 * What every function of this module rejects with when the plugin refuses or fails.
 *
 * Failures of Tauri itself (e.g. a command not allowed by the app's capabilities) reject with
 * Tauri's own error (a string) instead; use {@link isBackgroundSyncError} to tell them apart.
 */
export interface BackgroundSyncError {
  /** Stable machine-readable kind to branch on. */
  kind: BackgroundSyncErrorKind
  /** Human-readable description (not stable; do not parse). */
  message: string
}

/**
 * Whether `e` is an error reported by this plugin.
 *
 * @example
 * ```ts
 * import { enqueue, isBackgroundSyncError } from 'tauri-plugin-background-sync-api'
 *
 * try {
 *   await enqueue(mutation)
 * } catch (e) {
 *   if (isBackgroundSyncError(e) && e.kind === 'limitExceeded') showQueueFull()
 *   else throw e
 * }
 * ```
 */
export function isBackgroundSyncError(e: unknown): e is BackgroundSyncError {
  if (typeof e !== 'object' || e === null) return false
  const { kind, message } = e as Record<string, unknown>
  return (
    typeof kind === 'string' &&
    typeof message === 'string' &&
    (ERROR_KINDS as readonly string[]).includes(kind)
  )
}

function invalidInput(message: string): BackgroundSyncError {
  return { kind: 'invalidInput', message: `invalid input: ${message}` }
}

// ---------------------------------------------------------------------------------------------
// Client-side checks (the Rust side re-validates everything; these only catch obvious misuse
// early with the same error shape)
// ---------------------------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function checkMutation(m: unknown, where = 'mutation'): string | null {
  if (!isObject(m)) return `${where} must be an object`
  const { method, path, priority, entity, headers, coalesce } = m
  if (
    typeof method !== 'string' ||
    !(METHODS as readonly string[]).includes(method.trim().toUpperCase())
  ) {
    return `${where}.method ${JSON.stringify(method)} is not one of ${METHODS.join(', ')}`
  }
  if (typeof path !== 'string' || path.length === 0) {
    return `${where}.path must be a non-empty string`
  }
  if (
    priority !== undefined &&
    !(PRIORITIES as readonly unknown[]).includes(priority)
  ) {
    return `${where}.priority ${JSON.stringify(priority)} is not one of ${PRIORITIES.join(', ')}`
  }
  if (
    !isObject(entity) ||
    typeof entity.kind !== 'string' ||
    entity.kind.length === 0 ||
    typeof entity.id !== 'string' ||
    entity.id.length === 0
  ) {
    return `${where}.entity must be { kind: string, id: string } with non-empty strings`
  }
  if (
    headers !== undefined &&
    (!isObject(headers) ||
      Object.values(headers).some((v) => typeof v !== 'string'))
  ) {
    return `${where}.headers must be an object of string values`
  }
  if (
    coalesce !== undefined &&
    coalesce !== 'merge' &&
    coalesce !== 'replace'
  ) {
    return `${where}.coalesce ${JSON.stringify(coalesce)} is not one of merge, replace`
  }
  return null
}

function checkCount(v: unknown, name: string): string | null {
  if (v === undefined) return null
  if (
    typeof v !== 'number' ||
    !Number.isSafeInteger(v) ||
    v < 0 ||
    v > 0xffffffff
  ) {
    return `${name} must be a non-negative integer`
  }
  return null
}

function checkId(id: unknown): string | null {
  return typeof id === 'string' && id.length > 0
    ? null
    : 'id must be a non-empty string'
}

/** Copy of `o` without its `undefined` values (keeps the IPC payload minimal). */
function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  const out: Partial<T> = {}
  for (const k of Object.keys(o) as (keyof T)[]) {
    if (o[k] !== undefined) out[k] = o[k]
  }
  return out
}

const PLUGIN = 'plugin:background-sync|'

async function call<T>(
  command: string,
  args: Record<string, unknown> = {},
  problem: string | null = null
): Promise<T> {
  if (problem !== null) throw invalidInput(problem)
  return await invoke<T>(PLUGIN + command, args)
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/**
 * Enable background sync: schedules the OS background work (WorkManager, BGTaskScheduler,
 * desktop timer) and drains when mutations are enqueued or the network comes back.
 *
 * @example
 * ```ts
 * import { enable } from 'tauri-plugin-background-sync-api'
 * await enable()
 * ```
 */
export async function enable(): Promise<void> {
  await call<null>('enable')
}

/**
 * Disable background sync. Queued mutations stay in the outbox; {@link syncNow} still works.
 *
 * @example
 * ```ts
 * import { disable } from 'tauri-plugin-background-sync-api'
 * await disable()
 * ```
 */
export async function disable(): Promise<void> {
  await call<null>('disable')
}

/**
 * Whether background sync is enabled.
 *
 * @example
 * ```ts
 * import { isEnabled } from 'tauri-plugin-background-sync-api'
 * if (!(await isEnabled())) showSyncOffBanner()
 * ```
 */
export async function isEnabled(): Promise<boolean> {
  return await call<boolean>('is_enabled')
}

/**
 * Set (part of) the sync configuration. Fields not given keep their stored value (or default);
 * nested objects are merged field by field; `null` resets a field to its default. The
 * configuration is persisted so a cold background process can drain.
 *
 * @example
 * ```ts
 * import { configure } from 'tauri-plugin-background-sync-api'
 * await configure({
 *   baseUrl: 'https://api.example.com/v1',
 *   defaultHeaders: { 'X-Api-Version': '3' },
 *   backoff: { maxMs: 60_000 },
 *   batch: { path: '/batch', maxItems: 25 }
 * })
 * ```
 */
export async function configure(config: SyncConfigInput): Promise<void> {
  await call<null>(
    'configure',
    { config },
    isObject(config) ? null : 'config must be an object'
  )
}

/**
 * Store the credentials used for delivery. Tokens go in; nothing ever returns them.
 *
 * @example
 * ```ts
 * import { setAuth } from 'tauri-plugin-background-sync-api'
 * await setAuth({ accessToken, refreshToken, refreshUrl: '/auth/refresh' })
 * ```
 */
export async function setAuth(auth: AuthConfig): Promise<void> {
  await call<null>(
    'set_auth',
    { auth },
    isObject(auth) ? null : 'auth must be an object'
  )
}

/**
 * Forget the stored credentials (e.g. on logout).
 *
 * @example
 * ```ts
 * import { clearAuth } from 'tauri-plugin-background-sync-api'
 * await clearAuth()
 * ```
 */
export async function clearAuth(): Promise<void> {
  await call<null>('clear_auth')
}

/**
 * Durably queue one mutation. When the promise resolves the mutation is committed to the
 * outbox and will be delivered, even if the app is killed right after.
 *
 * @example
 * ```ts
 * import { enqueue } from 'tauri-plugin-background-sync-api'
 * const { id } = await enqueue({
 *   method: 'PATCH',
 *   path: '/visits/42',
 *   body: { note: 'updated offline' },
 *   entity: { kind: 'visit', id: '42' },
 *   priority: 'high'
 * })
 * ```
 */
export async function enqueue(mutation: NewMutation): Promise<Enqueued> {
  return await call<Enqueued>('enqueue', { mutation }, checkMutation(mutation))
}

/**
 * Durably queue several mutations in one transaction: all or none are queued, in order.
 *
 * @example
 * ```ts
 * import { enqueueMany, tempId } from 'tauri-plugin-background-sync-api'
 * const id = tempId('visit')
 * const [create, update] = await enqueueMany([
 *   { method: 'POST', path: '/visits', body: { id }, entity: { kind: 'visit', id }, tempId: id },
 *   { method: 'PATCH', path: `/visits/${id}`, body: { done: true }, entity: { kind: 'visit', id } }
 * ])
 * ```
 */
export async function enqueueMany(
  mutations: NewMutation[]
): Promise<Enqueued[]> {
  let problem: string | null = null
  if (!Array.isArray(mutations)) {
    problem = 'mutations must be an array'
  } else {
    for (let i = 0; i < mutations.length && problem === null; i++) {
      problem = checkMutation(mutations[i], `mutations[${i}]`)
    }
  }
  return await call<Enqueued[]>('enqueue_many', { mutations }, problem)
}

/** Options of {@link syncNow}. */
export interface SyncNowOptions {
  /** Time budget of the drain in ms (capped at 9 minutes by the plugin). */
  budgetMs?: number
}

/**
 * Drain the outbox now, in the foreground, and wait for the result.
 *
 * @example
 * ```ts
 * import { syncNow } from 'tauri-plugin-background-sync-api'
 * const report = await syncNow({ budgetMs: 10_000 })
 * if (report.stopReason === 'authFailed') await promptLogin()
 * ```
 */
export async function syncNow(options?: SyncNowOptions): Promise<DrainReport> {
  return await call<DrainReport>(
    'sync_now',
    defined({ budgetMs: options?.budgetMs }),
    checkCount(options?.budgetMs, 'budgetMs')
  )
}

/**
 * Snapshot of the outbox and the engine.
 *
 * @example
 * ```ts
 * import { status } from 'tauri-plugin-background-sync-api'
 * const { pending, dead } = await status()
 * ```
 */
export async function status(): Promise<SyncStatus> {
  return await call<SyncStatus>('status')
}

/** Paging options of {@link pending} and {@link deadLetters}. */
export interface PageOptions {
  /** Most rows to return (the plugin defaults to 100 and caps at 1000). */
  limit?: number
  /** Rows to skip. @defaultValue `0` */
  offset?: number
}

function page(
  command: string,
  options: PageOptions | undefined
): Promise<Mutation[]> {
  return call<Mutation[]>(
    command,
    defined({ limit: options?.limit, offset: options?.offset }),
    checkCount(options?.limit, 'limit') ?? checkCount(options?.offset, 'offset')
  )
}

/** Options of {@link pending}. */
export interface PendingOptions extends PageOptions {
  /**
   * Only this entity's mutations: "not synced yet" for one record (a badge, a row's state).
   * @since Unreleased
   */
  entity?: EntityRef
}

/**
 * Queued mutations not yet delivered (pending and in flight), in enqueue order; with
 * `entity`, only that entity's. Mutations coalesced into a row are not listed on their own
 * (their row is). Dead letters are not pending: see {@link deadLetters}.
 *
 * @example
 * ```ts
 * import { pending } from 'tauri-plugin-background-sync-api'
 * const firstPage = await pending({ limit: 50 })
 * const secondPage = await pending({ limit: 50, offset: 50 })
 * const unsynced = (await pending({ entity: { kind: 'visit', id } })).length > 0
 * ```
 */
export async function pending(options?: PendingOptions): Promise<Mutation[]> {
  const entity = options?.entity
  const bad =
    entity === undefined ||
    (isObject(entity) &&
      typeof entity.kind === 'string' &&
      entity.kind.length > 0 &&
      typeof entity.id === 'string' &&
      entity.id.length > 0)
      ? null
      : 'entity must be { kind: string, id: string } with non-empty strings'
  return await call<Mutation[]>(
    'pending',
    defined({ limit: options?.limit, offset: options?.offset, entity }),
    bad ??
      checkCount(options?.limit, 'limit') ??
      checkCount(options?.offset, 'offset')
  )
}

/**
 * Dead letters: mutations the server refused permanently (4xx) or that failed `maxAttempts`
 * times. They block later mutations of the same entity until retried, edited or discarded.
 *
 * @example
 * ```ts
 * import { deadLetters } from 'tauri-plugin-background-sync-api'
 * for (const m of await deadLetters()) console.warn(m.path, m.lastStatus, m.lastError)
 * ```
 */
export async function deadLetters(options?: PageOptions): Promise<Mutation[]> {
  return await page('dead_letters', options)
}

/**
 * Move a dead letter back to pending, with its attempts reset.
 *
 * @example
 * ```ts
 * import { deadLetters, retry } from 'tauri-plugin-background-sync-api'
 * for (const m of await deadLetters()) await retry(m.id)
 * ```
 */
export async function retry(id: string): Promise<void> {
  await call<null>('retry', { id }, checkId(id))
}

/**
 * Delete a dead or pending mutation for good.
 *
 * @example
 * ```ts
 * import { discard } from 'tauri-plugin-background-sync-api'
 * await discard(deadLetter.id)
 * ```
 */
export async function discard(id: string): Promise<void> {
  await call<null>('discard', { id }, checkId(id))
}

/**
 * Replace a dead letter's body and make it pending again (e.g. after fixing what the server
 * rejected). Fails with `conflict` if the mutation is not dead.
 *
 * @example
 * ```ts
 * import { editDeadLetter } from 'tauri-plugin-background-sync-api'
 * await editDeadLetter(deadLetter.id, { ...deadLetter.body as object, email: fixedEmail })
 * ```
 */
export async function editDeadLetter(id: string, body: unknown): Promise<void> {
  await call<null>('edit', { id, body }, checkId(id))
}

/**
 * Queue a file for background upload. Enqueue it BEFORE the mutations that reference it, and
 * put the returned `placeholder` in them: they wait for the file and are sent with its URL.
 *
 * @example
 * ```ts
 * import { enqueueUpload, enqueue, tempId } from 'tauri-plugin-background-sync-api'
 * const photo = await enqueueUpload({ filePath: capturedPath, contentType: 'image/jpeg' })
 * const visit = tempId('visit')
 * await enqueue({
 *   method: 'POST', path: '/visits', tempId: visit, entity: { kind: 'visit', id: visit },
 *   body: { site: 'North', photoUrl: photo.placeholder }
 * })
 * ```
 */
export async function enqueueUpload(
  upload: NewUpload
): Promise<EnqueuedUpload> {
  const problem =
    upload === null || typeof upload !== 'object'
      ? 'upload must be an object'
      : typeof upload.filePath !== 'string' || upload.filePath.length === 0
        ? 'filePath must be a non-empty string'
        : null
  return await call<EnqueuedUpload>('enqueue_upload', { upload }, problem)
}

/** Options of {@link uploads}. */
export interface UploadListOptions extends PageOptions {
  /** Only these states (all when absent). */
  states?: UploadState[]
}

/**
 * Uploads, in enqueue order.
 *
 * @example
 * ```ts
 * import { uploads } from 'tauri-plugin-background-sync-api'
 * const failed = await uploads({ states: ['dead'] })
 * ```
 */
export async function uploads(options?: UploadListOptions): Promise<Upload[]> {
  return await call<Upload[]>(
    'uploads',
    defined({
      states: options?.states,
      limit: options?.limit,
      offset: options?.offset
    }),
    checkCount(options?.limit, 'limit') ?? checkCount(options?.offset, 'offset')
  )
}

/**
 * Put a dead upload back in the queue with its attempts reset.
 *
 * @example
 * ```ts
 * import { uploads, retryUpload } from 'tauri-plugin-background-sync-api'
 * for (const u of await uploads({ states: ['dead'] })) await retryUpload(u.id)
 * ```
 */
export async function retryUpload(id: string): Promise<void> {
  await call<null>('retry_upload', { id }, checkId(id))
}

/**
 * Delete an upload (and the plugin's copy of the file). Mutations waiting for it become dead
 * letters so they can be reviewed.
 *
 * @example
 * ```ts
 * import { discardUpload } from 'tauri-plugin-background-sync-api'
 * await discardUpload(upload.id)
 * ```
 */
export async function discardUpload(id: string): Promise<void> {
  await call<null>('discard_upload', { id }, checkId(id))
}

/**
 * One reason background sync will not run, or will run late. `code` is stable: switch on it to
 * show your own words; `message` and `fix` are plain English for a user.
 * @since Unreleased
 */
export interface Problem {
  code:
    | 'notConfigured'
    | 'signInExpired'
    | 'changesRejected'
    | 'autoSyncOff'
    | 'backgroundOff'
    | 'backgroundRestricted'
    | 'workNotScheduled'
    | 'stoppedByAndroid'
    | 'restrictedBucket'
    | 'rareBucket'
    | 'batteryOptimized'
    | 'batterySaver'
    | 'notificationsOff'
    | 'backgroundRefreshOff'
    | 'backgroundRefreshRestricted'
    | 'identifierMissing'
    | 'nothingScheduled'
    | 'lowPowerMode'
    | 'schedulerStopped'
    | 'desktopNeedsApp'
    | 'platformUnavailable'
    | (string & {})
  message: string
  fix: string
}

/** A BGTask request iOS holds for the app. @since Unreleased */
export interface PendingTask {
  identifier: string
  /** `earliestBeginDate`, ms since the epoch. */
  earliestBeginAt: number | null
}

/**
 * What the OS says, as the plugin collected it. A fact the OS could not give (an older
 * version, a failed call) is `null` and yields no problem.
 * @since Unreleased
 */
export type PlatformFacts =
  | {
      platform: 'android'
      sdkInt: number | null
      /** The periodic work's `WorkInfo.State`, or `'NONE'` when nothing is enqueued. */
      workState: string | null
      nextScheduleAt: number | null
      /** `WorkInfo.stopReason` (API 31+): 10 quota, 11 background restriction, 12 app standby, -256 not stopped. */
      stopReason: number | null
      ignoringBatteryOptimizations: boolean | null
      backgroundRestricted: boolean | null
      /** 10 active, 20 working set, 30 frequent, 40 rare, 45 restricted. */
      standbyBucket: number | null
      powerSaveMode: boolean | null
      notificationsEnabled: boolean | null
    }
  | {
      platform: 'ios'
      backgroundRefreshStatus: 'available' | 'denied' | 'restricted' | null
      missingIdentifiers: string[]
      pendingRequests: PendingTask[] | null
      lowPowerMode: boolean | null
    }
  | {
      platform: 'desktop'
      schedulerRunning: boolean
      /** When the scheduler next wakes on its own; enqueues and reconnects wake it sooner. */
      nextWakeAt: number | null
      watchingNetwork: boolean
    }
  | { platform: 'headless' }

/** What {@link diagnostics} returns. @since Unreleased */
export interface Diagnostics {
  configured: boolean
  /** The persisted toggle for OS-started runs ({@link enable}). */
  backgroundEnabled: boolean
  /** Foreground automation (`autoSync`). */
  autoSync: boolean
  pending: number
  dead: number
  lastRunAt: number | null
  /** Newest run the OS (or the desktop timer) started. */
  lastBackgroundRunAt: number | null
  os: PlatformFacts
  /** Empty when nothing stands in the way, most blocking first. */
  problems: Problem[]
}

/**
 * What will run in the background and why not, on this device: the plugin's side (toggle,
 * configuration, sign-in, rejected changes) and the OS's (Android: WorkManager's schedule, the
 * last stop reason, battery optimisation, background restriction, standby bucket; iOS:
 * Background App Refresh, Info.plist identifiers, pending BGTask requests, Low Power Mode;
 * desktop: the scheduler's next wake). Show `problems` where a user can act on them.
 *
 * @example
 * ```ts
 * import { diagnostics } from 'tauri-plugin-background-sync-api'
 * const d = await diagnostics()
 * for (const p of d.problems) banner(`${p.message} ${p.fix}`)
 * if (d.problems.some((p) => p.code === 'backgroundRefreshOff')) showSettingsHint()
 * ```
 * @since Unreleased
 */
export async function diagnostics(): Promise<Diagnostics> {
  return await call<Diagnostics>('diagnostics')
}

/** Options of {@link history}. */
export interface HistoryOptions {
  /** Most reports to return (the plugin defaults to 20 and caps at 1000). */
  limit?: number
}

/**
 * Reports of past drain runs, newest first.
 *
 * @example
 * ```ts
 * import { history } from 'tauri-plugin-background-sync-api'
 * const runs = await history({ limit: 10 })
 * ```
 */
export async function history(
  options?: HistoryOptions
): Promise<DrainReport[]> {
  return await call<DrainReport[]>(
    'history',
    defined({ limit: options?.limit }),
    checkCount(options?.limit, 'limit')
  )
}

/** Filters of {@link delivered}. */
export interface DeliveredOptions {
  /** Only mutations confirmed at or after this time (ms since the Unix epoch). */
  since?: number
  /** Only mutations of this entity. */
  entity?: EntityRef
  /** Most to return, oldest first (the plugin defaults to 100 and caps at 1000). */
  limit?: number
}

/**
 * Delivered mutations (kept for `retentionMs`), oldest confirmation first. Pass the last
 * `deliveredAt` you processed as `since` on start to catch up on what a background run
 * delivered while the app was not running (the stream only carries what happens while you
 * listen). `since` is inclusive: rows confirmed in that same millisecond come again, so skip
 * ids you have handled.
 *
 * @example
 * ```ts
 * import { delivered } from 'tauri-plugin-background-sync-api'
 * for (const d of await delivered({ since: lastSeen })) {
 *   if (d.tempId && d.serverId) await db.replaceId(d.tempId, d.serverId)
 *   lastSeen = d.deliveredAt
 * }
 * ```
 * @since Unreleased
 */
export async function delivered(
  options?: DeliveredOptions
): Promise<Delivered[]> {
  const query = defined({
    since: options?.since,
    entity: options?.entity,
    limit: options?.limit
  })
  return await call<Delivered[]>(
    'delivered',
    { query },
    checkCount(options?.limit, 'limit')
  )
}

/**
 * The server id that replaced a temp id, or `null` while its create is not delivered. Resolved
 * temp ids are never forgotten.
 *
 * @example
 * ```ts
 * import { resolveTempId } from 'tauri-plugin-background-sync-api'
 * const serverId = await resolveTempId('tmp-visit-1')
 * ```
 * @since Unreleased
 */
export async function resolveTempId(tempId: string): Promise<string | null> {
  return await call<string | null>(
    'resolve_temp_id',
    { tempId },
    checkId(tempId)
  )
}

/**
 * Listen to the status stream. The first event is the current status, so a UI renders at
 * once; then `status` events on every change, `progress` events during drains and a `report`
 * event when a drain ends.
 *
 * Outcomes settled while nobody listened (a background run the OS started with no webview)
 * are replayed next, from the database: `delivered` / `dead` events, then a `settled` with
 * `runId: 'replay'`. Each goes to the first subscription that asks (`replay`, default true)
 * and is then told; pass `{ replay: false }` for subscriptions that do not handle outcomes
 * (`createSyncStore` does). A replayed outcome may come twice (the webview went away
 * mid-replay), never not at all within `retentionMs`: key your handling on `id`.
 *
 * A subscription that falls more than 256 events behind (a busy webview while a big backlog
 * drains) is told the outcomes it missed, re-read from the database (`settled` with `runId:
 * 'recovered'`), then a fresh `status` event; some of them it may have had already.
 *
 * Resolves to a function that stops the subscription (it invokes `unsubscribe` and can be
 * awaited; calling it again does nothing).
 *
 * @example
 * ```ts
 * import { onStatus } from 'tauri-plugin-background-sync-api'
 * const progressOnly = await onStatus((e) => bar(e), { replay: false })
 * const unlisten = await onStatus((e) => {
 *   if (e.type === 'status') badge.textContent = String(e.pending + e.dead)
 *   else if (e.type === 'report' && e.dead > 0) toast(`${e.dead} changes were rejected`)
 * })
 * // later
 * await unlisten()
 * ```
 */
export async function onStatus(
  cb: (event: StatusEvent) => void,
  options: StatusOptions = {}
): Promise<StatusUnlistenFn> {
  if (typeof cb !== 'function') throw invalidInput('cb must be a function')
  if (options === null || typeof options !== 'object') {
    throw invalidInput('options must be an object')
  }
  const replay = options.replay ?? true
  if (typeof replay !== 'boolean')
    throw invalidInput('replay must be a boolean')
  const onEvent = new Channel<StatusEvent>(cb)
  let id: number
  try {
    id = await invoke<number>(PLUGIN + 'subscribe', { onEvent, replay })
  } catch (e) {
    onEvent.onmessage = () => {}
    throw e
  }
  let active = true
  return async () => {
    if (!active) return
    active = false
    onEvent.onmessage = () => {}
    await invoke<null>(PLUGIN + 'unsubscribe', { id })
  }
}

/**
 * A fresh temporary id for an entity created offline: `${prefix}-${uuid}`. Pass it as the
 * create's `tempId` and use it anywhere later mutations refer to the entity (paths, bodies);
 * the plugin rewrites it with the server id once the create is delivered.
 *
 * @param prefix Readable prefix; must not contain `/`, `?`, `&` or `=`. @defaultValue `'tmp'`
 *
 * @example
 * ```ts
 * import { tempId } from 'tauri-plugin-background-sync-api'
 * const id = tempId('visit') // "visit-1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"
 * ```
 */
export function tempId(prefix = 'tmp'): string {
  if (typeof prefix !== 'string' || /[/?&=\p{Cc}]/u.test(prefix)) {
    throw invalidInput(
      "tempId prefix must be a string without '/', '?', '&', '=' or control characters"
    )
  }
  return `${prefix}-${uuid()}`
}

function uuid(): string {
  const c = globalThis.crypto
  if (typeof c.randomUUID === 'function') return c.randomUUID()
  // Older WebViews (e.g. iOS < 15.4) lack randomUUID: build a v4 UUID by hand.
  const b = c.getRandomValues(new Uint8Array(16))
  b[6] = (b[6] & 0x0f) | 0x40
  b[8] = (b[8] & 0x3f) | 0x80
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

// ---------------------------------------------------------------------------------------------
// Status store for UI frameworks
// ---------------------------------------------------------------------------------------------

/**
 * What a sync badge or banner needs, kept up to date by a {@link SyncStore}.
 * Each change yields a new frozen object; between changes the same object is returned, as
 * React's `useSyncExternalStore` requires.
 * @since Unreleased
 */
export interface SyncSnapshot {
  /** The latest status; `null` until the plugin has sent the first one. */
  readonly status: Readonly<SyncStatus> | null
  /** Progress of the drain running now; `null` when none is. */
  readonly progress: Readonly<ProgressEvent> | null
  /** The last round of outcomes made durable (ids delivered and dead), if any since subscribing. */
  readonly lastSettled: Readonly<SettledEvent> | null
  /** Why the store could not subscribe, if it could not (it tries again after every subscriber has left and one returns). */
  readonly error: BackgroundSyncError | null
}

/**
 * A status store shared by any number of UI subscribers over one {@link onStatus}
 * subscription, opened when the first subscriber arrives and closed when the last leaves.
 *
 * It satisfies both contracts UI frameworks build on:
 * - React: `useSyncExternalStore(store.subscribe, store.getSnapshot, store.getServerSnapshot)`
 *   (the methods are bound; `getSnapshot` is stable between changes);
 * - Svelte's store contract: `subscribe(run)` calls `run` synchronously with the current
 *   value, again on every change, and returns the unsubscribe function, so `$store` works.
 * @since Unreleased
 */
export interface SyncStore {
  /** Call `listener` now and on every change; returns the function that stops it (idempotent). */
  subscribe(listener: (snapshot: SyncSnapshot) => void): () => void
  /** The current snapshot. */
  getSnapshot(): SyncSnapshot
  /** The snapshot before any status arrived (for server rendering and first paint). */
  getServerSnapshot(): SyncSnapshot
}

const INITIAL_SNAPSHOT: SyncSnapshot = Object.freeze({
  status: null,
  progress: null,
  lastSettled: null,
  error: null
})

/** Next snapshot after `e`, or `s` itself when `e` changes nothing a snapshot shows. */
function reduceSnapshot(s: SyncSnapshot, e: StatusEvent): SyncSnapshot {
  switch (e.type) {
    case 'status': {
      const { type: _, ...status } = e
      return { ...s, status, error: null }
    }
    case 'progress':
      return { ...s, progress: e }
    case 'report':
      return s.progress === null ? s : { ...s, progress: null }
    case 'settled':
      return { ...s, lastSettled: e }
    default:
      return s
  }
}

function asBackgroundSyncError(e: unknown): BackgroundSyncError {
  if (isBackgroundSyncError(e)) return e
  return { kind: 'platform', message: String(e) }
}

/**
 * Create a {@link SyncStore}. Create one per app (e.g. in a module) and share it.
 *
 * @example
 * ```ts
 * // React
 * import { useSyncExternalStore } from 'react'
 * import { createSyncStore } from 'tauri-plugin-background-sync-api'
 * const sync = createSyncStore()
 * export function SyncBadge() {
 *   const { status } = useSyncExternalStore(sync.subscribe, sync.getSnapshot, sync.getServerSnapshot)
 *   return <span>{status ? `${status.pending} to send` : '…'}</span>
 * }
 * ```
 *
 * @example
 * ```svelte
 * <script>
 *   import { createSyncStore } from 'tauri-plugin-background-sync-api'
 *   const sync = createSyncStore()
 * </script>
 * {#if $sync.status?.pending}<span>{$sync.status.pending} to send</span>{/if}
 * ```
 */
export function createSyncStore(): SyncStore {
  // One entry per subscribe call, so the same function subscribed twice is two subscribers.
  const subscribers = new Set<{ listener: (s: SyncSnapshot) => void }>()
  let snapshot = INITIAL_SNAPSHOT
  // Bumped on every start and stop: events of an abandoned subscription are ignored.
  let generation = 0
  let unlisten: Promise<StatusUnlistenFn | null> | null = null

  function publish(next: SyncSnapshot) {
    if (next === snapshot) return
    snapshot = Object.freeze(next)
    for (const s of [...subscribers]) s.listener(snapshot)
  }

  function start() {
    const mine = ++generation
    // Outcomes replayed from the database belong to the app's own outcome handler.
    unlisten = onStatus(
      (e) => {
        if (mine === generation) publish(reduceSnapshot(snapshot, e))
      },
      { replay: false }
    ).catch((e: unknown) => {
      if (mine === generation) {
        publish({ ...snapshot, error: asBackgroundSyncError(e) })
      }
      return null
    })
  }

  function stop() {
    generation++
    const pending = unlisten
    unlisten = null
    // Nothing to report to: a failed unsubscribe only leaves a subscription the plugin drops
    // with the webview.
    void pending?.then((un) => un?.()).catch(() => {})
  }

  return {
    subscribe(listener) {
      if (typeof listener !== 'function') {
        throw invalidInput('listener must be a function')
      }
      const entry = { listener }
      subscribers.add(entry)
      if (subscribers.size === 1) start()
      listener(snapshot)
      let active = true
      return () => {
        if (!active) return
        active = false
        subscribers.delete(entry)
        if (subscribers.size === 0) stop()
      }
    },
    getSnapshot: () => snapshot,
    getServerSnapshot: () => INITIAL_SNAPSHOT
  }
}
