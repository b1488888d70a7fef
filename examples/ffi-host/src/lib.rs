tauri_plugin_background_sync::export_native_entries!();
