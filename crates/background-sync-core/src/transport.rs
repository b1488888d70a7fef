//! HTTP transport: builds one request per mutation (or one per batch), sends it with reqwest
//! over rustls, and reports what it saw. It never decides what to do about an outcome (that is
//! `policy`), and it can only reach origins allowed by the configuration.

use crate::error::{Error, Result};
use crate::idmap;
use crate::models::UploadDestination;
use crate::models::{AuthConfig, RefreshMode, SyncConfig, TlsConfig};
use crate::policy::Observed;
use crate::store::{Claimed, ClaimedUpload};
use crate::time;
use crate::validate::{self, OriginPolicy};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Response bodies are read up to this size (server ids and error excerpts live at the start).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

pub(crate) const USER_AGENT: &str = concat!("tauri-plugin-background-sync/", env!("CARGO_PKG_VERSION"));

/// One request's result as seen on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub observed: Observed,
    /// The response body (capped), when there was a response.
    pub body: Option<Vec<u8>>,
}

/// A mutation after temp-id rewriting, ready for the wire.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub method: reqwest::Method,
    pub path: String,
    pub body: Option<String>,
}

impl Outgoing {
    pub(crate) fn from_claimed(c: &Claimed) -> Result<Self> {
        let method = reqwest::Method::from_bytes(c.method.as_bytes())
            .map_err(|_| Error::invalid(format!("stored method '{}' is invalid", c.method)))?;
        let path = idmap::rewrite_path(&c.path, &c.mapping);
        let body = match &c.body {
            None => None,
            Some(b) if c.mapping.is_empty() => Some(b.clone()),
            Some(b) => {
                let mut v: Value = serde_json::from_str(b)?;
                idmap::rewrite_body(&mut v, &c.mapping);
                Some(serde_json::to_string(&v)?)
            }
        };
        Ok(Self { method, path, body })
    }
}

/// The certificates of `tls.extraRootsPem`, each checked to be usable as a trust anchor (so a
/// bad one fails `configure`, not every later drain).
pub(crate) fn extra_roots(tls: &TlsConfig) -> Result<Vec<reqwest::Certificate>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = Vec::new();
    for (i, pem) in tls.extra_roots_pem.iter().enumerate() {
        let bad = |why: String| Error::invalid(format!("tls.extraRootsPem[{i}]: {why}"));
        let mut found = 0;
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = der.map_err(|e| bad(format!("not PEM: {e}")))?;
            rustls::RootCertStore::empty()
                .add(der.clone())
                .map_err(|e| bad(format!("not a usable root certificate: {e}")))?;
            roots.push(reqwest::Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?);
            found += 1;
        }
        if found == 0 {
            return Err(bad("no -----BEGIN CERTIFICATE----- block".into()));
        }
    }
    if roots.is_empty() && !tls.built_in_roots {
        return Err(Error::invalid(
            "tls.builtInRoots is false and tls.extraRootsPem is empty: no TLS server could be trusted",
        ));
    }
    Ok(roots)
}

pub(crate) struct Transport {
    client: reqwest::Client,
    policy: OriginPolicy,
    /// API origins plus storage origins: where file bytes may go.
    upload_policy: OriginPolicy,
    cfg: SyncConfig,
}

/// Bytes read from disk into one upload's request body so far (for progress and stall checks).
pub(crate) type ByteCounter = Arc<AtomicU64>;

impl Transport {
    pub(crate) fn new(cfg: &SyncConfig) -> Result<Self> {
        let policy = OriginPolicy::new(cfg)?;
        let mut builder = reqwest::Client::builder();
        for root in extra_roots(&cfg.tls)? {
            builder = builder.add_root_certificate(root);
        }
        let client = builder
            .tls_built_in_root_certs(cfg.tls.built_in_roots)
            // A redirect could lead outside the allowed origins; the caller's API should not
            // redirect mutations anyway. A 3xx is therefore a permanent failure.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(10_000)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| Error::network(format!("cannot build HTTP client: {e}"), e))?;
        Ok(Self {
            client,
            policy,
            upload_policy: OriginPolicy::for_uploads(cfg)?,
            cfg: cfg.clone(),
        })
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
        auth: &AuthConfig,
    ) -> Result<reqwest::RequestBuilder> {
        let url = self.policy.resolve(path)?;
        let mut req = self.client.request(method, url).timeout(timeout);
        for (k, v) in &self.cfg.default_headers {
            req = req.header(k, v);
        }
        if let Some(token) = &auth.access_token {
            req = req.bearer_auth(token);
        }
        Ok(req)
    }

    /// Send one mutation. `Err` only for a request that cannot be built (e.g. its origin is
    /// no longer allowed): that is permanent for this mutation.
    pub(crate) async fn send(
        &self,
        c: &Claimed,
        out: &Outgoing,
        timeout: Duration,
        auth: &AuthConfig,
    ) -> Result<Sent> {
        let mut req = self
            .request(out.method.clone(), &out.path, timeout, auth)?
            .header("Idempotency-Key", &c.idempotency_key);
        for (k, v) in &c.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &out.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.clone());
        }
        Ok(execute(req).await)
    }

    /// Ask the sign endpoint for upload URLs, one request for many files.
    pub(crate) async fn sign_uploads(
        &self,
        uploads: &[&ClaimedUpload],
        timeout: Duration,
        auth: &AuthConfig,
    ) -> Result<Sent> {
        let files: Vec<Value> = uploads
            .iter()
            .map(|u| {
                serde_json::json!({
                    "id": u.id,
                    "idempotencyKey": u.idempotency_key,
                    "fileName": u.file_name,
                    "contentType": u.content_type,
                    "size": u.size,
                })
            })
            .collect();
        let req = self
            .request(reqwest::Method::POST, &self.cfg.uploads.sign_path, timeout, auth)?
            .json(&serde_json::json!({ "files": files }));
        Ok(execute(req).await)
    }

    /// Stream one file to its destination. `Err` when the request cannot be built (URL not
    /// allowed, file gone): permanent for this upload.
    pub(crate) async fn upload(
        &self,
        u: &ClaimedUpload,
        timeout: Duration,
        auth: &AuthConfig,
        sent: ByteCounter,
    ) -> Result<Sent> {
        let file = tokio::fs::File::open(&u.file_path).await.map_err(|e| {
            Error::storage(
                format!("cannot read the file to upload ({}): {e}", u.file_path),
                e,
            )
        })?;
        // The length on disk now: a file edited after enqueue is sent as it is.
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::storage(format!("cannot stat {}: {e}", u.file_path), e))?
            .len();
        let counted = sent.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).map(move |chunk| {
            if let Ok(c) = &chunk {
                counted.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
        let body = reqwest::Body::wrap_stream(stream);
        let req = match (&u.destination, &u.target) {
            (UploadDestination::Direct { url, method }, _) => {
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|_| Error::invalid(format!("upload method '{method}' is invalid")))?;
                self.request(method, url, timeout, auth)?
                    .header("Idempotency-Key", &u.idempotency_key)
                    .header(reqwest::header::CONTENT_TYPE, &u.content_type)
                    .header(reqwest::header::CONTENT_LENGTH, len)
                    .body(body)
            }
            (UploadDestination::Signed, Some(t)) => {
                let url = self.upload_policy.resolve(&t.url).map_err(|e| {
                    Error::OriginNotAllowed(format!(
                        "the sign endpoint returned a URL outside uploads.storageOrigins: {e}"
                    ))
                })?;
                let method = reqwest::Method::from_bytes(t.method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| Error::invalid(format!("signed upload method '{}' is invalid", t.method)))?;
                // No bearer token: the signature is the credential, and the storage host must not
                // see the app's token.
                let mut req = self.client.request(method, url).timeout(timeout);
                for (k, v) in &t.headers {
                    validate::upload_header(k, v)?;
                    req = req.header(k, v);
                }
                match &t.fields {
                    Some(fields) => {
                        let mut form = reqwest::multipart::Form::new();
                        for (k, v) in fields {
                            form = form.text(k.clone(), v.clone());
                        }
                        let name = u.file_name.clone().unwrap_or_else(|| u.id.clone());
                        let part = reqwest::multipart::Part::stream_with_length(body, len)
                            .file_name(name)
                            .mime_str(&u.content_type)
                            .map_err(|e| Error::invalid(format!("content type: {e}")))?;
                        req.multipart(form.part(t.file_field.clone().unwrap_or_else(|| "file".into()), part))
                    }
                    None => {
                        if !t.headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
                            req = req.header(reqwest::header::CONTENT_TYPE, &u.content_type);
                        }
                        req.header(reqwest::header::CONTENT_LENGTH, len).body(body)
                    }
                }
            }
            (UploadDestination::Signed, None) => {
                return Err(Error::Internal("signed upload without a URL".into()));
            }
        };
        Ok(execute(req).await)
    }

    /// Send several mutations through the batch endpoint.
    pub(crate) async fn send_batch(
        &self,
        items: &[(&Claimed, Outgoing)],
        timeout: Duration,
        auth: &AuthConfig,
    ) -> Result<Sent> {
        let path = self
            .cfg
            .batch
            .as_ref()
            .map(|b| b.path.clone())
            .unwrap_or_else(|| "/batch".into());
        let payload: Vec<Value> = items
            .iter()
            .map(|(c, o)| {
                let body = o.body.as_deref().map(serde_json::from_str::<Value>).transpose()?;
                let mut item = serde_json::json!({
                    "idempotencyKey": c.idempotency_key,
                    "method": o.method.as_str(),
                    "path": o.path,
                    "body": body,
                });
                // Per-mutation headers (If-Match, API versions) travel with their item.
                if !c.headers.is_empty() {
                    item["headers"] = serde_json::to_value(&c.headers)?;
                }
                Ok(item)
            })
            .collect::<Result<_>>()?;
        let req = self
            .request(reqwest::Method::POST, &path, timeout, auth)?
            .json(&serde_json::json!({ "items": payload }));
        Ok(execute(req).await)
    }

    /// Exchange the refresh token for a new access token (declarative, works headless), in
    /// the plugin's JSON form or as the OAuth 2.0 refresh grant. Errors name what went wrong,
    /// never a token.
    pub(crate) async fn refresh(
        &self,
        auth: &AuthConfig,
        timeout: Duration,
        now_ms: i64,
    ) -> Result<AuthConfig> {
        let (Some(url), Some(rt)) = (&auth.refresh_url, &auth.refresh_token) else {
            return Err(Error::Auth(
                "the server answered 401 and no refresh token/refreshUrl is set".into(),
            ));
        };
        let req = self
            .request(reqwest::Method::POST, url, timeout, &AuthConfig::default())?
            .header(reqwest::header::ACCEPT, "application/json");
        let req = match auth.refresh_mode {
            RefreshMode::Json => req.json(&serde_json::json!({ "refreshToken": rt })),
            RefreshMode::OAuth2 => {
                let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt.as_str())];
                form.extend(auth.client_id.as_deref().map(|c| ("client_id", c)));
                form.extend(auth.scope.as_deref().map(|s| ("scope", s)));
                req.form(&form)
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Error::network(format!("token refresh failed: {}", describe(&e)), e))?;
        let status = resp.status();
        let v: Option<Value> = resp.json().await.ok();
        if !status.is_success() {
            // RFC 6749 §5.2: `error` is a code from a fixed alphabet; the description is free
            // text from the server and stays out of reports.
            let code = v
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            return Err(Error::Auth(match code {
                Some(code) => format!("token refresh answered HTTP {} ({code})", status.as_u16()),
                None => format!("token refresh answered HTTP {}", status.as_u16()),
            }));
        }
        let v = v.ok_or_else(|| Error::Auth("token refresh response is not JSON".into()))?;
        let field = |camel: &str, snake: &str| v.get(camel).or_else(|| v.get(snake)).cloned();
        let access = field("accessToken", "access_token")
            .and_then(|t| t.as_str().map(str::to_string))
            .ok_or_else(|| Error::Auth("token refresh response has no accessToken".into()))?;
        if let Some(kind) = field("tokenType", "token_type") {
            // §7.1: a client must not use a token whose type it does not understand.
            if !kind.as_str().is_some_and(|k| k.eq_ignore_ascii_case("bearer")) {
                return Err(Error::Auth(
                    "token refresh returned a token_type other than Bearer".into(),
                ));
            }
        }
        let rotated = field("refreshToken", "refresh_token").and_then(|t| t.as_str().map(str::to_string));
        for t in std::iter::once(&access).chain(rotated.as_ref()) {
            validate::token(t).map_err(|_| {
                Error::Auth("token refresh returned a token that cannot be sent in a header".into())
            })?;
        }
        // Seconds; some servers send them as a string.
        let expires_in = field("expiresIn", "expires_in").and_then(|e| match e {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        Ok(AuthConfig {
            access_token: Some(access),
            refresh_token: rotated.or_else(|| auth.refresh_token.clone()),
            expires_at: expires_in
                .map(|secs| time::after(now_ms, Duration::from_secs(secs.min(10 * 365 * 86_400)))),
            ..auth.clone()
        })
    }
}

/// What a failed connection attempt says. Only "no route" answers mean offline (refused,
/// unreachable, DNS, a connect timeout): they cost no attempt and stop the drain. A TLS
/// handshake failure is not offline and never heals by waiting (`Tls`); anything else (a reset
/// right after connecting, a peer that hung up) is an ordinary transient error.
pub(crate) fn connect_failure(e: &reqwest::Error) -> Observed {
    use std::error::Error as _;
    use std::io::ErrorKind;
    let text = describe(e);
    // Every error in the chain, also those nested inside io::Errors (whose `source()` skips
    // the error they wrap).
    let mut causes: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut src = e.source();
    while let Some(cause) = src {
        causes.push(cause);
        let mut inner = cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        while let Some(i) = inner {
            causes.push(i);
            inner = i.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        }
        src = cause.source();
    }
    if causes.iter().any(|c| c.downcast_ref::<rustls::Error>().is_some()) {
        return Observed::Tls(format!("TLS handshake with the API failed: {text}"));
    }
    for io in causes.iter().filter_map(|c| c.downcast_ref::<std::io::Error>()) {
        match io.kind() {
            ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::AddrNotAvailable
            | ErrorKind::TimedOut => return Observed::Unreachable(text),
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::BrokenPipe => return Observed::TransportError(text),
            _ => {}
        }
    }
    // No io error to go by: DNS failures and connect timeouts say so in words.
    Observed::Unreachable(text)
}

async fn execute(req: reqwest::RequestBuilder) -> Sent {
    match req.send().await {
        Err(e) if e.is_connect() => Sent {
            observed: connect_failure(&e),
            body: None,
        },
        Err(e) => Sent {
            observed: Observed::TransportError(describe(&e)),
            body: None,
        },
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        if room == 0 {
                            break;
                        }
                    }
                    Ok(None) => break,
                    // The status arrived but the body was cut: we cannot trust what we have
                    // (a create's id may be missing). Retrying is safe: the key replays it.
                    Err(e) => {
                        return Sent {
                            observed: Observed::TransportError(format!(
                                "response body interrupted: {}",
                                describe(&e)
                            )),
                            body: None,
                        }
                    }
                }
            }
            Sent {
                observed: Observed::Response { status, retry_after },
                body: Some(body),
            }
        }
    }
}

/// reqwest's Display hides the cause; the chain says "connection refused", "timed out"...
/// URLs carry no credentials (refused at validation), so messages are safe to store and log.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}
