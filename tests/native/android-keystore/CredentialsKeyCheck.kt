// Runs the shim's CredentialsKey (android/.../CredentialsKey.kt, unchanged) on the host JVM
// against the rule-enforcing Keystore stand-in (HostAndroidKeyStore.kt), and checks the
// stand-in itself refuses what a device refuses.
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import app.tauri.backgroundsync.CredentialsKey
import app.tauri.backgroundsync.WrappedKeyStore
import hostkeystore.HostKeystore
import java.security.InvalidAlgorithmParameterException
import java.security.KeyStore
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.spec.GCMParameterSpec

private var passed = 0
private var failed = 0
private fun check(name: String, ok: Boolean, detail: String = "") {
    if (ok) { passed++; println("ok   $name") } else { failed++; println("FAIL $name $detail") }
}
private inline fun throwsOf(block: () -> Unit): Throwable? = try { block(); null } catch (t: Throwable) { t }

class MemoryStore : WrappedKeyStore {
    var bytes: ByteArray? = null
    override fun read() = bytes?.copyOf()
    override fun write(bytes: ByteArray) { this.bytes = bytes.copyOf() }
}

private fun ByteArray.contains(needle: ByteArray) =
    (0..size - needle.size).any { i -> needle.indices.all { this[i + it] == needle[it] } }

fun main() {
    HostKeystore.install()
    val store = MemoryStore()

    val k1 = CredentialsKey.obtain(store)
    check("first start makes a 32-byte key", k1.size == 32)
    check("one Keystore key, under the shim's alias", HostKeystore.keys.keys == setOf(CredentialsKey.ALIAS), HostKeystore.keys.keys.toString())
    check("only the wrapped form is stored", store.bytes != null && !store.bytes!!.contains(k1))
    check("the next process gets the same key", CredentialsKey.obtain(store).contentEquals(k1))

    HostKeystore.deviceLocked = true
    val locked = runCatching { CredentialsKey.obtain(store) }
    check("a worker on a locked phone gets the key", locked.getOrNull()?.contentEquals(k1) == true, locked.exceptionOrNull().toString())
    HostKeystore.deviceLocked = false

    val saved = store.bytes!!.copyOf()
    store.bytes!![store.bytes!!.size - 1] = (store.bytes!![store.bytes!!.size - 1].toInt() xor 1).toByte()
    val afterDamage = runCatching { CredentialsKey.obtain(store) }
    check("a damaged wrapped key is replaced, not thrown", afterDamage.getOrNull()?.let { it.size == 32 && !it.contentEquals(k1) } == true,
        afterDamage.exceptionOrNull().toString())
    store.bytes = saved

    HostKeystore.keys.clear() // app data restored onto another phone: the Keystore key stayed behind
    val restored = runCatching { CredentialsKey.obtain(store) }
    check("a restore without the Keystore key gets a new key", restored.getOrNull()?.let { it.size == 32 && !it.contentEquals(k1) } == true,
        restored.exceptionOrNull().toString())
    check("which the next process finds", restored.getOrNull()?.let { CredentialsKey.obtain(store).contentEquals(it) } == true)

    // The stand-in refuses what a device refuses (else the checks above would prove little).
    val ks = KeyStore.getInstance("AndroidKeyStore").apply { load(null) }
    val key = ks.getKey(CredentialsKey.ALIAS, null) as javax.crypto.SecretKey
    check("rule: key material is not exportable", key.encoded == null)
    check("rule: a caller-provided IV is refused when encrypting",
        throwsOf { Cipher.getInstance("AES/GCM/NoPadding").init(Cipher.ENCRYPT_MODE, key, GCMParameterSpec(128, ByteArray(12))) } is InvalidAlgorithmParameterException)
    check("rule: decrypting needs the IV", throwsOf { Cipher.getInstance("AES/GCM/NoPadding").init(Cipher.DECRYPT_MODE, key) } != null)
    check("rule: another block mode is refused", throwsOf { Cipher.getInstance("AES/CBC/PKCS5Padding").init(Cipher.ENCRYPT_MODE, key) } != null)
    check("rule: a KeyGenerator needs a KeyGenParameterSpec",
        throwsOf { KeyGenerator.getInstance("AES", "AndroidKeyStore").init(256) } != null)
    check("rule: KeyStore used before load(null) is refused",
        throwsOf { KeyStore.getInstance("AndroidKeyStore").getKey("x", null) } != null)
    val gen = KeyGenerator.getInstance("AES", "AndroidKeyStore")
    gen.init(KeyGenParameterSpec.Builder("auth-bound", KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
        .setBlockModes(KeyProperties.BLOCK_MODE_GCM).setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
        .setKeySize(256).setUnlockedDeviceRequired(true).build())
    val bound = gen.generateKey()
    HostKeystore.deviceLocked = true
    check("rule: an unlocked-device key is refused while locked",
        throwsOf { Cipher.getInstance("AES/GCM/NoPadding").init(Cipher.ENCRYPT_MODE, bound) } is android.security.keystore.UserNotAuthenticatedException)
    HostKeystore.deviceLocked = false

    println("credentials key (Android Keystore rules): $passed passed, $failed failed")
    if (failed > 0) kotlin.system.exitProcess(1)
}
