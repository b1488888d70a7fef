// Compile-only stubs: androidx.appcompat.app.AppCompatActivity (a ComponentActivity through
// FragmentActivity in the real library).
@file:Suppress("unused")

package androidx.appcompat.app

open class AppCompatActivity : androidx.activity.ComponentActivity()
