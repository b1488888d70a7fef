#!/usr/bin/env python3
"""Drives the C ABI (include/bgsync.h) through ctypes, as Swift does: configure → enqueue →
drain → status → outcomes against the reference server, typed errors for bad input, and cancellation of a
drain mid-flight through the int32 flag. Exits non-zero on failure."""
import ctypes, json, os, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "target", "debug", "libbgsync_ffi_host.so")
SERVER = os.path.join(ROOT, "target", "debug", "bgsync-reference-server")

lib = ctypes.CDLL(LIB)
for name in ["bgsync_configure", "bgsync_enqueue"]:
    getattr(lib, name).argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    getattr(lib, name).restype = ctypes.c_void_p
lib.bgsync_drain.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_int32)]
lib.bgsync_drain.restype = ctypes.c_void_p
lib.bgsync_drain_with_trigger.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32)]
lib.bgsync_drain_with_trigger.restype = ctypes.c_void_p
lib.bgsync_status.argtypes = [ctypes.c_char_p]
lib.bgsync_status.restype = ctypes.c_void_p
lib.bgsync_set_enabled.argtypes = [ctypes.c_char_p, ctypes.c_int32]
lib.bgsync_set_enabled.restype = ctypes.c_void_p
lib.bgsync_diagnostics.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
lib.bgsync_diagnostics.restype = ctypes.c_void_p
lib.bgsync_take_outcomes.argtypes = [ctypes.c_char_p]
lib.bgsync_take_outcomes.restype = ctypes.c_void_p
lib.bgsync_set_secret_key.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
lib.bgsync_set_secret_key.restype = ctypes.c_void_p
lib.bgsync_free.argtypes = [ctypes.c_void_p]

def call(fn, *args):
    p = fn(*args)
    assert p, "NULL returned"
    s = ctypes.string_at(p).decode()
    lib.bgsync_free(p)
    return json.loads(s)

passed = failed = 0
def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")

def start_server(faults=None):
    args = [SERVER, "--port", "0"]
    if faults:
        args += ["--faults", json.dumps(faults)]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    assert line.startswith("listening on "), line
    return p, line.split(" ")[-1]

def admin_log(base):
    with urllib.request.urlopen(base + "/_admin/log", timeout=10) as r:
        return json.load(r)

def mutation(i):
    return json.dumps({"method": "PUT", "path": f"/visits/{i}", "body": {"n": i},
                       "entity": {"kind": "visit", "id": str(i)}, "priority": "high"}).encode()

tmp = tempfile.mkdtemp()
server, base = start_server()
try:
    db = os.path.join(tmp, "outbox.db").encode()
    r = call(lib.bgsync_configure, db, json.dumps({"baseUrl": base, "concurrency": 4}).encode())
    check("configure", r.get("ok") is True, r)
    for i in range(50):
        r = call(lib.bgsync_enqueue, db, mutation(i))
        if not r.get("ok"):
            break
    check("enqueue x50", r.get("ok") is True and r["enqueued"]["idempotencyKey"], r)
    r = call(lib.bgsync_drain, db, 10_000, None)
    check("background drain is a no-op while disabled", r["ok"] and r["report"]["stopReason"] == "disabled", r)
    r = call(lib.bgsync_set_enabled, db, 1)
    check("set_enabled", r.get("ok") is True, r)
    r = call(lib.bgsync_drain, db, 10_000, None)
    check("drain delivers", r["ok"] and r["report"]["done"] == 50 and r["report"]["stopReason"] == "empty", r)
    log = admin_log(base)
    check("server applied each once", len(log) == 50 and len({e["idempotencyKey"] for e in log}) == 50, len(log))
    r = call(lib.bgsync_status, db)
    check("status", r["ok"] and r["status"]["pending"] == 0 and r["status"]["enabled"] is True, r)
    # Outcomes of that background run (nobody listened): each delivered mutation once, then a
    # settled listing them; taken, they are not told again.
    r = call(lib.bgsync_take_outcomes, db)
    ev = r.get("events", [])
    delivered = [e for e in ev if e["type"] == "delivered"]
    settled = [e for e in ev if e["type"] == "settled"]
    check("take_outcomes: 50 delivered, then one settled listing them",
          r["ok"] and len(delivered) == 50 and len({e["id"] for e in delivered}) == 50
          and len(settled) == 1 and set(settled[0]["delivered"]) == {e["id"] for e in delivered}
          and ev[-1]["type"] == "settled", [e["type"] for e in ev][:5])
    r = call(lib.bgsync_take_outcomes, db)
    check("take_outcomes: told once", r["ok"] and r["events"] == [], r)
    r = call(lib.bgsync_take_outcomes, None)
    check("take_outcomes: NULL db_path -> invalidInput", r["ok"] is False and r["error"]["kind"] == "invalidInput", r)
    # Coalescing through the C ABI: a second opted-in PATCH folds into the first (one request).
    def patch(body):
        return json.dumps({"method": "PATCH", "path": "/visits/c1", "body": body,
                           "entity": {"kind": "visit", "id": "c1"}, "coalesce": "merge"}).encode()
    call(lib.bgsync_enqueue, db, json.dumps({"method": "PUT", "path": "/visits/c1", "body": {"a": 1},
                                             "entity": {"kind": "visit", "id": "c1"}}).encode())
    call(lib.bgsync_drain, db, 5_000, None)
    first = call(lib.bgsync_enqueue, db, patch({"b": 2}))["enqueued"]
    second = call(lib.bgsync_enqueue, db, patch({"a": None}))["enqueued"]
    check("coalesce: the second PATCH folds into the first", second.get("coalescedInto") == first["id"], second)
    before = len(admin_log(base))
    r = call(lib.bgsync_drain, db, 5_000, None)
    log = admin_log(base)
    check("coalesce: one request for both", len(log) == before + 1 and log[-1]["body"] == {"b": 2, "a": None},
          log[-1:])
    # Diagnostics: the engine's side alone (NULL facts), then joined with a native host's facts.
    r = call(lib.bgsync_diagnostics, db, None)
    d = r.get("diagnostics", {})
    check("diagnostics, engine only: background on, nothing in the way",
          r["ok"] and d["backgroundEnabled"] is True and d["os"] == {"platform": "headless"}
          and d["problems"] == [] and d["lastBackgroundRunAt"] is not None, r)
    facts = {"platform": "ios", "backgroundRefreshStatus": "denied", "missingIdentifiers": [],
             "pendingRequests": [], "lowPowerMode": False}
    r = call(lib.bgsync_diagnostics, db, json.dumps(facts).encode())
    codes = [p["code"] for p in r.get("diagnostics", {}).get("problems", [])]
    check("diagnostics with iOS facts name their problems", codes == ["backgroundRefreshOff", "nothingScheduled"], r)
    r = call(lib.bgsync_diagnostics, db, b"{not json")
    check("diagnostics: bad facts -> invalidInput", r["ok"] is False and r["error"]["kind"] == "invalidInput", r)
    # The credentials key: exactly 32 bytes; NULL forgets it.
    r = call(lib.bgsync_set_secret_key, b"short", 5)
    check("set_secret_key: 5 bytes -> invalidInput", r["ok"] is False and r["error"]["kind"] == "invalidInput", r)
    r = call(lib.bgsync_set_secret_key, os.urandom(32), 32)
    check("set_secret_key: 32 bytes", r["ok"] is True, r)
    r = call(lib.bgsync_status, db)
    check("status with the key set", r["ok"] is True, r)
    r = call(lib.bgsync_set_secret_key, None, 0)
    check("set_secret_key: NULL forgets", r["ok"] is True, r)
    # Bad input: typed errors, no crash.
    r = call(lib.bgsync_enqueue, db, b"{not json")
    check("garbage JSON -> invalidInput", r["ok"] is False and r["error"]["kind"] == "invalidInput", r)
    r = call(lib.bgsync_enqueue, None, mutation(1))
    check("NULL db_path -> invalidInput", r["ok"] is False and r["error"]["kind"] == "invalidInput", r)
    r = call(lib.bgsync_enqueue, db, json.dumps({"method": "POST", "path": "https://evil.example/x",
                                                 "entity": {"kind": "v", "id": "1"}}).encode())
    check("foreign origin -> originNotAllowed", r["error"]["kind"] == "originNotAllowed", r)
    r = call(lib.bgsync_status, os.path.join(tmp, "nodir", "x", "..", "..").encode())
    check("directory as db -> storage error", r["ok"] is False and r["error"]["kind"] in ("storage", "invalidInput"), r)
finally:
    server.terminate()
    server.wait()

# Cancellation mid-drain: 200 ms per request, cancel after ~300 ms.
server, base = start_server({"delayMs": 200})
try:
    db = os.path.join(tmp, "cancel.db").encode()
    call(lib.bgsync_configure, db, json.dumps({"baseUrl": base, "concurrency": 2}).encode())
    call(lib.bgsync_set_enabled, db, 1)
    for i in range(40):
        call(lib.bgsync_enqueue, db, mutation(i))
    flag = ctypes.c_int32(0)
    result = {}
    def run():
        result["r"] = call(lib.bgsync_drain_with_trigger, db, 30_000, b"ios-refresh", ctypes.byref(flag))
    t0 = time.time()
    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.3)
    flag.value = 1
    th.join(10)
    took = time.time() - t0
    rep = result["r"]["report"]
    check("cancel flag stops the drain", rep["stopReason"] == "cancelled" and rep["trigger"] == "ios-refresh", rep)
    check("cancel is prompt (< 1.5 s)", took < 1.5, took)
    r = call(lib.bgsync_status, db)
    st = r["status"]
    check("unconfirmed rows stay pending", st["inFlight"] == 0 and st["pending"] + rep["done"] == 40, st)
finally:
    server.terminate()
    server.wait()

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
