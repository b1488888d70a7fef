#!/usr/bin/env bash
# Compiles the whole Android shim (android/src/main/java/**.kt) on the host, against:
#   - the Android framework: Robolectric's android-all (API 36 = compileSdk) from Maven Central,
#   - Tauri's Kotlin plugin API: the real sources shipped in the `tauri` crate (mobile/android),
#   - Jackson and kotlinx-coroutines(-android) jars from Maven Central (tests/native/android-stubs/pom.xml),
#   - AndroidX (activity, appcompat, core, lifecycle, work): compile-only stubs in
#     tests/native/android-stubs/src (Google Maven is not reachable here),
# with kotlinc 2.1 from Maven Central, twice:
#   1. everything with the K2 compiler (language 2.1: what an app on Kotlin 2.x compiles),
#   2. the shim again with the K1 front end at the language/API version of the Kotlin Gradle
#      plugin that android/settings.gradle pins (1.8: no newer language features or stdlib API).
# Catches type errors in BackgroundSyncPlugin.kt, SyncWorker.kt, Prefs.kt, Notifications.kt;
# it does not run them (no device). Fails on any compile error.
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS
deps=target/native-deps/android
kdeps=target/native-deps/kotlin
pom=tests/native/android-stubs/pom.xml
stamp="$deps/.pom-$(sha256sum "$pom" | cut -c1-16)"
if [ ! -f "$stamp" ]; then  # first run, or the pom changed: fetch the classpath afresh
  rm -rf "$deps" && mkdir -p "$deps"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$PWD/$deps" >"$deps.mvn.log" 2>&1 \
    || { cat "$deps.mvn.log"; echo "fetching the compile classpath failed"; exit 1; }
  touch "$stamp"
fi
if [ ! -f "$kdeps/kotlin-compiler-embeddable-2.1.0.jar" ]; then
  mvn -q -B -f tests/native/kotlin/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/$kdeps"
fi
tauri_dir=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "tauri")
print(os.path.dirname(p["manifest_path"]))')
tauri_src=$tauri_dir/mobile/android/src/main/java
[ -d "$tauri_src/app/tauri/plugin" ] || { echo "Tauri Kotlin sources not found in $tauri_dir"; exit 1; }

# The compiler itself runs on kotlin-stdlib 2.1 (not android-all's or coroutines' older copy).
compiler_cp=$(ls "$kdeps"/*.jar | grep -v -e junit -e hamcrest -e '/json-' | tr '\n' ':')
compile_cp=$(ls "$deps"/*.jar | grep -v kotlin-stdlib | tr '\n' ':')$kdeps/kotlin-stdlib-2.1.0.jar
kotlinc() { java -Xmx1g -cp "$compiler_cp" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler -no-stdlib -no-reflect -jvm-target 1.8 "$@"; }
fail() { # log, what
  grep -E "^(error|e:)|error:" "$1" | head -40 || cat "$1"
  echo "Android shim compilation FAILED ($2)"
  exit 1
}
out=target/native-android
rm -rf "$out" && mkdir -p "$out/classes" "$out/k1"
mapfile -t shim < <(find android/src/main/java -name '*.kt' | sort)
mapfile -t sources < <(find tests/native/android-stubs/src "$tauri_src/app/tauri" -name '*.kt' | sort)
sources+=("${shim[@]}")

echo "kotlinc (K2, language 2.1): ${#sources[@]} files (AndroidX stubs, Tauri $(basename "$tauri_dir") plugin API, ${#shim[@]} shim files) against android-all API 36"
kotlinc -cp "$compile_cp" -d "$out/classes" "${sources[@]}" >"$out/kotlinc-k2.log" 2>&1 || fail "$out/kotlinc-k2.log" "K2"
for c in BackgroundSyncPlugin SyncWorker Prefs Notifications NativeBridge WorkPlanner CredentialsKey; do
  [ -f "$out/classes/app/tauri/backgroundsync/$c.class" ] || { echo "missing $c.class"; exit 1; }
done

kv=$(grep -A1 '"org.jetbrains.kotlin.android"' android/settings.gradle | grep -oE 'useVersion\("[0-9]+\.[0-9]+' | grep -oE '[0-9]+\.[0-9]+$')
[ -n "$kv" ] || { echo "no Kotlin plugin version in android/settings.gradle"; exit 1; }
echo "kotlinc (K1, language/API $kv as android/settings.gradle pins): the ${#shim[@]} shim files"
kotlinc -language-version "$kv" -api-version "$kv" -cp "$out/classes:$compile_cp" -d "$out/k1" "${shim[@]}" \
  >"$out/kotlinc-k1.log" 2>&1 || fail "$out/kotlinc-k1.log" "K1, Kotlin $kv"
[ -f "$out/k1/app/tauri/backgroundsync/SyncWorker.class" ] || { echo "K1 pass produced no classes"; exit 1; }

# WorkManager's runtime rules (tests/native/android-rules): build every request the shim makes
# against the rule-enforcing stubs, on the host JVM.
mkdir -p "$out/rules"
kotlinc -cp "$out/classes:$compile_cp" -d "$out/rules" tests/native/android-rules/WorkRulesCheck.kt \
  >"$out/kotlinc-rules.log" 2>&1 || fail "$out/kotlinc-rules.log" "rule check"
java -cp "$out/rules:$out/classes:$compile_cp" WorkRulesCheckKt || { echo "WorkManager rule check FAILED"; exit 1; }

# The credentials key (android/.../CredentialsKey.kt) against the rule-enforcing Android Keystore
# stand-in (tests/native/android-keystore), on the host JVM.
mkdir -p "$out/keystore"
kotlinc -cp "$out/classes:$compile_cp" -d "$out/keystore" tests/native/android-keystore/*.kt \
  >"$out/kotlinc-keystore.log" 2>&1 || fail "$out/kotlinc-keystore.log" "keystore check"
# android-all 36's classes are Java 21 bytecode: run them on the newest JDK here (the machine's
# second JDK, Temurin; the default is 17).
java21=$(for j in /usr/lib/jvm/*/bin/java; do
  v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = //p')
  [ "${v%%.*}" -ge 21 ] 2>/dev/null && echo "$v $j"
done | sort -n | tail -1 | cut -d' ' -f2)
[ -n "$java21" ] || { echo "Android Keystore rule check needs a JDK >= 21 (android-all 36); none in /usr/lib/jvm"; exit 1; }
"$java21" -cp "$out/keystore:$out/classes:$compile_cp" CredentialsKeyCheckKt || { echo "Android Keystore rule check FAILED"; exit 1; }

# The merged manifest must give WorkManager's foreground service the type SyncWorker asks for.
python3 - android/src/main/AndroidManifest.xml <<'PY'
import sys, xml.etree.ElementTree as ET
A = "{http://schemas.android.com/apk/res/android}"
m = ET.parse(sys.argv[1]).getroot()
perms = {p.get(A + "name") for p in m.iter("uses-permission")}
svc = [s for s in m.iter("service") if s.get(A + "name") == "androidx.work.impl.foreground.SystemForegroundService"]
problems = []
if not svc or "dataSync" not in (svc[0].get(A + "foregroundServiceType") or ""):
    problems.append("SystemForegroundService without foregroundServiceType=dataSync (Android 10+ throws)")
for p in ["android.permission.FOREGROUND_SERVICE", "android.permission.FOREGROUND_SERVICE_DATA_SYNC"]:
    if p not in perms:
        problems.append("missing " + p)
if problems:
    print("manifest check FAILED: " + "; ".join(problems))
    sys.exit(1)
print("manifest: WorkManager's foreground service declares dataSync; permissions present")
PY

echo "Android shim compiled: $(find "$out/classes/app/tauri/backgroundsync" -name '*.class' | wc -l) classes, both passes, in $((SECONDS - t0)) s"
