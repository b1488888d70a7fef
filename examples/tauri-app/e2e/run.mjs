// End-to-end test of the example app in a real WebKitGTK window, driven through tauri-driver
// (WebDriver). Started by scripts/test-e2e.sh, which provides the environment:
//   APP (binary), DRIVER_URL (tauri-driver), BGSYNC_EXAMPLE_PORT (the app's API port),
//   ARTIFACTS (screenshot directory). The app starts with its API server offline.
import { Builder, By, until } from 'selenium-webdriver'
import { mkdirSync, writeFileSync } from 'node:fs'
import assert from 'node:assert/strict'

const { APP, DRIVER_URL, BGSYNC_EXAMPLE_PORT, ARTIFACTS } = process.env
const api = `http://127.0.0.1:${BGSYNC_EXAMPLE_PORT}`
const STEP = 30_000

// A session waits for the app's window; an app that dies at startup must not hang the suite.
const driver = await Promise.race([
  new Builder()
    .usingServer(DRIVER_URL)
    .withCapabilities({
      browserName: 'wry',
      'tauri:options': { application: APP }
    })
    .build(),
  new Promise((_, reject) =>
    setTimeout(
      () =>
        reject(
          new Error('no WebDriver session after 60 s (did the app start?)')
        ),
      60_000
    )
  )
])

async function text(id) {
  return (await driver.findElement(By.id(id)).getText()).trim()
}
async function waitText(id, expected, what) {
  await driver.wait(
    async () => (await text(id)) === expected,
    STEP,
    `${what}: #${id} != ${expected}`
  )
}
async function type(id, value) {
  const el = await driver.findElement(By.id(id))
  await el.clear()
  if (value) await el.sendKeys(value)
}
async function addVisit({ site, notes, priority, photo }) {
  await type('site', site)
  await type('notes', notes)
  await driver
    .findElement(By.css(`#priority option[value="${priority}"]`))
    .click()
  const box = await driver.findElement(By.id('attach-photo'))
  if ((await box.isSelected()) !== photo) await box.click()
  const before = await text('form-result')
  await driver.findElement(By.id('submit')).click()
  await driver.wait(
    async () => {
      const t = await text('form-result')
      return t !== before && t.length > 0
    },
    STEP,
    'the form never confirmed'
  )
  const result = await text('form-result')
  assert.match(result, /^saved visit-/, result)
}
async function screenshot(name) {
  mkdirSync(ARTIFACTS, { recursive: true })
  writeFileSync(
    `${ARTIFACTS}/${name}.png`,
    await driver.takeScreenshot(),
    'base64'
  )
}

let failed = false
try {
  await driver.wait(
    until.elementLocated(By.css('body[data-ready="true"]')),
    STEP,
    'UI never ready'
  )
  assert.equal(
    await driver.findElement(By.id('server-online')).isSelected(),
    false,
    'starts offline'
  )

  // Offline: three visits, two with a follow-up note (an update of the temp id), one photo.
  await addVisit({
    site: 'North field, gate 3',
    notes: 'gate was open',
    priority: 'high',
    photo: true
  })
  await addVisit({
    site: 'Pump house',
    notes: 'meter read 4211',
    priority: 'normal',
    photo: false
  })
  await addVisit({
    site: 'Barn B',
    notes: '',
    priority: 'critical',
    photo: false
  })
  await waitText('pending-count', '5', 'queued while offline')
  await waitText('uploads-count', '1', 'photo queued while offline')
  // The list refreshes shortly after the counts.
  await driver.wait(
    async () =>
      (await driver.findElements(By.css('#pending-list tr'))).length === 5,
    STEP,
    'pending list shows every queued mutation'
  )

  // Sync while the API is down: nothing is lost, nothing dead.
  await driver.findElement(By.id('sync-now')).click()
  await driver.wait(
    async () => (await text('events')).includes('noNetwork'),
    STEP,
    'no offline report'
  )
  assert.equal(await text('pending-count'), '5')
  assert.equal(await text('dead-count'), '0')
  await screenshot('1-offline')

  // Back online, then sync: everything is delivered.
  await driver.findElement(By.id('server-online')).click()
  await driver.wait(
    async () => (await text('events')).includes('API server online'),
    STEP,
    'server start'
  )
  await driver.findElement(By.id('sync-now')).click()
  await waitText('pending-count', '0', 'delivered')
  await waitText('uploads-count', '0', 'photo uploaded')
  await waitText('dead-count', '0', 'no dead letters')
  await driver.wait(
    async () => (await text('last-report')).includes('stopped: empty'),
    STEP,
    'report'
  )
  await screenshot('2-delivered')

  // The server applied each mutation once, with server ids and the photo URL in place.
  const log = await (await fetch(`${api}/_admin/log`)).json()
  assert.equal(log.length, 5, `server applied ${log.length} mutations`)
  assert.equal(
    new Set(log.map((e) => e.idempotencyKey)).size,
    5,
    'each key once'
  )
  const state = await (await fetch(`${api}/_admin/state`)).json()
  const visits = Object.values(state.visits ?? {})
  assert.equal(visits.length, 3, JSON.stringify(state))
  const json = JSON.stringify(state)
  assert.doesNotMatch(
    json,
    /visit-[0-9a-f]{8}/,
    'no temp id reached the server'
  )
  assert.doesNotMatch(json, /att_/, 'no upload placeholder reached the server')
  const objects = await (await fetch(`${api}/_admin/objects`)).json()
  assert.equal(objects.length, 1, 'one photo stored')
  const north = visits.find((v) => v.site === 'North field, gate 3')
  assert.equal(north.photoUrl, objects[0].url, 'the visit points at its photo')
  assert.equal(
    north.notes,
    'gate was open',
    'the follow-up update reached the created visit'
  )
  console.log(
    `e2e: 5 mutations + 1 photo queued offline, 0 lost while offline, delivered once after ` +
      `reconnect (server log ${log.length}, objects ${objects.length}); screenshots in ${ARTIFACTS}`
  )
} catch (e) {
  failed = true
  console.error(e)
  try {
    await screenshot('failure')
    console.error('events:', await text('events'))
  } catch {}
} finally {
  await driver.quit().catch(() => {})
}
process.exit(failed ? 1 : 0)
