//! Desktop: the plugin itself is the background scheduler (see `scheduler.rs`); there is no
//! OS work to register. Connectivity changes come from the OS's interface address events
//! (netlink on Linux, route socket on macOS, IP Helper on Windows) through `if-watch`: no
//! polling.

use crate::engine::BackgroundSync;
use crate::error::Result;
use crate::scheduler::ConnectivityFactory;
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

    /// A signal each time an interface gains an address (a network came up).
    pub(crate) fn connectivity(&self) -> ConnectivityFactory {
        Box::new(|| match if_watch::tokio::IfWatcher::new() {
            Ok(w) => Some(
                w.filter_map(|e| async move { matches!(e, Ok(if_watch::IfEvent::Up(_))).then_some(()) })
                    .boxed(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch network interfaces; relying on the timer");
                None
            }
        })
    }
}
