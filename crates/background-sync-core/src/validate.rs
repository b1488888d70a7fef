//! Input checks at the boundary: configuration, mutations, origins. Everything a webview (or a
//! bug) can send is checked here, before it reaches the store, and again before a request is
//! built (the configuration may have changed since the enqueue).

use crate::error::{Error, Result};
use crate::models::{NewMutation, SyncConfig};
use std::net::IpAddr;
use url::Url;

pub(crate) const METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];
const MAX_PATH_LEN: usize = 2_048;
const MAX_ENTITY_LEN: usize = 256;
const MAX_HEADERS: usize = 32;

/// Headers a mutation may not set: the transport owns them, or they would let a caller smuggle
/// requests or credentials.
const FORBIDDEN_HEADERS: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "authorization",
    "proxy-authorization",
    "cookie",
    "idempotency-key",
    "proxy-connection",
];

/// The set of origins requests may go to, derived from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    base: Url,
    origins: Vec<url::Origin>,
}

impl OriginPolicy {
    pub(crate) fn new(cfg: &SyncConfig) -> Result<Self> {
        let base = parse_http_url(&cfg.base_url, cfg.allow_insecure_http)
            .map_err(|e| Error::invalid(format!("baseUrl: {e}")))?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err(Error::invalid("baseUrl must not have a query or fragment"));
        }
        let mut origins = vec![base.origin()];
        for o in &cfg.allowed_origins {
            let u = parse_http_url(o, cfg.allow_insecure_http)
                .map_err(|e| Error::invalid(format!("allowedOrigins: {e}")))?;
            origins.push(u.origin());
        }
        Ok(Self { base, origins })
    }

    /// The API origins plus `uploads.storageOrigins`: where signed upload URLs may point.
    pub(crate) fn for_uploads(cfg: &SyncConfig) -> Result<Self> {
        let mut p = Self::new(cfg)?;
        for o in &cfg.uploads.storage_origins {
            let u = parse_http_url(o, cfg.allow_insecure_http)
                .map_err(|e| Error::invalid(format!("uploads.storageOrigins: {e}")))?;
            p.origins.push(u.origin());
        }
        Ok(p)
    }

    /// Resolve a mutation path (relative to the base URL, or absolute on an allowed origin).
    pub(crate) fn resolve(&self, path: &str) -> Result<Url> {
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::invalid("path contains control characters or spaces"));
        }
        let url = if path.starts_with('/') {
            if path.starts_with("//") {
                return Err(Error::invalid("path must not start with '//'"));
            }
            let joined = format!("{}{}", self.base.as_str().trim_end_matches('/'), path);
            Url::parse(&joined).map_err(|e| Error::invalid(format!("path: {e}")))?
        } else if path.starts_with("http://") || path.starts_with("https://") {
            Url::parse(path).map_err(|e| Error::invalid(format!("url: {e}")))?
        } else {
            return Err(Error::invalid(
                "path must start with '/' (relative to baseUrl) or be an absolute http(s) URL",
            ));
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::OriginNotAllowed(
                "credentials in URLs are not allowed".into(),
            ));
        }
        if !self.origins.contains(&url.origin()) {
            return Err(Error::OriginNotAllowed(format!(
                "{} is not the configured API origin (add it to allowedOrigins)",
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }
}

/// An http(s) URL; plain http only for loopback hosts unless explicitly allowed.
pub(crate) fn parse_http_url(s: &str, allow_insecure_http: bool) -> std::result::Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("'{s}' is not a valid URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "plain http is only allowed for loopback hosts ('{s}'); use https or set allowInsecureHttp"
            ))
        }
        other => return Err(format!("scheme '{other}' is not http(s)")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{s}' has no host"));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Check a configuration before it is persisted.
const MAX_LEASE_TTL_MS: u64 = 3_600_000;
const MAX_RETENTION_MS: u64 = 365 * 24 * 3_600_000;
const MAX_BACKOFF_MS: u64 = 24 * 3_600_000;

/// A path on the API for the plugin's own endpoints: '/' then RFC 3986 path characters.
fn api_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 2_048
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@%".contains(&b))
}

/// A few dozen CA certificates; the whole configuration is read by every drain.
const MAX_EXTRA_ROOTS_BYTES: usize = 512 * 1024;

pub(crate) fn config(cfg: &SyncConfig) -> Result<()> {
    OriginPolicy::new(cfg)?;
    if !cfg.id_pointer.is_empty() && !cfg.id_pointer.starts_with('/') {
        return Err(Error::invalid(
            "idPointer must be a JSON pointer starting with '/' (e.g. \"/id\")",
        ));
    }
    if cfg.request_timeout_ms < 100 || cfg.request_timeout_ms > 10 * 60_000 {
        return Err(Error::invalid("requestTimeoutMs must be between 100 and 600000"));
    }
    if cfg.max_attempts == 0 {
        return Err(Error::invalid("maxAttempts must be at least 1"));
    }
    if !(1..=64).contains(&cfg.concurrency) {
        return Err(Error::invalid("concurrency must be between 1 and 64"));
    }
    if !(cfg.backoff.multiplier.is_finite() && cfg.backoff.multiplier >= 1.0) {
        return Err(Error::invalid("backoff.multiplier must be a finite number >= 1"));
    }
    if cfg.backoff.initial_ms > cfg.backoff.max_ms {
        return Err(Error::invalid("backoff.initialMs must not exceed backoff.maxMs"));
    }
    if let Some(b) = &cfg.batch {
        if !api_path(&b.path) {
            return Err(Error::invalid(
                "batch.path must be a URL path starting with '/' (no spaces, query or fragment)",
            ));
        }
        if !(1..=1_000).contains(&b.max_items) {
            return Err(Error::invalid("batch.maxItems must be between 1 and 1000"));
        }
    }
    if cfg.max_payload_bytes == 0 || cfg.max_queue_len == 0 {
        return Err(Error::invalid("maxPayloadBytes and maxQueueLen must be positive"));
    }
    // Bodies ride on events and in the delivered table: small ones only.
    if cfg.outcome_body_max_bytes > 65_536 {
        return Err(Error::invalid("outcomeBodyMaxBytes must be at most 65536"));
    }
    // Upper bounds keep every sum of a timestamp and a duration far from i64 overflow.
    if !(1_000..=MAX_LEASE_TTL_MS).contains(&cfg.lease_ttl_ms) {
        return Err(Error::invalid(
            "leaseTtlMs must be between 1000 and 3600000 (an hour)",
        ));
    }
    if cfg.retention_ms > MAX_RETENTION_MS {
        return Err(Error::invalid("retentionMs must be at most 31536000000 (a year)"));
    }
    if cfg.backoff.max_ms > MAX_BACKOFF_MS {
        return Err(Error::invalid("backoff.maxMs must be at most 86400000 (a day)"));
    }
    for (k, v) in &cfg.default_headers {
        header(k, v)?;
    }
    if cfg.tls.extra_roots_pem.iter().map(String::len).sum::<usize>() > MAX_EXTRA_ROOTS_BYTES {
        return Err(Error::invalid("tls.extraRootsPem must total at most 512 KiB"));
    }
    let u = &cfg.uploads;
    OriginPolicy::for_uploads(cfg)?;
    if !api_path(&u.sign_path) {
        return Err(Error::invalid(
            "uploads.signPath must be a URL path starting with '/' (no spaces, query or fragment)",
        ));
    }
    if !(1..=500).contains(&u.sign_batch_size) || !(1..=64).contains(&u.concurrency) {
        return Err(Error::invalid(
            "uploads.signBatchSize must be 1..=500 and uploads.concurrency 1..=64",
        ));
    }
    if !u.result_pointer.is_empty() && !u.result_pointer.starts_with('/') {
        return Err(Error::invalid(
            "uploads.resultPointer must be a JSON pointer starting with '/'",
        ));
    }
    if u.max_file_bytes == 0 || u.max_queued == 0 {
        return Err(Error::invalid(
            "uploads.maxFileBytes and uploads.maxQueued must be positive",
        ));
    }
    Ok(())
}

/// A bearer or refresh token: non-empty visible ASCII (RFC 6750 §2.1's b64token is a subset),
/// so it can always go into a header; anything else would fail every request later.
pub(crate) fn token(t: &str) -> Result<()> {
    if t.is_empty() || t.len() > 16 * 1024 || !t.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Error::invalid(
            "tokens must be 1-16384 visible ASCII characters (no spaces, line breaks or control characters)",
        ));
    }
    Ok(())
}

/// The OAuth 2.0 refresh grant's parameters: a `client_id` is required (a device is a public
/// client, identified by it alone), visible ASCII (RFC 6749 Appendix A.1: VSCHAR); a `scope` is
/// space-separated scope tokens of NQCHAR (§3.3, Appendix A.4).
pub(crate) fn oauth2_client(client_id: Option<&str>, scope: Option<&str>) -> Result<()> {
    let visible = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
    match client_id {
        Some(c) if !c.is_empty() && c.len() <= 1024 && visible(c) => {}
        _ => {
            return Err(Error::invalid(
                "refreshMode 'oauth2' needs a clientId of 1-1024 printable ASCII characters",
            ))
        }
    }
    if let Some(scope) = scope {
        let nqchar = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
        if scope.len() > 4096 || scope.split(' ').any(|t| t.is_empty() || !t.bytes().all(nqchar)) {
            return Err(Error::invalid(
                "scope must be scope tokens separated by single spaces (RFC 6749 §3.3)",
            ));
        }
    }
    Ok(())
}

/// Headers a sign endpoint asks us to send with the file (e.g. `Content-Type`,
/// `x-amz-acl`): the same rules as caller headers.
pub(crate) fn upload_header(name: &str, value: &str) -> Result<()> {
    header(name, value)
}

/// A placeholder is matched as a whole path segment or JSON string: keep it to a safe alphabet.
pub(crate) fn placeholder(p: &str) -> Result<()> {
    if p.len() < 3 || p.len() > 128 || !p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(Error::invalid(
            "placeholder must be 3-128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
        ));
    }
    Ok(())
}

fn header(name: &str, value: &str) -> Result<()> {
    let parsed = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        Error::invalid(format!(
            "header name '{}' is not a valid token",
            name.escape_debug()
        ))
    })?;
    if FORBIDDEN_HEADERS.contains(&parsed.as_str()) || parsed.as_str().starts_with("proxy-") {
        return Err(Error::invalid(format!(
            "header '{name}' is set by the plugin and may not be overridden"
        )));
    }
    if value.contains(['\r', '\n', '\0']) || reqwest::header::HeaderValue::from_str(value).is_err() {
        return Err(Error::invalid(format!(
            "header '{name}' has an invalid value (control characters)"
        )));
    }
    Ok(())
}

/// Normalize and check a mutation; returns the canonical method and the serialized body.
pub(crate) fn mutation(
    m: &NewMutation,
    cfg: &SyncConfig,
    policy: &OriginPolicy,
) -> Result<(String, Option<String>)> {
    let method = m.method.trim().to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(Error::invalid(format!(
            "method '{}' is not one of POST, PUT, PATCH, DELETE",
            m.method.escape_debug()
        )));
    }
    if m.path.len() > MAX_PATH_LEN {
        return Err(Error::invalid(format!(
            "path is longer than {MAX_PATH_LEN} bytes"
        )));
    }
    policy.resolve(&m.path)?;
    for (what, v) in [("entity.kind", &m.entity.kind), ("entity.id", &m.entity.id)] {
        if v.is_empty() || v.len() > MAX_ENTITY_LEN || v.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "{what} must be 1..{MAX_ENTITY_LEN} characters without control characters"
            )));
        }
    }
    if let Some(t) = &m.temp_id {
        if t.is_empty()
            || t.len() > MAX_ENTITY_LEN
            || t.contains(['/', '?', '&', '='])
            || t.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "tempId must be a non-empty string without '/', '?', '&', '=' or control characters",
            ));
        }
        if method != "POST" && method != "PUT" {
            return Err(Error::invalid(
                "tempId is only meaningful on a create (POST or PUT)",
            ));
        }
    }
    if let Some(k) = &m.idempotency_key {
        if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(Error::invalid(
                "idempotencyKey must be 1..255 visible ASCII characters",
            ));
        }
    }
    if m.headers.len() > MAX_HEADERS {
        return Err(Error::LimitExceeded(format!("more than {MAX_HEADERS} headers")));
    }
    for (k, v) in &m.headers {
        header(k, v)?;
    }
    let body = match &m.body {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(serde_json::to_string(v)?),
    };
    let size = body.as_ref().map_or(0, String::len) as u64;
    if size > cfg.max_payload_bytes {
        return Err(Error::LimitExceeded(format!(
            "body is {size} bytes, over maxPayloadBytes ({})",
            cfg.max_payload_bytes
        )));
    }
    Ok((method, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{EntityRef, Priority};

    fn cfg(base: &str) -> SyncConfig {
        SyncConfig {
            base_url: base.into(),
            ..Default::default()
        }
    }

    fn m(method: &str, path: &str) -> NewMutation {
        NewMutation {
            method: method.into(),
            path: path.into(),
            body: None,
            headers: Default::default(),
            priority: Priority::Normal,
            entity: EntityRef {
                kind: "visit".into(),
                id: "1".into(),
            },
            temp_id: None,
            idempotency_key: None,
            coalesce: None,
        }
    }

    #[test]
    fn origins() {
        let c = SyncConfig {
            allowed_origins: vec!["https://files.example.com".into()],
            ..cfg("https://api.example.com/v1")
        };
        let p = OriginPolicy::new(&c).unwrap();
        assert_eq!(
            p.resolve("/visits/1").unwrap().as_str(),
            "https://api.example.com/v1/visits/1"
        );
        assert!(p.resolve("https://files.example.com/u/1").is_ok());
        for bad in [
            "https://evil.example.com/x",
            "http://api.example.com/v1/x",
            "https://api.example.com:444/x",
        ] {
            assert!(matches!(p.resolve(bad), Err(Error::OriginNotAllowed(_))), "{bad}");
        }
        assert!(matches!(
            p.resolve("https://user:pw@api.example.com/x"),
            Err(Error::OriginNotAllowed(_))
        ));
        for bad in [
            "visits",
            "//evil.com/x",
            "/a\r\nHost: evil",
            "/a b",
            "ftp://api.example.com/x",
        ] {
            assert!(p.resolve(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(OriginPolicy::new(&cfg("http://127.0.0.1:8787")).is_ok());
        assert!(OriginPolicy::new(&cfg("http://localhost:1")).is_ok());
        assert!(OriginPolicy::new(&cfg("http://[::1]:1")).is_ok());
        let e = OriginPolicy::new(&cfg("http://api.example.com")).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let ok = SyncConfig {
            allow_insecure_http: true,
            ..cfg("http://api.example.com")
        };
        assert!(OriginPolicy::new(&ok).is_ok());
        assert!(OriginPolicy::new(&cfg("not a url")).is_err());
        assert!(OriginPolicy::new(&cfg("")).is_err());
    }

    #[test]
    fn mutations() {
        let c = cfg("https://api.example.com");
        let p = OriginPolicy::new(&c).unwrap();
        assert_eq!(mutation(&m("patch", "/v/1"), &c, &p).unwrap().0, "PATCH");
        assert!(matches!(
            mutation(&m("GET", "/v/1"), &c, &p),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            mutation(&m("PO ST", "/v/1"), &c, &p),
            Err(Error::InvalidInput(_))
        ));
        let mut h = m("POST", "/v");
        h.headers.insert("Host".into(), "evil".into());
        assert!(mutation(&h, &c, &p).is_err());
        let mut h = m("POST", "/v");
        h.headers.insert("X-Ok".into(), "a\r\nInjected: 1".into());
        assert!(mutation(&h, &c, &p).is_err());
        let mut h = m("POST", "/v");
        h.headers.insert("X-Trace".into(), "abc".into());
        assert!(mutation(&h, &c, &p).is_ok());
        let mut big = m("POST", "/v");
        big.body = Some(serde_json::json!({"blob": "x".repeat(2 * 1024 * 1024)}));
        assert!(matches!(mutation(&big, &c, &p), Err(Error::LimitExceeded(_))));
        let mut t = m("PATCH", "/v/tmp-1");
        t.temp_id = Some("tmp-1".into());
        assert!(mutation(&t, &c, &p).is_err());
        let mut e = m("POST", "/v");
        e.entity.kind = String::new();
        assert!(mutation(&e, &c, &p).is_err());
    }

    #[test]
    fn configs() {
        assert!(config(&cfg("https://a.example")).is_ok());
        let bad = SyncConfig {
            concurrency: 0,
            ..cfg("https://a.example")
        };
        assert!(config(&bad).is_err());
        let bad = SyncConfig {
            id_pointer: "id".into(),
            ..cfg("https://a.example")
        };
        assert!(config(&bad).is_err());
        let mut bad = cfg("https://a.example");
        bad.default_headers
            .insert("Authorization".into(), "Bearer x".into());
        assert!(config(&bad).is_err());
    }
}
