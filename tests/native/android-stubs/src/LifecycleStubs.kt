// Compile-only stub: androidx.lifecycle.LifecycleOwner (what OnBackPressedDispatcher.addCallback takes).
// Signatures follow developer.android.com/reference/androidx; bodies never run.
// Mirrors:
//   https://developer.android.com/reference/androidx/lifecycle/LifecycleOwner
@file:Suppress("unused", "UNUSED_PARAMETER")

package androidx.lifecycle

interface LifecycleOwner
