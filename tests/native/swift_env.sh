# Sourced by the Swift checks: a Debian 13 "trixie" root with its Swift toolchain (swiftlang
# 6.0.3: swiftc, clang 17, the Linux Foundation and Dispatch, AddressSanitizer's runtime) made
# with debootstrap under target/native-deps/trixie. Debian 12 (these machines) packages no
# Swift, and trixie's binaries need trixie's glibc, so they run in their own root (chroot), not
# mixed into this system. The mirror is the one this machine's apt is configured with.
# Needs root (debootstrap, chroot). ~2.6 GB on disk, made once (about a minute here).

swift_root=$PWD/target/native-deps/trixie

debian_mirror() {
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed -E 's/\[[^]]*\] //' | awk '/^deb / {print $2}'
  } | grep -v -e security -e updates | head -1 || true
}

# Why the Swift checks cannot run here, or nothing when they can.
swift_unavailable() {
  [ "$(id -u)" = 0 ] || { echo "not root (debootstrap and chroot need it)"; return; }
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || { echo "no Debian archive keyring"; return; }
  [ -n "$(debian_mirror)" ] || { echo "no Debian mirror in this machine's apt configuration"; return; }
  if ! command -v debootstrap >/dev/null; then
    apt-get install -y -qq debootstrap >/dev/null 2>&1 || { echo "debootstrap cannot be installed"; return; }
  fi
}

ensure_swift_root() {
  [ -f "$swift_root/.ready" ] && return 0
  local t0=$SECONDS
  echo "making a Debian trixie root with swiftlang under $swift_root (once)"
  rm -rf "$swift_root"
  mkdir -p "$(dirname "$swift_root")"
  debootstrap --variant=minbase --include=swiftlang,gcc,binutils,libc6-dev \
    trixie "$swift_root" "$(debian_mirror)" >"$swift_root.log" 2>&1 || {
    tail -20 "$swift_root.log"; return 1; }
  rm -rf "$swift_root"/var/cache/apt/archives/*.deb
  # Debian's swiftc finds its runtime through the loader's path, which the package leaves to us.
  printf '/usr/libexec/swift/lib/swift/linux\n/usr/libexec/swift/lib/swift/host\n' \
    >"$swift_root/etc/ld.so.conf.d/swiftlang.conf"
  chroot "$swift_root" /sbin/ldconfig
  in_swift_root swiftc --version 2>&1 | head -1 >"$swift_root/.ready"
  echo "trixie root ready in $((SECONDS - t0)) s: $(cat "$swift_root/.ready")"
}

# Run a command inside the root (working directory /work there), in a mount namespace of its
# own: the driver needs /proc and /dev, and those mounts vanish with the command.
in_swift_root() {
  unshare --mount --fork sh -c 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"' \
    "$swift_root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    LD_LIBRARY_PATH=/work/lib ASAN_OPTIONS=detect_leaks=0 sh -c 'cd /work 2>/dev/null || cd /; exec "$@"' sh "$@"
}

# Every Swift check starts here: SKIPPED (exit 0) where the root cannot be made, else made once.
swift_root_or_skip() {
  local why
  why=$(swift_unavailable)
  if [ -n "$why" ]; then echo "SKIPPED: $why"; exit 0; fi
  ensure_swift_root
}

# bgsync.h as the Clang module BackgroundSyncFFI (what SwiftPM generates for that target) in DIR.
ffi_module() {
  mkdir -p "$1"
  cp ios/Sources/BackgroundSyncFFI/include/bgsync.h "$1/"
  printf 'module BackgroundSyncFFI {\n    header "bgsync.h"\n    export *\n}\n' >"$1/module.modulemap"
}
