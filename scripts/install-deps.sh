#!/usr/bin/env bash
# Installs what the demo and the test suite need on a fresh Debian/Ubuntu machine.
# Idempotent: skips what is already there. Needs root (or sudo) for apt-get.
# --headless: only what the engine crate needs (the headless demo): a C compiler for SQLite.
set -euo pipefail
headless=0
if [ "${1:-}" = "--headless" ]; then headless=1; fi

need_apt=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_apt+=("$1"); }

want pkg-config
want build-essential
if [ "$headless" = 0 ]; then
# Tauri's Linux build (even with default features off, the tauri crate links GTK).
want libgtk-3-dev
want libwebkit2gtk-4.1-dev
want libsoup-3.0-dev
want libjavascriptcoregtk-4.1-dev
want librsvg2-dev
want libayatana-appindicator3-dev
# End-to-end test of the example app: a real WebKitGTK window under Xvfb.
want xvfb
want xauth
want webkit2gtk-driver
want procps   # ps: scripts/test-e2e.sh stops each child's whole session
# chattr (read-only database test as root), python3 (C ABI test), a JDK (JNI test).
want e2fsprogs
want python3
want default-jdk-headless
want maven
# OpenSSL headers for the SQLCipher build (`--features sqlcipher`).
want libssl-dev
# The Swift checks of the iOS shim build a Debian trixie root with its Swift toolchain
# (tests/native/swift_env.sh); iproute2 for the scheduler's reconnect test (a veth in a
# private network namespace).
want debootstrap
want iproute2
# The desktop credentials key in a real Secret Service (tests/keyring.sh): gnome-keyring on a
# private D-Bus session bus, secret-tool to look at what it holds.
want gnome-keyring
want libsecret-tools
want dbus
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  echo "installing: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: a Rust toolchain (cargo, rustc >= 1.90) is required: https://rustup.rs" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "error: Node.js >= 18 with npm is required" >&2
  exit 1
fi
