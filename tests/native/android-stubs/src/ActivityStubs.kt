// Compile-only stubs: androidx.activity (ComponentActivity, OnBackPressedCallback,
// OnBackPressedDispatcher). Signatures from developer.android.com/reference/androidx/activity.
// Mirrors:
//   https://developer.android.com/reference/androidx/activity/ComponentActivity
//   https://developer.android.com/reference/androidx/activity/OnBackPressedCallback
//   https://developer.android.com/reference/androidx/activity/OnBackPressedDispatcher
@file:Suppress("unused", "UNUSED_PARAMETER")

package androidx.activity

import androidx.activity.result.ActivityResultCallback
import androidx.activity.result.ActivityResultLauncher
import androidx.activity.result.contract.ActivityResultContract
import androidx.lifecycle.LifecycleOwner

open class ComponentActivity : android.app.Activity(), LifecycleOwner {
    val onBackPressedDispatcher: OnBackPressedDispatcher get() = throw UnsupportedOperationException()
    fun <I, O> registerForActivityResult(
        contract: ActivityResultContract<I, O>,
        callback: ActivityResultCallback<O>,
    ): ActivityResultLauncher<I> = throw UnsupportedOperationException()
}

abstract class OnBackPressedCallback(enabled: Boolean) {
    var isEnabled: Boolean = enabled
    abstract fun handleOnBackPressed()
    fun remove() {}
}

class OnBackPressedDispatcher {
    fun addCallback(owner: LifecycleOwner, onBackPressedCallback: OnBackPressedCallback) {}
    fun addCallback(onBackPressedCallback: OnBackPressedCallback) {}
}
