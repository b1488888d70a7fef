// Stands in for the BuildConfig class Gradle generates for Tauri's Android library module.
package app.tauri

object BuildConfig {
    const val DEBUG: Boolean = true
}
