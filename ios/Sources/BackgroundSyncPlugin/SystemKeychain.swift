import Foundation
import Security

/// The Keychain through Security's SecItem functions: one generic-password item
/// (`kSecClassGenericPassword`, service and account of `CredentialsKey`).
struct SystemKeychain: KeychainAccess {
    private var base: [String: Any] {
        [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: CredentialsKey.service,
            kSecAttrAccount as String: CredentialsKey.account,
        ]
    }

    func read() -> KeychainRead {
        var query = base
        query[kSecReturnData as String] = true
        query[kSecMatchLimit as String] = kSecMatchLimitOne
        var result: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &result)
        if status == errSecItemNotFound { return .notFound }
        guard status == errSecSuccess, let data = result as? Data else { return .failed(status) }
        return .found(data)
    }

    func add(_ data: Data, accessibility: KeychainAccessibility) -> Int32 {
        var attrs = base
        attrs[kSecValueData as String] = data
        switch accessibility {
        case .afterFirstUnlockThisDeviceOnly:
            attrs[kSecAttrAccessible as String] = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
        case .whenUnlockedThisDeviceOnly:
            attrs[kSecAttrAccessible as String] = kSecAttrAccessibleWhenUnlockedThisDeviceOnly
        }
        return SecItemAdd(attrs as CFDictionary, nil)
    }

    func delete() -> Int32 {
        SecItemDelete(base as CFDictionary)
    }

    /// Random bytes from the system's generator (`SecRandomCopyBytes`).
    static func random(_ count: Int) -> Data? {
        var data = Data(count: count)
        let status = data.withUnsafeMutableBytes { SecRandomCopyBytes(kSecRandomDefault, count, $0.baseAddress!) }
        return status == errSecSuccess ? data : nil
    }
}
