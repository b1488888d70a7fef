#!/usr/bin/env bash
# The iOS credentials key: ios/Sources/BackgroundSyncPlugin/CredentialsKey.swift (as shipped)
# compiled on Linux with the engine's real C ABI and run against a Keychain simulation that
# enforces the accessibility rules (tests/native/swift-keychain/main.swift), then two mutants of
# the shim that must fail it: an item readable only while unlocked (a BGTask on a locked phone
# would find no key), and an add that loses a race with another process and gives up instead
# of reading the key that process stored. (Making a new key when the Keychain cannot be read
# is no mutant here: before the first unlock the Keychain refuses the add as well.)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/native/swift_env.sh
swift_root_or_skip
t0=$SECONDS
cargo build -q -p bgsync-ffi-host
work=$swift_root/work
rm -rf "$work" && mkdir -p "$work"/{lib,mod,tmp}
cp ios/Sources/BackgroundSyncPlugin/CredentialsKey.swift tests/native/swift-keychain/main.swift "$work/"
ffi_module "$work/mod"
cp target/debug/libbgsync_ffi_host.so "$work/lib/"
build() { # output, key source
  in_swift_root swiftc -swift-version 5 -I mod -L lib -lbgsync_ffi_host "$2" main.swift -o "$1" \
    >"$work/build.out" 2>&1 || { cat "$work/build.out"; echo "FAILED: swiftc"; exit 1; }
}
build keychain-check CredentialsKey.swift
in_swift_root ./keychain-check rules /work/tmp/unused.db
# The ABI phase: a database with the plaintext credentials an earlier version stored.
in_swift_root ./keychain-check create /work/tmp/outbox.db >/dev/null
python3 - "$work/tmp/outbox.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('auth', ?)", ('{"accessToken":"tok-swift-5e1a"}',))
c.commit()
c.close()
PY
grep -q 'tok-swift-5e1a' "$work/tmp/outbox.db" "$work/tmp/outbox.db-wal" 2>/dev/null || { echo "FAILED: the plaintext row was not written"; exit 1; }
in_swift_root ./keychain-check abi /work/tmp/outbox.db

mutant() { # name, sed expression
  sed -E "$2" "$work/CredentialsKey.swift" >"$work/Mutant.swift"
  cmp -s "$work/CredentialsKey.swift" "$work/Mutant.swift" && { echo "FAILED: mutant '$1' changed nothing"; exit 1; }
  build keychain-mutant Mutant.swift
  if in_swift_root ./keychain-mutant rules /work/tmp/unused.db >"$work/mutant.out" 2>&1; then
    cat "$work/mutant.out"; echo "FAILED: mutant '$1' passed (the check is blind)"; exit 1
  fi
  echo "mutant '$1' caught: $(grep -m1 FAIL "$work/mutant.out")"
}
mutant "readable only while unlocked" 's/static let accessibility = KeychainAccessibility.afterFirstUnlockThisDeviceOnly/static let accessibility = KeychainAccessibility.whenUnlockedThisDeviceOnly/'
mutant "a raced add gives up" '/Another process .* stored one first/{n;d}'
echo "Swift credentials key: passed in $((SECONDS - t0)) s"
