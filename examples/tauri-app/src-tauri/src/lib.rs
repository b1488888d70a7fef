//! Field-visit example: a Tauri app that queues visits (and photos) offline and delivers them
//! with tauri-plugin-background-sync to the reference server, which runs inside the app so
//! the example needs no setup. A "server online" switch stops and restarts it on the same port.
//!
//! Env: BGSYNC_EXAMPLE_PORT (API port, default: any free port), BGSYNC_EXAMPLE_DATA (directory
//! for the outbox and the server database, default: the app data directory),
//! BGSYNC_EXAMPLE_START_OFFLINE=1 (start with the server stopped).
//! At build time, BGSYNC_EXAMPLE_EXTERNAL_API (see `EXTERNAL_API`).

// The C ABI / JNI entries the OS background hooks call, expanded here so the final library
// keeps them (see the plugin's README, "Background execution").
tauri_plugin_background_sync::export_native_entries!();

use bgsync_reference_server::{RunningServer, ServerConfig};
use serde::Serialize;
use std::path::PathBuf;
use tauri::{Manager, State};
use tauri_plugin_background_sync::BackgroundSyncExt;
use tokio::sync::Mutex;

/// Set at build time (`BGSYNC_EXAMPLE_EXTERNAL_API=http://10.0.2.2:8787`, the mobile
/// workflow's emulator check): the app uses that server instead of its embedded one, leaves
/// sending to the OS's background work (`autoSync: false`, background sync on) and queues one
/// visit at start, so the workflow can see a WorkManager run in a process without the app
/// deliver it. A phone's apps have no environment at run time, hence a build-time constant.
const EXTERNAL_API: Option<&str> = option_env!("BGSYNC_EXAMPLE_EXTERNAL_API");

/// The external-API mode of `EXTERNAL_API`.
async fn use_external_api(app: &tauri::AppHandle, api: &str) -> Result<(), String> {
    let sync = app.background_sync();
    sync.configure(serde_json::json!({ "baseUrl": api, "allowInsecureHttp": true, "autoSync": false }))
        .await
        .map_err(|e| e.to_string())?;
    sync.enqueue_many(vec![tauri_plugin_background_sync::NewMutation {
        method: "PUT".into(),
        path: "/visits/emulator-smoke".into(),
        body: Some(serde_json::json!({ "site": "Emulator smoke test" })),
        headers: Default::default(),
        priority: tauri_plugin_background_sync::Priority::High,
        entity: tauri_plugin_background_sync::EntityRef {
            kind: "visit".into(),
            id: "emulator-smoke".into(),
        },
        temp_id: None,
        // The same key at every start: queued once.
        idempotency_key: Some("emulator-smoke".into()),
        coalesce: None,
    }])
    .await
    .map_err(|e| e.to_string())?;
    sync.enable().await.map_err(|e| e.to_string())
}

struct Server {
    running: Mutex<Option<RunningServer>>,
    port: Mutex<u16>,
    /// Kept across restarts like `port`: a drain that starts the moment the server is back
    /// must get signed URLs on the storage origin the plugin was configured with (a new one
    /// is refused as not allowed, and the upload dead-lettered: the e2e test saw it).
    storage_port: Mutex<u16>,
    db: PathBuf,
    photos: PathBuf,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerInfo {
    online: bool,
    api_url: String,
    storage_url: Option<String>,
}

impl Server {
    async fn start(&self) -> Result<String, String> {
        let mut running = self.running.lock().await;
        if let Some(s) = running.as_ref() {
            return Ok(s.base_url.clone());
        }
        let mut port = self.port.lock().await;
        let mut storage_port = self.storage_port.lock().await;
        let s = bgsync_reference_server::spawn(ServerConfig {
            db_path: Some(self.db.clone()),
            port: *port,
            storage_port: *storage_port,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot start the reference server: {e}"))?;
        *port = s.addr.port();
        *storage_port = url_port(&s.storage_url).unwrap_or(0);
        let url = s.base_url.clone();
        *running = Some(s);
        Ok(url)
    }

    async fn stop(&self) {
        if let Some(s) = self.running.lock().await.take() {
            s.shutdown().await;
        }
    }

    async fn info(&self) -> ServerInfo {
        let running = self.running.lock().await;
        ServerInfo {
            online: running.is_some(),
            api_url: format!("http://127.0.0.1:{}", *self.port.lock().await),
            storage_url: running.as_ref().map(|s| s.storage_url.clone()),
        }
    }
}

/// The port of `http://127.0.0.1:PORT`.
fn url_port(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// The "server online" switch: the API really goes away (connections refused), as in a dead zone.
#[tauri::command]
async fn set_server_online(
    app: tauri::AppHandle,
    server: State<'_, Server>,
    online: bool,
) -> Result<ServerInfo, String> {
    if online {
        server.start().await?;
        configure(&app, &server).await?;
        // Back online: try at once (the plugin's reconnect detection covers real interfaces).
        app.background_sync().scheduler().wake();
    } else {
        server.stop().await;
    }
    Ok(server.info().await)
}

#[tauri::command]
async fn server_info(server: State<'_, Server>) -> Result<ServerInfo, String> {
    Ok(server.info().await)
}

/// A photo from the webview (bytes) saved into the app's directory, so `enqueueUpload` may
/// take it (the plugin only accepts files from the app's own directories).
#[tauri::command]
async fn save_photo(server: State<'_, Server>, name: String, bytes: Vec<u8>) -> Result<String, String> {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    std::fs::create_dir_all(&server.photos).map_err(|e| e.to_string())?;
    let path = server
        .photos
        .join(if safe.is_empty() { "photo.jpg".into() } else { safe });
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    Ok(path.to_string_lossy().into_owned())
}

/// Point the plugin at the embedded server (its storage origin is on another port).
async fn configure(app: &tauri::AppHandle, server: &Server) -> Result<(), String> {
    let info = server.info().await;
    let mut patch = serde_json::json!({ "baseUrl": info.api_url });
    if let Some(storage) = info.storage_url {
        patch["uploads"] = serde_json::json!({ "storageOrigins": [storage], "allowedDirs": [server.photos] });
    }
    app.background_sync()
        .configure(patch)
        .await
        .map_err(|e| e.to_string())
}

/// Builds and runs the app (desktop `main`, and the mobile entry point).
#[cfg_attr(mobile, tauri::mobile_entry_point)]
pub fn run() {
    let mut context = tauri::generate_context!();
    let data = std::env::var_os("BGSYNC_EXAMPLE_DATA").map(PathBuf::from);
    if let Some(dir) = &data {
        std::fs::create_dir_all(dir).expect("BGSYNC_EXAMPLE_DATA is writable");
        let plugins = &mut context.config_mut().plugins.0;
        let conf = plugins
            .entry("background-sync".into())
            .or_insert_with(|| serde_json::json!({}));
        conf["database"] = serde_json::json!(dir.join("outbox.db"));
    }
    tauri::Builder::default()
        .plugin(tauri_plugin_background_sync::init())
        .invoke_handler(tauri::generate_handler![
            set_server_online,
            server_info,
            save_photo
        ])
        .setup(move |app| {
            let dir = match &data {
                Some(d) => d.clone(),
                None => app.path().app_data_dir()?,
            };
            std::fs::create_dir_all(&dir)?;
            let port = std::env::var("BGSYNC_EXAMPLE_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let server = Server {
                running: Mutex::new(None),
                port: Mutex::new(port),
                storage_port: Mutex::new(0),
                db: dir.join("reference-server.db"),
                photos: dir.join("photos"),
            };
            let offline = std::env::var("BGSYNC_EXAMPLE_START_OFFLINE").is_ok_and(|v| v == "1");
            let handle = app.handle().clone();
            tauri::async_runtime::block_on(async {
                if let Some(api) = EXTERNAL_API {
                    return use_external_api(&handle, api).await;
                }
                // Start once even when starting offline: the port is then fixed for the restart.
                server.start().await?;
                configure(&handle, &server).await?;
                if offline {
                    server.stop().await;
                }
                Ok::<_, String>(())
            })?;
            match EXTERNAL_API {
                Some(api) => println!("example API (external, built in) on {api}"),
                None => println!(
                    "example API on {}",
                    tauri::async_runtime::block_on(server.info()).api_url
                ),
            }
            app.manage(server);
            Ok(())
        })
        .run(context)
        .expect("error while running the example app");
}
