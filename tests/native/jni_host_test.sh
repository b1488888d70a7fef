#!/usr/bin/env bash
# Compiles the NativeBridge twin and runs it on the host JVM against two reference servers.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/native-java
rm -rf "$out" && mkdir -p "$out"
javac -d "$out" tests/native/java/app/tauri/backgroundsync/NativeBridge.java tests/native/java/JniHostTest.java
. tests/native/lib.sh
start_server FAST '{}'
start_server SLOW '{"delayMs":200}'
trap 'kill $FAST_PID $SLOW_PID 2>/dev/null || true' EXIT
java -Djava.library.path=target/debug -cp "$out" JniHostTest "$FAST_URL" "$SLOW_URL"
