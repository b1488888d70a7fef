//! What the mutation pass and the upload pass of one run share: the credentials (one refresh
//! per run) and the signal that lets blocked mutations wait for the uploads they reference.

use crate::context::Inner;
use crate::error::Result;
use crate::models::AuthConfig;
use crate::transport::Transport;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Never start a request with less than this left.
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(20);

/// Credentials shared by the mutation and upload passes of one run: one refresh per run, and
/// a 401 on a request sent with an older token just retries with the new one. It follows the
/// app: a `setAuth`/`clearAuth` while the run is going takes effect for the next request, and
/// a refresh never writes tokens back over credentials the app changed meanwhile.
pub(crate) struct AuthCell {
    state: Mutex<AuthState>,
    deadline: Instant,
    cancel: CancellationToken,
}

struct AuthState {
    auth: AuthConfig,
    generation: u64,
    refreshed: bool,
    /// The app's credential epoch this state was loaded at (`Inner::auth_epoch`).
    epoch: u64,
}

impl AuthCell {
    pub(crate) fn new(auth: AuthConfig, epoch: u64, deadline: Instant, cancel: CancellationToken) -> Self {
        Self {
            state: Mutex::new(AuthState {
                auth,
                generation: 0,
                refreshed: false,
                epoch,
            }),
            deadline,
            cancel,
        }
    }

    /// The credentials to send now (re-read when the app changed them in this process). When
    /// the access token is known to expire within [`REFRESH_AHEAD_MS`] it is refreshed first
    /// (once per run, other lanes wait), rather than spending a request on a 401 and a round
    /// trip on a phone. A failed refresh here is only logged: the server has the last word, and
    /// a 401 then stops the run as usual (no second refresh).
    pub(crate) async fn current(
        &self,
        inner: &Inner,
        transport: &Transport,
        timeout: Duration,
    ) -> Result<(AuthConfig, u64)> {
        let mut s = self.state.lock().await;
        let epoch = inner.auth_epoch();
        if epoch != s.epoch {
            s.auth = inner.store.load_auth().await?;
            s.generation += 1;
            s.refreshed = false;
            s.epoch = epoch;
        }
        let a = &s.auth;
        let expiring = a
            .expires_at
            .is_some_and(|t| t.saturating_sub(inner.now()) < REFRESH_AHEAD_MS);
        if expiring && !s.refreshed && a.refresh_token.is_some() && a.refresh_url.is_some() {
            if let AfterUnauthorized::Stop(why) = self.refresh(&mut s, inner, transport, timeout).await? {
                tracing::warn!("refreshing the expiring access token failed: {why}");
            }
        }
        Ok((s.auth.clone(), s.generation))
    }

    /// A request sent with the token of `generation` got a 401: send again with the current
    /// token, or stop the pass with `authFailed`.
    pub(crate) async fn unauthorized(
        &self,
        generation: u64,
        inner: &Inner,
        transport: &Transport,
        timeout: Duration,
    ) -> Result<AfterUnauthorized> {
        let mut s = self.state.lock().await;
        if generation < s.generation {
            return Ok(AfterUnauthorized::SendAgain); // sent with a token since replaced
        }
        // Another process (or handle) may have stored new credentials: use them first.
        let stored = inner.store.load_auth().await?;
        if stored != s.auth {
            s.auth = stored;
            s.generation += 1;
            s.refreshed = false;
            return Ok(AfterUnauthorized::SendAgain);
        }
        if s.refreshed {
            return Ok(AfterUnauthorized::Stop("HTTP 401 after a token refresh".into()));
        }
        self.refresh(&mut s, inner, transport, timeout).await
    }

    /// The one refresh of this run, under the state lock (concurrent lanes wait for it).
    async fn refresh(
        &self,
        s: &mut AuthState,
        inner: &Inner,
        transport: &Transport,
        timeout: Duration,
    ) -> Result<AfterUnauthorized> {
        s.refreshed = true;
        // The refresh obeys the run's deadline and cancellation like any request.
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left < MIN_WINDOW {
            return Ok(AfterUnauthorized::Stop(
                "no time left in this run to refresh the token".into(),
            ));
        }
        let refreshed = tokio::select! {
            r = transport.refresh(&s.auth, timeout.min(left), inner.now()) => r,
            _ = self.cancel.cancelled() => {
                return Ok(AfterUnauthorized::Stop("cancelled while refreshing the token".into()))
            }
        };
        match refreshed {
            Ok(new_auth) => {
                // Written only over the credentials it was refreshed from: a clearAuth/setAuth
                // meanwhile wins, and the refreshed tokens of the old session are dropped.
                if inner.store.replace_auth(&s.auth, &new_auth).await? {
                    s.auth = new_auth;
                } else {
                    s.auth = inner.store.load_auth().await?;
                }
                s.generation += 1;
                tracing::info!("access token refreshed");
                Ok(AfterUnauthorized::SendAgain)
            }
            Err(e) => Ok(AfterUnauthorized::Stop(e.to_string())),
        }
    }
}

/// What a pass does after a 401 (`AuthCell::unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterUnauthorized {
    /// New credentials are in the cell (refreshed, or stored by someone else meanwhile).
    SendAgain,
    /// No usable credentials: stop with `authFailed`, saying why.
    Stop(String),
}

/// Refresh before a run when the access token expires sooner than this: a minute covers a
/// background run's budget and the clock skew between phone and server.
pub(crate) const REFRESH_AHEAD_MS: i64 = 60_000;

/// Lets the mutation pass wait for uploads its blocked rows reference.
#[derive(Default)]
pub(crate) struct UploadSignal {
    pub(crate) finished_one: tokio::sync::Notify,
    pub(crate) active: std::sync::atomic::AtomicBool,
}
