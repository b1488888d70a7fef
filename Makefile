# The two commands of the README:
#   make app    — the example Tauri app (field visits, offline, embedded reference server)
#   make test   — every suite (Rust, guest-js, native ABI/JNI/Kotlin, e2e, bench smoke)
# Headless alternative to `make app`: make demo (a background drain of an offline backlog).
.PHONY: deps demo app test test-rust test-js test-native test-e2e bench bench-smoke lint fmt

deps:
	./scripts/install-deps.sh

# The demo builds the engine crate only: no GTK/WebKit to install or compile.
demo:
	./scripts/install-deps.sh --headless
	cargo run -p bgsync-demo

# The frontend imports guest-js from source (Vite alias) and needs only its own node_modules.
app: deps
	cd examples/tauri-app && npm ci --no-audit --no-fund && npm run build
	cargo run -p bgsync-example-app --features custom-protocol

test: deps
	./scripts/test-all.sh

test-rust:
	cargo test --workspace

test-js:
	npm ci --no-audit --no-fund
	npm run build
	npm test

test-native:
	tests/native/run_all.sh

# The example app in WebKitGTK under Xvfb (E2E_RUNS=3 make test-e2e: three runs, one build).
test-e2e: deps
	./scripts/test-e2e.sh

bench-smoke:
	./scripts/bench-smoke.sh

bench:
	cargo bench -p background-sync-core --bench engine

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
