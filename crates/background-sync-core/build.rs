fn main() {
    // sqlx::migrate! embeds migrations/ at compile time; without this a new migration file
    // can be missed by an incremental build (sqlx's documented advice).
    println!("cargo:rerun-if-changed=migrations");
}
