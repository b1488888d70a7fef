//! A small HTTP server written from the README's backend contract (not from the engine), for
//! the model checker and the contract tests: it honours `Idempotency-Key` as the IETF draft
//! says (a stored response is replayed; a key whose first request is still being processed
//! gets 409), assigns server ids to creates, records every arrival, and lets the test pick each
//! request's fate (2xx, 4xx, 5xx/429 with Retry-After, slow, dropped before or after commit,
//! black hole). It flags what the contract forbids as it happens: a temp id or upload
//! placeholder on the wire, one mutation applied twice (under two keys), a request sent with
//! credentials the app had cleared.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server does with one request (chosen by the test when it arrives).
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Apply and answer 2xx.
    Ok,
    /// Answer this 4xx without applying (the response is stored under the key, as a server
    /// following the draft may do).
    Reject(u16),
    /// Answer 5xx/429 without applying, optionally with `Retry-After` seconds.
    Transient(u16, Option<u64>),
    /// Hold the request for this long (the key is "in progress"), then apply and answer 2xx.
    Slow(u64),
    /// Close the connection before applying.
    DropBefore,
    /// Apply, then close the connection without an answer.
    CommitThenDrop,
    /// Never answer, never apply (the key stays in progress until `heal`).
    BlackHole,
    /// Hold the request for this long, then answer this status without applying.
    SlowStatus(u64, u16),
}

#[derive(Debug, Clone)]
pub struct Arrival {
    pub n: usize,
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub key: Option<String>,
    pub mid: Option<u64>,
    pub authorization: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: Option<Value>,
    pub fate: Option<Fate>,
    /// What was answered (None: no answer, or not yet).
    pub status: Option<u16>,
    pub peer: SocketAddr,
    /// When the server answered, or saw the client give up (hyper drops the handler then).
    pub ended: Option<Instant>,
}

#[derive(Debug, Clone)]
enum KeyState {
    InProgress,
    Done(u16, Value),
}

pub type Chooser = Box<dyn FnMut(&Arrival) -> Fate + Send>;

struct St {
    arrivals: Vec<Arrival>,
    keys: HashMap<String, KeyState>,
    next_id: u64,
    /// mid → (server id or path, time applied)
    applied: Vec<(u64, Instant)>,
    applied_set: HashMap<u64, usize>,
    violations: Vec<String>,
    chooser: Chooser,
    /// Requests carrying a token while the app had cleared its credentials.
    forbid_auth_after: Option<Instant>,
    /// Strings that must never reach the server.
    leak_markers: Vec<String>,
    objects: HashMap<String, Value>,
}

#[derive(Clone)]
pub struct Oracle {
    pub addr: SocketAddr,
    pub base_url: String,
    st: Arc<Mutex<St>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Oracle {
    pub async fn start(chooser: Chooser) -> Oracle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = Arc::new(Mutex::new(St {
            arrivals: Vec::new(),
            keys: HashMap::new(),
            next_id: 0,
            applied: Vec::new(),
            applied_set: HashMap::new(),
            violations: Vec::new(),
            chooser,
            forbid_auth_after: None,
            leak_markers: vec!["tmp-".into(), "att_".into()],
            objects: HashMap::new(),
        }));
        let st2 = st.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    break;
                };
                let st = st2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), peer, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Oracle {
            addr,
            base_url: format!("http://{addr}"),
            st,
            task: Arc::new(task),
        }
    }

    pub fn set_chooser(&self, chooser: Chooser) {
        self.st.lock().unwrap().chooser = chooser;
    }

    /// Every later request is answered normally; black-holed keys are forgotten (the server
    /// restarted and never applied them).
    pub fn heal(&self) {
        let mut s = self.st.lock().unwrap();
        s.chooser = Box::new(|_| Fate::Ok);
        s.keys.retain(|_, v| !matches!(v, KeyState::InProgress));
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.st.lock().unwrap().arrivals.clone()
    }

    pub fn applied(&self) -> Vec<(u64, Instant)> {
        self.st.lock().unwrap().applied.clone()
    }

    pub fn is_applied(&self, mid: u64) -> bool {
        self.st.lock().unwrap().applied_set.contains_key(&mid)
    }

    pub fn violations(&self) -> Vec<String> {
        self.st.lock().unwrap().violations.clone()
    }

    pub fn violate(&self, v: String) {
        self.st.lock().unwrap().violations.push(v);
    }

    /// From now on any request with an `Authorization` header is a violation (`None` lifts it).
    pub fn forbid_auth(&self, from: Option<Instant>) {
        self.st.lock().unwrap().forbid_auth_after = from;
    }

    pub fn objects(&self) -> HashMap<String, Value> {
        self.st.lock().unwrap().objects.clone()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

type Resp = Response<Full<Bytes>>;

struct Ended(Arc<Mutex<St>>, usize);

impl Drop for Ended {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            if let Some(a) = s.arrivals.get_mut(self.1) {
                a.ended.get_or_insert_with(Instant::now);
            }
        }
    }
}

fn reply(status: u16, body: &Value, retry_after: Option<u64>) -> Resp {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        r = r.header("retry-after", s.to_string());
    }
    r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// Apply one mutation; returns the response body.
fn apply(s: &mut St, a: &Arrival) -> (u16, Value) {
    if let Some(mid) = a.mid {
        if let Some(prev) = s.applied_set.get(&mid) {
            let v = format!(
                "mutation mid={mid} applied twice (requests #{prev} and #{}, keys differ)",
                a.n
            );
            s.violations.push(v);
        } else {
            s.applied_set.insert(mid, a.n);
        }
        s.applied.push((mid, Instant::now()));
    }
    let segs: Vec<&str> = a.path.trim_start_matches('/').split('/').collect();
    match (a.method.as_str(), segs.as_slice()) {
        ("POST", ["auth", "refresh"]) => {
            s.next_id += 1;
            (200, json!({"accessToken": format!("fresh-{}", s.next_id)}))
        }
        ("POST", [coll]) => {
            s.next_id += 1;
            let id = format!("srv-{}", s.next_id);
            let mut obj = a.body.clone().unwrap_or(json!({}));
            obj["id"] = json!(id);
            s.objects.insert(format!("{coll}/{id}"), obj.clone());
            (201, obj)
        }
        ("DELETE", [coll, id]) => {
            s.objects.remove(&format!("{coll}/{id}"));
            (200, json!({}))
        }
        (_, [coll, id]) => {
            let k = format!("{coll}/{id}");
            let mut obj = s.objects.get(&k).cloned().unwrap_or(json!({ "id": id }));
            if let (Some(o), Some(Value::Object(p))) = (obj.as_object_mut(), &a.body) {
                for (k, v) in p {
                    o.insert(k.clone(), v.clone());
                }
            }
            s.objects.insert(k, obj.clone());
            (200, obj)
        }
        _ => (200, json!({})),
    }
}

async fn handle(
    st: Arc<Mutex<St>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let mut headers = HashMap::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.as_str().to_ascii_lowercase(),
            v.to_str().unwrap_or("").to_string(),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let key = headers.get("idempotency-key").cloned();
    let mid = headers.get("x-mid").and_then(|m| m.parse().ok());
    let (n, fate) = {
        let mut s = st.lock().unwrap();
        let n = s.arrivals.len();
        let a = Arrival {
            n,
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            key: key.clone(),
            mid,
            authorization: headers.get("authorization").cloned(),
            headers: headers.clone(),
            body: body_json.clone(),
            fate: None,
            status: None,
            peer,
            ended: None,
        };
        let text = format!("{path} {}", String::from_utf8_lossy(&body));
        for m in s.leak_markers.clone() {
            if text.contains(&m) {
                s.violations.push(format!(
                    "request #{n} {method} {path} carries '{m}…' (unresolved temp id or placeholder): {text}"
                ));
            }
        }
        if let (Some(since), Some(_)) = (s.forbid_auth_after, &a.authorization) {
            if a.at > since {
                s.violations.push(format!(
                    "request #{n} {method} {path} carries a token after clearAuth"
                ));
            }
        }
        // One drainer at a time: a request for a mutation must not arrive while an earlier request
        // for it is still live, i.e. neither answered nor given up by its client (100 ms of
        // slack for the server to notice a closed connection).
        if let Some(mid) = mid {
            let now = a.at;
            if let Some(live) = s.arrivals.iter().find(|e| {
                e.mid == Some(mid) && !matches!(e.ended, Some(t) if t <= now + Duration::from_millis(100))
            }) {
                let v = format!(
                    "request #{n} for mid {mid} arrived while request #{} for it was still live (two drainers?)",
                    live.n
                );
                s.violations.push(v);
            }
        }
        // The draft: a stored response is replayed; a key still in progress gets 409.
        let replay = key.as_ref().and_then(|k| s.keys.get(k).cloned());
        let fate = match replay {
            Some(KeyState::InProgress) => None,
            Some(KeyState::Done(..)) => None,
            None => Some((s.chooser)(&a)),
        };
        let mut a = a;
        a.fate = fate.clone();
        s.arrivals.push(a);
        match replay {
            Some(KeyState::InProgress) => {
                s.arrivals[n].status = Some(409);
                s.arrivals[n].ended = Some(Instant::now());
                return Ok(reply(
                    409,
                    &json!({"error": "a request with this Idempotency-Key is being processed"}),
                    Some(1),
                ));
            }
            Some(KeyState::Done(status, body)) => {
                s.arrivals[n].status = Some(status);
                s.arrivals[n].ended = Some(Instant::now());
                return Ok(reply(status, &body, None));
            }
            None => {}
        }
        (n, fate.unwrap())
    };
    // Marks the request ended when this handler returns or is dropped (the client gave up).
    let _ended = Ended(st.clone(), n);
    let set_key = |s: &mut St, v: KeyState| {
        if let Some(k) = &key {
            s.keys.insert(k.clone(), v);
        }
    };
    let answer = |s: &mut St, status: u16| s.arrivals[n].status = Some(status);
    match fate {
        Fate::Ok => {
            let mut s = st.lock().unwrap();
            let a = s.arrivals[n].clone();
            let (status, body) = apply(&mut s, &a);
            set_key(&mut s, KeyState::Done(status, body.clone()));
            answer(&mut s, status);
            Ok(reply(status, &body, None))
        }
        Fate::Reject(code) => {
            let mut s = st.lock().unwrap();
            let body = json!({"error": "rejected by the test"});
            set_key(&mut s, KeyState::Done(code, body.clone()));
            answer(&mut s, code);
            Ok(reply(code, &body, None))
        }
        Fate::Transient(code, ra) => {
            let mut s = st.lock().unwrap();
            answer(&mut s, code);
            Ok(reply(code, &json!({"error": "try later"}), ra))
        }
        Fate::DropBefore => Err(std::io::Error::other("dropped before apply")),
        Fate::CommitThenDrop => {
            let mut s = st.lock().unwrap();
            let a = s.arrivals[n].clone();
            let (status, body) = apply(&mut s, &a);
            set_key(&mut s, KeyState::Done(status, body));
            Err(std::io::Error::other("dropped after commit"))
        }
        Fate::Slow(ms) => {
            set_key(&mut st.lock().unwrap(), KeyState::InProgress);
            // The work goes on when the client gives up (hyper drops this future then), as
            // on a real server: that is what makes a retry meet "in progress".
            let st2 = st.clone();
            let work = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let mut s = st2.lock().unwrap();
                // heal() may have forgotten the key meanwhile: then the server "restarted".
                if key.as_ref().is_some_and(|k| !s.keys.contains_key(k)) {
                    return None;
                }
                let a = s.arrivals[n].clone();
                let (status, body) = apply(&mut s, &a);
                if let Some(k) = &key {
                    s.keys.insert(k.clone(), KeyState::Done(status, body.clone()));
                }
                s.arrivals[n].status = Some(status);
                Some((status, body))
            });
            match work.await {
                Ok(Some((status, body))) => Ok(reply(status, &body, None)),
                _ => Err(std::io::Error::other("restarted")),
            }
        }
        Fate::SlowStatus(ms, code) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut s = st.lock().unwrap();
            answer(&mut s, code);
            Ok(reply(code, &json!({"error": "late failure"}), None))
        }
        Fate::BlackHole => {
            set_key(&mut st.lock().unwrap(), KeyState::InProgress);
            tokio::time::sleep(Duration::from_secs(600)).await;
            Err(std::io::Error::other("black hole"))
        }
    }
}
