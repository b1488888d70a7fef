// Compile-only stubs: androidx.activity.result (+ .contract). Signatures from
// developer.android.com/reference/androidx/activity/result.
// Mirrors:
//   https://developer.android.com/reference/androidx/activity/result/ActivityResult
//   https://developer.android.com/reference/androidx/activity/result/ActivityResultCallback
//   https://developer.android.com/reference/androidx/activity/result/ActivityResultLauncher
//   https://developer.android.com/reference/androidx/activity/result/IntentSenderRequest
@file:Suppress("unused", "UNUSED_PARAMETER")

package androidx.activity.result

import android.content.Intent
import android.content.IntentSender

class ActivityResult(val resultCode: Int, val data: Intent?)

fun interface ActivityResultCallback<O> {
    fun onActivityResult(result: O)
}

abstract class ActivityResultLauncher<I> {
    fun launch(input: I) {}
    abstract fun unregister()
}

class IntentSenderRequest private constructor(val intentSender: IntentSender) {
    class Builder(private val intentSender: IntentSender) {
        fun build(): IntentSenderRequest = IntentSenderRequest(intentSender)
    }
}
