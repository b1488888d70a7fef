//! # background-sync-core
//!
//! The engine of `tauri-plugin-background-sync`, without Tauri: a durable mutation outbox in
//! SQLite and the drain that delivers it push-only to the app's REST API under the delivery
//! contract of the plugin's README (per-entity order, exactly-once through Idempotency-Key,
//! dead letters, deadlines).
//!
//! Apps use it through the plugin, which re-exports this API unchanged. It is a crate of its
//! own so that headless hosts (the demo, the C ABI host, a background process, the engine's
//! test suites) build without Tauri, GTK or WebKit.
//!
//! - [`BackgroundSync`]: the engine on a database path.
//! - [`entry`]: blocking entry points for a background process with no webview.
//! - [`export_native_entries!`]: the C ABI and JNI symbols, expanded in the app's crate.

mod coalesce;
mod context;
mod diagnose;
mod drain;
mod engine;
mod error;
mod files;
mod idmap;
mod lease;
mod models;
mod per_path;
mod policy;
mod secret;
mod store;
mod time;
mod transport;
mod validate;

pub mod entry;
#[doc(hidden)]
pub mod ffi;
#[cfg(any(target_os = "android", feature = "jni-host"))]
#[doc(hidden)]
pub mod jni_entry;
#[doc(hidden)]
pub mod sim;
/// Not API (hidden from the docs, may change at any time): the foreground scheduler's rules,
/// shared by the plugin's scheduler task and the wake-up simulation in `benches/engine.rs`.
#[doc(hidden)]
pub use policy::schedule;

pub use diagnose::{AndroidFacts, DesktopFacts, Diagnostics, IosFacts, PendingTask, PlatformFacts, Problem};
pub use drain::DrainOptions;
pub use engine::{BackgroundSync, OpenOptions};
pub use error::{BoxError, Error, Result};
pub use models::*;
pub use policy::{Clock, SystemClock};
pub use secret::{CredentialStorage, SecretKey};
pub use tokio_util::sync::CancellationToken;
