#!/usr/bin/env node
// Type-checks the README's TypeScript snippets (```ts blocks) against the package's published
// types (dist-js/index.d.ts, so run `npm run build` first), strict, as a user would paste them
// into an app. A snippet that does not compile is a README bug (the issue 15 review found one:
// a spread of `body: unknown`, TS2698). What a snippet leaves to the app (`render`, `local`,
// a `filePath`...) is declared below, typed as loosely as the snippet needs and no looser.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(import.meta.dirname, '..')
const readme = readFileSync(join(root, 'README.md'), 'utf8').split('\n')
const blocks = []
for (let i = 0; i < readme.length; i++) {
  if (readme[i].trim() === '```ts') {
    const start = i + 1
    let end = start
    while (readme[end].trim() !== '```') end++
    blocks.push({ line: start + 1, code: readme.slice(start, end).join('\n') })
    i = end
  }
}
if (blocks.length === 0) throw new Error('no ```ts blocks in README.md')

const api = readFileSync(join(root, 'dist-js/index.d.ts'), 'utf8')
const exported = [
  ...api.matchAll(
    /^export (?:declare )?(?:async )?(?:function|const|class) (\w+)/gm
  )
].map((m) => m[1])
const dir = mkdtempSync(join(tmpdir(), 'readme-ts-'))
try {
  // The app's own parts the snippets call.
  writeFileSync(
    join(dir, 'app.d.ts'),
    `declare function render(pending: number, dead: number, state: string): void
declare function bar(done: number, remaining: number): void
declare function refreshViews(): void
declare function showHint(message: string, fix: string): void
declare function saveServerCopy(entity: unknown, body: unknown): void
declare const local: { replaceId(tempId: string, serverId: string): Promise<void> }
declare const filePath: string
declare const visitId: string
`
  )
  writeFileSync(
    join(dir, 'sync.ts'),
    "import { createSyncStore } from 'tauri-plugin-background-sync-api'\nexport const sync = createSyncStore()\n"
  )
  const files = []
  blocks.forEach((b, n) => {
    // A snippet that does not import from the package uses its names as the one above it did.
    const imports = /from 'tauri-plugin-background-sync-api'/.test(b.code)
      ? ''
      : `import { ${exported.join(', ')} } from 'tauri-plugin-background-sync-api'\n`
    const file = `readme-line-${b.line}.ts`
    writeFileSync(join(dir, file), `${imports}${b.code}\nexport {}\n`)
    files.push(file)
  })
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'es2022',
        module: 'esnext',
        moduleResolution: 'bundler',
        lib: ['es2022', 'dom'],
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: [],
        typeRoots: [join(root, 'node_modules/@types')],
        baseUrl: dir,
        paths: {
          'tauri-plugin-background-sync-api': [
            join(root, 'dist-js/index.d.ts')
          ],
          '*': [join(root, 'node_modules/*')]
        }
      },
      files: ['app.d.ts', 'sync.ts', ...files]
    })
  )
  try {
    execFileSync(
      join(root, 'node_modules/.bin/tsc'),
      ['-p', join(dir, 'tsconfig.json')],
      { stdio: 'pipe' }
    )
  } catch (e) {
    // Name the README line, not the temp file.
    const out = String(e.stdout).replace(
      /\S*readme-line-(\d+)\.ts\((\d+),/g,
      (_, l, r) => {
        const offset = blocks
          .find((b) => b.line === Number(l))
          .code.includes("from 'tauri-plugin-background-sync-api'")
          ? 0
          : 1
        return `README.md line ${Number(l) + Number(r) - 1 - offset} (snippet at line ${l}),`
      }
    )
    console.error(out)
    console.error(
      `README snippets: type errors (above) in ${blocks.length} \`\`\`ts blocks`
    )
    process.exit(1)
  }
  console.log(
    `README snippets: ${blocks.length} \`\`\`ts blocks type-check (strict) against dist-js/index.d.ts`
  )
} finally {
  rmSync(dir, { recursive: true, force: true })
}
