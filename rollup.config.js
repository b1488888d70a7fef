// Builds the guest JS bindings: dist-js/index.js (ESM), dist-js/index.cjs (CommonJS) and
// dist-js/index.d.ts, as the official Tauri plugins do.
import { readFileSync } from 'node:fs'
import typescript from '@rollup/plugin-typescript'

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'))
const entry = pkg.exports['.']

export default {
  input: 'guest-js/index.ts',
  output: [
    { file: entry.import, format: 'esm' },
    { file: entry.require, format: 'cjs' }
  ],
  plugins: [
    typescript({
      tsconfig: './tsconfig.json',
      // Patterns resolve against rootDir (guest-js); tests and their setup stay out of dist-js.
      exclude: ['**/*.test.ts', '**/test-setup.ts'],
      noEmit: false,
      declaration: true,
      declarationDir: 'dist-js',
      rootDir: 'guest-js'
    })
  ],
  external: [
    /^@tauri-apps\/api/,
    ...Object.keys(pkg.dependencies || {}),
    ...Object.keys(pkg.peerDependencies || {})
  ],
  onwarn: (warning) => {
    throw Object.assign(new Error(warning.message), warning)
  }
}
