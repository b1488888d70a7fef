//! IPC commands: thin wrappers over `Plugin`; each is behind its own permission.

use crate::{
    AuthConfig, Delivered, DeliveredQuery, Diagnostics, DrainReport, Enqueued, EnqueuedUpload, EntityRef,
    Mutation, NewMutation, NewUpload, StatusEvent, SyncStatus, Upload, UploadState,
};
use crate::{BackgroundSyncExt, Result};
use std::collections::HashSet;
use tauri::{command, ipc::Channel, AppHandle, Runtime};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

fn page(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE)
}

#[command]
pub(crate) async fn enable<R: Runtime>(app: AppHandle<R>) -> Result<()> {
    app.background_sync().enable().await
}

#[command]
pub(crate) async fn disable<R: Runtime>(app: AppHandle<R>) -> Result<()> {
    app.background_sync().disable().await
}

#[command]
pub(crate) async fn is_enabled<R: Runtime>(app: AppHandle<R>) -> Result<bool> {
    app.background_sync().engine().is_enabled().await
}

#[command]
pub(crate) async fn configure<R: Runtime>(app: AppHandle<R>, config: serde_json::Value) -> Result<()> {
    app.background_sync().configure(config).await
}

/// Tokens go in; nothing ever returns them.
#[command]
pub(crate) async fn set_auth<R: Runtime>(app: AppHandle<R>, auth: AuthConfig) -> Result<()> {
    app.background_sync().engine().set_auth(auth).await
}

#[command]
pub(crate) async fn clear_auth<R: Runtime>(app: AppHandle<R>) -> Result<()> {
    app.background_sync().engine().clear_auth().await
}

#[command]
pub(crate) async fn enqueue<R: Runtime>(app: AppHandle<R>, mutation: NewMutation) -> Result<Enqueued> {
    Ok(app
        .background_sync()
        .enqueue_many(vec![mutation])
        .await?
        .remove(0))
}

#[command]
pub(crate) async fn enqueue_many<R: Runtime>(
    app: AppHandle<R>,
    mutations: Vec<NewMutation>,
) -> Result<Vec<Enqueued>> {
    app.background_sync().enqueue_many(mutations).await
}

#[command]
pub(crate) async fn sync_now<R: Runtime>(app: AppHandle<R>, budget_ms: Option<u64>) -> Result<DrainReport> {
    let budget = budget_ms.map(|b| std::time::Duration::from_millis(b.min(crate::entry::MAX_BUDGET_MS)));
    app.background_sync().sync_now(budget).await
}

#[command]
pub(crate) async fn status<R: Runtime>(app: AppHandle<R>) -> Result<SyncStatus> {
    app.background_sync().engine().status().await
}

#[command]
pub(crate) async fn pending<R: Runtime>(
    app: AppHandle<R>,
    limit: Option<u32>,
    offset: Option<u32>,
    entity: Option<EntityRef>,
) -> Result<Vec<Mutation>> {
    let engine = app.background_sync().engine();
    match entity {
        Some(e) => engine.pending_for(&e, page(limit), offset.unwrap_or(0)).await,
        None => engine.pending(page(limit), offset.unwrap_or(0)).await,
    }
}

#[command]
pub(crate) async fn dead_letters<R: Runtime>(
    app: AppHandle<R>,
    limit: Option<u32>,
    offset: Option<u32>,
) -> Result<Vec<Mutation>> {
    app.background_sync()
        .engine()
        .dead_letters(page(limit), offset.unwrap_or(0))
        .await
}

#[command]
pub(crate) async fn retry<R: Runtime>(app: AppHandle<R>, id: String) -> Result<()> {
    let p = app.background_sync();
    p.engine().retry(&id).await?;
    p.scheduler().after_enqueue(false);
    Ok(())
}

#[command]
pub(crate) async fn discard<R: Runtime>(app: AppHandle<R>, id: String) -> Result<()> {
    app.background_sync().engine().discard(&id).await.map(|_| ())
}

#[command]
pub(crate) async fn edit<R: Runtime>(
    app: AppHandle<R>,
    id: String,
    body: Option<serde_json::Value>,
) -> Result<()> {
    let p = app.background_sync();
    p.engine().edit(&id, body).await?;
    p.scheduler().after_enqueue(false);
    Ok(())
}

#[command]
pub(crate) async fn history<R: Runtime>(app: AppHandle<R>, limit: Option<u32>) -> Result<Vec<DrainReport>> {
    app.background_sync()
        .engine()
        .history(limit.unwrap_or(20).min(MAX_PAGE))
        .await
}

#[command]
pub(crate) async fn delivered<R: Runtime>(
    app: AppHandle<R>,
    query: Option<DeliveredQuery>,
) -> Result<Vec<Delivered>> {
    app.background_sync()
        .engine()
        .delivered(query.unwrap_or_default())
        .await
}

#[command]
pub(crate) async fn resolve_temp_id<R: Runtime>(
    app: AppHandle<R>,
    temp_id: String,
) -> Result<Option<String>> {
    app.background_sync().engine().resolve_temp_id(&temp_id).await
}

/// Stream status events to the webview until `unsubscribe` (or the channel closes). With
/// `replay` (the default) the outcomes nobody heard (a background run without a webview) come
/// first, from the database.
#[command]
pub(crate) async fn subscribe<R: Runtime>(
    app: AppHandle<R>,
    on_event: Channel<StatusEvent>,
    replay: Option<bool>,
) -> Result<u32> {
    let p = app.background_sync();
    // Subscribed before the replay reads the database, so an outcome settling meanwhile is
    // heard live or replayed (perhaps both: the live copy is then skipped), never lost.
    let rx = p.engine().subscribe();
    // The first event is the current status, so a UI renders at once.
    let _ = on_event.send(StatusEvent::Status(p.engine().status().await?));
    let mut replayed = HashSet::new();
    if replay.unwrap_or(true) {
        p.engine()
            .catch_up(|e| {
                if let Some(id) = outcome_id(&e) {
                    replayed.insert(id.to_string());
                }
                on_event.send(e).is_ok()
            })
            .await?;
    }
    let id = on_event.id();
    let engine = p.engine().clone();
    let task = tauri::async_runtime::spawn(async move {
        // A webview that falls behind the stream is told what it missed from the database.
        engine
            .forward(rx, |e| {
                if outcome_id(&e).is_some_and(|id| replayed.remove(id)) {
                    return true;
                }
                on_event.send(e).is_ok()
            })
            .await
    });
    p.subscriptions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, task);
    Ok(id)
}

/// What will run in the background and why not (README "Diagnostics").
#[command]
pub(crate) async fn diagnostics<R: Runtime>(app: AppHandle<R>) -> Result<Diagnostics> {
    app.background_sync().diagnostics().await
}

fn outcome_id(e: &StatusEvent) -> Option<&str> {
    match e {
        StatusEvent::Delivered(d) => Some(&d.id),
        StatusEvent::Dead { id, .. } => Some(id),
        StatusEvent::Uploaded { id, .. } | StatusEvent::UploadDead { id, .. } => Some(id),
        _ => None,
    }
}

#[command]
pub(crate) async fn unsubscribe<R: Runtime>(app: AppHandle<R>, id: u32) -> Result<()> {
    if let Some(t) = app
        .background_sync()
        .subscriptions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id)
    {
        t.abort();
    }
    Ok(())
}

/// Files only from the app's own directories (see `Plugin::enqueue_upload_from_webview`).
#[command]
pub(crate) async fn enqueue_upload<R: Runtime>(
    app: AppHandle<R>,
    upload: NewUpload,
) -> Result<EnqueuedUpload> {
    app.background_sync().enqueue_upload_from_webview(upload).await
}

#[command]
pub(crate) async fn uploads<R: Runtime>(
    app: AppHandle<R>,
    states: Option<Vec<UploadState>>,
    limit: Option<u32>,
    offset: Option<u32>,
) -> Result<Vec<Upload>> {
    app.background_sync()
        .engine()
        .uploads(&states.unwrap_or_default(), page(limit), offset.unwrap_or(0))
        .await
}

#[command]
pub(crate) async fn retry_upload<R: Runtime>(app: AppHandle<R>, id: String) -> Result<()> {
    let p = app.background_sync();
    p.engine().retry_upload(&id).await?;
    p.scheduler().after_enqueue(false);
    Ok(())
}

#[command]
pub(crate) async fn discard_upload<R: Runtime>(app: AppHandle<R>, id: String) -> Result<()> {
    app.background_sync()
        .engine()
        .discard_upload(&id)
        .await
        .map(|_| ())
}
