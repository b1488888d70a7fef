#!/usr/bin/env bash
# Compiles the Android shim's pure Kotlin (WorkPlan.kt, NativeBridge.kt) with the Kotlin
# compiler from Maven Central, runs the JUnit tests of the config → WorkManager mapping, and
# calls the Rust library through the real NativeBridge.kt on the host JVM.
# The Android/WorkManager/Tauri-dependent classes (BackgroundSyncPlugin, SyncWorker, Prefs,
# Notifications) are compiled by tests/native/android_compile.sh (android-all + Tauri's Kotlin
# API + AndroidX stubs); the Gradle build against the real AndroidX is the mobile workflow.
set -euo pipefail
cd "$(dirname "$0")/../.."
deps=target/native-deps/kotlin
if [ ! -f "$deps/kotlin-compiler-embeddable-2.1.0.jar" ]; then
  mvn -q -B -f tests/native/kotlin/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/$deps"
fi
cp_all=$(ls "$deps"/*.jar | tr '\n' ':')
out=target/native-kotlin
rm -rf "$out" && mkdir -p "$out"
src=android/src/main/java/app/tauri/backgroundsync
java -cp "$cp_all" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler -no-stdlib -no-reflect \
  -cp "$deps/kotlin-stdlib-2.1.0.jar:$deps/json-20240303.jar:$deps/junit-4.13.2.jar" -d "$out" \
  "$src/WorkPlan.kt" "$src/NativeBridge.kt" \
  android/src/test/java/app/tauri/backgroundsync/WorkPlannerTest.kt tests/native/kotlin/NativeBridgeSmoke.kt 2>&1 \
  | grep -v "^warning: " || true
[ -f "$out/app/tauri/backgroundsync/WorkPlanner.class" ] || { echo "Kotlin compilation failed"; exit 1; }
rt="$out:$deps/kotlin-stdlib-2.1.0.jar:$deps/json-20240303.jar:$deps/junit-4.13.2.jar:$deps/hamcrest-core-1.3.jar"
java -cp "$rt" org.junit.runner.JUnitCore app.tauri.backgroundsync.WorkPlannerTest
db=$(mktemp -d)/kt.db
java -Djava.library.path=target/debug -cp "$rt" NativeBridgeSmokeKt "$db"
