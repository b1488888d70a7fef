#!/usr/bin/env bash
# The app-crate expansion of export_native_entries! exports every C ABI and JNI symbol.
set -euo pipefail
cd "$(dirname "$0")/../.."
lib=target/debug/libbgsync_ffi_host.so
syms=$(nm -D --defined-only "$lib")
passed=0; failed=0
for s in bgsync_configure bgsync_enqueue bgsync_drain bgsync_drain_with_trigger bgsync_status bgsync_set_enabled bgsync_diagnostics bgsync_take_outcomes bgsync_set_secret_key bgsync_free \
         Java_app_tauri_backgroundsync_NativeBridge_configure Java_app_tauri_backgroundsync_NativeBridge_enqueue \
         Java_app_tauri_backgroundsync_NativeBridge_drain Java_app_tauri_backgroundsync_NativeBridge_status \
         Java_app_tauri_backgroundsync_NativeBridge_setEnabled Java_app_tauri_backgroundsync_NativeBridge_newCancelHandle \
         Java_app_tauri_backgroundsync_NativeBridge_cancel Java_app_tauri_backgroundsync_NativeBridge_freeCancelHandle \
         Java_app_tauri_backgroundsync_NativeBridge_setSecretKey; do
  if grep -qE " T $s\$" <<<"$syms"; then passed=$((passed+1)); else echo "missing: $s"; failed=$((failed+1)); fi
done
# Every symbol the header declares is exported.
for s in $(grep -oE 'bgsync_[a-z_]+\(' include/bgsync.h | tr -d '(' | sort -u); do
  if grep -qE " T $s\$" <<<"$syms"; then passed=$((passed+1)); else echo "header declares $s, not exported"; failed=$((failed+1)); fi
done
echo "symbols: $passed passed, $failed failed"
[ "$failed" = 0 ]
