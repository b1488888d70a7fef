#!/usr/bin/env python3
"""Fails when a module of the engine crate imports a module above it (README, "For contributors").

Layers, bottom to top; a module may use only modules of lower layers (and its own children):
pure rules first, then storage, then I/O, then the drain, then the facade and its entries.
Run from anywhere: `scripts/check-layers.py`. `--self-test` plants an upward import in a
copy of the sources and checks that it is reported (the check can fail).
"""
import pathlib
import re
import shutil
import sys
import tempfile

LAYERS = [
    ["error", "time", "per_path"],
    ["models", "idmap"],
    ["policy", "validate", "coalesce", "diagnose", "secret"],
    ["sim"],
    ["store", "files"],
    ["transport", "lease"],
    ["context"],
    ["drain"],
    ["engine"],
    ["entry"],
    ["ffi", "jni_entry"],
]
LAYER = {m: i for i, ms in enumerate(LAYERS) for m in ms}
# Items the crate root re-exports, by the module that defines them.
ROOT_ITEMS = {
    "Result": "error",
    "Error": "error",
    "DrainOptions": "drain",
    "BackgroundSync": "engine",
    "OpenOptions": "engine",
    "Clock": "policy",
    "SystemClock": "policy",
    "CredentialStorage": "secret",
    "SecretKey": "secret",
}
# Inside drain/: the parent joins the passes; the passes and their shared parts never import it.
DRAIN_CHILDREN = {
    "options": [],
    "shared": [],
    "outcomes": [],
    "outbox": ["options", "shared", "outcomes"],
    "uploads": ["options", "shared", "outcomes"],
}

# Inside store/: the parent opens the file and holds the shared vocabulary (`Store`, `Queue`,
# `Applied`); `rows` reads rows into app types; each job's statements use only what is listed.
STORE_CHILDREN = {
    "rows": [],
    "settings": [],
    "ledger": ["rows"],
    "outbox": ["rows"],
    "outcomes": ["rows"],
    "runs": ["settings"],
    "uploads": ["rows", "outbox"],
}
STORE_PARENT_ITEMS = {"Store", "Queue", "Applied"}
CHILDREN = {"drain": DRAIN_CHILDREN, "store": STORE_CHILDREN}
SUPER_ITEMS = re.compile(r"(?<![$\w])super::\{([^}]*)\}")

USE = re.compile(r"(?<![$\w])crate::(\w+)")
SUPER = re.compile(r"(?<![$\w])super::(\w+)")


def check(src: pathlib.Path) -> list[str]:
    problems = []
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        top = rel.parts[0].removesuffix(".rs")
        if top == "lib":
            continue
        if top not in LAYER:
            problems.append(f"{rel}: module `{top}` has no layer in scripts/check-layers.py")
            continue
        text = path.read_text()
        # Unit tests may reach anywhere.
        text = text.split("#[cfg(test)]\nmod tests", 1)[0]
        for n, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("//"):
                continue
            for m in USE.finditer(line):
                target = m.group(1)
                target = ROOT_ITEMS.get(target, target)
                if target == top:
                    continue
                if target not in LAYER:
                    problems.append(f"{rel}:{n}: `crate::{m.group(1)}` is not a known module or root item")
                elif LAYER[target] >= LAYER[top]:
                    problems.append(
                        f"{rel}:{n}: `{top}` (layer {LAYER[top]}) imports `{target}` (layer {LAYER[target]}): "
                        "imports go downward only"
                    )
            if top in CHILDREN and len(rel.parts) == 2:
                child = rel.parts[1].removesuffix(".rs")
                allowed = CHILDREN[top].get(child)
                if allowed is not None:
                    for m in SUPER.finditer(line):
                        name = m.group(1)
                        if name not in allowed and not (top == "store" and name in STORE_PARENT_ITEMS):
                            problems.append(f"{rel}:{n}: {top}/{child} imports `super::{name}`")
                    for m in SUPER_ITEMS.finditer(line):
                        for name in (x.strip() for x in m.group(1).split(",")):
                            if name and name not in allowed and not (top == "store" and name in STORE_PARENT_ITEMS):
                                problems.append(f"{rel}:{n}: {top}/{child} imports `super::{name}`")
                    if f"crate::{top}" in line:
                        problems.append(f"{rel}:{n}: {top}/{child} imports its parent `crate::{top}`")
                elif child not in ("mod", "tests"):
                    problems.append(f"{rel}: {top}/{child} has no entry in scripts/check-layers.py")
    return problems


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    src = root / "crates/background-sync-core/src"
    if "--self-test" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            copy = pathlib.Path(tmp) / "src"
            shutil.copytree(src, copy)
            store = copy / "store/mod.rs"
            store.write_text("use crate::drain::DrainOptions;\n" + store.read_text())
            found = check(copy)
            if not any("store/mod.rs:1" in p for p in found):
                print("check-layers self-test FAILED: a planted upward import (store -> drain) was not reported")
                return 1
            rows = copy / "store/rows.rs"
            rows.write_text("use super::ledger::Claimed;\n" + rows.read_text())
            found = check(copy)
            if not any("store/rows.rs:1" in p for p in found):
                print("check-layers self-test FAILED: a planted sibling import (store/rows -> ledger) was not reported")
                return 1
        print("check-layers self-test: planted imports (store -> drain, store/rows -> ledger) are reported")
    problems = check(src)
    for p in problems:
        print(p)
    if problems:
        print(f"check-layers: {len(problems)} upward or unknown import(s)")
        return 1
    files = len(list(src.rglob("*.rs")))
    print(f"check-layers: {files} files of the engine crate, every import goes downward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
