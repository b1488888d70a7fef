#!/usr/bin/env python3
"""The OS's background run while the app is closed, as iOS's BGTaskScheduler handler makes it:
the app's own library (its export_native_entries! C ABI) drains the app's outbox with trigger
"ios-refresh", against the reference server on the app's API port and database. Prints the
drain's report as JSON; exits non-zero if the run failed.

usage: background_drain.py <app cdylib> <outbox.db> <reference-server bin> <port> <server db>"""
import ctypes, json, subprocess, sys

lib_path, db, server_bin, port, server_db = sys.argv[1:6]
lib = ctypes.CDLL(lib_path)
lib.bgsync_drain_with_trigger.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_int32)]
lib.bgsync_drain_with_trigger.restype = ctypes.c_void_p
lib.bgsync_free.argtypes = [ctypes.c_void_p]

server = subprocess.Popen([server_bin, "--port", port, "--db", server_db], stdout=subprocess.PIPE, text=True)
try:
    line = server.stdout.readline().strip()
    assert line.startswith("listening on "), line
    p = lib.bgsync_drain_with_trigger(db.encode(), 20_000, b"ios-refresh", None)
    out = json.loads(ctypes.string_at(p).decode())
    lib.bgsync_free(p)
    print(json.dumps(out))
    sys.exit(0 if out.get("ok") else 1)
finally:
    server.terminate()
    server.wait(10)
