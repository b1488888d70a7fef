//! File uploads: a sign endpoint on the API (`POST /uploads/sign`, many files per request), a
//! separate storage origin that accepts `PUT /o/{key}?exp=..&sig=..` (like S3/GCS signed URLs),
//! and a direct upload route on the API (`PUT /files/{key}`). Bodies are streamed to disk;
//! storing the same key again overwrites it, so a re-upload after a lost response is harmless.

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Incoming};
use hyper::{HeaderMap, Request, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

/// Storage-side fault injection (seeded, in arrival order), plus the signed URL lifetime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StorageFaults {
    pub seed: u64,
    /// 503 before reading the body.
    pub error_rate: f64,
    /// Read part of the body, then close the connection without a response.
    pub drop_rate: f64,
    /// Store the whole file, then close the connection without a response.
    pub commit_then_drop_rate: f64,
    /// The next N uploads are refused with 403 "signature expired" although their URL looks
    /// valid (a clock-skewed or revoked signature).
    pub expire_next: u32,
    /// Lifetime of signed URLs.
    pub sign_ttl_ms: u64,
    /// Read the body at most this fast (0 = unlimited).
    pub bytes_per_sec: u64,
}

impl Default for StorageFaults {
    fn default() -> Self {
        Self {
            seed: 0,
            error_rate: 0.0,
            drop_rate: 0.0,
            commit_then_drop_rate: 0.0,
            expire_next: 0,
            sign_ttl_ms: 15 * 60_000,
            bytes_per_sec: 0,
        }
    }
}

/// Upload counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageStats {
    pub sign_requests: u64,
    pub signed_urls: u64,
    /// Upload requests received (storage and direct).
    pub puts: u64,
    /// Uploads stored completely.
    pub stored: u64,
    pub bytes_stored: u64,
    pub expired_rejections: u64,
    pub bad_signatures: u64,
    pub injected_errors: u64,
    pub injected_drops: u64,
    pub injected_commit_then_drops: u64,
    /// Most uploads being received at once.
    pub max_concurrent: u64,
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub content_type: Option<String>,
    /// Complete uploads of this key (more than 1 only after a lost response).
    pub writes: u64,
    pub url: String,
}

#[derive(Default)]
struct Counters {
    sign_requests: AtomicU64,
    signed_urls: AtomicU64,
    puts: AtomicU64,
    stored: AtomicU64,
    bytes_stored: AtomicU64,
    expired_rejections: AtomicU64,
    bad_signatures: AtomicU64,
    injected_errors: AtomicU64,
    injected_drops: AtomicU64,
    injected_commit_then_drops: AtomicU64,
    concurrent: AtomicU64,
    max_concurrent: AtomicU64,
}

pub(crate) struct Storage {
    dir: PathBuf,
    /// `http://127.0.0.1:PORT` of the storage listener.
    pub(crate) base_url: String,
    secret: u64,
    faults: StdMutex<(StorageFaults, ChaCha8Rng)>,
    objects: StdMutex<BTreeMap<String, StoredObject>>,
    counters: Counters,
}

pub(crate) enum Fault {
    None,
    Error,
    Drop,
    CommitThenDrop,
    Expired,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Object keys are the client's upload ids: keep them to a safe alphabet.
fn safe_key(k: &str) -> Option<String> {
    let ok =
        !k.is_empty() && k.len() <= 128 && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (ok && !k.starts_with('.')).then(|| k.to_string())
}

impl Storage {
    pub(crate) fn new(dir: PathBuf, base_url: String) -> Self {
        let seed = StorageFaults::default().seed;
        Self {
            dir,
            base_url,
            secret: rand::thread_rng().gen(),
            faults: StdMutex::new((StorageFaults::default(), ChaCha8Rng::seed_from_u64(seed))),
            objects: StdMutex::new(BTreeMap::new()),
            counters: Counters::default(),
        }
    }

    pub(crate) fn set_faults(&self, f: StorageFaults) {
        let rng = ChaCha8Rng::seed_from_u64(f.seed);
        *self.faults.lock().unwrap() = (f, rng);
    }

    pub(crate) fn reset(&self) {
        self.objects.lock().unwrap().clear();
    }

    pub(crate) fn objects(&self) -> Vec<StoredObject> {
        self.objects.lock().unwrap().values().cloned().collect()
    }

    pub(crate) fn stats(&self) -> StorageStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StorageStats {
            sign_requests: g(&c.sign_requests),
            signed_urls: g(&c.signed_urls),
            puts: g(&c.puts),
            stored: g(&c.stored),
            bytes_stored: g(&c.bytes_stored),
            expired_rejections: g(&c.expired_rejections),
            bad_signatures: g(&c.bad_signatures),
            injected_errors: g(&c.injected_errors),
            injected_drops: g(&c.injected_drops),
            injected_commit_then_drops: g(&c.injected_commit_then_drops),
            max_concurrent: g(&c.max_concurrent),
        }
    }

    fn signature(&self, key: &str, exp: i64) -> String {
        // A keyed FNV-1a: enough to show the flow; a real storage host uses HMAC-SHA256.
        let mut h: u64 = 0xcbf29ce484222325 ^ self.secret;
        for b in key.bytes().chain(exp.to_string().bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }

    /// `POST /uploads/sign` body: `{"files":[{"id","contentType","size","fileName"}]}`.
    pub(crate) fn sign(&self, body: &Value) -> Result<Value, String> {
        self.counters.sign_requests.fetch_add(1, Ordering::Relaxed);
        let files = body
            .get("files")
            .and_then(Value::as_array)
            .ok_or("body must be {\"files\": [...]}")?;
        let ttl = self.faults.lock().unwrap().0.sign_ttl_ms as i64;
        let exp = now_ms() + ttl;
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let id = f
                .get("id")
                .and_then(Value::as_str)
                .ok_or("every file needs an id")?;
            let key = safe_key(id).ok_or_else(|| format!("id '{id}' is not a valid object key"))?;
            let ct = f
                .get("contentType")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream");
            let sig = self.signature(&key, exp);
            out.push(json!({
                "id": id,
                "url": format!("{}/o/{key}?exp={exp}&sig={sig}", self.base_url),
                "method": "PUT",
                "headers": {"Content-Type": ct},
                "expiresAt": exp,
                "resultUrl": format!("{}/o/{key}", self.base_url),
            }));
        }
        self.counters
            .signed_urls
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(json!({ "uploads": out }))
    }

    fn roll(&self) -> Fault {
        let mut g = self.faults.lock().unwrap();
        let (f, rng) = &mut *g;
        if f.expire_next > 0 {
            f.expire_next -= 1;
            return Fault::Expired;
        }
        let mut hit = |p: f64| p > 0.0 && rng.gen::<f64>() < p;
        if hit(f.drop_rate) {
            Fault::Drop
        } else if hit(f.error_rate) {
            Fault::Error
        } else if hit(f.commit_then_drop_rate) {
            Fault::CommitThenDrop
        } else {
            Fault::None
        }
    }

    /// A storage-listener request. `Err` closes the connection without a response.
    pub(crate) async fn handle_storage(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<String>, crate::Dropped> {
        let path = req.uri().path().to_string();
        let Some(key) = path.strip_prefix("/o/").and_then(safe_key) else {
            return Ok(text(404, "no such object"));
        };
        if req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD {
            return Ok(match self.objects.lock().unwrap().get(&key) {
                Some(o) => text(200, &serde_json::to_string(o).unwrap_or_default()),
                None => text(404, "no such object"),
            });
        }
        if req.method() != hyper::Method::PUT {
            return Ok(text(405, "PUT only"));
        }
        let q: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let exp: i64 = q.get("exp").and_then(|e| e.parse().ok()).unwrap_or(0);
        if q.get("sig").map(String::as_str) != Some(self.signature(&key, exp).as_str()) {
            self.counters.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return Ok(text(403, r#"{"error":"bad signature"}"#));
        }
        if exp < now_ms() {
            self.counters.expired_rejections.fetch_add(1, Ordering::Relaxed);
            return Ok(text(403, r#"{"error":"signature expired"}"#));
        }
        let (parts, body) = req.into_parts();
        self.receive(key, &parts.headers, body, true).await
    }

    /// `PUT /files/{key}` on the API (authorized by the caller; the API's own fault injection
    /// applies instead of the storage faults).
    pub(crate) async fn handle_direct<B>(&self, key: &str, headers: &HeaderMap, body: B) -> Response<String>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let Some(key) = safe_key(key) else {
            return text(400, r#"{"error":"invalid key"}"#);
        };
        self.receive(key, headers, body, false)
            .await
            .unwrap_or_else(|_| text(500, "unreachable"))
    }

    async fn receive<B>(
        &self,
        key: String,
        headers: &HeaderMap,
        mut body: B,
        inject: bool,
    ) -> Result<Response<String>, crate::Dropped>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        let fault = if inject { self.roll() } else { Fault::None };
        let c = &self.counters;
        let now = c.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_concurrent.fetch_max(now, Ordering::SeqCst);
        let _guard = Guard(&c.concurrent);
        match fault {
            Fault::Expired => {
                c.expired_rejections.fetch_add(1, Ordering::Relaxed);
                return Ok(text(403, r#"{"error":"signature expired"}"#));
            }
            Fault::Error => {
                c.injected_errors.fetch_add(1, Ordering::Relaxed);
                return Ok(text(503, r#"{"error":"storage busy"}"#));
            }
            _ => {}
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let declared: Option<u64> = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let rate = self.faults.lock().unwrap().0.bytes_per_sec;
        let partial = self
            .dir
            .join(format!("{key}.{}.part", rand::thread_rng().gen::<u32>()));
        let mut file = match tokio::fs::File::create(&partial).await {
            Ok(f) => f,
            Err(e) => return Ok(text(500, &format!("{{\"error\":\"{e}\"}}"))),
        };
        let mut size: u64 = 0;
        let started = std::time::Instant::now();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                let _ = tokio::fs::remove_file(&partial).await;
                return Ok(text(400, r#"{"error":"body interrupted"}"#));
            };
            if let Some(data) = frame.data_ref() {
                size += data.len() as u64;
                if file.write_all(data).await.is_err() {
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Ok(text(507, r#"{"error":"storage full"}"#));
                }
                if matches!(fault, Fault::Drop) && size >= declared.unwrap_or(0) / 2 {
                    c.injected_drops.fetch_add(1, Ordering::Relaxed);
                    drop(file);
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(crate::Dropped);
                }
                if rate > 0 {
                    let due = Duration::from_secs_f64(size as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        if declared.is_some_and(|d| d != size) {
            let _ = tokio::fs::remove_file(&partial).await;
            return Ok(text(400, r#"{"error":"content-length mismatch"}"#));
        }
        let _ = file.flush().await;
        drop(file);
        let final_path = self.dir.join(&key);
        if tokio::fs::rename(&partial, &final_path).await.is_err() {
            return Ok(text(500, r#"{"error":"cannot store"}"#));
        }
        let url = format!("{}/o/{key}", self.base_url);
        {
            let mut objects = self.objects.lock().unwrap();
            let o = objects.entry(key.clone()).or_insert(StoredObject {
                key: key.clone(),
                size,
                content_type: content_type.clone(),
                writes: 0,
                url: url.clone(),
            });
            o.size = size;
            o.content_type = content_type;
            o.writes += 1;
        }
        c.stored.fetch_add(1, Ordering::Relaxed);
        c.bytes_stored.fetch_add(size, Ordering::Relaxed);
        if matches!(fault, Fault::CommitThenDrop) {
            c.injected_commit_then_drops.fetch_add(1, Ordering::Relaxed);
            return Err(crate::Dropped);
        }
        Ok(text(
            200,
            &json!({"id": key, "url": url, "size": size}).to_string(),
        ))
    }
}

struct Guard<'a>(&'a AtomicU64);
impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn text(status: u16, body: &str) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap()
}
