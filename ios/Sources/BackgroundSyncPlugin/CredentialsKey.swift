import BackgroundSyncFFI
import Foundation

// The key that seals the stored credentials (README "Credentials at rest"), kept in the iOS
// Keychain. The decisions live here, free of Apple-only frameworks, so the same file runs on
// Linux against a Keychain simulation that enforces the Keychain's rules
// (tests/native/swift_keychain.sh); the Security calls are in SystemKeychain.swift.

/// When a Keychain item can be read (Apple: "Restricting keychain item accessibility",
/// https://developer.apple.com/documentation/security/restricting-keychain-item-accessibility).
enum KeychainAccessibility {
    /// Readable once the phone was unlocked after boot, also while it is locked again: what a
    /// BGTask needs (it runs with the phone in a pocket). `ThisDeviceOnly`: never in a backup,
    /// never restored onto another phone.
    case afterFirstUnlockThisDeviceOnly
    /// Readable only while the phone is unlocked: a BGTask on a locked phone gets
    /// `errSecInteractionNotAllowed`.
    case whenUnlockedThisDeviceOnly
}

enum KeychainRead {
    case found(Data)
    case notFound
    /// Any other status, e.g. `errSecInteractionNotAllowed` (-25308) before the first unlock.
    case failed(Int32)
}

/// The three Keychain operations the key needs, on one generic-password item.
protocol KeychainAccess {
    func read() -> KeychainRead
    func add(_ data: Data, accessibility: KeychainAccessibility) -> Int32
    func delete() -> Int32
}

enum CredentialsKey {
    static let service = "app.tauri.backgroundsync"
    static let account = "credentials-key"
    static let accessibility = KeychainAccessibility.afterFirstUnlockThisDeviceOnly
    static let errSecSuccess: Int32 = 0
    static let errSecDuplicateItem: Int32 = -25299

    /// The key, made and stored on first use. Nil when the Keychain cannot be read now (before
    /// the first unlock after a reboot): making a new key then would orphan the credentials
    /// sealed with the one the Keychain still holds, so this run goes without.
    static func obtain(_ keychain: KeychainAccess, random: (Int) -> Data?) -> Data? {
        switch keychain.read() {
        case .found(let data) where data.count == 32:
            return data
        case .found:
            _ = keychain.delete() // not ours (wrong size): replace it
        case .notFound:
            break
        case .failed:
            return nil
        }
        guard let key = random(32), key.count == 32 else { return nil }
        switch keychain.add(key, accessibility: accessibility) {
        case errSecSuccess:
            return key
        case errSecDuplicateItem:
            // Another process (an app extension, a second launch) stored one first: use it.
            if case .found(let data) = keychain.read(), data.count == 32 { return data }
            return nil
        default:
            return nil
        }
    }

    /// Obtain the key and give it to Rust for this process; false when there is none (Rust
    /// then keeps the credentials in memory only, and cannot open sealed ones this run).
    @discardableResult
    static func handOver(_ keychain: KeychainAccess, random: (Int) -> Data?) -> Bool {
        guard var key = obtain(keychain, random: random) else { return false }
        defer { key.resetBytes(in: 0..<key.count) }
        let answer: String? = key.withUnsafeBytes { raw in
            guard let p = bgsync_set_secret_key(raw.bindMemory(to: UInt8.self).baseAddress, raw.count) else { return nil }
            defer { bgsync_free(p) }
            return String(cString: p)
        }
        return answer?.contains("\"ok\":true") ?? false
    }
}
