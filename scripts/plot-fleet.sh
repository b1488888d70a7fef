#!/usr/bin/env bash
# Draws docs/fleet.png from bench-results/fleet.csv (written by
# `cargo bench -p background-sync-core --bench fleet`). Installs matplotlib into a virtualenv
# under target/ on first use (PyPI); nothing else on the machine is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
csv=bench-results/fleet.csv
[ -f "$csv" ] || cargo bench -p background-sync-core --bench fleet
venv=target/plot-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q matplotlib
fi
"$venv/bin/python" - "$csv" docs/fleet.png <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src, out = sys.argv[1], sys.argv[2]
with open(src) as f:
    rows = list(csv.reader(f))
names, data = rows[0][1:], rows[1:]
minutes = [float(r[0]) for r in data]
fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
for i, name in enumerate(names):
    ys = [float(r[i + 1]) for r in data]
    for ax in (top, bottom):
        ax.plot(minutes, ys, label=name.replace(";", ","), linewidth=1.2)
for ax in (top, bottom):
    ax.axvline(30, color="grey", linestyle="--", linewidth=0.8)
    ax.grid(alpha=0.3)
    ax.set_ylabel("requests/s at the backend")
top.set_yscale("log")
top.set_title("100,000 phones, 30-minute outage, then 2,000 requests/s of capacity (10 s means)")
bottom.set_ylim(0, 8000)
bottom.axhline(2000, color="black", linewidth=0.8)
bottom.text(1, 2150, "capacity", fontsize=8)
bottom.set_xlabel("minutes since the outage began (recovery at 30)")
top.legend(fontsize=8, loc="lower left")
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"wrote {out}")
PY
