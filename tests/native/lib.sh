# Helpers for the native test scripts (sourced).
# start_server NAME FAULTS_JSON: starts the reference server on a free port; sets
# ${NAME}_URL and ${NAME}_PID.
start_server() {
  local name=$1 faults=$2 log
  log=$(mktemp)
  target/debug/bgsync-reference-server --port 0 --faults "$faults" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    if grep -q "listening on" "$log"; then break; fi
    sleep 0.1
  done
  local url
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1)
  [ -n "$url" ] || { echo "reference server did not start: $(cat "$log")" >&2; return 1; }
  printf -v "${name}_URL" '%s' "$url"
  printf -v "${name}_PID" '%s' "$pid"
}
