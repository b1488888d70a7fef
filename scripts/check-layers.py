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
    ["error"],
    ["models", "idmap"],
    ["policy", "validate", "coalesce", "diagnose"],
    ["sim"],
    ["store"],
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
}
# Inside drain/: the parent joins the passes; the passes and their shared parts never import it.
DRAIN_CHILDREN = {"options": [], "shared": [], "outcomes": [], "uploads": ["options", "shared", "outcomes"]}

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
            if top == "drain" and len(rel.parts) == 2:
                child = rel.parts[1].removesuffix(".rs")
                if child in DRAIN_CHILDREN:
                    for m in SUPER.finditer(line):
                        if m.group(1) not in DRAIN_CHILDREN[child]:
                            problems.append(f"{rel}:{n}: drain/{child} imports `super::{m.group(1)}`")
                    if "crate::drain" in line:
                        problems.append(f"{rel}:{n}: drain/{child} imports its parent `crate::drain`")
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
        print("check-layers self-test: a planted upward import (store -> drain) is reported")
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
