//! JNI entry for Android: `app.tauri.backgroundsync.NativeBridge`'s static native methods,
//! called by the WorkManager worker in a process that may have no Activity and no Tauri
//! runtime. Thin: strings in, the headless entry's JSON out; no panic crosses into the JVM.
//!
//! The `#[no_mangle]` functions are expanded in the app crate by
//! [`export_native_entries!`](crate::export_native_entries) (see `ffi.rs` for why).

pub use jni;
use jni::objects::{JByteArray, JString};
use jni::sys::{jboolean, jlong, jstring};
use jni::JNIEnv;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

fn error_json(e: Error) -> String {
    serde_json::json!({ "ok": false, "error": e }).to_string()
}

fn read(env: &mut JNIEnv, s: &JString, what: &str) -> Result<String, String> {
    if s.is_null() {
        return Err(error_json(Error::invalid(format!("{what} is null"))));
    }
    env.get_string(s)
        .map(Into::into)
        .map_err(|e| error_json(Error::invalid(format!("{what}: {e}"))))
}

fn out(env: &mut JNIEnv, s: String) -> jstring {
    env.new_string(s)
        .map(|j| j.into_raw())
        .unwrap_or(std::ptr::null_mut())
}

fn guarded(env: &mut JNIEnv, f: impl FnOnce(&mut JNIEnv) -> String) -> jstring {
    let s = catch_unwind(AssertUnwindSafe(|| f(env)))
        .unwrap_or_else(|_| error_json(Error::Internal("panic in the JNI entry".into())));
    out(env, s)
}

pub fn configure(env: &mut JNIEnv, db: JString, config: JString) -> jstring {
    guarded(env, |env| {
        match (read(env, &db, "dbPath"), read(env, &config, "configJson")) {
            (Ok(d), Ok(c)) => crate::entry::configure_json(&d, &c),
            (Err(e), _) | (_, Err(e)) => e,
        }
    })
}

pub fn enqueue(env: &mut JNIEnv, db: JString, mutation: JString) -> jstring {
    guarded(env, |env| {
        match (read(env, &db, "dbPath"), read(env, &mutation, "mutationJson")) {
            (Ok(d), Ok(m)) => crate::entry::enqueue_json(&d, &m),
            (Err(e), _) | (_, Err(e)) => e,
        }
    })
}

pub fn drain(env: &mut JNIEnv, db: JString, budget_ms: jlong, trigger: JString, handle: jlong) -> jstring {
    guarded(env, |env| {
        let d = match read(env, &db, "dbPath") {
            Ok(d) => d,
            Err(e) => return e,
        };
        let trigger = if trigger.is_null() {
            "android-worker".to_string()
        } else {
            match read(env, &trigger, "trigger") {
                Ok(t) => t,
                Err(e) => return e,
            }
        };
        let token = if handle == 0 {
            CancellationToken::new()
        } else {
            // SAFETY: a non-zero handle comes from newCancelHandle and is freed only by
            // freeCancelHandle, after drain returns (the worker's contract, see NativeBridge.kt).
            unsafe { &*(handle as *const CancellationToken) }.clone()
        };
        crate::entry::drain_json(&d, budget_ms.max(0) as u64, &trigger, token)
    })
}

pub fn status(env: &mut JNIEnv, db: JString) -> jstring {
    guarded(env, |env| match read(env, &db, "dbPath") {
        Ok(d) => crate::entry::status_json(&d),
        Err(e) => e,
    })
}

pub fn set_enabled(env: &mut JNIEnv, db: JString, enabled: jboolean) -> jstring {
    guarded(env, |env| match read(env, &db, "dbPath") {
        Ok(d) => crate::entry::set_enabled_json(&d, enabled != 0),
        Err(e) => e,
    })
}

/// `key`: the 32 bytes the shim unwrapped with its Android Keystore key, or null to forget it.
pub fn set_secret_key(env: &mut JNIEnv, key: JByteArray) -> jstring {
    guarded(env, |env| {
        if key.is_null() {
            return crate::entry::set_secret_key_json(&[]);
        }
        match env.convert_byte_array(&key) {
            Ok(mut bytes) => {
                let out = crate::entry::set_secret_key_json(&bytes);
                bytes.iter_mut().for_each(|b| *b = 0);
                out
            }
            Err(e) => error_json(Error::invalid(format!("key: {e}"))),
        }
    })
}

pub fn new_cancel_handle() -> jlong {
    Box::into_raw(Box::new(CancellationToken::new())) as jlong
}

pub fn cancel(handle: jlong) {
    if handle != 0 {
        // SAFETY: see `drain`.
        unsafe { &*(handle as *const CancellationToken) }.cancel();
    }
}

pub fn free_cancel_handle(handle: jlong) {
    if handle != 0 {
        // SAFETY: see `drain`; called once per handle.
        drop(unsafe { Box::from_raw(handle as *mut CancellationToken) });
    }
}

/// The file name of the shared library this code is in (`libapp_lib.so` → `app_lib`), so the
/// foreground can tell the worker what to `System.loadLibrary` in a cold process.
pub fn native_library_name() -> Option<String> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address, and fills `info` with pointers into the loader's
    // own (static) data.
    let ok = unsafe { libc::dladdr(native_library_name as *const libc::c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    let path = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    let file = path.rsplit('/').next()?;
    let stem = file.strip_prefix("lib")?.split(".so").next()?;
    Some(stem.to_string())
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bgsync_jni_exports {
    () => {
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_configure<'l>(
            mut env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            db: $crate::jni_entry::jni::objects::JString<'l>,
            config: $crate::jni_entry::jni::objects::JString<'l>,
        ) -> $crate::jni_entry::jni::sys::jstring {
            $crate::jni_entry::configure(&mut env, db, config)
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_enqueue<'l>(
            mut env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            db: $crate::jni_entry::jni::objects::JString<'l>,
            mutation: $crate::jni_entry::jni::objects::JString<'l>,
        ) -> $crate::jni_entry::jni::sys::jstring {
            $crate::jni_entry::enqueue(&mut env, db, mutation)
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_drain<'l>(
            mut env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            db: $crate::jni_entry::jni::objects::JString<'l>,
            budget_ms: $crate::jni_entry::jni::sys::jlong,
            trigger: $crate::jni_entry::jni::objects::JString<'l>,
            handle: $crate::jni_entry::jni::sys::jlong,
        ) -> $crate::jni_entry::jni::sys::jstring {
            $crate::jni_entry::drain(&mut env, db, budget_ms, trigger, handle)
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_status<'l>(
            mut env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            db: $crate::jni_entry::jni::objects::JString<'l>,
        ) -> $crate::jni_entry::jni::sys::jstring {
            $crate::jni_entry::status(&mut env, db)
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_setEnabled<'l>(
            mut env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            db: $crate::jni_entry::jni::objects::JString<'l>,
            enabled: $crate::jni_entry::jni::sys::jboolean,
        ) -> $crate::jni_entry::jni::sys::jstring {
            $crate::jni_entry::set_enabled(&mut env, db, enabled)
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_setSecretKey<'l>(
            mut env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            key: $crate::jni_entry::jni::objects::JByteArray<'l>,
        ) -> $crate::jni_entry::jni::sys::jstring {
            $crate::jni_entry::set_secret_key(&mut env, key)
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_newCancelHandle<'l>(
            _env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
        ) -> $crate::jni_entry::jni::sys::jlong {
            $crate::jni_entry::new_cancel_handle()
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_cancel<'l>(
            _env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            handle: $crate::jni_entry::jni::sys::jlong,
        ) {
            $crate::jni_entry::cancel(handle)
        }
        #[no_mangle]
        pub extern "system" fn Java_app_tauri_backgroundsync_NativeBridge_freeCancelHandle<'l>(
            _env: $crate::jni_entry::jni::JNIEnv<'l>,
            _class: $crate::jni_entry::jni::objects::JClass<'l>,
            handle: $crate::jni_entry::jni::sys::jlong,
        ) {
            $crate::jni_entry::free_cancel_handle(handle)
        }
    };
}
