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
# The Swift toolchain is Debian trixie's, in a root of its own (tests/native/swift_env.sh):
# each check says SKIPPED where it cannot be made (not root, no Debian mirror).
run "iOS shim Swift syntax (swiftc -parse, Debian trixie's swiftlang)" bash tests/native/swift_parse.sh
run "iOS shim type-check (Tauri's Swift plugin API + Apple stand-ins)" bash tests/native/swift_typecheck.sh
run "iOS shim's DrainRun under AddressSanitizer, with the real C ABI" bash tests/native/swift_drain_asan.sh
run "iOS credentials key vs the Keychain's accessibility rules, with the real C ABI" bash tests/native/swift_keychain.sh
[ "$total_fail" = 0 ]
