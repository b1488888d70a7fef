// Compile-only stubs: androidx.core.app.ActivityCompat (static helpers) and the
// androidx.core.content SharedPreferences.edit extension (core-ktx).
// Mirrors:
//   https://developer.android.com/reference/androidx/core/app/ActivityCompat
@file:Suppress("unused", "UNUSED_PARAMETER")

package androidx.core.app

import android.app.Activity
import android.content.Context

open class ActivityCompat protected constructor() {
    companion object {
        @JvmStatic
        fun checkSelfPermission(context: Context, permission: String): Int = throw UnsupportedOperationException()
        @JvmStatic
        fun shouldShowRequestPermissionRationale(activity: Activity, permission: String): Boolean =
            throw UnsupportedOperationException()
    }
}
