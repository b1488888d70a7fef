# Shared by scripts/test-e2e.sh (the example app) and scripts/test-fresh-app.sh (a new app
# made as the README says): a private Xvfb display, tauri-driver + WebKitWebDriver, every child
# in a session of its own so the cleanup finds all of it. Source it after setting `root` and
# `tools`; it sets `work` (a temporary folder, removed on success) and the EXIT trap.

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

e2e_install_driver() {
  if [ ! -x "$tools/bin/tauri-driver" ]; then
    echo "e2e: installing tauri-driver into target/tools"
    step 1200 cargo install tauri-driver --locked --root "$tools" --quiet
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port seconds
  local end=$((SECONDS + $2))
  until (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

e2e_start_xvfb() {
  # A private X display (the first free one, chosen by Xvfb itself).
  setsid Xvfb -displayfd 3 -screen 0 1280x900x24 -nolisten tcp 3>"$work/display" >"$work/xvfb.log" 2>&1 &
  xvfb_pid=$!
  for _ in $(seq 1 100); do
    [ -s "$work/display" ] && break
    sleep 0.1
  done
  [ -s "$work/display" ] || { echo "e2e: Xvfb did not start:" >&2; cat "$work/xvfb.log" >&2; exit 1; }
  export DISPLAY=:$(head -1 "$work/display")
}

# Starts tauri-driver on a free port; sets DRIVER_URL and driver_pid.
e2e_start_driver() {
  local driver_port native_port
  driver_port=$(free_port)
  native_port=$(free_port)
  export DRIVER_URL=http://127.0.0.1:$driver_port/
  setsid "$tools/bin/tauri-driver" --port "$driver_port" --native-port "$native_port" \
    --native-driver "$(command -v WebKitWebDriver)" >"$work/driver.log" 2>&1 &
  driver_pid=$!
  wait_port "$driver_port" 20 || { echo "e2e: tauri-driver did not listen on $driver_port" >&2; exit 1; }
}
