import { defineConfig } from 'vite'
import { fileURLToPath } from 'node:url'

// The guest API is imported from the repository's source, so the example always runs the
// code under test (no publish step).
export default defineConfig({
  clearScreen: false,
  server: { port: 1420, strictPort: true },
  resolve: {
    alias: {
      'tauri-plugin-background-sync-api': fileURLToPath(
        new URL('../../guest-js/index.ts', import.meta.url)
      )
    },
    dedupe: ['@tauri-apps/api']
  },
  build: { target: 'safari15', outDir: 'dist', emptyOutDir: true }
})
