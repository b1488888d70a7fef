// Compile-only stub: androidx.lifecycle.LifecycleOwner (what OnBackPressedDispatcher.addCallback takes).
// Signatures follow developer.android.com/reference/androidx; bodies never run.
@file:Suppress("unused", "UNUSED_PARAMETER")

package androidx.lifecycle

interface LifecycleOwner
