// `@tauri-apps/api` and its mocks talk to `window.__TAURI_INTERNALS__`; in Node the global
// object stands in for the webview's window (Node 20 has `crypto.getRandomValues` and
// `crypto.randomUUID` on it).
const g = globalThis as unknown as { window?: unknown }
g.window ??= globalThis
