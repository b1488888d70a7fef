//! Reference server for the tauri-plugin-background-sync HTTP contract.
//!
//! What a backend must do for the plugin's exactly-once promise, in one readable file:
//! - store the `Idempotency-Key` with the response **in the same transaction** as the change,
//!   and replay that response for a repeat (`Idempotent-Replayed: true`);
//! - assign server ids on create and return them in the body (`{"id": ...}`);
//! - answer 2xx / 4xx / 5xx honestly: the plugin dead-letters 4xx at once and retries 5xx.
//!
//! Everything else here (fault injection, admin endpoints) exists for tests and demos.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::sync::Mutex;
use tower::ServiceExt;

mod storage;
use storage::Storage;
pub use storage::{StorageFaults, StorageStats, StoredObject};

const MAX_BODY: usize = 1024 * 1024;

/// Server settings.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// SQLite file; `None` keeps everything in memory.
    pub db_path: Option<PathBuf>,
    pub faults: FaultConfig,
    /// `None`: no auth required.
    pub auth: Option<AuthSetup>,
    /// 0 = an ephemeral port.
    pub port: u16,
    /// Serve the API over TLS with this identity (`https://127.0.0.1:PORT`); the storage
    /// origin stays plain HTTP.
    pub tls: Option<TlsIdentity>,
    /// Port of the storage origin (signed uploads) on 127.0.0.1; 0 = an ephemeral port. A
    /// server restarted on fixed ports keeps both origins the client was configured with.
    pub storage_port: u16,
    /// With `tls`: also offer HTTP/2 (ALPN `h2`, then `http/1.1`), as production API gateways
    /// do. Off: HTTP/1.1 only.
    pub http2: bool,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// A private certificate authority made for one run, and a server identity it signed for
/// `127.0.0.1` and `localhost`. Only the tests trust `ca_pem`.
pub struct TestPki {
    pub ca_pem: String,
    pub server: TlsIdentity,
}

impl TestPki {
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "bgsync reference server test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server: TlsIdentity {
                cert_chain_pem: leaf_cert.pem(),
                key_pem: leaf_key.serialize_pem(),
            },
        })
    }
}

fn tls_acceptor(id: &TlsIdentity, http2: bool) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain =
        CertificateDer::pem_slice_iter(id.cert_chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Bearer tokens accepted at start, and the refresh token that mints new ones.
#[derive(Debug, Clone, Default)]
pub struct AuthSetup {
    pub access_tokens: Vec<String>,
    pub refresh_token: String,
    /// `POST /oauth/token` (the OAuth 2.0 refresh grant, RFC 6749 §6) accepts only this
    /// `client_id`; `None`: that endpoint answers 401 `invalid_client`.
    pub oauth_client_id: Option<String>,
    /// The OAuth endpoint rotates the refresh token on every use (the old one stops working).
    pub rotate_refresh_tokens: bool,
}

/// Fault injection. Decisions are drawn from a ChaCha RNG seeded with `seed`, in request
/// arrival order, so a run is reproducible.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    pub seed: u64,
    /// Fraction of mutating requests (and batch items) answered with a transient error
    /// before anything is applied.
    pub error_rate: f64,
    /// Statuses for those errors; empty = [500, 503, 429].
    pub error_statuses: Vec<u16>,
    /// `Retry-After` on injected 429/503 (and `fail_next`).
    pub retry_after_secs: Option<u64>,
    /// Send `Retry-After` as an HTTP-date.
    pub retry_after_http_date: bool,
    /// Latency added before every request.
    pub delay_ms: u64,
    /// Close the connection without a response, before applying.
    pub drop_rate: f64,
    /// Apply and commit, then close the connection without a response.
    pub commit_then_drop_rate: f64,
    /// The next mutating requests get these statuses, in order, before applying.
    pub fail_next: Vec<u16>,
    /// Path prefixes answered 422 (permanent).
    pub reject_paths: Vec<String>,
}

/// One applied change, in apply order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedEntry {
    pub seq: i64,
    pub idempotency_key: String,
    pub method: String,
    pub path: String,
    pub collection: String,
    pub entity_id: String,
    pub body: Option<Value>,
    pub status: u16,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub requests: u64,
    pub mutating_requests: u64,
    pub applied: u64,
    pub replayed: u64,
    pub injected_errors: u64,
    pub injected_drops: u64,
    pub injected_commit_then_drops: u64,
    pub rejected: u64,
    pub unauthorized: u64,
    pub refreshes: u64,
    pub batch_requests: u64,
    /// TLS handshakes started (connections accepted on a TLS listener).
    pub tls_handshakes: u64,
    /// TLS connections that negotiated HTTP/2.
    pub http2_connections: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    mutating_requests: AtomicU64,
    applied: AtomicU64,
    replayed: AtomicU64,
    injected_errors: AtomicU64,
    injected_drops: AtomicU64,
    injected_commit_then_drops: AtomicU64,
    rejected: AtomicU64,
    unauthorized: AtomicU64,
    refreshes: AtomicU64,
    batch_requests: AtomicU64,
    tls_handshakes: AtomicU64,
    http2_connections: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            requests: g(&self.requests),
            mutating_requests: g(&self.mutating_requests),
            applied: g(&self.applied),
            replayed: g(&self.replayed),
            injected_errors: g(&self.injected_errors),
            injected_drops: g(&self.injected_drops),
            injected_commit_then_drops: g(&self.injected_commit_then_drops),
            rejected: g(&self.rejected),
            unauthorized: g(&self.unauthorized),
            refreshes: g(&self.refreshes),
            batch_requests: g(&self.batch_requests),
            tls_handshakes: g(&self.tls_handshakes),
            http2_connections: g(&self.http2_connections),
        }
    }
}

struct Faults {
    cfg: FaultConfig,
    rng: ChaCha8Rng,
}

impl Faults {
    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen_bool(p.min(1.0))
    }
}

struct Auth {
    valid: Vec<String>,
    refresh_token: String,
    minted: u64,
    oauth_client_id: Option<String>,
    rotate: bool,
    /// Every refresh grant received, in order (for tests: what the client sent).
    grants: Vec<OAuthGrant>,
}

struct App {
    db: SqlitePool,
    /// Keeps the scratch database alive for the server's lifetime.
    _scratch: Option<tempfile::TempDir>,
    /// One writer at a time: the simplest way to make "check key, apply, store key" atomic.
    write: Mutex<()>,
    faults: StdMutex<Faults>,
    auth: Option<StdMutex<Auth>>,
    counters: Counters,
    storage: Arc<Storage>,
    /// Keeps the stored files alive for the server's lifetime.
    _files: tempfile::TempDir,
}

/// A running server.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (`https://` with `ServerConfig::tls`)
    pub base_url: String,
    /// The storage origin signed upload URLs point to (another port: another origin).
    pub storage_url: String,
    app: Arc<App>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Why a connection was cut on purpose (makes hyper close it without a response).
#[derive(Debug)]
pub(crate) struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

/// Start the server on 127.0.0.1.
pub async fn spawn(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    // "In memory" is a file in a private temp dir: an sqlite :memory: database lives and dies
    // with one connection, and a request cancelled mid-query (client gone) can cost the pool
    // that connection, and with it every table.
    let scratch = match &cfg.db_path {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let path = match (&cfg.db_path, &scratch) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.path().join("reference-server.db"),
        (None, None) => unreachable!(),
    };
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    // One connection: writes are serialized anyway, and reads see every commit.
    let db = SqlitePoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(opts)
        .await?;
    for stmt in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(stmt).execute(&db).await?;
    }
    let files = tempfile::tempdir()?;
    let storage_listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.storage_port)).await?;
    let storage_url = format!("http://{}", storage_listener.local_addr()?);
    let storage = Arc::new(Storage::new(files.path().to_path_buf(), storage_url.clone()));
    let app = Arc::new(App {
        storage: storage.clone(),
        _files: files,
        db,
        _scratch: scratch,
        write: Mutex::new(()),
        faults: StdMutex::new(Faults {
            rng: ChaCha8Rng::seed_from_u64(cfg.faults.seed),
            cfg: cfg.faults.clone(),
        }),
        auth: cfg.auth.map(|a| {
            StdMutex::new(Auth {
                valid: a.access_tokens,
                refresh_token: a.refresh_token,
                minted: 0,
                oauth_client_id: a.oauth_client_id,
                rotate: a.rotate_refresh_tokens,
                grants: Vec::new(),
            })
        }),
        counters: Counters::default(),
    });
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/_admin/log", get(admin_log))
        .route("/_admin/state", get(admin_state))
        .route("/_admin/stats", get(admin_stats))
        .route("/_admin/faults", post(admin_faults))
        .route("/_admin/reset", post(admin_reset))
        .route("/_admin/revoke-tokens", post(admin_revoke))
        .route("/auth/refresh", post(refresh))
        .route("/oauth/token", post(oauth_token))
        .route("/_admin/oauth-grants", get(admin_oauth_grants))
        .route("/batch", post(batch))
        .route("/uploads/sign", post(sign_uploads))
        .route("/files/{key}", axum::routing::put(direct_upload))
        .route("/_admin/objects", get(admin_objects))
        .route("/_admin/storage-stats", get(admin_storage_stats))
        .route("/_admin/storage-faults", post(admin_storage_faults))
        .fallback(resource)
        .with_state(app.clone());

    let acceptor = cfg
        .tls
        .as_ref()
        .map(|id| tls_acceptor(id, cfg.http2))
        .transpose()?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port)).await?;
    let addr = listener.local_addr()?;
    let (shutdown, mut rx) = tokio::sync::watch::channel(false);
    let mut storage_rx = rx.clone();
    let storage_task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = storage_listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = storage_rx.changed() => return,
            };
            let storage = storage.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let storage = storage.clone();
                    async move { storage.handle_storage(req).await }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    let app2 = app.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = rx.changed() => return,
            };
            let router = router.clone();
            let app = app2.clone();
            let acceptor = acceptor.clone();
            if acceptor.is_some() {
                app.counters.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            }
            let counters = app.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    let app = app.clone();
                    async move { with_faults(app, router, req.map(Body::new)).await }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    }
                    Some(acceptor) => {
                        // A client that does not trust the CA aborts here: nothing to serve.
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                            counters
                                .counters
                                .http2_connections
                                .fetch_add(1, Ordering::Relaxed);
                            let _ = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                            return;
                        }
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    }
                }
            });
        }
    });
    let task = tokio::spawn(async move {
        let _ = tokio::join!(task, storage_task);
    });
    Ok(RunningServer {
        addr,
        base_url: format!("{scheme}://{addr}"),
        storage_url,
        app,
        shutdown,
        task,
    })
}

fn is_mutating(method: &Method, path: &str) -> bool {
    !(method == Method::GET
        || method == Method::HEAD
        || path.starts_with("/_admin")
        || path == "/health"
        || path == "/auth/refresh"
        || path == "/oauth/token")
}

enum Fault {
    None,
    Status(u16),
    Drop,
    CommitThenDrop,
}

/// Connection-level and whole-request faults, decided before routing.
async fn with_faults(app: Arc<App>, router: Router, req: Request<Body>) -> Result<Response<Body>, Dropped> {
    app.counters.requests.fetch_add(1, Ordering::Relaxed);
    let mutating = is_mutating(req.method(), req.uri().path());
    let batch = req.uri().path() == "/batch";
    let (delay, fault) = {
        let mut guard = app.faults.lock().unwrap();
        let f = &mut *guard;
        let delay = f.cfg.delay_ms;
        let fault = if !mutating {
            Fault::None
        } else if !f.cfg.fail_next.is_empty() {
            Fault::Status(f.cfg.fail_next.remove(0))
        } else if f.roll(f.cfg.drop_rate) {
            Fault::Drop
        } else if !batch && f.roll(f.cfg.error_rate) {
            Fault::Status(pick_status(f))
        } else if f.roll(f.cfg.commit_then_drop_rate) {
            Fault::CommitThenDrop
        } else {
            Fault::None
        };
        (delay, fault)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if mutating {
        app.counters.mutating_requests.fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Fault::Drop => {
            app.counters.injected_drops.fetch_add(1, Ordering::Relaxed);
            Err(Dropped)
        }
        Fault::Status(s) => {
            if s == 401 {
                app.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            } else {
                app.counters.injected_errors.fetch_add(1, Ordering::Relaxed);
            }
            let retry_after = app.faults.lock().unwrap().cfg.clone();
            Ok(error_response(s, &retry_after))
        }
        Fault::CommitThenDrop => {
            let _ = router.oneshot(req).await;
            app.counters
                .injected_commit_then_drops
                .fetch_add(1, Ordering::Relaxed);
            Err(Dropped)
        }
        Fault::None => Ok(router.oneshot(req).await.unwrap_or_else(|e| match e {})),
    }
}

fn pick_status(f: &mut Faults) -> u16 {
    let default = [500, 503, 429];
    let list: &[u16] = if f.cfg.error_statuses.is_empty() {
        &default
    } else {
        &f.cfg.error_statuses
    };
    list[f.rng.gen_range(0..list.len())]
}

fn retry_after_value(cfg: &FaultConfig) -> Option<String> {
    let secs = cfg.retry_after_secs?;
    Some(if cfg.retry_after_http_date {
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(secs))
    } else {
        secs.to_string()
    })
}

fn error_response(status: u16, cfg: &FaultConfig) -> Response<Body> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if status == 429 || status == 503 {
        if let Some(v) = retry_after_value(cfg) {
            b = b.header("retry-after", v);
        }
    }
    if status == 401 {
        b = b.header("www-authenticate", "Bearer");
    }
    b.body(Body::from(
        json!({"error": "injected fault", "status": status}).to_string(),
    ))
    .unwrap()
}

fn json_response(status: u16, body: &Value, replayed: bool) -> Response<Body> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if replayed {
        b = b.header("idempotent-replayed", "true");
    }
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    b.body(Body::from(text)).unwrap()
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(auth) = &app.auth else { return true };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = token.is_some_and(|t| auth.lock().unwrap().valid.iter().any(|v| v == t));
    if !ok {
        app.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

fn unauthorized() -> Response<Body> {
    Response::builder()
        .status(401)
        .header("www-authenticate", "Bearer")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"error":"unauthorized"}"#))
        .unwrap()
}

/// The outcome of one mutation (single request or batch item).
struct Outcome {
    status: u16,
    body: Value,
    replayed: bool,
}

/// Apply one mutation exactly once per idempotency key.
async fn apply(app: &App, key: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Outcome {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Outcome {
            status: 400,
            body: json!({"error": "missing Idempotency-Key"}),
            replayed: false,
        };
    };
    let fingerprint = format!(
        "{method} {path} {}",
        body.as_ref().map(|b| b.to_string()).unwrap_or_default()
    );
    let _w = app.write.lock().await;
    let mut tx = match app.db.begin().await {
        Ok(t) => t,
        Err(e) => {
            return Outcome {
                status: 500,
                body: json!({"error": e.to_string()}),
                replayed: false,
            }
        }
    };
    if let Ok(Some(row)) = sqlx::query("SELECT fingerprint, status, body FROM idempotency WHERE key = ?")
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
    {
        let fp: String = row.get(0);
        if fp != fingerprint {
            return Outcome {
                status: 422,
                body: json!({"error": "idempotency key reused with a different request"}),
                replayed: false,
            };
        }
        app.counters.replayed.fetch_add(1, Ordering::Relaxed);
        let stored: String = row.get(2);
        return Outcome {
            status: row.get::<i64, _>(1) as u16,
            body: serde_json::from_str(&stored).unwrap_or(Value::Null),
            replayed: true,
        };
    }
    let (status, resp, applied) = execute(&mut tx, app, method, path, body.as_ref()).await;
    if let Some((collection, id)) = &applied {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM applied")
            .fetch_one(&mut *tx)
            .await
            .unwrap_or(1);
        let _ = sqlx::query(
            "INSERT INTO applied (seq, key, method, path, collection, entity_id, body, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(key)
        .bind(method)
        .bind(path)
        .bind(collection)
        .bind(id)
        .bind(body.as_ref().map(|b| b.to_string()))
        .bind(status as i64)
        .execute(&mut *tx)
        .await;
    }
    // 5xx are not stored: a retry must be able to succeed.
    if status < 500 {
        let _ = sqlx::query("INSERT INTO idempotency (key, fingerprint, status, body) VALUES (?, ?, ?, ?)")
            .bind(key)
            .bind(&fingerprint)
            .bind(status as i64)
            .bind(resp.to_string())
            .execute(&mut *tx)
            .await;
    }
    if let Err(e) = tx.commit().await {
        return Outcome {
            status: 500,
            body: json!({"error": e.to_string()}),
            replayed: false,
        };
    }
    if applied.is_some() {
        app.counters.applied.fetch_add(1, Ordering::Relaxed);
    }
    Outcome {
        status,
        body: resp,
        replayed: false,
    }
}

/// The REST semantics: `POST /{c}` create, `PUT /{c}/{id}` upsert, `PATCH /{c}/{id}` JSON merge patch (RFC 7396),
/// `DELETE /{c}/{id}`. Returns (status, body, applied (collection, id)).
async fn execute(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    app: &App,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value, Option<(String, String)>) {
    let segs: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reject = {
        let f = app.faults.lock().unwrap();
        f.cfg.reject_paths.iter().any(|p| path.starts_with(p.as_str()))
    };
    if reject || body.and_then(|b| b.get("__reject")).and_then(Value::as_bool) == Some(true) {
        app.counters.rejected.fetch_add(1, Ordering::Relaxed);
        return (
            422,
            json!({"error": "validation failed", "detail": "__reject flag set"}),
            None,
        );
    }
    if let Some(b) = body {
        if !b.is_object() {
            return (400, json!({"error": "body must be a JSON object"}), None);
        }
    }
    let obj = || body.and_then(Value::as_object).cloned().unwrap_or_default();
    match (method, segs.as_slice()) {
        ("POST", [c]) => {
            let n: i64 = match next_id(tx).await {
                Ok(n) => n,
                Err(e) => return (500, json!({"error": format!("id assignment failed: {e}")}), None),
            };
            let id = format!("srv_{n}");
            let mut data = obj();
            data.insert("id".into(), Value::String(id.clone()));
            store(tx, c, &id, &data).await;
            (201, Value::Object(data), Some((c.to_string(), id)))
        }
        ("PUT", [c, id]) => {
            let mut data = obj();
            data.insert("id".into(), Value::String(id.to_string()));
            store(tx, c, id, &data).await;
            (200, Value::Object(data), Some((c.to_string(), id.to_string())))
        }
        ("PATCH", [c, id]) => {
            let Some(data) = fetch(tx, c, id).await else {
                return (404, json!({"error": format!("{c}/{id} not found")}), None);
            };
            // A JSON merge patch (RFC 7396): null removes a field, objects merge; `id` stays.
            let mut patch = obj();
            patch.remove("id");
            let mut doc = Value::Object(data);
            json_patch::merge(&mut doc, &Value::Object(patch));
            let Value::Object(data) = doc else {
                unreachable!("a merge into an object is an object")
            };
            store(tx, c, id, &data).await;
            (200, Value::Object(data), Some((c.to_string(), id.to_string())))
        }
        ("DELETE", [c, id]) => {
            let n = sqlx::query("DELETE FROM entities WHERE collection = ? AND id = ?")
                .bind(c)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map(|r| r.rows_affected())
                .unwrap_or(0);
            if n == 0 {
                return (404, json!({"error": format!("{c}/{id} not found")}), None);
            }
            (204, Value::Null, Some((c.to_string(), id.to_string())))
        }
        _ => (
            405,
            json!({"error": format!("{method} {path} is not a resource operation")}),
            None,
        ),
    }
}

async fn fetch(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    c: &str,
    id: &str,
) -> Option<Map<String, Value>> {
    sqlx::query_scalar::<_, String>("SELECT data FROM entities WHERE collection = ? AND id = ?")
        .bind(c)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
}

async fn store(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, c: &str, id: &str, data: &Map<String, Value>) {
    let _ = sqlx::query(
        "INSERT INTO entities (collection, id, data) VALUES (?, ?, ?) \
         ON CONFLICT(collection, id) DO UPDATE SET data = excluded.data",
    )
    .bind(c)
    .bind(id)
    .bind(Value::Object(data.clone()).to_string())
    .execute(&mut **tx)
    .await;
}

/// Fallback: every resource path.
async fn resource(State(app): State<Arc<App>>, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if method == Method::GET {
        return json_response(
            405,
            &json!({"error": "this server only accepts mutations"}),
            false,
        );
    }
    if !authorized(&app, req.headers()) {
        return unauthorized();
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return json_response(413, &json!({"error": "body too large (1 MiB max)"}), false),
    };
    let body = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Null) => None,
            Ok(v) => Some(v),
            Err(e) => return json_response(400, &json!({"error": format!("invalid JSON: {e}")}), false),
        }
    };
    let o = apply(&app, key.as_deref(), method.as_str(), &path, body).await;
    json_response(o.status, &o.body, o.replayed)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchItem {
    idempotency_key: Option<String>,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
}

#[derive(Deserialize)]
struct BatchRequest {
    items: Vec<BatchItem>,
}

/// `POST /batch`: items applied in order, each with its own idempotency; one failing item does
/// not abort the others.
async fn batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<BatchRequest>,
) -> Response<Body> {
    app.counters.batch_requests.fetch_add(1, Ordering::Relaxed);
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let mut out = Vec::with_capacity(req.items.len());
    for item in req.items {
        let injected = {
            let mut guard = app.faults.lock().unwrap();
            let f = &mut *guard;
            if f.roll(f.cfg.error_rate) {
                Some(pick_status(f))
            } else {
                None
            }
        };
        let key = item.idempotency_key.clone();
        let r = match injected {
            Some(s) => {
                app.counters.injected_errors.fetch_add(1, Ordering::Relaxed);
                json!({"idempotencyKey": key, "status": s, "body": {"error": "injected fault"}})
            }
            None => {
                let o = apply(
                    &app,
                    key.as_deref(),
                    &item.method.to_uppercase(),
                    &item.path,
                    item.body,
                )
                .await;
                json!({"idempotencyKey": key, "status": o.status, "body": o.body, "replayed": o.replayed})
            }
        };
        out.push(r);
    }
    json_response(200, &json!({ "items": out }), false)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshRequest {
    refresh_token: String,
}

async fn refresh(State(app): State<Arc<App>>, Json(req): Json<RefreshRequest>) -> Response<Body> {
    let Some(auth) = &app.auth else {
        return json_response(404, &json!({"error": "auth is not enabled"}), false);
    };
    let mut a = auth.lock().unwrap();
    if req.refresh_token != a.refresh_token {
        return unauthorized();
    }
    a.minted += 1;
    let token = format!("access-{}-{}", a.minted, rand::thread_rng().gen::<u64>());
    a.valid.push(token.clone());
    app.counters.refreshes.fetch_add(1, Ordering::Relaxed);
    json_response(
        200,
        &json!({"accessToken": token, "refreshToken": a.refresh_token, "expiresIn": 3600}),
        false,
    )
}

/// One OAuth 2.0 token request as received (form fields, the refresh token itself left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuthGrant {
    pub content_type: String,
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    /// Whether the refresh token was the current one.
    pub accepted: bool,
}

fn oauth_error(status: u16, code: &str) -> Response<Body> {
    // RFC 6749 §5.2; the description is free text a client must not show as-is.
    json_response(
        status,
        &json!({"error": code, "error_description": "see RFC 6749 §5.2"}),
        false,
    )
}

/// `POST /oauth/token`: the OAuth 2.0 refresh grant (RFC 6749 §6, answered as §5.1/§5.2).
async fn oauth_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::extract::RawForm(raw): axum::extract::RawForm,
) -> Response<Body> {
    let Some(auth) = &app.auth else {
        return json_response(404, &json!({"error": "auth is not enabled"}), false);
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let form: std::collections::HashMap<String, String> =
        serde_urlencoded::from_bytes(&raw).unwrap_or_default();
    let mut a = auth.lock().unwrap();
    let accepted = form.get("refresh_token") == Some(&a.refresh_token);
    a.grants.push(OAuthGrant {
        content_type: content_type.clone(),
        grant_type: form.get("grant_type").cloned(),
        client_id: form.get("client_id").cloned(),
        scope: form.get("scope").cloned(),
        accepted,
    });
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return oauth_error(400, "invalid_request");
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(400, "unsupported_grant_type");
    }
    if a.oauth_client_id.is_none() || form.get("client_id") != a.oauth_client_id.as_ref() {
        return oauth_error(401, "invalid_client");
    }
    if !accepted {
        return oauth_error(400, "invalid_grant");
    }
    a.minted += 1;
    let token = format!("oauth-access-{}-{}", a.minted, rand::thread_rng().gen::<u64>());
    a.valid.push(token.clone());
    if a.rotate {
        a.refresh_token = format!("oauth-refresh-{}-{}", a.minted, rand::thread_rng().gen::<u64>());
    }
    app.counters.refreshes.fetch_add(1, Ordering::Relaxed);
    let mut body = json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600});
    if a.rotate {
        body["refresh_token"] = json!(a.refresh_token);
    }
    // §5.1: the response must not be cached.
    let mut resp = json_response(200, &body, false);
    resp.headers_mut()
        .insert("cache-control", axum::http::HeaderValue::from_static("no-store"));
    resp
}

async fn admin_oauth_grants(State(app): State<Arc<App>>) -> Response<Body> {
    json_response(200, &json!(oauth_grants(&app)), false)
}

fn oauth_grants(app: &App) -> Vec<OAuthGrant> {
    app.auth
        .as_ref()
        .map(|a| a.lock().unwrap().grants.clone())
        .unwrap_or_default()
}

/// `POST /uploads/sign`: signed storage URLs for many files in one request.
async fn sign_uploads(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response<Body> {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    match app.storage.sign(&body) {
        Ok(v) => json_response(200, &v, false),
        Err(e) => json_response(400, &json!({ "error": e }), false),
    }
}

/// `PUT /files/{key}`: a direct upload to the API (bearer token, same storage).
async fn direct_upload(
    State(app): State<Arc<App>>,
    axum::extract::Path(key): axum::extract::Path<String>,
    req: Request<Body>,
) -> Response<Body> {
    if !authorized(&app, req.headers()) {
        return unauthorized();
    }
    let (parts, body) = req.into_parts();
    app.storage
        .handle_direct(&key, &parts.headers, body)
        .await
        .map(Body::from)
}

async fn admin_objects(State(app): State<Arc<App>>) -> Json<Vec<StoredObject>> {
    Json(app.storage.objects())
}

async fn admin_storage_stats(State(app): State<Arc<App>>) -> Json<StorageStats> {
    Json(app.storage.stats())
}

async fn admin_storage_faults(State(app): State<Arc<App>>, Json(f): Json<StorageFaults>) -> StatusCode {
    app.storage.set_faults(f);
    StatusCode::NO_CONTENT
}

async fn admin_log(State(app): State<Arc<App>>) -> Json<Vec<AppliedEntry>> {
    Json(read_log(&app).await)
}

async fn admin_state(State(app): State<Arc<App>>) -> Json<Value> {
    Json(read_state(&app).await)
}

async fn admin_stats(State(app): State<Arc<App>>) -> Json<Stats> {
    Json(app.counters.snapshot())
}

async fn admin_faults(State(app): State<Arc<App>>, Json(f): Json<FaultConfig>) -> StatusCode {
    set_faults(&app, f);
    StatusCode::NO_CONTENT
}

async fn admin_reset(State(app): State<Arc<App>>) -> StatusCode {
    let _w = app.write.lock().await;
    for t in ["entities", "idempotency", "applied"] {
        let _ = sqlx::query(&format!("DELETE FROM {t}")).execute(&app.db).await;
    }
    app.storage.reset();
    StatusCode::NO_CONTENT
}

async fn admin_revoke(State(app): State<Arc<App>>) -> StatusCode {
    revoke(&app);
    StatusCode::NO_CONTENT
}

fn set_faults(app: &App, f: FaultConfig) {
    let mut g = app.faults.lock().unwrap();
    g.rng = ChaCha8Rng::seed_from_u64(f.seed);
    g.cfg = f;
}

fn revoke(app: &App) {
    if let Some(a) = &app.auth {
        a.lock().unwrap().valid.clear();
    }
}

async fn read_log(app: &App) -> Vec<AppliedEntry> {
    let rows = sqlx::query(
        "SELECT seq, key, method, path, collection, entity_id, body, status FROM applied ORDER BY seq",
    )
    .fetch_all(&app.db)
    .await
    .unwrap_or_default();
    rows.iter()
        .map(|r| AppliedEntry {
            seq: r.get(0),
            idempotency_key: r.get(1),
            method: r.get(2),
            path: r.get(3),
            collection: r.get(4),
            entity_id: r.get(5),
            body: r
                .get::<Option<String>, _>(6)
                .and_then(|b| serde_json::from_str(&b).ok()),
            status: r.get::<i64, _>(7) as u16,
        })
        .collect()
}

async fn read_state(app: &App) -> Value {
    let rows = sqlx::query("SELECT collection, id, data FROM entities ORDER BY collection, id")
        .fetch_all(&app.db)
        .await
        .unwrap_or_default();
    let mut out = Map::new();
    for r in rows {
        let c: String = r.get(0);
        let id: String = r.get(1);
        let data: Value = serde_json::from_str(&r.get::<String, _>(2)).unwrap_or(Value::Null);
        out.entry(c).or_insert_with(|| Value::Object(Map::new()))[id.as_str()] = data;
    }
    Value::Object(out)
}

impl RunningServer {
    pub fn set_faults(&self, f: FaultConfig) {
        set_faults(&self.app, f);
    }
    pub async fn applied_log(&self) -> Vec<AppliedEntry> {
        read_log(&self.app).await
    }
    pub async fn state(&self) -> Value {
        read_state(&self.app).await
    }
    pub fn stats(&self) -> Stats {
        self.app.counters.snapshot()
    }
    /// Stored files, by key (the client's upload id).
    pub fn objects(&self) -> Vec<StoredObject> {
        self.app.storage.objects()
    }
    pub fn storage_stats(&self) -> StorageStats {
        self.app.storage.stats()
    }
    pub fn set_storage_faults(&self, f: StorageFaults) {
        self.app.storage.set_faults(f);
    }
    /// Every access token stops working (a 401 storm); refresh still works.
    /// The OAuth 2.0 token requests received so far.
    pub fn oauth_grants(&self) -> Vec<OAuthGrant> {
        oauth_grants(&self.app)
    }

    pub fn revoke_tokens(&self) {
        revoke(&self.app);
    }
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (collection, id));
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, collection TEXT NOT NULL, entity_id TEXT NOT NULL, body TEXT, status INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('id', 0);
";

/// Server ids come from a persisted counter, so they are never reused across restarts.
async fn next_id(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<i64, sqlx::Error> {
    sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'id'")
        .execute(&mut **tx)
        .await?;
    sqlx::query_scalar("SELECT value FROM counters WHERE name = 'id'")
        .fetch_one(&mut **tx)
        .await
}
