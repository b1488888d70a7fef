#!/usr/bin/env bash
# Native checks that can run on Linux (no Android SDK, no Xcode): see README "verified where".
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -p bgsync-ffi-host -p bgsync-reference-server
total_fail=0
run() { echo "--- $1"; shift; if "$@"; then :; else total_fail=$((total_fail+1)); fi; }
run "exported symbols (nm -D)" bash tests/native/symbols.sh
run "C ABI through ctypes" python3 tests/native/c_abi_test.py
run "JNI on the host JVM" bash tests/native/jni_host_test.sh
if [ -x tests/native/kotlin_compile.sh ]; then
  run "Kotlin shim compile + unit tests" bash tests/native/kotlin_compile.sh
fi
run "whole Android shim vs android-all + Tauri's Kotlin API + AndroidX stubs" bash tests/native/android_compile.sh
# The Swift toolchain comes from Debian trixie packages: only where a Debian mirror is configured.
if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
  run "iOS shim Swift syntax (swift-frontend -parse, Debian trixie's swiftlang)" bash tests/native/swift_parse.sh
else
  echo "--- iOS shim Swift syntax: SKIPPED (no Debian apt mirror on this machine)"
fi
[ "$total_fail" = 0 ]
