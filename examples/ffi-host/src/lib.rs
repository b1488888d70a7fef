background_sync_core::export_native_entries!();
