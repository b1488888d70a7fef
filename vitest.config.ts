import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['guest-js/**/*.test.ts'],
    environment: 'node',
    // @tauri-apps/api/mocks installs its IPC stubs on `window`.
    setupFiles: ['guest-js/test-setup.ts']
  }
})
