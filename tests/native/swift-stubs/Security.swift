// Compile-only stand-in for the part of Apple's Security framework the shim uses (Keychain
// items and random bytes), written from its reference:
//   https://developer.apple.com/documentation/security/keychain-services (SecItemAdd,
//   SecItemCopyMatching, SecItemDelete, item class and attribute keys, kSecAttrAccessible*)
//   https://developer.apple.com/documentation/security/secrandomcopybytes(_:_:_:)
//   https://developer.apple.com/documentation/security/security-framework-result-codes
// The CF types are Foundation classes here (Linux has no CoreFoundation bridging); the
// signatures are as Swift imports them from the SDK. Nothing here runs: the Keychain's
// behaviour is simulated by tests/native/swift-keychain/main.swift, against CredentialsKey.
import Foundation

public typealias OSStatus = Int32
public typealias CFString = String
public typealias CFDictionary = NSDictionary
public typealias CFTypeRef = AnyObject
public final class SecRandom {}
public typealias SecRandomRef = SecRandom

private func stub<T>() -> T { fatalError("compile-only stub") }

// Item class and attribute keys (CFString constants).
public let kSecClass: CFString = stub()
public let kSecClassGenericPassword: CFString = stub()
public let kSecAttrService: CFString = stub()
public let kSecAttrAccount: CFString = stub()
public let kSecAttrAccessible: CFString = stub()
/// https://developer.apple.com/documentation/security/ksecattraccessibleafterfirstunlockthisdeviceonly
public let kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly: CFString = stub()
/// https://developer.apple.com/documentation/security/ksecattraccessiblewhenunlockedthisdeviceonly
public let kSecAttrAccessibleWhenUnlockedThisDeviceOnly: CFString = stub()
public let kSecValueData: CFString = stub()
public let kSecReturnData: CFString = stub()
public let kSecMatchLimit: CFString = stub()
public let kSecMatchLimitOne: CFString = stub()

// Result codes.
public let errSecSuccess: OSStatus = 0
public let errSecItemNotFound: OSStatus = -25300
public let errSecDuplicateItem: OSStatus = -25299
public let errSecInteractionNotAllowed: OSStatus = -25308

/// https://developer.apple.com/documentation/security/secitemcopymatching(_:_:)
public func SecItemCopyMatching(_ query: CFDictionary, _ result: UnsafeMutablePointer<CFTypeRef?>?) -> OSStatus { stub() }
/// https://developer.apple.com/documentation/security/secitemadd(_:_:)
public func SecItemAdd(_ attributes: CFDictionary, _ result: UnsafeMutablePointer<CFTypeRef?>?) -> OSStatus { stub() }
/// https://developer.apple.com/documentation/security/secitemdelete(_:)
public func SecItemDelete(_ query: CFDictionary) -> OSStatus { stub() }
public let kSecRandomDefault: SecRandomRef? = nil
public func SecRandomCopyBytes(_ rnd: SecRandomRef?, _ count: Int, _ bytes: UnsafeMutableRawPointer) -> Int32 { stub() }
