package app.tauri.backgroundsync

import android.content.Context

/** The register arguments, persisted for workers that start in a cold process. */
object Prefs {
    private const val FILE = "app.tauri.backgroundsync"

    fun save(ctx: Context, a: RegisterArgs) {
        ctx.getSharedPreferences(FILE, Context.MODE_PRIVATE).edit()
            .putString("dbPath", a.dbPath)
            .putString("libraryName", a.libraryName)
            .putInt("intervalMinutes", a.intervalMinutes)
            .putBoolean("requiresNetwork", a.requiresNetwork)
            .putBoolean("requiresCharging", a.requiresCharging)
            .putBoolean("requiresBatteryNotLow", a.requiresBatteryNotLow)
            .putLong("budgetMs", a.budgetMs)
            .apply()
    }

    fun load(ctx: Context): RegisterArgs? {
        val p = ctx.getSharedPreferences(FILE, Context.MODE_PRIVATE)
        val db = p.getString("dbPath", null) ?: return null
        return RegisterArgs(
            dbPath = db,
            libraryName = p.getString("libraryName", null),
            intervalMinutes = p.getInt("intervalMinutes", 15),
            requiresNetwork = p.getBoolean("requiresNetwork", true),
            requiresCharging = p.getBoolean("requiresCharging", false),
            requiresBatteryNotLow = p.getBoolean("requiresBatteryNotLow", true),
            budgetMs = p.getLong("budgetMs", 25_000L),
            runNow = false,
        )
    }

    /** A worker that could not run records why (the foreground can read it with [lastFailure]). */
    fun recordFailure(ctx: Context, message: String) {
        ctx.getSharedPreferences(FILE, Context.MODE_PRIVATE).edit()
            .putString("lastFailure", message)
            .putLong("lastFailureAt", System.currentTimeMillis())
            .apply()
    }

    fun lastFailure(ctx: Context): String? =
        ctx.getSharedPreferences(FILE, Context.MODE_PRIVATE).getString("lastFailure", null)

    /** A worker that did run: the failure recorded before is over. */
    fun clearFailure(ctx: Context) {
        ctx.getSharedPreferences(FILE, Context.MODE_PRIVATE).edit()
            .remove("lastFailure")
            .remove("lastFailureAt")
            .apply()
    }
}
