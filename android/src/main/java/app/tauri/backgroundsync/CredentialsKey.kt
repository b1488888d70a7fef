package app.tauri.backgroundsync

import android.content.Context
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import android.util.Log
import java.io.File
import java.security.GeneralSecurityException
import java.security.KeyStore
import java.security.SecureRandom
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/** Where the wrapped key is kept between processes. */
interface WrappedKeyStore {
    fun read(): ByteArray?
    fun write(bytes: ByteArray)
}

/** A file in `noBackupFilesDir`: a backup restored on another device must not bring a wrapped
 *  key whose Keystore key stayed behind. Written to a temporary file, then renamed. */
class WrappedKeyFile(private val file: File) : WrappedKeyStore {
    override fun read(): ByteArray? = if (file.isFile) file.readBytes() else null
    override fun write(bytes: ByteArray) {
        val tmp = File(file.parentFile, file.name + ".tmp")
        tmp.writeBytes(bytes)
        if (!tmp.renameTo(file)) throw java.io.IOException("cannot rename $tmp to $file")
    }
}

/**
 * The 32-byte key that seals the stored credentials (README "Credentials at rest"). Made at
 * random once and kept only wrapped: encrypted under an AES-256-GCM key that lives in the
 * Android Keystore and never leaves it. Handed to Rust once per process, by the plugin's
 * constructor (before Rust opens the database) and by the worker (before it drains).
 *
 * The Keystore key asks for no user authentication and no unlocked device: WorkManager runs
 * the worker while the phone is locked in a pocket.
 */
object CredentialsKey {
    const val ALIAS = "app.tauri.backgroundsync.credentials"
    const val KEYSTORE = "AndroidKeyStore"
    private const val TRANSFORMATION = "AES/GCM/NoPadding"
    private const val VERSION: Byte = 1
    private const val TAG_BITS = 128
    private const val TAG = "BackgroundSync"

    /**
     * The key: unwrapped if one was made before; otherwise made, wrapped and stored. A wrapped
     * key that no longer unwraps (its Keystore key is gone: app data restored onto another
     * device, or the Keystore was reset) is replaced; credentials sealed with the old one cannot
     * be read, so the drain stops with `authFailed` until the app signs in again.
     */
    fun obtain(store: WrappedKeyStore, provider: String = KEYSTORE): ByteArray {
        val keystore = KeyStore.getInstance(provider).apply { load(null) }
        val wrapping = keystore.getKey(ALIAS, null) as? SecretKey
        val wrapped = store.read()
        if (wrapping != null && wrapped != null) {
            unwrap(wrapping, wrapped)?.let { return it }
        }
        val key = wrapping ?: newWrappingKey(provider)
        val data = ByteArray(32).also { SecureRandom().nextBytes(it) }
        store.write(wrap(key, data))
        return data
    }

    private fun newWrappingKey(provider: String): SecretKey {
        val gen = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, provider)
        gen.init(
            KeyGenParameterSpec.Builder(ALIAS, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .build()
        )
        return gen.generateKey()
    }

    /** `[version][iv length][iv][ciphertext+tag]`. The Keystore picks the IV (it refuses one
     *  from the caller for a key that requires randomized encryption, the default). */
    private fun wrap(key: SecretKey, data: ByteArray): ByteArray {
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.ENCRYPT_MODE, key)
        val iv = cipher.iv
        val sealed = cipher.doFinal(data)
        return byteArrayOf(VERSION, iv.size.toByte()) + iv + sealed
    }

    private fun unwrap(key: SecretKey, wrapped: ByteArray): ByteArray? {
        if (wrapped.size < 2 || wrapped[0] != VERSION) return null
        val ivLen = wrapped[1].toInt()
        if (ivLen <= 0 || wrapped.size < 2 + ivLen + TAG_BITS / 8) return null
        return try {
            val cipher = Cipher.getInstance(TRANSFORMATION)
            cipher.init(Cipher.DECRYPT_MODE, key, GCMParameterSpec(TAG_BITS, wrapped, 2, ivLen))
            cipher.doFinal(wrapped, 2 + ivLen, wrapped.size - 2 - ivLen).takeIf { it.size == 32 }
        } catch (e: GeneralSecurityException) {
            Log.w(TAG, "the wrapped credentials key does not unwrap; making a new one", e)
            null
        }
    }

    /** Obtain the key and give it to Rust; false (logged) when the Keystore cannot be used:
     *  Rust then keeps the credentials in memory only. */
    fun handOver(ctx: Context): Boolean {
        val key = try {
            obtain(WrappedKeyFile(File(ctx.noBackupFilesDir, "app.tauri.backgroundsync.key")))
        } catch (e: Exception) {
            Log.e(TAG, "cannot use the Android Keystore: credentials stay in memory only", e)
            return false
        }
        return try {
            val answer = NativeBridge.setSecretKey(key)
            if (!answer.contains("\"ok\":true")) Log.e(TAG, "setSecretKey: $answer")
            answer.contains("\"ok\":true")
        } catch (e: UnsatisfiedLinkError) {
            Log.e(TAG, "the app's library lacks export_native_entries!(): credentials stay in memory only", e)
            false
        } finally {
            key.fill(0)
        }
    }
}
