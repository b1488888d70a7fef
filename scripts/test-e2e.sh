#!/usr/bin/env bash
# End-to-end test of examples/tauri-app in a real WebKitGTK window on a private Xvfb display,
# driven by tauri-driver + WebKitWebDriver (selenium-webdriver from npm). The app is a debug
# build with the frontend embedded (feature custom-protocol: no Vite server at test time).
# Screenshots go to target/e2e-artifacts/. System packages come from scripts/install-deps.sh.
#
# Knobs: E2E_RUNS (run the test N times against one build, default 1),
#        E2E_BUILD_TIMEOUT (seconds for the cargo build, default 3600: a cold build on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/target/tools
app_dir=$root/examples/tauri-app
build_timeout=${E2E_BUILD_TIMEOUT:-3600}
runs=${E2E_RUNS:-1}

for cmd in Xvfb WebKitWebDriver python3 node npm cargo setsid timeout ps; do
  command -v "$cmd" >/dev/null || {
    echo "e2e: $cmd missing (run scripts/install-deps.sh: xvfb, webkit2gtk-driver, ...)" >&2
    exit 1
  }
done

# Every child is started with setsid: its session id is its pid, and whatever it starts
# (cargo -> rustc, tauri-driver -> WebKitWebDriver -> the app -> WebKit's processes) stays in
# that session, so the cleanup below finds all of it, whatever happens (failure, timeout,
# Ctrl-C, SIGTERM from CI).
work=$(mktemp -d)
xvfb_pid=
driver_pid=
step_pid=
stop_session() { # sid: TERM everything in it, KILL what is left after 5 s, reap the leader
  local sid=$1
  [ -n "$sid" ] || return 0
  alive() { ps -o pid=,stat= --sid "$sid" 2>/dev/null | awk '$2 !~ /^Z/ {print $1}'; }
  # shellcheck disable=SC2046
  kill -TERM $(alive) 2>/dev/null || true
  for _ in $(seq 1 50); do
    [ -n "$(alive)" ] || break
    sleep 0.1
  done
  # shellcheck disable=SC2046
  kill -KILL $(alive) 2>/dev/null || true
  wait "$sid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_session "$step_pid"
  stop_session "$driver_pid"
  stop_session "$xvfb_pid"
  if [ $rc -ne 0 ]; then
    echo "e2e failed (exit $rc)" >&2
    if [ -s "$work/driver.log" ]; then
      echo "last lines of the tauri-driver/app log ($work/driver.log):" >&2
      tail -40 "$work/driver.log" >&2 || true
    fi
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs one step with a time limit, in the background so a signal to this script is handled
# at once (bash runs traps only between foreground commands).
step() { # seconds command...
  local secs=$1
  shift
  setsid timeout "$secs" "$@" &
  step_pid=$!
  wait "$step_pid"
  step_pid=
}

if [ ! -x "$tools/bin/tauri-driver" ]; then
  echo "e2e: installing tauri-driver into target/tools"
  step 1200 cargo install tauri-driver --locked --root "$tools" --quiet
fi

# Frontend (its own node_modules only; reinstalled when the lockfile changes).
cd "$app_dir"
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
  step 600 npm ci --no-audit --no-fund --loglevel=error
fi
step 300 npm run build --silent >/dev/null
cd "$root"
step "$build_timeout" cargo build -q -p bgsync-example-app --features custom-protocol
# The background run while the app is closed: the reference server as a process.
step "$build_timeout" cargo build -q -p bgsync-reference-server

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port seconds
  local end=$((SECONDS + $2))
  until (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

# A private X display (the first free one, chosen by Xvfb itself).
setsid Xvfb -displayfd 3 -screen 0 1280x900x24 -nolisten tcp 3>"$work/display" >"$work/xvfb.log" 2>&1 &
xvfb_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/display" ] && break
  sleep 0.1
done
[ -s "$work/display" ] || { echo "e2e: Xvfb did not start:" >&2; cat "$work/xvfb.log" >&2; exit 1; }
export DISPLAY=:$(head -1 "$work/display")

export ARTIFACTS=$root/target/e2e-artifacts
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
export APP=$root/target/debug/bgsync-example-app
# The app's own library, whose C ABI the OS background hook calls (e2e/background_drain.py).
export APP_LIB=$root/target/debug/libbgsync_example_app_lib.so
export SERVER_BIN=$root/target/debug/bgsync-reference-server
export BGSYNC_EXAMPLE_START_OFFLINE=1

for run in $(seq 1 "$runs"); do
  # Fresh outbox + server databases and ports for every run; the test reads the server's
  # admin endpoints on BGSYNC_EXAMPLE_PORT.
  export BGSYNC_EXAMPLE_DATA=$work/data-$run
  # The webview's own storage (the app keeps its visit records in localStorage) lives under
  # XDG_DATA_HOME: a fresh one per run, so no run sees another's records (or the user's).
  export XDG_DATA_HOME=$work/xdg-data-$run XDG_CACHE_HOME=$work/xdg-cache-$run
  export BGSYNC_EXAMPLE_PORT=$(free_port)
  driver_port=$(free_port)
  native_port=$(free_port)
  export DRIVER_URL=http://127.0.0.1:$driver_port/
  setsid "$tools/bin/tauri-driver" --port "$driver_port" --native-port "$native_port" \
    --native-driver "$(command -v WebKitWebDriver)" >"$work/driver.log" 2>&1 &
  driver_pid=$!
  wait_port "$driver_port" 20 || { echo "e2e: tauri-driver did not listen on $driver_port" >&2; exit 1; }
  [ "$runs" = 1 ] || echo "e2e run $run/$runs"
  cd "$app_dir"
  step 240 node e2e/run.mjs
  cd "$root"
  stop_session "$driver_pid"
  driver_pid=
done
