//! `bgsync-reference-server`: the reference backend as a process (demo, crash and native tests).

use bgsync_reference_server::{AuthSetup, FaultConfig, ServerConfig};
use clap::Parser;
use std::io::Write;

#[derive(Parser)]
#[command(about = "Reference server for the tauri-plugin-background-sync HTTP contract (127.0.0.1 only)")]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 8787)]
    port: u16,
    /// SQLite file (default: in memory).
    #[arg(long)]
    db: Option<std::path::PathBuf>,
    /// Full fault configuration as JSON (see FaultConfig).
    #[arg(long)]
    faults: Option<String>,
    #[arg(long)]
    error_rate: Option<f64>,
    #[arg(long)]
    delay_ms: Option<u64>,
    #[arg(long)]
    drop_rate: Option<f64>,
    #[arg(long)]
    commit_then_drop_rate: Option<f64>,
    #[arg(long)]
    retry_after_secs: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Require this bearer token (enables auth).
    #[arg(long)]
    auth_token: Option<String>,
    /// Refresh token accepted at POST /auth/refresh.
    #[arg(long, default_value = "refresh-me")]
    refresh_token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut faults: FaultConfig = match &a.faults {
        Some(j) => serde_json::from_str(j)?,
        None => FaultConfig::default(),
    };
    faults.error_rate = a.error_rate.unwrap_or(faults.error_rate);
    faults.delay_ms = a.delay_ms.unwrap_or(faults.delay_ms);
    faults.drop_rate = a.drop_rate.unwrap_or(faults.drop_rate);
    faults.commit_then_drop_rate = a.commit_then_drop_rate.unwrap_or(faults.commit_then_drop_rate);
    faults.retry_after_secs = a.retry_after_secs.or(faults.retry_after_secs);
    faults.seed = a.seed.unwrap_or(faults.seed);
    let auth = a.auth_token.map(|t| AuthSetup {
        access_tokens: vec![t],
        refresh_token: a.refresh_token,
        ..Default::default()
    });
    let server = bgsync_reference_server::spawn(ServerConfig {
        db_path: a.db,
        faults,
        auth,
        port: a.port,
        tls: None,
        http2: false,
        storage_port: 0,
    })
    .await?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", server.base_url)?;
    writeln!(out, "storage origin {}", server.storage_url)?;
    out.flush()?;
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
