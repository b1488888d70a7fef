#!/usr/bin/env bash
# Syntax check of the iOS shim's Swift sources (ios/**/*.swift) with the real Swift compiler
# front end: `swift-frontend -frontend -parse` (what `swiftc -parse` runs). Parse only: there is
# no Xcode and no iOS SDK here (UIKit, BackgroundTasks, Network, Tauri's Swift package), so
# nothing is type-checked; a syntax error fails this check, a type error does not.
#
# Where the compiler comes from: Debian bookworm (these machines) has no Swift toolchain;
# Debian 13 "trixie" packages one (swiftlang 6.0.3), whose binaries need trixie's glibc
# (>= 2.38) and libstdc++. Rather than mixing trixie packages into this system, `apt-get
# download` (a private apt state: the system's sources and package database are not touched)
# fetches swiftlang, libswiftlang and trixie's C/C++ runtime into target/native-deps/swift,
# and swift-frontend runs there under trixie's own dynamic loader. The Debian mirror is the
# one this machine's apt is configured with. ~470 MB download once; ~250 MB kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS
root=$PWD/target/native-deps/swift
sysroot=$root/sysroot
suite=trixie
pkgs=(swiftlang libswiftlang libc6 libstdc++6 libgcc-s1 zlib1g libzstd1 libtinfo6 libuuid1)

fetch() {
  rm -rf "$root" && mkdir -p "$root"/apt/{lists/partial,cache/archives/partial,parts} "$root/debs" "$sysroot"
  local mirror
  mirror=$({ cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}'
             cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed -E 's/\[[^]]*\] //' | awk '/^deb / {print $2}'
           } | grep -v -e security -e updates | head -1 || true)
  [ -n "$mirror" ] || { echo "no Debian mirror in this machine's apt configuration"; return 1; }
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$root/apt/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$root/apt/sources.list" -o "Dir::Etc::SourceParts=$root/apt/parts"
    -o "Dir::State::Lists=$root/apt/lists" -o "Dir::Cache=$root/apt/cache" -o "Dir::State::status=/var/lib/dpkg/status"
    -o APT::Sandbox::User=root -o Acquire::Languages=none -o Debug::NoLocking=1)
  echo "fetching swiftlang from Debian $suite (private apt state under $root/apt)"
  apt-get "${apt_opts[@]}" -qq update
  (cd "$root/debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}")
  for p in libc6 libstdc++6 libgcc-s1 zlib1g libzstd1 libtinfo6 libuuid1; do
    dpkg-deb -x "$root"/debs/"${p}"_*.deb "$sysroot"
  done
  # From the toolchain only the front end and the Swift runtime/host libraries it links.
  dpkg-deb --fsys-tarfile "$root"/debs/swiftlang_*.deb | tar -x -C "$sysroot" ./usr/libexec/swift/bin/swift-frontend
  local host_libs
  host_libs=$(dpkg-deb -c "$root"/debs/libswiftlang_*.deb | grep -oE '\./usr/libexec/swift/lib/swift/host/libSwift[A-Za-z]*\.so' | sort -u)
  dpkg-deb --fsys-tarfile "$root"/debs/libswiftlang_*.deb | tar -x -C "$sysroot" ./usr/libexec/swift/lib/swift/linux $host_libs
  # Keep only the shared libraries swift-frontend actually loads.
  local needed
  needed=$(sf_loader --list "$sysroot/usr/libexec/swift/bin/swift-frontend" | awk '{print $3}')
  find "$sysroot/usr/libexec/swift/lib/swift/linux" -mindepth 1 -maxdepth 1 | while read -r f; do
    grep -qxF "$f" <<<"$needed" || rm -rf "$f"
  done
  rm -rf "$root/debs" "$root/apt/cache"
}

sf_loader() {
  local ld libc_dir sl=$sysroot/usr/libexec/swift/lib/swift
  ld=$(find "$sysroot" -name 'ld-linux*.so.*' -path '*lib64*' | head -1)
  [ -n "$ld" ] || ld=$(find "$sysroot" -name 'ld-linux*.so.*' | head -1)
  libc_dir=$(dirname "$(find "$sysroot" -name libc.so.6 | head -1)")
  "$ld" --library-path "$sl/linux:$sl/host:$libc_dir:$sysroot/lib/$(basename "$libc_dir")" "$@"
}
swift_frontend() { sf_loader "$sysroot/usr/libexec/swift/bin/swift-frontend" "$@"; }

if [ ! -f "$root/.ready" ]; then
  fetch
  swift_frontend --version | head -1 >"$root/.ready"
fi
echo "$(cat "$root/.ready") (Debian $suite's swiftlang, run from target/native-deps/swift)"

mapfile -t files < <(find ios -name '*.swift' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "no Swift sources under ios/"; exit 1; }
bad=0
for f in "${files[@]}"; do
  if swift_frontend -frontend -parse -swift-version 5 "$f"; then echo "parsed: $f"; else echo "SYNTAX ERROR: $f"; bad=$((bad + 1)); fi
done
[ "$bad" = 0 ] || { echo "Swift parse FAILED: $bad of ${#files[@]} files"; exit 1; }
echo "Swift parse: ${#files[@]} files OK in $((SECONDS - t0)) s (syntax only; not type-checked)"
