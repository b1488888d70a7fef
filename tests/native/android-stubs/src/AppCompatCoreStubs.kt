// Compile-only stubs: androidx.appcompat.app.AppCompatActivity (a ComponentActivity through
// FragmentActivity in the real library).
// Mirrors:
//   https://developer.android.com/reference/androidx/appcompat/app/AppCompatActivity
@file:Suppress("unused")

package androidx.appcompat.app

open class AppCompatActivity : androidx.activity.ComponentActivity()
