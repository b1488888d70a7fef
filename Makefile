# The two commands of the README:
#   make demo   — reference server + a headless background drain of an offline backlog
#   make test   — every suite (Rust, guest-js, native ABI/JNI/Kotlin, e2e, bench smoke)
.PHONY: deps demo app test test-rust test-js test-native test-e2e bench bench-smoke lint fmt

deps:
	./scripts/install-deps.sh

demo: deps
	cargo run -p bgsync-demo

test: deps
	./scripts/test-all.sh

test-rust:
	cargo test --workspace

bench:
	cargo bench --bench engine

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
