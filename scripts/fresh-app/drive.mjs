// Drives the fresh app (scripts/test-fresh-app.sh) through tauri-driver: save a visit while the
// API is down, bring the reference server up, "Sync now", and read the server's log: the visit
// arrived once. Environment: APP, DRIVER_URL, API_PORT, SERVER_BIN, SELENIUM_FROM, ARTIFACTS.
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import assert from 'node:assert/strict'

const { APP, DRIVER_URL, API_PORT, SERVER_BIN, SELENIUM_FROM, ARTIFACTS } = process.env
const { Builder, By, until } = createRequire(SELENIUM_FROM)('selenium-webdriver')
const api = `http://127.0.0.1:${API_PORT}`

const driver = await new Builder()
  .usingServer(DRIVER_URL)
  .withCapabilities({ browserName: 'wry', 'tauri:options': { application: APP } })
  .build()
let server
try {
  await driver.manage().setTimeouts({ script: 30_000, pageLoad: 30_000 })
  const text = async (css) => (await driver.findElement(By.css(css))).getText()
  const waitFor = async (what, ok, ms = 20_000) => {
    const end = Date.now() + ms
    for (;;) {
      const v = await text('#status')
      if (ok(v)) return v
      if (Date.now() > end) throw new Error(`${what}: status is ${v}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  await driver.wait(until.elementLocated(By.css('#save')), 30_000)
  await waitFor('status shown', (v) => v.startsWith('{'))
  await driver.findElement(By.css('#save')).click()
  await waitFor('saved offline', (v) => JSON.parse(v).pending === 1)
  // Offline: a sync keeps it.
  await driver.findElement(By.css('#sync')).click()
  await driver.wait(async () => (await text('#report')) !== '', 20_000)
  assert.equal(JSON.parse(await text('#status')).pending, 1, 'kept while offline')

  server = spawn(SERVER_BIN, ['--port', API_PORT], { stdio: 'ignore' })
  for (let i = 0; ; i++) {
    try {
      await fetch(`${api}/health`)
      break
    } catch (e) {
      if (i > 100) throw e
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  await driver.findElement(By.css('#sync')).click()
  await waitFor('delivered', (v) => JSON.parse(v).pending === 0)
  const log = await (await fetch(`${api}/_admin/log`)).json()
  const visits = log.filter((e) => e.path === '/visits')
  assert.equal(visits.length, 1, `one visit applied: ${JSON.stringify(log)}`)
  assert.equal(visits[0].body.site, 'Farm 12')
  writeFileSync(`${ARTIFACTS}/fresh-app.png`, await driver.takeScreenshot(), 'base64')
  console.log(`fresh app: saved offline, delivered once after the API came up (${JSON.stringify(visits[0].body)})`)
} finally {
  await driver.quit().catch(() => {})
  server?.kill()
}
