#!/usr/bin/env bash
# Proves the model checker (tests/model.rs) can fail: puts fixed defects of issue 11 back into
# a scratch copy of the tree, one at a time, and runs the checker against each. Every mutant
# must be caught (the run prints the seed and the shrunk program); a mutant that survives fails
# this script. Not part of `make test` (each mutant rebuilds the crate); run it after changing
# the engine or the checker:   scripts/model-mutants.sh [cases per mutant, default 40]
# (MUTANTS="stale_auth lapsing_lease" runs some of them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cases=${1:-40}
scratch=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$scratch/tree" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
git worktree add -q --detach "$scratch/tree" HEAD
# Uncommitted work too: the checker is run against what is in this tree now.
git diff HEAD | (cd "$scratch/tree" && git apply --allow-empty 2>/dev/null || true)

mutate() { # name, file, python expression over s
  python3 - "$scratch/tree/$2" "$3" <<'EOF'
import sys
path, expr = sys.argv[1], sys.argv[2]
s = open(path).read()
t = eval(expr)
if t == s:
    sys.exit("mutant did not apply: " + expr[:80])
open(path, "w").write(t)
EOF
}

declare -A file expr
# Defect 2: claim ahead while every lane is busy (a claimed row overtakes a better one).
file[claim_ahead]=crates/background-sync-core/src/drain/outbox.rs
expr[claim_ahead]='s.replace("                // Claimed for a lane that is no longer free (or no longer usable): back, untouched.\n", "                if flights.len() == slots && ready.is_empty() && stop.is_none() {\n                    let rows = self.settle_and_claim(slots as u32, max_wait).await?;\n                    self.group(rows, &mut ready);\n                }\n                if false {\n", 1).replace("                        .push((Outcome::Release { seq: row.seq }, Tally::None));\n                }\n            } else if", "                        .push((Outcome::Release { seq: row.seq }, Tally::None));\n                }\n                }\n            } else if", 1)'
# Defect 4: prune forgets resolved temp ids.
file[forget_temp_ids]=crates/background-sync-core/src/store/runs.rs
expr[forget_temp_ids]='s.replace("        n += self.prune_uploads(cutoff).await?;", "        sqlx::query(\"DELETE FROM id_map WHERE server_id IS NOT NULL AND resolved_at < ?\").bind(cutoff).execute(&self.pool).await?;\n        n += self.prune_uploads(cutoff).await?;", 1)'
# Defect 5: a reference placed before its create in one enqueueMany records no dependency.
file[many_refs]=crates/background-sync-core/src/store/outbox.rs
expr[many_refs]='s.replace("Some((at, entity)) if *at > index => {", "Some((at, entity)) if *at > index && false => {", 1)'
# The 409 of the Idempotency-Key draft treated as permanent.
file[conflict_permanent]=crates/background-sync-core/src/policy/mod.rs
expr[conflict_permanent]='s.replace("408 | 409 | 425 | 429 | 500..=599", "408 | 425 | 429 | 500..=599", 1)'
# Defect 11: a running drain keeps the credentials it started with.
file[stale_auth]=crates/background-sync-core/src/drain/shared.rs
expr[stale_auth]='s.replace("        if epoch != s.epoch {", "        if epoch != s.epoch && false {", 1)'
# A backward wall-clock step strands rows in backoff (they wait until the clock catches up).
file[clock_step]=crates/background-sync-core/src/drain/mod.rs
expr[clock_step]='s.replace("let rebased = inner.store.rebase_backoff(now).await?;", "let rebased = 0u64;", 1)'

# Defect 3: the lease is not renewed during the drain and requests start without checking it.
file[lapsing_lease]=crates/background-sync-core/src/lease.rs
expr[lapsing_lease]='s.replace("let every = Duration::from_millis((self.ttl_ms / 4).max(100) as u64);", "let every = Duration::from_secs(3_600);", 1).replace("        !self.lost.is_cancelled()\n            && clock_ms()", "        !self.lost.is_cancelled()\n            || clock_ms()", 1)'

survived=0
for m in ${MUTANTS:-claim_ahead forget_temp_ids many_refs conflict_permanent stale_auth lapsing_lease clock_step}; do
  (cd "$scratch/tree" && git checkout -q -- . && git diff HEAD >/dev/null)
  git diff HEAD | (cd "$scratch/tree" && git apply 2>/dev/null || true)
  mutate "$m" "${file[$m]}" "${expr[$m]}"
  echo "=== mutant $m (${file[$m]})"
  log="$scratch/$m.log"
  if (cd "$scratch/tree" && CARGO_TARGET_DIR="$root/target" BGSYNC_MODEL_CASES="$cases" \
        cargo test -q -p background-sync-core --test model -- --nocapture >"$log" 2>&1); then
    echo "SURVIVED: the checker did not notice $m"
    grep -E "^model:" "$log" || true
    survived=$((survived + 1))
  elif grep -qE "fails \(rerun" "$log"; then
    grep -E "FAILED:|fails \(rerun" "$log" | head -2 || true
    grep -A8 "shrunk to" "$log" | head -9 || true
  else
    echo "the run failed without a checker verdict (build error?):"
    tail -20 "$log"
    survived=$((survived + 1))
  fi
done
echo
if [ "$survived" -gt 0 ]; then
  echo "$survived mutant(s) survived"
  exit 1
fi
echo "every mutant was caught"
