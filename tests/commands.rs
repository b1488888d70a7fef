//! The IPC surface with Tauri's MockRuntime: commands through the real invoke path, the
//! permission system (granted and denied), errors serialized as `{ kind, message }`, and the
//! shipped default permission set.

use serde_json::{json, Value};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, mock_context, noop_assets, INVOKE_KEY};
use tauri::utils::acl::ExecutionContext;
use tauri::webview::InvokeRequest;
use tauri::WebviewWindowBuilder;

/// Every command, read from build.rs's COMMANDS (the list permissions are generated from).
fn all_commands() -> Vec<String> {
    let build = include_str!("../build.rs");
    let list = &build[build.find("COMMANDS").unwrap()..];
    let list = &list[..list.find("];").unwrap()];
    list.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

/// The plugin as `init()` builds it, with a fixed credentials key instead of the OS keyring's:
/// the suite must not add an entry to a developer's own keyring per test database (the keyring
/// path is tested by `desktop_credentials_key_lives_in_the_os_keyring`).
fn test_builder() -> tauri_plugin_background_sync::Builder {
    tauri_plugin_background_sync::Builder::new().credentials(
        tauri_plugin_background_sync::CredentialStorage::Sealed(
            tauri_plugin_background_sync::SecretKey::from_bytes([9; 32]),
        ),
    )
}

fn test_plugin<R: tauri::Runtime>(
) -> tauri::plugin::TauriPlugin<R, Option<tauri_plugin_background_sync::PluginConfig>> {
    test_builder().build()
}

fn app<S: AsRef<str>>(
    dir: &tempfile::TempDir,
    base_url: &str,
    allowed: &[S],
) -> tauri::App<tauri::test::MockRuntime> {
    app_with(dir.path(), base_url, allowed, test_plugin())
}

/// `app` with the plugin built by the caller (the keyring test needs `init()` as shipped).
fn app_with<S: AsRef<str>>(
    dir: &std::path::Path,
    base_url: &str,
    allowed: &[S],
    plugin: tauri::plugin::TauriPlugin<
        tauri::test::MockRuntime,
        Option<tauri_plugin_background_sync::PluginConfig>,
    >,
) -> tauri::App<tauri::test::MockRuntime> {
    let mut ctx = mock_context(noop_assets());
    ctx.config_mut().plugins.0.insert(
        "background-sync".into(),
        json!({ "database": dir.join("ipc.db"), "baseUrl": base_url }),
    );
    for c in allowed {
        ctx.runtime_authority_mut().__allow_command(
            format!("plugin:background-sync|{}", c.as_ref()),
            ExecutionContext::Local,
        );
    }
    mock_builder().plugin(plugin).build(ctx).expect("app builds")
}

fn invoke(
    w: &tauri::WebviewWindow<tauri::test::MockRuntime>,
    cmd: &str,
    args: Value,
) -> Result<Value, Value> {
    get_ipc_response(
        w,
        InvokeRequest {
            cmd: format!("plugin:background-sync|{cmd}"),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap())
}

#[test]
fn enqueue_then_status_through_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, "http://127.0.0.1:9", &all_commands());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    assert_eq!(
        invoke(&w, "is_enabled", json!({})).unwrap(),
        json!(false),
        "off by default, as in the seeds"
    );
    let r = invoke(
        &w,
        "enqueue",
        json!({ "mutation": { "method": "POST", "path": "/visits", "body": {"site": "A"},
                              "entity": {"kind": "visit", "id": "tmp-1"}, "tempId": "tmp-1", "priority": "high" } }),
    )
    .unwrap();
    assert!(r["id"].is_string() && r["idempotencyKey"].is_string(), "{r}");
    let st = invoke(&w, "status", json!({})).unwrap();
    // autoSync may have the row in flight to the (down) server at this instant.
    let open = |st: &Value| st["pending"].as_u64().unwrap() + st["inFlight"].as_u64().unwrap();
    assert_eq!(open(&st), 1, "{st}");
    assert_eq!(st["configured"], true);
    let p = invoke(&w, "pending", json!({ "limit": 10 })).unwrap();
    assert_eq!(p[0]["priority"], "high");
    assert_eq!(p[0]["tempId"], "tmp-1");
    // "Not synced yet" for one entity (the JS argument name `entity`).
    let mine = json!({ "entity": {"kind": "visit", "id": "tmp-1"} });
    assert_eq!(invoke(&w, "pending", mine).unwrap().as_array().unwrap().len(), 1);
    let other = json!({ "entity": {"kind": "visit", "id": "tmp-2"}, "limit": 10 });
    assert_eq!(invoke(&w, "pending", other).unwrap(), json!([]));
    invoke(&w, "enable", json!({})).unwrap();
    assert_eq!(invoke(&w, "is_enabled", json!({})).unwrap(), json!(true));
    // Server down (port 9): the foreground drain reports it, the row stays pending.
    let rep = invoke(&w, "sync_now", json!({ "budgetMs": 2000 })).unwrap();
    assert_eq!(rep["done"], 0);
    assert_eq!(open(&invoke(&w, "status", json!({})).unwrap()), 1);
    invoke(&w, "disable", json!({})).unwrap();
    // Nothing delivered yet: the outcome queries answer empty, with the JS argument names.
    assert_eq!(invoke(&w, "delivered", json!({})).unwrap(), json!([]));
    let q = json!({ "query": { "since": 0, "entity": {"kind": "visit", "id": "tmp-1"}, "limit": 5 } });
    assert_eq!(invoke(&w, "delivered", q).unwrap(), json!([]));
    assert_eq!(
        invoke(&w, "resolve_temp_id", json!({ "tempId": "tmp-1" })).unwrap(),
        json!(null)
    );
}

#[test]
fn errors_reach_js_as_kind_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, "http://127.0.0.1:9", &all_commands());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    let e = invoke(
        &w,
        "enqueue",
        json!({ "mutation": { "method": "POST", "path": "https://evil.example.com/x", "entity": {"kind": "v", "id": "1"} } }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "originNotAllowed", "{e}");
    assert!(e["message"].as_str().unwrap().contains("evil.example.com"));
    let e = invoke(&w, "retry", json!({ "id": "nope" })).unwrap_err();
    assert_eq!(e["kind"], "notFound", "{e}");
    let e = invoke(
        &w,
        "configure",
        json!({ "config": { "baseUrl": "http://api.example.com" } }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "invalidInput", "{e}");
}

#[test]
fn tokens_go_in_and_never_come_out() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, "http://127.0.0.1:9", &all_commands());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    invoke(&w, "set_auth", json!({ "auth": { "accessToken": "SECRET-ACCESS", "refreshToken": "SECRET-REFRESH", "refreshUrl": "/auth/refresh" } }))
        .unwrap();
    for (cmd, args) in [
        ("status", json!({})),
        ("pending", json!({})),
        ("history", json!({})),
        ("dead_letters", json!({})),
    ] {
        let out = invoke(&w, cmd, args).unwrap().to_string();
        assert!(!out.contains("SECRET"), "{cmd} leaked a token: {out}");
    }
    // Nor are they readable at rest: sealed in the database, not in its files as text.
    for t in ["SECRET-ACCESS", "SECRET-REFRESH"] {
        assert!(
            !files_contain(dir.path(), t),
            "{t} is readable in the database files"
        );
    }
}

#[test]
fn a_command_without_its_permission_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    // Only the read-only commands are granted.
    let app = app(&dir, "http://127.0.0.1:9", &["status", "pending"]);
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    assert!(invoke(&w, "status", json!({})).is_ok());
    for cmd in ["enqueue", "configure", "set_auth", "sync_now", "enable"] {
        let e = invoke(&w, cmd, json!({})).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("not allowed"),
            "{cmd} should be denied by the ACL, got {msg}"
        );
    }
}

#[test]
fn default_permission_set_is_least_privilege_and_complete() {
    let root = env!("CARGO_MANIFEST_DIR");
    let default: toml::Value =
        toml::from_str(&std::fs::read_to_string(format!("{root}/permissions/default.toml")).unwrap())
            .unwrap();
    let perms: Vec<String> = default["default"]["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let commands = all_commands();
    assert!(
        commands.len() >= 18 && commands.iter().any(|c| c == "enqueue"),
        "parsed {commands:?}"
    );
    for cmd in &commands {
        let allow = format!("allow-{}", cmd.replace('_', "-"));
        let generated = format!("{root}/permissions/autogenerated/commands/{cmd}.toml");
        assert!(
            std::path::Path::new(&generated).exists(),
            "no autogenerated permission for {cmd}"
        );
        if cmd == "configure" {
            assert!(
                !perms.contains(&allow),
                "configure can change the API origin: not in default"
            );
        } else {
            assert!(perms.contains(&allow), "{allow} missing from the default set");
        }
    }
}

mod common;

/// The desktop scheduler (issue 13, item 1): with the default `autoSync`, writes go out while the
/// app runs although background sync is off (the toggle gates only OS work); with
/// `autoSync: false` nothing is sent until the toggle is on. Then a critical enqueue is
/// delivered within moments, with no explicit syncNow; a normal one after the debounce.
#[test]
fn scheduler_syncs_automatically_and_auto_sync_false_waits_for_the_toggle() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tauri_plugin_background_sync=info")
        .with_test_writer()
        .try_init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(common::server(common::FaultConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, &server.base_url, &all_commands());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    let visit = |id: &str, prio: &str| {
        json!({ "mutation": { "method": "PUT", "path": format!("/visits/{id}"), "body": {"v": 1},
                              "entity": {"kind": "visit", "id": id}, "priority": prio } })
    };
    let wait_for = |n: usize, max_ms: u64| {
        let t = std::time::Instant::now();
        while rt.block_on(server.applied_log()).len() < n {
            assert!(
                t.elapsed().as_millis() < max_ms as u128,
                "scheduler did not deliver {n} within {max_ms} ms"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        t.elapsed()
    };
    assert_eq!(invoke(&w, "is_enabled", json!({})).unwrap(), json!(false));
    invoke(&w, "enqueue", visit("auto", "critical")).unwrap();
    let took = wait_for(1, 5_000);
    eprintln!("autoSync, background off: critical enqueue delivered in {took:?}");
    // The drain that delivered it may still be running (it looks for more before it stops):
    // a write queued meanwhile would rightly go with it. The switch applies to the next drain.
    let t = std::time::Instant::now();
    while invoke(&w, "status", json!({})).unwrap()["state"] == "running" {
        assert!(t.elapsed().as_secs() < 5, "the drain did not end");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    invoke(&w, "configure", json!({ "config": { "autoSync": false } })).unwrap();
    invoke(&w, "enqueue", visit("a", "critical")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    assert_eq!(
        rt.block_on(server.applied_log()).len(),
        1,
        "autoSync false and background off: the scheduler must not send"
    );

    invoke(&w, "enable", json!({})).unwrap();
    let took = wait_for(2, 5_000);
    eprintln!("enable → delivered in {took:?}");
    invoke(&w, "enqueue", visit("b", "critical")).unwrap();
    let took = wait_for(3, 1_000);
    eprintln!("critical enqueue → delivered in {took:?}");
    invoke(&w, "enqueue", visit("c", "low")).unwrap();
    let took = wait_for(4, 6_000);
    eprintln!("low enqueue → delivered in {took:?} (debounced)");
    assert!(
        took.as_millis() >= 1_200,
        "normal-priority writes are coalesced for ~1.5 s"
    );
    assert_eq!(invoke(&w, "status", json!({})).unwrap()["pending"], 0);
    rt.block_on(server.shutdown());
}

/// One save of a form is several writes a few hundred milliseconds apart: the scheduler must
/// send them in one drain (one radio wake-up), not one drain per write or two.
#[test]
fn scheduler_sends_a_burst_of_normal_writes_in_one_drain() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(common::server(common::FaultConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, &server.base_url, &all_commands());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    // Let the startup drain (an empty queue) finish first.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for i in 0..5 {
        let m = json!({ "mutation": { "method": "PUT", "path": format!("/visits/v{i}"), "body": {"v": i},
                                      "entity": {"kind": "visit", "id": format!("v{i}")} } });
        invoke(&w, "enqueue", m).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let t = std::time::Instant::now();
    while rt.block_on(server.applied_log()).len() < 5 {
        assert!(
            t.elapsed().as_secs() < 15,
            "the scheduler did not deliver the burst"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A trailing drain would come within the debounce; wait it out.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let runs = invoke(&w, "history", json!({})).unwrap();
    let sending: Vec<_> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["requests"].as_u64().unwrap() > 0)
        .map(|r| (r["trigger"].clone(), r["done"].clone()))
        .collect();
    assert_eq!(
        sending.len(),
        1,
        "five writes 200 ms apart took {} drains that sent requests (trigger, delivered): {sending:?}",
        sending.len()
    );
    rt.block_on(server.shutdown());
}

#[test]
fn webview_uploads_only_from_allowed_directories() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut ctx = mock_context(noop_assets());
    ctx.config_mut().plugins.0.insert(
        "background-sync".into(),
        json!({ "database": dir.path().join("ipc.db"), "baseUrl": "http://127.0.0.1:9",
                "uploads": { "allowedDirs": [allowed.path()] } }),
    );
    for c in ["enqueue_upload", "uploads"] {
        ctx.runtime_authority_mut()
            .__allow_command(format!("plugin:background-sync|{c}"), ExecutionContext::Local);
    }
    let app = mock_builder()
        .plugin(test_plugin())
        .build(ctx)
        .expect("app builds");
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    let secret = outside.path().join("id_rsa");
    std::fs::write(&secret, "not for the API").unwrap();
    let err = invoke(&w, "enqueue_upload", json!({ "upload": { "filePath": secret } })).unwrap_err();
    assert_eq!(err["kind"], "invalidInput", "{err}");
    // A symlink from an allowed directory to the outside does not get around the check.
    let link = allowed.path().join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let err = invoke(&w, "enqueue_upload", json!({ "upload": { "filePath": link } })).unwrap_err();
    assert_eq!(err["kind"], "invalidInput", "{err}");
    let photo = allowed.path().join("photo.jpg");
    std::fs::write(&photo, [0xffu8, 0xd8, 0xff]).unwrap();
    let ok = invoke(
        &w,
        "enqueue_upload",
        json!({ "upload": { "filePath": photo, "contentType": "image/jpeg", "placeholder": "att-photo" } }),
    )
    .unwrap();
    assert_eq!(ok["placeholder"], "att-photo");
    assert_eq!(ok["size"], 3);
    // autoSync may have the upload in flight to the (down) server at this instant (CI saw it).
    let list = invoke(&w, "uploads", json!({ "states": ["pending", "inFlight"] })).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["placeholder"], "att-photo");
}

/// An app that sets `baseUrl` at runtime may still put other settings in tauri.conf.json: they
/// are kept and applied under its first `configure` call instead of failing the startup.
#[test]
fn conf_settings_without_base_url_wait_for_the_first_configure() {
    use tauri_plugin_background_sync::BackgroundSyncExt;
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = mock_context(noop_assets());
    ctx.config_mut().plugins.0.insert(
        "background-sync".into(),
        json!({ "database": dir.path().join("ipc.db"), "requestTimeoutMs": 4321, "backoff": { "initialMs": 7 } }),
    );
    ctx.runtime_authority_mut()
        .__allow_command("plugin:background-sync|configure".into(), ExecutionContext::Local);
    ctx.runtime_authority_mut()
        .__allow_command("plugin:background-sync|status".into(), ExecutionContext::Local);
    let app = mock_builder()
        .plugin(test_plugin())
        .build(ctx)
        .expect("starts without a baseUrl");
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    assert_eq!(invoke(&w, "status", json!({})).unwrap()["configured"], false);
    invoke(
        &w,
        "configure",
        json!({ "config": { "baseUrl": "http://127.0.0.1:9" } }),
    )
    .unwrap();
    let cfg = tauri::async_runtime::block_on(app.background_sync().engine().config())
        .unwrap()
        .unwrap();
    assert_eq!(cfg.base_url, "http://127.0.0.1:9");
    assert_eq!(cfg.request_timeout_ms, 4321);
    assert_eq!(cfg.backoff.initial_ms, 7);
    assert_eq!(cfg.backoff.max_ms, 300_000, "other fields keep their defaults");
}

/// Issue 11, defect 9: the database (queue and tokens), its WAL/SHM files and the plugin's
/// copies lie inside the directories the webview may upload from; they must still be refused,
/// also through a hard link.
#[test]
fn webview_cannot_upload_the_database_or_the_plugins_copies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let mut ctx = mock_context(noop_assets());
    ctx.config_mut().plugins.0.insert(
        "background-sync".into(),
        json!({ "database": db, "baseUrl": "http://127.0.0.1:9",
                "uploads": { "allowedDirs": [dir.path()] } }),
    );
    for c in ["enqueue_upload", "set_auth", "enqueue"] {
        ctx.runtime_authority_mut()
            .__allow_command(format!("plugin:background-sync|{c}"), ExecutionContext::Local);
    }
    let app = mock_builder()
        .plugin(test_plugin())
        .build(ctx)
        .expect("app builds");
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    invoke(
        &w,
        "set_auth",
        json!({ "auth": { "accessToken": "secret-token" } }),
    )
    .unwrap();
    let link = dir.path().join("innocent.jpg");
    std::fs::hard_link(&db, &link).unwrap();
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    for target in [db.clone(), std::path::PathBuf::from(&wal), link] {
        if !target.exists() {
            continue;
        }
        let err = invoke(
            &w,
            "enqueue_upload",
            json!({ "upload": { "filePath": target, "destination": { "type": "direct", "url": "/me/avatar" } } }),
        )
        .unwrap_err();
        assert_eq!(
            err["kind"],
            "invalidInput",
            "{} was accepted: {err}",
            target.display()
        );
    }
    // A copy the plugin made of an allowed file is refused too (by folder).
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, [1u8, 2, 3]).unwrap();
    invoke(&w, "enqueue_upload", json!({ "upload": { "filePath": photo } })).unwrap();
    let copies: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p != &photo && std::fs::read(p).is_ok_and(|b| b == [1u8, 2, 3]))
        .collect();
    assert!(!copies.is_empty(), "the plugin keeps a copy");
    for c in copies {
        let err = invoke(&w, "enqueue_upload", json!({ "upload": { "filePath": c } })).unwrap_err();
        assert_eq!(
            err["kind"],
            "invalidInput",
            "copy {} was accepted: {err}",
            c.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn builder_app(
    ctx_conf: Value,
    plugin: tauri::plugin::TauriPlugin<
        tauri::test::MockRuntime,
        Option<tauri_plugin_background_sync::PluginConfig>,
    >,
) -> tauri::Result<tauri::App<tauri::test::MockRuntime>> {
    let mut ctx = mock_context(noop_assets());
    ctx.config_mut()
        .plugins
        .0
        .insert("background-sync".into(), ctx_conf);
    ctx.runtime_authority_mut()
        .__allow_command("plugin:background-sync|configure".into(), ExecutionContext::Local);
    mock_builder().plugin(plugin).build(ctx)
}

/// Issue 15 item 3: the typed builder. Its database wins over tauri.conf.json's, its config is
/// written at every start with tauri.conf.json's keys merged over it, and `update_config`
/// changes only what the closure touches.
#[test]
fn typed_builder_database_and_config_and_typed_update() {
    use tauri_plugin_background_sync::{BackgroundSyncExt, SyncConfig};
    let dir = tempfile::tempdir().unwrap();
    let typed_db = dir.path().join("typed.db");
    let conf_db = dir.path().join("from-conf.db");
    let code = SyncConfig {
        base_url: "http://127.0.0.1:9".into(),
        concurrency: 3,
        ..Default::default()
    };
    let start = || {
        builder_app(
            json!({ "database": conf_db, "requestTimeoutMs": 1234 }),
            test_builder().database(&typed_db).config(code.clone()).build(),
        )
        .expect("app builds")
    };
    let app = start();
    let cfg = || {
        tauri::async_runtime::block_on(app.background_sync().engine().config())
            .unwrap()
            .unwrap()
    };
    assert_eq!(app.background_sync().engine().path(), typed_db.as_path());
    assert!(typed_db.exists() && !conf_db.exists());
    let c = cfg();
    assert_eq!(
        (c.base_url.as_str(), c.concurrency, c.request_timeout_ms),
        ("http://127.0.0.1:9", 3, 1234)
    );

    // A runtime change from JS, then the typed update: only the touched field changes.
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    invoke(&w, "configure", json!({ "config": { "concurrency": 7 } })).unwrap();
    let update =
        |edit: fn(&mut SyncConfig)| tauri::async_runtime::block_on(app.background_sync().update_config(edit));
    update(|c| c.max_attempts = 9).unwrap();
    let c = cfg();
    assert_eq!(
        (c.concurrency, c.max_attempts, c.request_timeout_ms),
        (7, 9, 1234)
    );
    // An edit that breaks the configuration is refused whole; nothing changes.
    let e = update(|c| {
        c.max_attempts = 1;
        c.base_url = "ftp://127.0.0.1".into();
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            tauri_plugin_background_sync::Error::InvalidInput(_)
                | tauri_plugin_background_sync::Error::OriginNotAllowed(_)
        ),
        "{e:?}"
    );
    assert_eq!(cfg().max_attempts, 9);
    drop(w);
    drop(app);

    // The next start writes the code's configuration again.
    let app = start();
    let c = tauri::async_runtime::block_on(app.background_sync().engine().config())
        .unwrap()
        .unwrap();
    assert_eq!(
        c.concurrency, 3,
        "the code's configuration is the source of truth at start"
    );
}

#[test]
fn typed_builder_without_a_base_url_fails_setup_and_update_config_keeps_conf_settings() {
    use tauri_plugin_background_sync::{BackgroundSyncExt, SyncConfig};
    let dir = tempfile::tempdir().unwrap();
    let Err(e) = builder_app(
        json!({ "database": dir.path().join("a.db") }),
        test_builder().config(SyncConfig::default()).build(),
    ) else {
        panic!("a typed config without base_url must fail the setup")
    };
    assert!(e.to_string().contains("base_url"), "{e}");

    // Without a typed config, tauri.conf.json's settings wait for the first configure; the
    // typed update starts from them too.
    let app = builder_app(
        json!({ "database": dir.path().join("b.db"), "requestTimeoutMs": 4321 }),
        test_builder().build(),
    )
    .expect("starts without a baseUrl");
    tauri::async_runtime::block_on(
        app.background_sync()
            .update_config(|c| c.base_url = "http://127.0.0.1:9".into()),
    )
    .unwrap();
    let c = tauri::async_runtime::block_on(app.background_sync().engine().config())
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.base_url.as_str(), c.request_timeout_ms),
        ("http://127.0.0.1:9", 4321)
    );
}

fn problem_codes(d: &Value) -> Vec<String> {
    d["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(
                !p["message"].as_str().unwrap().is_empty() && !p["fix"].as_str().unwrap().is_empty(),
                "{p}"
            );
            p["code"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `diagnostics()` on desktop (issue 13 item 5), for real: the scheduler's own facts (running,
/// its next wake, network watching) and the engine's side through IPC, each problem appearing
/// with the state that causes it and leaving with it.
#[test]
fn diagnostics_on_desktop_say_what_will_run_and_why_not() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(common::server(common::FaultConfig {
        reject_paths: vec!["/rejected".into()],
        ..Default::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, &server.base_url, &all_commands());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    let diagnostics = || invoke(&w, "diagnostics", json!({})).unwrap();
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    // The scheduler drains at startup, then sleeps until its interval (15 min by default).
    let t = std::time::Instant::now();
    let d = loop {
        let d = diagnostics();
        if d["os"]["nextWakeAt"].is_i64() {
            break d;
        }
        assert!(
            t.elapsed().as_secs() < 10,
            "the scheduler never planned a wake: {d}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(d["os"]["platform"], "desktop", "{d}");
    assert_eq!(d["os"]["schedulerRunning"], true, "{d}");
    let next = d["os"]["nextWakeAt"].as_i64().unwrap();
    assert!(
        next > wall() + 10 * 60_000 && next <= wall() + 15 * 60_000 + 1_000,
        "next wake in {} ms",
        next - wall()
    );
    assert_eq!(d["configured"], true);
    assert_eq!(d["autoSync"], true);
    assert_eq!(problem_codes(&d), vec!["backgroundOff"], "{d}");

    invoke(
        &w,
        "enqueue",
        json!({ "mutation": { "method": "POST", "path": "/rejected/x", "body": {"n": 1},
                              "entity": {"kind": "rejected", "id": "x"}, "priority": "critical" } }),
    )
    .unwrap();
    let t = std::time::Instant::now();
    while invoke(&w, "status", json!({})).unwrap()["dead"] != 1 {
        assert!(t.elapsed().as_secs() < 10, "the 422 never became a dead letter");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let d = diagnostics();
    assert_eq!(d["dead"], 1);
    assert!(d["lastRunAt"].is_i64(), "{d}");
    assert_eq!(problem_codes(&d), vec!["changesRejected", "backgroundOff"], "{d}");

    invoke(&w, "enable", json!({})).unwrap();
    let d = diagnostics();
    assert_eq!(d["backgroundEnabled"], true);
    assert_eq!(
        problem_codes(&d),
        vec!["changesRejected", "desktopNeedsApp"],
        "{d}"
    );

    invoke(&w, "disable", json!({})).unwrap();
    invoke(&w, "configure", json!({ "config": { "autoSync": false } })).unwrap();
    let d = diagnostics();
    assert_eq!(
        problem_codes(&d),
        vec!["changesRejected", "autoSyncOff", "backgroundOff"],
        "{d}"
    );
    let dead = invoke(&w, "dead_letters", json!({})).unwrap();
    invoke(&w, "discard", json!({ "id": dead[0]["id"] })).unwrap();
    assert_eq!(
        problem_codes(&diagnostics()),
        vec!["autoSyncOff", "backgroundOff"]
    );
    rt.block_on(server.shutdown());
}

/// A damaged stored configuration is a `corrupt` error, and the app's next `configure` (merged
/// over the defaults, since the stored one cannot be read) replaces it instead of failing too.
#[test]
fn configure_replaces_a_damaged_stored_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, "http://127.0.0.1:9", &["configure", "status"]);
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    invoke(&w, "status", json!({})).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("ipc.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE settings SET value = '{\"baseUrl\": ' WHERE key = 'config'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let err = invoke(&w, "status", json!({})).unwrap_err();
    assert_eq!(err["kind"], "corrupt", "{err}");
    invoke(
        &w,
        "configure",
        json!({ "config": { "baseUrl": "http://127.0.0.1:9", "requestTimeoutMs": 4321 } }),
    )
    .unwrap();
    let st = invoke(&w, "status", json!({})).unwrap();
    assert_eq!(st["pending"], 0, "{st}");
}

const RECONNECT_CHILD_ENV: &str = "BGSYNC_RECONNECT_CHILD";

/// Issue 13: with background sync off, a network that comes back starts a drain within
/// moments, not at the next offline probe (30 s) or interval. Real interface events: the test
/// runs its app in a private network namespace (`unshare --net`) where the API is down, brings
/// the API up (nothing may be sent: no signal yet), then gives a new interface an address
/// (the kernel's netlink event, read by if-watch as on any Linux desktop).
#[test]
fn scheduler_drains_when_the_network_comes_back_with_background_off() {
    let script = r#"ip link set lo up && exec "$EXE" --exact reconnect_child --nocapture --test-threads=1"#;
    let out = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .env("EXE", std::env::current_exe().unwrap())
        .env(RECONNECT_CHILD_ENV, "1")
        .output();
    let Ok(out) = out else {
        println!("SKIPPED: no unshare here (needs root and util-linux)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if !text.contains("RECONNECT-CHILD started") {
        // No private namespace could be made (not root, or a sandbox that forbids it).
        println!("SKIPPED: no private network namespace: {text} {err}");
        return;
    }
    println!("{text}");
    assert!(
        out.status.success() && text.contains("RECONNECT-CHILD ok"),
        "the child failed:\n{text}\n{err}"
    );
}

/// The half of the test above that runs inside the namespace.
#[test]
fn reconnect_child() {
    if std::env::var(RECONNECT_CHILD_ENV).is_err() {
        return;
    }
    println!("RECONNECT-CHILD started");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A port for an API that is down at first.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let base_url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir, &base_url, &all_commands());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    assert_eq!(invoke(&w, "is_enabled", json!({})).unwrap(), json!(false));
    let visit = json!({ "mutation": { "method": "PUT", "path": "/visits/v1", "body": {"v": 1},
                                      "entity": {"kind": "visit", "id": "v1"}, "priority": "critical" } });
    invoke(&w, "enqueue", visit).unwrap();
    // The urgent write is tried at once and finds the API unreachable.
    let t = std::time::Instant::now();
    loop {
        let h = invoke(&w, "history", json!({ "limit": 5 })).unwrap();
        if h.as_array()
            .unwrap()
            .iter()
            .any(|r| r["stopReason"] == "noNetwork")
        {
            break;
        }
        assert!(t.elapsed().as_secs() < 10, "no noNetwork run: {h}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let server = rt.block_on(bgsync_reference_server::spawn(common::ServerConfig {
        port,
        ..Default::default()
    }));
    let server = server.expect("reference server starts on the same port");
    // The API is back, but nothing told the app: its next probe is 30 s away.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        rt.block_on(server.applied_log()).len(),
        0,
        "sent before any network signal: the test would not show the reconnect"
    );
    // A network comes up: a new interface gets an address (no traffic is sent to it).
    let ip = |args: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("ip {args}")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args} failed");
    };
    ip("link add bgs0 type veth peer name bgs1");
    ip("link set bgs1 up");
    ip("link set bgs0 up");
    ip("addr add 192.0.2.1/24 dev bgs0");
    let up = std::time::Instant::now();
    while rt.block_on(server.applied_log()).is_empty() {
        assert!(
            up.elapsed().as_secs() < 8,
            "not delivered within 8 s of the network coming up (background sync off)"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let took = up.elapsed();
    // The run's report is written when it ends, a moment after the server has the write.
    let t = std::time::Instant::now();
    let delivering = loop {
        let h = invoke(&w, "history", json!({ "limit": 5 })).unwrap();
        if let Some(r) = h.as_array().unwrap().iter().find(|r| r["done"] == 1) {
            break r.clone();
        }
        assert!(t.elapsed().as_secs() < 5, "no report of the delivering run: {h}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        delivering["trigger"], "reconnect",
        "the delivering run: {delivering}"
    );
    assert_eq!(invoke(&w, "is_enabled", json!({})).unwrap(), json!(false));
    println!(
        "RECONNECT-CHILD ok network up → delivered in {} ms",
        took.as_millis()
    );
    rt.block_on(server.shutdown());
}

/// `Builder::encrypt_database` never falls back to plaintext: without SQLCipher in the build, or
/// without a platform key, the setup fails and no database file is written.
#[test]
fn encrypt_database_refuses_to_write_plaintext() {
    use tauri_plugin_background_sync::CredentialStorage;
    let dir = tempfile::tempdir().unwrap();
    let conf = |name: &str| json!({ "database": dir.path().join(name), "baseUrl": "http://127.0.0.1:9" });
    let Err(e) = builder_app(conf("a.db"), test_builder().encrypt_database().build()) else {
        panic!("this build has no SQLCipher: encrypt_database must fail the setup")
    };
    assert!(e.to_string().contains("sqlcipher"), "{e}");
    let Err(e) = builder_app(
        conf("b.db"),
        test_builder()
            .credentials(CredentialStorage::MemoryOnly)
            .encrypt_database()
            .build(),
    ) else {
        panic!("no platform key: encrypt_database must fail the setup")
    };
    assert!(e.to_string().contains("gave no key"), "{e}");
    let Err(e) = builder_app(
        conf("c.db"),
        test_builder().encryption_key("app passphrase").build(),
    ) else {
        panic!("this build has no SQLCipher: encryption_key must fail the setup")
    };
    assert!(
        !e.to_string().contains("app passphrase"),
        "the key in an error: {e}"
    );
    for f in ["a.db", "b.db", "c.db"] {
        assert!(!dir.path().join(f).exists(), "{f} written");
    }
}

const KEYRING_STEP_ENV: &str = "BGSYNC_KEYRING_STEP";
const KEYRING_ACCESS: &str = "at-keyring-7d2f0b";

/// Runs this test binary again as a new process for one step of the keyring test.
fn keyring_step(step: &str, dir: &std::path::Path, api: &str, dbus: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "keyring_child", "--nocapture", "--test-threads=1"])
        .env(KEYRING_STEP_ENV, step)
        .env("BGSYNC_KEYRING_DIR", dir)
        .env("BGSYNC_KEYRING_API", api);
    if let Some(bus) = dbus {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", bus);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success() && text.contains(&format!("KEYRING-CHILD {step} ok")),
        "step {step} failed:\n{text}\n{err}"
    );
    text
}

fn files_contain(dir: &std::path::Path, needle: &str) -> bool {
    walk(dir).iter().any(|f| {
        std::fs::read(f)
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

/// Issue 15 item 6, desktop: the key that seals the credentials is made once in a real Secret
/// Service (gnome-keyring on a private D-Bus session bus, started by tests/keyring.sh), found
/// again by the next process, and the token never reaches the database file. Without a keyring
/// the plugin falls back to memory only within its timeout. Skipped unless tests/keyring.sh
/// runs it.
#[test]
fn desktop_credentials_key_lives_in_the_os_keyring() {
    if std::env::var("BGSYNC_KEYRING_TEST").is_err() {
        println!("SKIPPED: run tests/keyring.sh (a private Secret Service)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(common::server_with_auth(
        common::FaultConfig::default(),
        common::AuthSetup {
            access_tokens: vec![KEYRING_ACCESS.into()],
            refresh_token: "rt-keyring".into(),
            ..Default::default()
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ipc.db");

    // 1. First start: a key is made in the keyring; the credentials are sealed in the file.
    println!(
        "{}",
        keyring_step("first", dir.path(), &server.base_url, None).trim()
    );
    let row: String = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        // language=SQLite
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'auth'")
            .fetch_one(&mut c)
            .await
            .unwrap()
    });
    assert!(row.starts_with("sealed:v1:"), "credentials row: {row}");
    assert!(
        !files_contain(dir.path(), KEYRING_ACCESS),
        "the token is readable in the files"
    );
    let items = std::process::Command::new("secret-tool")
        .args(["search", "--all", "service", "tauri-plugin-background-sync"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&items.stdout).to_string() + &String::from_utf8_lossy(&items.stderr);
    assert!(
        listed.contains(&std::path::absolute(&db).unwrap().display().to_string()),
        "the keyring holds no key for this database: {listed}"
    );
    println!(
        "keyring item: {}",
        listed
            .lines()
            .filter(|l| l.contains("attribute"))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // 2. A new process finds the same key and sends with the sealed token: no 401.
    println!(
        "{}",
        keyring_step("second", dir.path(), &server.base_url, None).trim()
    );
    let stats = server.stats();
    assert_eq!((stats.applied, stats.unauthorized), (2, 0), "{stats:?}");

    // 3. No keyring (a bus nobody listens on): setup still finishes, credentials in memory.
    let out = keyring_step(
        "nokeyring",
        dir.path(),
        &server.base_url,
        Some("unix:path=/nonexistent/bus"),
    );
    println!("{}", out.trim());
    assert!(
        !files_contain(dir.path(), KEYRING_ACCESS),
        "memory only wrote the token: {out}"
    );
    assert_eq!(server.stats().applied, 3);
}

/// One process of the keyring test above.
#[test]
fn keyring_child() {
    let Ok(step) = std::env::var(KEYRING_STEP_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("BGSYNC_KEYRING_DIR").unwrap());
    let api = std::env::var("BGSYNC_KEYRING_API").unwrap();
    let t = std::time::Instant::now();
    let app = app_with(&dir, &api, &all_commands(), tauri_plugin_background_sync::init());
    let setup = t.elapsed();
    assert!(setup < std::time::Duration::from_secs(8), "setup took {setup:?}");
    let w = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    let visit = |id: &str| {
        json!({ "mutation": { "method": "PUT", "path": format!("/visits/{id}"), "body": {"v": 1},
                              "entity": {"kind": "visit", "id": id} } })
    };
    let auth = json!({ "auth": { "accessToken": KEYRING_ACCESS } });
    match step.as_str() {
        "first" => {
            invoke(&w, "set_auth", auth).unwrap();
            invoke(&w, "enqueue", visit("k1")).unwrap();
        }
        "second" => {
            invoke(&w, "enqueue", visit("k2")).unwrap();
        }
        _ => {
            // The sealed row of the earlier steps cannot be opened without the keyring; the
            // app signs in again, in memory only.
            invoke(&w, "set_auth", auth).unwrap();
            invoke(&w, "enqueue", visit("k3")).unwrap();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = invoke(&w, "sync_now", json!({})).unwrap();
        let s = invoke(&w, "status", json!({})).unwrap();
        if s["pending"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not delivered: {r} {s}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("KEYRING-CHILD {step} ok (setup {setup:?})");
}
