//! How a drain is run: the caller's budget, cancellation, trigger and gates.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a drain is run.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Wall-clock budget; no request starts that cannot finish inside it.
    pub budget: Duration,
    /// Cancel to stop promptly (in-flight requests are abandoned and their rows stay pending).
    pub cancel: CancellationToken,
    /// Free text recorded in the report (`foreground`, `timer`, `android-worker`, ...).
    pub trigger: String,
    /// Background entries skip the run when background sync is disabled.
    pub respect_toggle: bool,
    /// What the OS says about connectivity, if known.
    pub network_available: Option<bool>,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(25),
            cancel: CancellationToken::new(),
            trigger: "foreground".into(),
            respect_toggle: false,
            network_available: None,
        }
    }
}
