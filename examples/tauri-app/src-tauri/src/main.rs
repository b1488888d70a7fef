// Desktop entry point; the app itself is in lib.rs (shared with the mobile entry point).
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    bgsync_example_app_lib::run()
}
