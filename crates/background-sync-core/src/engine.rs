//! `BackgroundSync`: the Rust API over one outbox database. The Tauri commands, the desktop
//! scheduler and the headless (Android/iOS background) entries all go through it.

use crate::context::{Inner, PerFile};
use crate::diagnose::{self, Diagnostics, EngineFacts, PlatformFacts};
use crate::drain::{self, DrainOptions};
use crate::error::{Error, Result};
use crate::files;
use crate::idmap;
use crate::models::{
    AuthConfig, Delivered, DeliveredQuery, DrainReport, Durability, Enqueued, EnqueuedUpload, EntityRef,
    Mutation, MutationState, NewMutation, NewUpload, RefreshMode, StatusEvent, SyncConfig, SyncState,
    SyncStatus, Upload, UploadDestination, UploadState,
};
use crate::per_path::PerPath;
use crate::policy::{Clock, SystemClock};
use crate::secret::CredentialStorage;
use crate::store::{Prepared, PreparedUpload, Store};
use crate::validate::{self, OriginPolicy};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How far before the last event a lagging listener heard `forward` re-reads outcomes: an
/// outcome's time is taken when its response came, and it is sent when its round settles.
const RECOVER_MARGIN_MS: i64 = 60_000;

/// A handle on one outbox database. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct BackgroundSync {
    inner: Arc<Inner>,
}

/// Options for [`BackgroundSync::open_with`].
pub struct OpenOptions {
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
    durability: Option<Durability>,
    key: Option<String>,
    credentials: CredentialStorage,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            seed: None,
            durability: None,
            key: None,
            credentials: CredentialStorage::Plaintext,
        }
    }
}

impl OpenOptions {
    /// Inject the wall clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Seed the backoff jitter (reproducible runs).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Override the persisted durability for this handle.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = Some(d);
        self
    }
    /// Encrypt the database with SQLCipher under this key (a passphrase, or `x'…'` hex for a
    /// raw 256-bit key). Needs the `sqlcipher` (or `sqlcipher-vendored`) cargo feature; without
    /// it `open_with` fails rather than silently writing plaintext. Every open of the file
    /// (including background entries) must use the same key.
    pub fn encryption_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Where `set_auth`'s credentials are kept (plaintext in the file unless told otherwise;
    /// the plugin passes a key from the platform's secure store). See [`CredentialStorage`].
    /// Since: unreleased.
    pub fn credentials(mut self, storage: CredentialStorage) -> Self {
        self.credentials = storage;
        self
    }
}

fn per_file(path: &Path) -> Arc<PerFile> {
    static FILES: PerPath<PerFile> = PerPath::new();
    FILES.get(path)
}

impl BackgroundSync {
    /// Open (or create) the outbox database at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, OpenOptions::default()).await
    }

    /// Open with injected clock, seed or durability.
    pub async fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::storage(format!("cannot create {}: {e}", parent.display()), e))?;
        }
        let store = Store::open(path, opts.durability, opts.key.as_deref(), opts.credentials).await?;
        let rng = match opts.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Ok(Self {
            inner: Arc::new(Inner::new(store, opts.clock, rng, per_file(path))),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        self.inner.store.path()
    }

    /// Validate and persist the sync configuration (read again by every drain, including
    /// background ones in a cold process).
    pub async fn configure(&self, config: SyncConfig) -> Result<()> {
        validate::config(&config)?;
        crate::transport::extra_roots(&config.tls)?;
        self.inner.store.save_config(&config).await?;
        self.inner.emit_status().await;
        Ok(())
    }

    /// The persisted configuration, if any.
    pub async fn config(&self) -> Result<Option<SyncConfig>> {
        self.inner.store.load_config().await
    }

    /// Store credentials (never logged, never returned to JS).
    pub async fn set_auth(&self, auth: AuthConfig) -> Result<()> {
        for t in [&auth.access_token, &auth.refresh_token].into_iter().flatten() {
            validate::token(t)?;
        }
        if auth.refresh_mode == RefreshMode::OAuth2 {
            validate::oauth2_client(auth.client_id.as_deref(), auth.scope.as_deref())?;
        }
        if let (Some(url), Some(cfg)) = (&auth.refresh_url, self.config().await?) {
            OriginPolicy::new(&cfg)?.resolve(url)?;
        }
        self.inner.store.save_auth(&auth).await?;
        self.inner.bump_auth_epoch();
        Ok(())
    }

    /// Forget credentials (e.g. on sign-out). A drain in progress sends no token from its next
    /// request on, and a token refresh it started is not written back.
    pub async fn clear_auth(&self) -> Result<()> {
        self.inner.store.save_auth(&AuthConfig::default()).await?;
        self.inner.bump_auth_epoch();
        Ok(())
    }

    /// A platform step failed outside any drain (registering OS work): the app sees it in
    /// `status().lastError` until the next drain reports.
    /// For host layers (the plugin's mobile glue), not apps.
    #[doc(hidden)]
    pub async fn record_platform_error(&self, message: &str) -> Result<()> {
        self.inner.store.set_last_error(message).await?;
        self.inner.emit_status().await;
        Ok(())
    }

    /// Turn background sync on or off (persisted; background entries check it first).
    pub async fn set_enabled(&self, enabled: bool) -> Result<()> {
        self.inner.store.set_enabled(enabled).await?;
        self.inner.emit_status().await;
        Ok(())
    }

    pub async fn is_enabled(&self) -> Result<bool> {
        self.inner.store.enabled().await
    }

    /// Durably queue one mutation. When this returns `Ok`, the mutation survives a crash or
    /// (with the default durability) a power cut.
    pub async fn enqueue(&self, mutation: NewMutation) -> Result<Enqueued> {
        Ok(self.enqueue_many(vec![mutation]).await?.remove(0))
    }

    /// Queue several mutations in one transaction: all or none.
    pub async fn enqueue_many(&self, mutations: Vec<NewMutation>) -> Result<Vec<Enqueued>> {
        if mutations.is_empty() {
            return Ok(Vec::new());
        }
        let parsed = self.inner.config_and_policy().await?;
        let (cfg, policy) = &*parsed;
        let mut prepared = Vec::with_capacity(mutations.len());
        let mut temp_ids = std::collections::HashSet::new();
        for m in mutations {
            let (method, body) = validate::mutation(&m, cfg, policy)?;
            if let Some(t) = &m.temp_id {
                if !temp_ids.insert(t.clone()) {
                    return Err(Error::Conflict(format!(
                        "temp id '{t}' appears twice in one batch"
                    )));
                }
            }
            let candidates = idmap::candidates(&m.path, m.body.as_ref(), &m.entity.id)
                .into_iter()
                .collect();
            prepared.push(Prepared {
                id: uuid::Uuid::now_v7().to_string(),
                caller_key: m.idempotency_key.is_some(),
                idempotency_key: m
                    .idempotency_key
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                priority: m.priority,
                entity: m.entity,
                method,
                path: m.path,
                headers: m.headers,
                body,
                temp_id: m.temp_id,
                candidates,
                coalesce: m.coalesce,
            });
        }
        let out = self
            .inner
            .store
            .enqueue(prepared, self.inner.now(), cfg.max_queue_len)
            .await?;
        for e in out.cancelled {
            self.inner.emit(e);
        }
        self.inner.emit_status().await;
        Ok(out.enqueued)
    }

    /// Drain now with the given options.
    pub async fn drain(&self, opts: DrainOptions) -> Result<DrainReport> {
        drain::run(&self.inner, opts).await
    }

    /// Snapshot of the queue and the engine.
    pub async fn status(&self) -> Result<SyncStatus> {
        self.inner.status().await
    }

    /// Queued mutations not yet delivered (pending and in flight), in enqueue order.
    pub async fn pending(&self, limit: u32, offset: u32) -> Result<Vec<Mutation>> {
        self.inner
            .store
            .list(
                &[MutationState::Pending, MutationState::InFlight],
                None,
                limit,
                offset,
            )
            .await
    }

    /// Queued mutations of one entity not yet delivered (pending and in flight), in enqueue
    /// order: "not synced yet" for a record. Mutations coalesced into a row are not listed on
    /// their own (their row is).
    pub async fn pending_for(&self, entity: &EntityRef, limit: u32, offset: u32) -> Result<Vec<Mutation>> {
        self.inner
            .store
            .list(
                &[MutationState::Pending, MutationState::InFlight],
                Some(entity),
                limit,
                offset,
            )
            .await
    }

    /// Dead letters, waiting for the user to retry, edit or discard them.
    pub async fn dead_letters(&self, limit: u32, offset: u32) -> Result<Vec<Mutation>> {
        self.inner
            .store
            .list(&[MutationState::Dead], None, limit, offset)
            .await
    }

    /// One queued mutation by id.
    pub async fn get(&self, id: &str) -> Result<Mutation> {
        self.inner.store.get(id).await
    }

    /// Put a dead letter back in the queue with a fresh retry budget.
    pub async fn retry(&self, id: &str) -> Result<()> {
        self.inner.store.retry(id, self.inner.now()).await?;
        self.inner.emit_status().await;
        Ok(())
    }

    /// Delete a queued mutation or dead letter. Mutations waiting for the temp id of a
    /// discarded create become dead letters (returned count), each told in a `Dead` event.
    pub async fn discard(&self, id: &str) -> Result<u64> {
        let buried = self
            .inner
            .store
            .discard(id, self.inner.has_listeners(), self.inner.now())
            .await?;
        self.tell(&buried, "discard");
        self.inner.emit_status().await;
        Ok(buried.len() as u64)
    }

    /// Outcomes settled outside a drain (what a discard buried), for the listeners.
    fn tell(&self, applied: &[crate::store::Applied], run_id: &str) {
        if self.inner.has_listeners() {
            for e in drain::outcome_events(applied, run_id) {
                self.inner.emit(e);
            }
        }
    }

    /// Replace a dead letter's body and queue it again.
    pub async fn edit(&self, id: &str, body: Option<serde_json::Value>) -> Result<()> {
        let cfg = self
            .inner
            .store
            .load_config()
            .await?
            .ok_or(Error::NotConfigured)?;
        let current = self.inner.store.get(id).await?;
        let probe = NewMutation {
            method: current.method.clone(),
            path: current.path.clone(),
            body: body.clone(),
            headers: current.headers.clone(),
            priority: current.priority,
            entity: current.entity.clone(),
            temp_id: current.temp_id.clone(),
            idempotency_key: None,
            coalesce: None,
        };
        let (_, serialized) = validate::mutation(&probe, &cfg, &OriginPolicy::new(&cfg)?)?;
        let candidates = idmap::candidates(&current.path, body.as_ref(), &current.entity.id)
            .into_iter()
            .collect();
        self.inner
            .store
            .edit(id, serialized, candidates, self.inner.now())
            .await?;
        self.inner.emit_status().await;
        Ok(())
    }

    /// Durably queue a file upload. With `copy` (the default) the file is copied next to the
    /// database first, so the original may go away. Mutations enqueued afterwards that contain
    /// the returned placeholder wait for the upload and are sent with its result in its place.
    pub async fn enqueue_upload(&self, upload: NewUpload) -> Result<EnqueuedUpload> {
        let cfg = self
            .inner
            .store
            .load_config()
            .await?
            .ok_or(Error::NotConfigured)?;
        validate::upload_header("Content-Type", &upload.content_type)?;
        if let UploadDestination::Direct { url, method } = &upload.destination {
            if !matches!(method.to_ascii_uppercase().as_str(), "PUT" | "POST") {
                return Err(Error::invalid(format!(
                    "upload method '{}' must be PUT or POST",
                    method.escape_debug()
                )));
            }
            OriginPolicy::new(&cfg)?.resolve(url)?;
        }
        if let Some(p) = &upload.placeholder {
            validate::placeholder(p)?;
        }
        if let Some(e) = &upload.entity {
            if e.kind.is_empty() || e.id.is_empty() {
                return Err(Error::invalid("entity.kind and entity.id must not be empty"));
            }
        }
        let source = PathBuf::from(&upload.file_path);
        if !source.is_absolute() {
            return Err(Error::invalid("filePath must be absolute"));
        }
        let meta = tokio::fs::metadata(&source)
            .await
            .map_err(|e| Error::invalid(format!("cannot read {}: {e}", source.display())))?;
        if !meta.is_file() {
            return Err(Error::invalid(format!(
                "{} is not a regular file",
                source.display()
            )));
        }
        if meta.len() > cfg.uploads.max_file_bytes {
            return Err(Error::LimitExceeded(format!(
                "the file is {} bytes; uploads.maxFileBytes is {}",
                meta.len(),
                cfg.uploads.max_file_bytes
            )));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let file_path = if upload.copy {
            let copy = self.uploads_dir().join(&id);
            files::copy_durably(&source, &copy).await?;
            copy
        } else {
            source.clone()
        };
        let file_name = upload
            .file_name
            .clone()
            .or_else(|| source.file_name().map(|n| n.to_string_lossy().into_owned()));
        let prepared = PreparedUpload {
            id: id.clone(),
            placeholder: upload
                .placeholder
                .clone()
                .unwrap_or_else(|| format!("att_{}", uuid::Uuid::now_v7().simple())),
            caller_key: upload.idempotency_key.is_some(),
            idempotency_key: upload
                .idempotency_key
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            priority: upload.priority,
            entity: upload.entity.clone(),
            file_path: file_path.to_string_lossy().into_owned(),
            owned: upload.copy,
            file_name,
            content_type: upload.content_type.clone(),
            size: meta.len(),
            destination: upload.destination.clone(),
        };
        let result = self
            .inner
            .store
            .enqueue_upload(&prepared, self.inner.now(), cfg.uploads.max_queued)
            .await;
        // A failed or deduplicated enqueue leaves no copy behind.
        if upload.copy && result.as_ref().map_or(true, |r| r.id != id) {
            let _ = tokio::fs::remove_file(&file_path).await;
        }
        let out = result?;
        self.inner.emit_status().await;
        Ok(out)
    }

    /// Uploads in the given states (all when empty), in enqueue order.
    pub async fn uploads(&self, states: &[UploadState], limit: u32, offset: u32) -> Result<Vec<Upload>> {
        let all = [
            UploadState::Pending,
            UploadState::InFlight,
            UploadState::Dead,
            UploadState::Done,
        ];
        let states = if states.is_empty() { &all[..] } else { states };
        self.inner.store.list_uploads(states, limit, offset).await
    }

    /// One upload by id.
    pub async fn get_upload(&self, id: &str) -> Result<Upload> {
        self.inner.store.get_upload(id).await
    }

    /// Put a dead upload back in the queue with a fresh retry budget.
    pub async fn retry_upload(&self, id: &str) -> Result<()> {
        self.inner.store.retry_upload(id, self.inner.now()).await?;
        self.inner.emit_status().await;
        Ok(())
    }

    /// Delete an upload (and the plugin's copy of its file). Mutations waiting for it become
    /// dead letters (returned count).
    pub async fn discard_upload(&self, id: &str) -> Result<u64> {
        let (buried, file) = self
            .inner
            .store
            .discard_upload(id, self.inner.has_listeners(), self.inner.now())
            .await?;
        if let Some(f) = file {
            let _ = tokio::fs::remove_file(f).await;
        }
        self.tell(&buried, "discard");
        self.inner.emit_status().await;
        Ok(buried.len() as u64)
    }

    /// Files the webview must never read through an upload: the database with its journal
    /// files (they hold the queue and the tokens) and the plugin's own copies.
    #[doc(hidden)]
    pub fn private_paths(&self) -> (Vec<PathBuf>, PathBuf) {
        let db = self.path().to_path_buf();
        let mut files = vec![db.clone()];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            files.push(PathBuf::from(p));
        }
        (files, self.uploads_dir())
    }

    /// Where copied files wait for upload: beside the database.
    fn uploads_dir(&self) -> PathBuf {
        self.inner.store.uploads_dir()
    }

    /// What will run and why not (README "Diagnostics"): the engine's side from the database,
    /// joined with `os`, the platform's facts (the plugin collects them from WorkManager,
    /// BGTaskScheduler or its desktop scheduler; `PlatformFacts::Headless` without one).
    pub async fn diagnostics(&self, os: PlatformFacts) -> Result<Diagnostics> {
        let status = self.status().await?;
        let config = self.config().await?;
        let runs = self.history(100).await?;
        let engine = EngineFacts {
            configured: status.configured,
            background_enabled: status.enabled,
            auto_sync: config.as_ref().is_none_or(|c| c.auto_sync),
            pending: status.pending + status.in_flight,
            dead: status.dead,
            last_stop: runs
                .first()
                .and_then(|r| match serde_json::to_value(r.stop_reason) {
                    Ok(serde_json::Value::String(s)) => Some(s),
                    _ => None,
                }),
        };
        Ok(Diagnostics {
            problems: diagnose::problems(&engine, &os),
            configured: engine.configured,
            background_enabled: engine.background_enabled,
            auto_sync: engine.auto_sync,
            pending: engine.pending,
            dead: engine.dead,
            last_run_at: runs.first().map(|r| r.finished_at),
            last_background_run_at: runs
                .iter()
                .find(|r| diagnose::is_background_trigger(&r.trigger))
                .map(|r| r.finished_at),
            os,
        })
    }

    /// Recent drain reports, newest first.
    pub async fn history(&self, limit: u32) -> Result<Vec<DrainReport>> {
        self.inner.store.history(limit).await
    }

    /// Delivered mutations (kept for `retentionMs`), oldest confirmation first: with `since`
    /// set to the last `deliveredAt` the app has seen, this is how an app catches up on what a
    /// background run delivered while it was not running (`since` is inclusive: rows of that
    /// same millisecond come again, so skip ids already handled).
    pub async fn delivered(&self, query: DeliveredQuery) -> Result<Vec<Delivered>> {
        self.inner.store.delivered(&query).await
    }

    /// The server id a temp id resolved to, once its create was delivered.
    pub async fn resolve_temp_id(&self, temp_id: &str) -> Result<Option<String>> {
        self.inner.store.server_id_for(temp_id).await
    }

    /// Subscribe to status events (state changes, progress, reports, outcomes). Every handle
    /// on the same file in this process shares one stream, so a drain through another handle
    /// (a background worker in the app's process) is heard here too.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.inner.subscribe()
    }

    /// Replay the outcomes nobody heard: what a run settled while no one was subscribed (a
    /// background run with no webview) goes to `deliver` as `Delivered` / `Dead` events, then a
    /// `Settled` with `run_id` `"replay"`, and `Uploaded` / `UploadDead` events for files, in
    /// pages of up to 500 of each. A page counts as
    /// told once `deliver` accepted all of it; when it returns `false` (the listener is gone)
    /// that page stays for the next listener, so a replayed outcome may come twice, never not
    /// at all (within `retentionMs` for delivered rows). Returns how many outcomes were told.
    ///
    /// Subscribe first, then catch up, and skip live `Delivered`/`Dead` events whose id was
    /// replayed: a run settling at that moment can reach both.
    pub async fn catch_up(&self, deliver: impl FnMut(StatusEvent) -> bool) -> Result<usize> {
        // Bounded: each page is marked before the next is read, and a run adding untold rows
        // meanwhile cannot keep a caller here for ever.
        self.replay(1_000, deliver).await
    }

    /// Forward the status stream `rx` (from [`subscribe`](Self::subscribe)) to `deliver` until it
    /// returns `false`. The stream holds 256 events; a listener that falls further behind (a
    /// webview busy while a backlog drains) would lose the oldest. Here it does not: the
    /// outcomes settled since shortly before its last event are re-read from the database and
    /// told (`Delivered` / `Dead` pages, each with a `Settled` of `run_id` `"recovered"`, and
    /// upload outcomes), then a fresh `Status`, then the stream goes on. Some of those it may
    /// have heard already: key on `id`.
    pub async fn forward(
        &self,
        mut rx: broadcast::Receiver<StatusEvent>,
        mut deliver: impl FnMut(StatusEvent) -> bool,
    ) {
        let mut heard_at = self.inner.now();
        loop {
            match rx.recv().await {
                Ok(e) => {
                    heard_at = self.inner.now();
                    if !deliver(e) {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // What was lost was sent after the last event heard; an outcome's time is
                    // taken when its response came, up to a round before it is sent.
                    let since = heard_at.saturating_sub(RECOVER_MARGIN_MS);
                    heard_at = self.inner.now();
                    tracing::debug!(missed, since, "listener fell behind; re-reading outcomes");
                    match self.recover(since, &mut deliver).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => tracing::warn!(error = %e, "could not re-read missed outcomes"),
                    }
                    if let Ok(s) = self.status().await {
                        if !deliver(StatusEvent::Status(s)) {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Tell `deliver` the outcomes settled at or after `since`; `false` once it refused one.
    async fn recover(&self, since: i64, deliver: &mut impl FnMut(StatusEvent) -> bool) -> Result<bool> {
        let mut cursor = crate::store::SettledCursor::new(since);
        // Bounded: a drain settling meanwhile cannot keep the listener here for ever.
        for _ in 0..1_000 {
            let (applied, more) = self.inner.store.settled_since(&mut cursor, 500).await?;
            for e in drain::outcome_events(&applied, "recovered") {
                if !deliver(e) {
                    return Ok(false);
                }
            }
            if !more {
                break;
            }
        }
        Ok(true)
    }

    /// `catch_up` for at most `pages` pages (the C ABI takes one page per call).
    pub(crate) async fn replay(
        &self,
        pages: usize,
        mut deliver: impl FnMut(StatusEvent) -> bool,
    ) -> Result<usize> {
        const PAGE: u32 = 500;
        let mut told = 0;
        for _ in 0..pages {
            let page = self.inner.store.untold(PAGE).await?;
            if page.applied.is_empty() {
                break;
            }
            let events = drain::outcome_events(&page.applied, "replay");
            let n = events
                .iter()
                .filter(|e| !matches!(e, StatusEvent::Settled { .. }))
                .count();
            for e in events {
                if !deliver(e) {
                    return Ok(told);
                }
            }
            self.inner.store.mark_told(&page).await?;
            told += n;
        }
        Ok(told)
    }

    /// Mark the engine as waiting for its next scheduled run (scheduler use).
    pub async fn mark_scheduled(&self) {
        self.inner.set_state(SyncState::Scheduled).await;
    }

    /// Close the database (pending writes are already durable).
    pub async fn close(&self) {
        self.inner.store.close().await;
    }
}
