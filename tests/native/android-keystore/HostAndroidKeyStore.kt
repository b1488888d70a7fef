// Host stand-in for the Android Keystore's JCA provider ("AndroidKeyStore"), for AES keys made
// with a KeyGenParameterSpec (the real android.security.keystore classes, from android-all).
// Not a signature stub: it refuses what a device refuses, each rule with where it comes from:
//  [KS]  https://developer.android.com/privacy-and-security/keystore ("Key material never
//        enters the application process"; keys are used through Cipher with the AndroidKeyStore
//        provider; the GCM example lets the Keystore choose the IV).
//  [RER] https://developer.android.com/reference/android/security/keystore/KeyGenParameterSpec.Builder#setRandomizedEncryptionRequired(boolean)
//        (default true: "an IV provided by the caller ... rejected" when encrypting).
//  [UDR] ...KeyGenParameterSpec.Builder#setUnlockedDeviceRequired(boolean) (unusable while the
//        device is locked) and #setUserAuthenticationRequired(boolean) (unusable until the user
//        authenticates: UserNotAuthenticatedException).
//  [BM]  ...KeyGenParameterSpec.Builder#setBlockModes / #setEncryptionPaddings ("attempts to
//        use the key with any other block modes/paddings will be rejected"), #setKeySize.
//  [SPI] AOSP frameworks/base keystore/java/android/security/keystore2/
//        AndroidKeyStoreKeyGeneratorSpi.java ("Cannot initialize without a
//        KeyGenParameterSpec parameter") and AndroidKeyStoreAuthenticatedAESCipherSpi.java
//        (GCM: IV required for decryption, 12-byte IV generated when encrypting).
package hostkeystore

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import android.security.keystore.UserNotAuthenticatedException
import java.io.InputStream
import java.io.OutputStream
import java.security.*
import java.security.cert.Certificate
import java.security.spec.AlgorithmParameterSpec
import java.util.Collections
import java.util.Date
import java.util.Enumeration
import javax.crypto.Cipher
import javax.crypto.CipherSpi
import javax.crypto.KeyGeneratorSpi
import javax.crypto.NoSuchPaddingException
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec
import javax.crypto.spec.SecretKeySpec

object HostKeystore {
    /** The phone is locked (after its first unlock): WorkManager's usual situation. */
    @Volatile var deviceLocked = false
    val keys = Collections.synchronizedMap(mutableMapOf<String, HostKeystoreKey>())

    fun install() {
        if (Security.getProvider("AndroidKeyStore") == null) Security.addProvider(AndroidKeyStoreProvider())
    }
}

/** Key material stays inside the "Keystore" [KS]: no encoding is given out. */
class HostKeystoreKey(val spec: KeyGenParameterSpec, internal val material: ByteArray) : SecretKey {
    override fun getAlgorithm() = KeyProperties.KEY_ALGORITHM_AES
    override fun getFormat(): String? = null
    override fun getEncoded(): ByteArray? = null
}

class AndroidKeyStoreProvider : Provider("AndroidKeyStore", "1.0", "host stand-in of the Android Keystore") {
    init {
        put("KeyStore.AndroidKeyStore", HostKeyStoreSpi::class.java.name)
        put("KeyGenerator.AES", HostAesKeyGeneratorSpi::class.java.name)
        put("Cipher.AES/GCM/NoPadding", HostAesGcmCipherSpi::class.java.name)
    }
}

class HostKeyStoreSpi : java.security.KeyStoreSpi() {
    override fun engineGetKey(alias: String, password: CharArray?): Key? = HostKeystore.keys[alias]
    override fun engineGetCertificateChain(alias: String): Array<Certificate>? = null
    override fun engineGetCertificate(alias: String): Certificate? = null
    override fun engineGetCreationDate(alias: String): Date? = null
    override fun engineSetKeyEntry(alias: String, key: Key, password: CharArray?, chain: Array<out Certificate>?) =
        throw KeyStoreException("import a key with KeyProtection, not by setKeyEntry (not used by the shim)")
    override fun engineSetKeyEntry(alias: String, key: ByteArray, chain: Array<out Certificate>?) =
        throw KeyStoreException("not supported")
    override fun engineSetCertificateEntry(alias: String, cert: Certificate) = throw KeyStoreException("not supported")
    override fun engineDeleteEntry(alias: String) { HostKeystore.keys.remove(alias) }
    override fun engineAliases(): Enumeration<String> = Collections.enumeration(HostKeystore.keys.keys.toList())
    override fun engineContainsAlias(alias: String) = HostKeystore.keys.containsKey(alias)
    override fun engineSize() = HostKeystore.keys.size
    override fun engineIsKeyEntry(alias: String) = HostKeystore.keys.containsKey(alias)
    override fun engineIsCertificateEntry(alias: String) = false
    override fun engineGetCertificateAlias(cert: Certificate): String? = null
    override fun engineStore(stream: OutputStream?, password: CharArray?) = throw UnsupportedOperationException()
    override fun engineLoad(stream: InputStream?, password: CharArray?) {
        require(stream == null) { "the Android Keystore is loaded with load(null)" }
    }
}

class HostAesKeyGeneratorSpi : KeyGeneratorSpi() {
    private var spec: KeyGenParameterSpec? = null

    // [SPI]: only a KeyGenParameterSpec initializes it.
    override fun engineInit(random: SecureRandom?) =
        throw UnsupportedOperationException("Cannot initialize without a KeyGenParameterSpec parameter")
    override fun engineInit(keysize: Int, random: SecureRandom?) =
        throw UnsupportedOperationException("Cannot initialize without a KeyGenParameterSpec parameter")
    override fun engineInit(params: AlgorithmParameterSpec?, random: SecureRandom?) {
        val s = params as? KeyGenParameterSpec
            ?: throw InvalidAlgorithmParameterException("Cannot initialize without a KeyGenParameterSpec parameter")
        if (s.keySize !in listOf(-1, 128, 192, 256)) throw InvalidAlgorithmParameterException("AES key size ${s.keySize}")
        if (s.purposes == 0) throw InvalidAlgorithmParameterException("no purposes")
        spec = s
    }
    override fun engineGenerateKey(): SecretKey {
        val s = spec ?: throw IllegalStateException("Not initialized")
        val bits = if (s.keySize == -1) 128 else s.keySize
        val key = HostKeystoreKey(s, ByteArray(bits / 8).also { SecureRandom().nextBytes(it) })
        HostKeystore.keys[s.keystoreAlias] = key
        return key
    }
}

class HostAesGcmCipherSpi : CipherSpi() {
    private var inner: Cipher? = null

    override fun engineSetMode(mode: String) { if (!mode.equals("GCM", true)) throw NoSuchAlgorithmException(mode) }
    override fun engineSetPadding(padding: String) { if (!padding.equals("NoPadding", true)) throw NoSuchPaddingException(padding) }
    override fun engineGetBlockSize() = 16
    override fun engineGetOutputSize(inputLen: Int) = inner?.getOutputSize(inputLen) ?: (inputLen + 16)
    override fun engineGetIV(): ByteArray? = inner?.iv
    override fun engineGetParameters(): AlgorithmParameters? = inner?.parameters

    private fun checkKey(opmode: Int, key: Key?): HostKeystoreKey {
        // Any other key: refuse, so JCA's delayed provider selection goes on to the next provider.
        val k = key as? HostKeystoreKey ?: throw InvalidKeyException("not an Android Keystore key")
        val need = if (opmode == Cipher.ENCRYPT_MODE || opmode == Cipher.WRAP_MODE) KeyProperties.PURPOSE_ENCRYPT else KeyProperties.PURPOSE_DECRYPT
        if (k.spec.purposes and need == 0) throw InvalidKeyException("Incompatible purpose") // [BM]
        if (KeyProperties.BLOCK_MODE_GCM !in k.spec.blockModes) throw InvalidKeyException("Incompatible block mode: GCM") // [BM]
        if (KeyProperties.ENCRYPTION_PADDING_NONE !in k.spec.encryptionPaddings) throw InvalidKeyException("Incompatible padding: NoPadding") // [BM]
        if (HostKeystore.deviceLocked && (k.spec.isUnlockedDeviceRequired || k.spec.isUserAuthenticationRequired)) {
            throw UserNotAuthenticatedException("the key needs an unlocked device / an authenticated user") // [UDR]
        }
        return k
    }

    private fun start(opmode: Int, k: HostKeystoreKey, spec: GCMParameterSpec?) {
        val c = Cipher.getInstance("AES/GCM/NoPadding", "SunJCE")
        val raw = SecretKeySpec(k.material, "AES")
        if (spec == null) c.init(opmode, raw) else c.init(opmode, raw, spec)
        inner = c
    }

    override fun engineInit(opmode: Int, key: Key?, random: SecureRandom?) {
        val k = checkKey(opmode, key)
        if (opmode == Cipher.DECRYPT_MODE || opmode == Cipher.UNWRAP_MODE) {
            throw InvalidKeyException("IV required when decrypting. Use IvParameterSpec or AlgorithmParameters to provide it.") // [SPI]
        }
        start(opmode, k, GCMParameterSpec(128, ByteArray(12).also { SecureRandom().nextBytes(it) })) // [SPI]
    }

    override fun engineInit(opmode: Int, key: Key?, params: AlgorithmParameterSpec?, random: SecureRandom?) {
        val k = checkKey(opmode, key)
        val encrypting = opmode == Cipher.ENCRYPT_MODE || opmode == Cipher.WRAP_MODE
        if (params == null) return engineInit(opmode, key, random)
        if (encrypting && k.spec.isRandomizedEncryptionRequired) {
            throw InvalidAlgorithmParameterException("Caller-provided IV not permitted") // [RER]
        }
        val gcm = params as? GCMParameterSpec ?: throw InvalidAlgorithmParameterException("GCMParameterSpec required")
        if (gcm.tLen !in 96..128 || gcm.tLen % 8 != 0) throw InvalidAlgorithmParameterException("tag length ${gcm.tLen}")
        start(opmode, k, gcm)
    }

    override fun engineInit(opmode: Int, key: Key?, params: AlgorithmParameters?, random: SecureRandom?) =
        engineInit(opmode, key, params?.getParameterSpec(GCMParameterSpec::class.java), random)

    private fun c() = inner ?: throw IllegalStateException("Cipher not initialized")
    override fun engineUpdate(input: ByteArray, off: Int, len: Int): ByteArray? = c().update(input, off, len)
    override fun engineUpdate(input: ByteArray, off: Int, len: Int, output: ByteArray, outOff: Int) = c().update(input, off, len, output, outOff)
    override fun engineDoFinal(input: ByteArray?, off: Int, len: Int): ByteArray =
        if (input == null) c().doFinal() else c().doFinal(input, off, len)
    override fun engineDoFinal(input: ByteArray?, off: Int, len: Int, output: ByteArray, outOff: Int) =
        c().doFinal(input ?: ByteArray(0), off, len, output, outOff)
}
