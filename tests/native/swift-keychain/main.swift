// The iOS shim's CredentialsKey (ios/Sources/BackgroundSyncPlugin/CredentialsKey.swift, as
// shipped) against a Keychain simulation that enforces the Keychain's accessibility rules, then
// through the engine's real C ABI. Usage: keychain-check <phase> <db path>
//   phase "rules": the key's life over the phone's lock states;
//   phase "abi":   hand the key over and let the engine seal a plaintext credentials row.
// The rules, from Apple's "Restricting keychain item accessibility"
// (https://developer.apple.com/documentation/security/restricting-keychain-item-accessibility)
// and kSecAttrAccessible* pages:
//   - AfterFirstUnlock items: unreadable after a restart until the first unlock, readable after,
//     also while the phone is locked again;
//   - WhenUnlocked items: readable only while unlocked;
//   - reads/writes that are not allowed fail with errSecInteractionNotAllowed (-25308);
//   - SecItemAdd of an existing item fails with errSecDuplicateItem (-25299).
import BackgroundSyncFFI
import Foundation

enum PhoneState { case beforeFirstUnlock, unlocked, locked }

final class SimulatedKeychain: KeychainAccess {
    var state = PhoneState.unlocked
    var item: (data: Data, accessibility: KeychainAccessibility)?
    var adds = 0
    static let interactionNotAllowed: Int32 = -25308

    private func allowed(_ a: KeychainAccessibility) -> Bool {
        switch (state, a) {
        case (.unlocked, _): return true
        case (.locked, .afterFirstUnlockThisDeviceOnly): return true
        default: return false
        }
    }

    func read() -> KeychainRead {
        guard let item = item else { return .notFound }
        return allowed(item.accessibility) ? .found(item.data) : .failed(Self.interactionNotAllowed)
    }

    func add(_ data: Data, accessibility: KeychainAccessibility) -> Int32 {
        guard allowed(accessibility) else { return Self.interactionNotAllowed }
        if item != nil { return CredentialsKey.errSecDuplicateItem }
        item = (data, accessibility)
        adds += 1
        return 0
    }

    func delete() -> Int32 {
        item = nil
        return 0
    }
}

var passed = 0
var failed = 0
func check(_ name: String, _ ok: Bool, _ detail: String = "") {
    if ok { passed += 1; print("ok   \(name)") } else { failed += 1; print("FAIL \(name) \(detail)") }
}

func random(_ n: Int) -> Data? {
    var g = SystemRandomNumberGenerator()
    return Data((0..<n).map { _ in UInt8.random(in: 0...255, using: &g) })
}

func call(_ p: UnsafeMutablePointer<CChar>?) -> String {
    guard let p = p else { return "" }
    defer { bgsync_free(p) }
    return String(cString: p)
}

let args = CommandLine.arguments
let phase = args[1]
let db = args[2]

switch phase {
case "rules":
    let kc = SimulatedKeychain()
    let k1 = CredentialsKey.obtain(kc, random: random)
    check("first start (unlocked) makes a 32-byte key", k1?.count == 32)
    kc.state = .locked
    check("a BGTask on the locked phone reads the same key", CredentialsKey.obtain(kc, random: random) == k1,
          "\(String(describing: kc.read()))")
    kc.state = .beforeFirstUnlock
    check("after a restart, before the first unlock: no key this run", CredentialsKey.obtain(kc, random: random) == nil)
    check("and the stored key is not replaced", kc.item?.data == k1 && kc.adds == 1, "adds \(kc.adds)")
    kc.state = .unlocked
    check("after the unlock: the same key again", CredentialsKey.obtain(kc, random: random) == k1)
    kc.item = (Data([1, 2, 3]), .afterFirstUnlockThisDeviceOnly)
    let k2 = CredentialsKey.obtain(kc, random: random)
    check("an item of the wrong size is replaced", k2?.count == 32 && kc.item?.data == k2)
    // Another process stores its key between our read and our add: use the stored one.
    final class Racing: KeychainAccess {
        let inner = SimulatedKeychain()
        var first = true
        func read() -> KeychainRead { if first { first = false; return .notFound }; return inner.read() }
        func add(_ d: Data, accessibility a: KeychainAccessibility) -> Int32 { inner.add(d, accessibility: a) }
        func delete() -> Int32 { inner.delete() }
    }
    let race = Racing()
    _ = race.inner.add(Data(repeating: 7, count: 32), accessibility: .afterFirstUnlockThisDeviceOnly)
    check("a key another process stored first is used", CredentialsKey.obtain(race, random: random) == Data(repeating: 7, count: 32))
case "abi":
    let kc = SimulatedKeychain()
    check("handOver gives the key to the engine", CredentialsKey.handOver(kc, random: random))
    let status = call(bgsync_status(db))
    check("status opens the database with the key", status.contains("\"ok\":true"), status)
    let files = (try? FileManager.default.contentsOfDirectory(atPath: (db as NSString).deletingLastPathComponent)) ?? []
    var leaked: [String] = []
    for f in files {
        let path = ((db as NSString).deletingLastPathComponent as NSString).appendingPathComponent(f)
        if let data = FileManager.default.contents(atPath: path), data.range(of: Data("tok-swift-5e1a".utf8)) != nil {
            leaked.append(f)
        }
    }
    check("the plaintext token left in the file was sealed and scrubbed", leaked.isEmpty, "\(leaked)")
    // A run without the key (the Keychain unreadable this run) sends nothing.
    _ = call(bgsync_set_secret_key(nil, 0))
    _ = call(bgsync_set_enabled(db, 1))
    let drained = call(bgsync_drain_with_trigger(db, 2000, "ios-refresh-test", nil))
    check("without the key the drain stops with authFailed", drained.contains("\"stopReason\":\"authFailed\"") && drained.contains("\"requests\":0"), drained)
default:
    let out = call(bgsync_configure(db, "{\"baseUrl\":\"http://127.0.0.1:9\"}"))
    check("configure creates the database", out.contains("\"ok\":true"), out)
}
print("SWIFT-KEYCHAIN \(phase): \(passed) passed, \(failed) failed")
exit(failed == 0 ? 0 : 1)
