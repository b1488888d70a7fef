#!/usr/bin/env bash
# The desktop credentials key in a real Secret Service: gnome-keyring on a private D-Bus
# session bus (nothing of the user's session is touched), unlocked with a throwaway password,
# then tests/commands.rs `desktop_credentials_key_lives_in_the_os_keyring`.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in dbus-run-session gnome-keyring-daemon secret-tool; do
  command -v "$t" >/dev/null || { echo "keyring: $t missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
# gnome-keyring keeps its keyrings under $XDG_DATA_HOME; a fresh one per run.
export XDG_DATA_HOME="$home/data" XDG_RUNTIME_DIR="$home/run"
mkdir -p "$XDG_DATA_HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
exec dbus-run-session -- bash -c '
  set -euo pipefail
  # --unlock reads the login keyring password from stdin (and creates the keyring).
  eval "$(printf "throwaway\n" | gnome-keyring-daemon --unlock --components=secrets)"
  export GNOME_KEYRING_CONTROL
  # The same cargo invocation as the Rust step of make test: nothing is rebuilt with other features.
  BGSYNC_KEYRING_TEST=1 cargo test -q --workspace --exclude bgsync-example-app --tests -- --exact desktop_credentials_key_lives_in_the_os_keyring --nocapture
'
