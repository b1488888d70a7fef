//! Desktop: the plugin itself is the background scheduler (see `scheduler.rs`); there is no
//! OS work to register. Connectivity changes come from the OS's interface address events
//! (netlink on Linux, route socket on macOS, IP Helper on Windows) through `if-watch`: no
//! polling.

use crate::scheduler::{ConnectivityFactory, Scheduler};
use crate::Result;
use crate::{BackgroundSync, CredentialStorage, PlatformFacts};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tauri::{plugin::PluginApi, AppHandle, Runtime};

pub(crate) fn init<R: Runtime, C: DeserializeOwned>(
    app: &AppHandle<R>,
    _api: PluginApi<R, C>,
) -> Result<Platform<R>> {
    Ok(Platform { _app: app.clone() })
}

pub(crate) struct Platform<R: Runtime> {
    _app: AppHandle<R>,
}

impl<R: Runtime> Platform<R> {
    /// Nothing to register with the OS on desktop; the scheduler is the background worker.
    pub(crate) async fn register(&self, _engine: &BackgroundSync, _run_now: bool) -> Result<()> {
        Ok(())
    }

    /// The credentials key from the OS keyring, or memory only (logged) when it cannot be used.
    pub(crate) async fn credential_storage(&self, db: &std::path::Path) -> CredentialStorage {
        let (storage, problem) = crate::keystore::desktop_credentials(db).await;
        if let Some(p) = problem {
            tracing::warn!(problem = %p, "credentials are kept in memory only (set them again at every start)");
        }
        storage
    }

    /// The desktop's facts are the scheduler's own (never unavailable).
    pub(crate) async fn facts(&self, scheduler: &Scheduler) -> (PlatformFacts, Option<String>) {
        (PlatformFacts::Desktop(scheduler.facts()), None)
    }

    /// A signal each time a non-loopback interface gains a new address (a network came up).
    /// The watcher first reports every existing address; those are the baseline, not a
    /// reconnect.
    pub(crate) fn connectivity(&self) -> ConnectivityFactory {
        Box::new(|| {
            let watcher = match if_watch::tokio::IfWatcher::new() {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch network interfaces; relying on the timer");
                    return None;
                }
            };
            let started = std::time::Instant::now();
            let known = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
            Some(
                watcher
                    .filter_map(move |e| {
                        let known = known.clone();
                        async move {
                            let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
                            match e {
                                Ok(if_watch::IfEvent::Up(net)) if !net.addr().is_loopback() => {
                                    let new = known.insert(net);
                                    (new && started.elapsed() > BASELINE_WINDOW).then_some(())
                                }
                                Ok(if_watch::IfEvent::Down(net)) => {
                                    known.remove(&net);
                                    None
                                }
                                _ => None,
                            }
                        }
                    })
                    .boxed(),
            )
        })
    }
}

/// Addresses reported this soon after the watcher starts are the initial enumeration.
const BASELINE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
