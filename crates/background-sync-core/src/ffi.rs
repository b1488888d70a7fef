//! C ABI for iOS (Swift) and any other native host; declared in `include/bgsync.h`.
//!
//! `#[no_mangle]` functions in a dependency rlib can be left out of the app's final library
//! (rust-lang/rust#50007 and relatives), so the exported symbols are not defined here: the app
//! crate expands [`export_native_entries!`](crate::export_native_entries) once, which defines
//! them in the app's own crate (as Tauri does with its mobile entry point). The bodies live here.

use crate::error::Error;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// # Safety
/// `p` must be NULL or a NUL-terminated string valid for the duration of the call.
unsafe fn arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, String> {
    if p.is_null() {
        return Err(error_json(Error::invalid(format!("{what} is NULL"))));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| error_json(Error::invalid(format!("{what} is not valid UTF-8"))))
}

fn error_json(e: Error) -> String {
    serde_json::json!({ "ok": false, "error": e }).to_string()
}

fn into_c(s: String) -> *mut c_char {
    // JSON never contains NUL bytes (they are escaped), so this cannot fail; be safe anyway.
    CString::new(s)
        .unwrap_or_else(|_| {
            CString::new(r#"{"ok":false,"error":{"kind":"internal","message":"NUL in output"}}"#).unwrap()
        })
        .into_raw()
}

fn guarded(f: impl FnOnce() -> String) -> *mut c_char {
    into_c(
        catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|_| error_json(Error::Internal("panic in bgsync".into()))),
    )
}

/// # Safety
/// See `include/bgsync.h`.
pub unsafe fn configure(db_path: *const c_char, config_json: *const c_char) -> *mut c_char {
    guarded(
        || match (arg(db_path, "db_path"), arg(config_json, "config_json")) {
            (Ok(d), Ok(c)) => crate::entry::configure_json(d, c),
            (Err(e), _) | (_, Err(e)) => e,
        },
    )
}

/// # Safety
/// See `include/bgsync.h`.
pub unsafe fn enqueue(db_path: *const c_char, mutation_json: *const c_char) -> *mut c_char {
    guarded(
        || match (arg(db_path, "db_path"), arg(mutation_json, "mutation_json")) {
            (Ok(d), Ok(m)) => crate::entry::enqueue_json(d, m),
            (Err(e), _) | (_, Err(e)) => e,
        },
    )
}

/// # Safety
/// See `include/bgsync.h`. `cancel_flag` must be NULL or point to an `int32_t` that stays
/// valid until this call returns; it is read (never written) from another thread.
pub unsafe fn drain(
    db_path: *const c_char,
    budget_ms: u64,
    trigger: *const c_char,
    cancel_flag: *const i32,
) -> *mut c_char {
    guarded(|| {
        let d = match arg(db_path, "db_path") {
            Ok(d) => d,
            Err(e) => return e,
        };
        let trigger = if trigger.is_null() {
            "background".to_string()
        } else {
            match arg(trigger, "trigger") {
                Ok(t) => t.to_string(),
                Err(e) => return e,
            }
        };
        let token = CancellationToken::new();
        // Poll the caller's flag on a helper thread: the flag is plain memory shared with
        // Swift's expiration handler, which cannot call back into Rust safely.
        let watcher = if cancel_flag.is_null() {
            None
        } else {
            let flag = cancel_flag as usize;
            let t = token.clone();
            let stop = CancellationToken::new();
            let stop2 = stop.clone();
            let h = std::thread::spawn(move || {
                while !stop2.is_cancelled() {
                    // SAFETY: the caller keeps the flag alive until drain returns, and we
                    // join this thread before returning.
                    if unsafe { std::ptr::read_volatile(flag as *const i32) } != 0 {
                        t.cancel();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            Some((h, stop))
        };
        let out = crate::entry::drain_json(d, budget_ms, &trigger, token);
        if let Some((h, stop)) = watcher {
            stop.cancel();
            let _ = h.join();
        }
        out
    })
}

/// # Safety
/// See `include/bgsync.h`.
pub unsafe fn status(db_path: *const c_char) -> *mut c_char {
    guarded(|| match arg(db_path, "db_path") {
        Ok(d) => crate::entry::status_json(d),
        Err(e) => e,
    })
}

/// # Safety
/// See `include/bgsync.h`. `facts_json` may be NULL (the engine's side only).
pub unsafe fn diagnostics(db_path: *const c_char, facts_json: *const c_char) -> *mut c_char {
    guarded(|| {
        let facts = if facts_json.is_null() {
            None
        } else {
            match arg(facts_json, "facts_json") {
                Ok(f) => Some(f),
                Err(e) => return e,
            }
        };
        match arg(db_path, "db_path") {
            Ok(d) => crate::entry::diagnostics_json(d, facts),
            Err(e) => e,
        }
    })
}

/// # Safety
/// See `include/bgsync.h`.
pub unsafe fn set_enabled(db_path: *const c_char, enabled: i32) -> *mut c_char {
    guarded(|| match arg(db_path, "db_path") {
        Ok(d) => crate::entry::set_enabled_json(d, enabled != 0),
        Err(e) => e,
    })
}

/// # Safety
/// See `include/bgsync.h`.
pub unsafe fn take_outcomes(db_path: *const c_char) -> *mut c_char {
    guarded(|| match arg(db_path, "db_path") {
        Ok(d) => crate::entry::take_outcomes_json(d),
        Err(e) => e,
    })
}

/// # Safety
/// `key` must be NULL or point to `len` readable bytes for the duration of the call.
pub unsafe fn set_secret_key(key: *const u8, len: usize) -> *mut c_char {
    guarded(|| {
        let bytes: &[u8] = if key.is_null() || len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(key, len)
        };
        crate::entry::set_secret_key_json(bytes)
    })
}

/// # Safety
/// `s` must be NULL or a string returned by a `bgsync_*` function, freed once.
pub unsafe fn free(s: *mut c_char) {
    if !s.is_null() {
        drop(CString::from_raw(s));
    }
}

/// Defines the native entry points (the C ABI of `include/bgsync.h` and, on Android, the JNI
/// functions of `app.tauri.backgroundsync.NativeBridge`) in the crate that expands it. Put it
/// once in your app's `lib.rs`:
///
/// ```ignore
/// tauri_plugin_background_sync::export_native_entries!();
/// ```
#[macro_export]
macro_rules! export_native_entries {
    () => {
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_configure(
            db_path: *const ::std::ffi::c_char,
            config_json: *const ::std::ffi::c_char,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::configure(db_path, config_json)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_enqueue(
            db_path: *const ::std::ffi::c_char,
            mutation_json: *const ::std::ffi::c_char,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::enqueue(db_path, mutation_json)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_drain(
            db_path: *const ::std::ffi::c_char,
            budget_ms: u64,
            cancel_flag: *const i32,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::drain(db_path, budget_ms, ::std::ptr::null(), cancel_flag)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_drain_with_trigger(
            db_path: *const ::std::ffi::c_char,
            budget_ms: u64,
            trigger: *const ::std::ffi::c_char,
            cancel_flag: *const i32,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::drain(db_path, budget_ms, trigger, cancel_flag)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_status(
            db_path: *const ::std::ffi::c_char,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::status(db_path)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_set_enabled(
            db_path: *const ::std::ffi::c_char,
            enabled: i32,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::set_enabled(db_path, enabled)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_diagnostics(
            db_path: *const ::std::ffi::c_char,
            facts_json: *const ::std::ffi::c_char,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::diagnostics(db_path, facts_json)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_take_outcomes(
            db_path: *const ::std::ffi::c_char,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::take_outcomes(db_path)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_set_secret_key(
            key: *const u8,
            len: usize,
        ) -> *mut ::std::ffi::c_char {
            $crate::ffi::set_secret_key(key, len)
        }
        /// See include/bgsync.h.
        #[no_mangle]
        pub unsafe extern "C" fn bgsync_free(s: *mut ::std::ffi::c_char) {
            $crate::ffi::free(s)
        }
        $crate::__bgsync_jni_exports!();
    };
}

/// Without the JNI entry (non-Android builds), the JNI half of the export macro is empty.
#[cfg(not(any(target_os = "android", feature = "jni-host")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __bgsync_jni_exports {
    () => {};
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe fn take(p: *mut c_char) -> serde_json::Value {
        let v = serde_json::from_str(CStr::from_ptr(p).to_str().unwrap()).unwrap();
        free(p);
        v
    }

    #[test]
    fn bad_pointers_and_json_are_typed_errors() {
        unsafe {
            let v = take(status(std::ptr::null()));
            assert_eq!(v["ok"], false);
            assert_eq!(v["error"]["kind"], "invalidInput");
            let dir = tempfile::tempdir().unwrap();
            let db = CString::new(dir.path().join("x.db").to_str().unwrap()).unwrap();
            let garbage = CString::new("{not json").unwrap();
            let v = take(configure(db.as_ptr(), garbage.as_ptr()));
            assert_eq!(v["error"]["kind"], "invalidInput");
            let bad_utf8 = [0xffu8, 0xfe, 0];
            let v = take(enqueue(db.as_ptr(), bad_utf8.as_ptr() as *const c_char));
            assert_eq!(v["error"]["kind"], "invalidInput");
            let v = take(drain(db.as_ptr(), 1_000, std::ptr::null(), std::ptr::null()));
            assert_eq!(v["ok"], true);
            assert_eq!(v["report"]["stopReason"], "notConfigured");
            free(std::ptr::null_mut());
        }
    }
}
