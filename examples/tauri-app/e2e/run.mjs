// End-to-end test of the example app in a real WebKitGTK window, driven through tauri-driver
// (WebDriver). Started by scripts/test-e2e.sh, which provides the environment:
//   APP (binary), DRIVER_URL (tauri-driver), BGSYNC_EXAMPLE_PORT (the app's API port),
//   ARTIFACTS (screenshot directory). The app starts with its API server offline.
//
// Scenario: five visits saved offline through the form (all four priorities, three with a
// follow-up note = an update of the visit's temp id, one with a photo, one the server will
// reject), checked pending in the UI; a sync while offline loses nothing; server online, "Sync
// now": everything delivered but the rejected visit, which shows up as a dead letter; its body
// is edited in the UI and it is delivered too. Then the server's own view: every mutation
// applied exactly once, creates before their updates, no temp id or placeholder anywhere.
//
// Then the app is closed with visits still queued, the OS runs a background drain through the
// app's own C ABI (e2e/background_drain.py, as iOS's BGTaskScheduler handler would) while no
// webview exists, and the app is opened again: the outcomes of that run are replayed to its
// status listener, which swaps the temp ids for the server's.
import { Builder, By, until } from 'selenium-webdriver'
import { mkdirSync, writeFileSync } from 'node:fs'
import { execFileSync, spawnSync } from 'node:child_process'
import assert from 'node:assert/strict'

const {
  APP,
  APP_LIB,
  SERVER_BIN,
  BGSYNC_EXAMPLE_DATA,
  DRIVER_URL,
  BGSYNC_EXAMPLE_PORT,
  ARTIFACTS
} = process.env
const api = `http://127.0.0.1:${BGSYNC_EXAMPLE_PORT}`
const STEP = 30_000
const started = Date.now()
const TEMP_ID = /visit-[0-9a-f]{8}-[0-9a-f]{4}/

const VISITS = [
  {
    site: 'North field, gate 3',
    notes: 'gate was open',
    priority: 'high',
    photo: true
  },
  { site: 'Pump house', notes: 'meter read 4211', priority: 'normal' },
  { site: 'Barn B', notes: '', priority: 'critical' },
  { site: 'Orchard row 7', notes: 'fence down by the creek', priority: 'low' },
  { site: 'Silo 2', notes: '', priority: 'normal', reject: true }
]
const MUTATIONS = VISITS.length + VISITS.filter((v) => v.notes).length // 8
const UPDATES = VISITS.filter((v) => v.notes).length // 3

function withTimeout(promise, ms, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} after ${ms} ms`)), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

// A session waits for the app's window; an app that dies at startup must not hang the suite.
async function openApp() {
  const d = await withTimeout(
    new Builder()
      .usingServer(DRIVER_URL)
      .withCapabilities({
        browserName: 'wry',
        'tauri:options': { application: APP }
      })
      .build(),
    60_000,
    'no WebDriver session (did the app start?)'
  )
  await d.manage().setTimeouts({ script: STEP, pageLoad: STEP })
  return d
}
let driver = await openApp()

/** Ends the session and waits until the app's process is gone (it holds the outbox). */
async function closeApp() {
  await withTimeout(driver.quit(), 15_000, 'quit')
  const end = Date.now() + 20_000
  for (;;) {
    const ps = spawnSync('pgrep', ['-f', APP], { encoding: 'utf8' })
    if (ps.status !== 0) return
    assert.ok(Date.now() < end, `the app is still running: ${ps.stdout}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

async function getJson(path) {
  const res = await fetch(`${api}${path}`, {
    signal: AbortSignal.timeout(10_000)
  })
  assert.equal(res.status, 200, `GET ${path}`)
  return res.json()
}
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
async function waitEvent(re, what) {
  await driver.wait(async () => re.test(await text('events')), STEP, what)
}
async function type(id, value) {
  const el = await driver.findElement(By.id(id))
  await el.clear()
  if (value) await el.sendKeys(value)
}
async function setBox(id, checked) {
  const box = await driver.findElement(By.id(id))
  if ((await box.isSelected()) !== checked) await box.click()
}
/** Fills and submits the form; returns the visit's temp id (the form keeps it in data-visit-id, out of the user's sight). */
async function addVisit({
  site,
  notes,
  priority,
  photo = false,
  reject = false
}) {
  await type('site', site)
  await type('notes', notes)
  await driver
    .findElement(By.css(`#priority option[value="${priority}"]`))
    .click()
  await setBox('attach-photo', photo)
  await setBox('reject', reject)
  const result = await driver.findElement(By.id('form-result'))
  const before = await result.getAttribute('data-visit-id')
  await driver.findElement(By.id('submit')).click()
  await driver.wait(
    async () => {
      const id = await result.getAttribute('data-visit-id')
      return id !== null && id !== before
    },
    STEP,
    'the form never confirmed'
  )
  assert.equal(await result.getText(), `Saved “${site}” on this device.`)
  const id = await result.getAttribute('data-visit-id')
  assert.match(id, /^visit-[0-9a-f-]{36}$/)
  return id
}
/** The pending list's cells, read in one script call (a refresh may replace the rows). */
async function pendingRows() {
  return driver.executeScript(
    `return Array.from(document.querySelectorAll('#pending-list tr[data-testid="pending-row"]'))
       .map((tr) => Array.from(tr.cells).map((td) => td.textContent))`
  )
}
async function screenshot(name) {
  mkdirSync(ARTIFACTS, { recursive: true })
  writeFileSync(
    `${ARTIFACTS}/${name}.png`,
    await driver.takeScreenshot(),
    'base64'
  )
}

/** The visit list as the field worker sees it: [site, state, serverId, text] per row. */
async function visitRows() {
  return driver.executeScript(
    `return Array.from(document.querySelectorAll('#visit-list li[data-testid="visit"]'))
       .map((li) => [li.querySelector('.site').textContent, li.dataset.state,
                     li.dataset.serverId, li.textContent])`
  )
}
/** The main view must speak plainly: no OS error text, no engine jargon. */
async function assertPlainMainView(what) {
  const main = await driver.executeScript(
    `return document.getElementById('main-view').innerText`
  )
  assert.doesNotMatch(
    main,
    /os error|tcp connect|connection refused|client error|noNetwork|stopReason|completed/i,
    `${what}: raw text in the main view: ${main}`
  )
  return main
}
/** A screenshot of the main view alone (the developer panel folded), then the panel reopened. */
async function mainScreenshot(name) {
  await driver.findElement(By.id('dev-toggle')).click()
  await screenshot(name)
  await driver.findElement(By.id('dev-toggle')).click()
}

let failed = false
try {
  await driver.wait(
    until.elementLocated(By.css('body[data-ready="true"]')),
    STEP,
    'UI never ready'
  )
  // Queue, dead letters and events live in the developer panel, folded by default.
  assert.equal(
    await driver.findElement(By.id('dev-panel')).getAttribute('open'),
    null,
    'the developer panel starts folded'
  )
  await driver.findElement(By.id('dev-toggle')).click()
  assert.equal(
    await driver.findElement(By.id('server-online')).isSelected(),
    false,
    'starts offline'
  )
  assert.equal(
    await driver.findElement(By.id('bg-enabled')).isSelected(),
    false,
    'background sync is off by default'
  )
  await assert.rejects(
    fetch(`${api}/health`, { signal: AbortSignal.timeout(5_000) }),
    'the API is really unreachable while offline'
  )

  // Offline: the five visits.
  const ids = []
  for (const v of VISITS) ids.push(await addVisit(v))
  await waitText('pending-count', String(MUTATIONS), 'queued while offline')
  await waitText('uploads-count', '1', 'photo queued while offline')
  // The list refreshes shortly after the counts.
  await driver.wait(
    async () => (await pendingRows()).length === MUTATIONS,
    STEP,
    'pending list shows every queued mutation'
  )
  const rows = await pendingRows()
  for (const [i, v] of VISITS.entries()) {
    const own = rows.filter(([, path]) => path === `/visits/${ids[i]}`)
    assert.equal(own.length, v.notes ? 1 : 0, `update of ${ids[i]} queued`)
    if (v.notes) {
      assert.equal(own[0][0], 'PATCH')
      assert.equal(own[0][2], v.priority)
    }
  }
  assert.equal(
    rows.filter(([m, p]) => m === 'POST' && p === '/visits').length,
    VISITS.length
  )

  // Sync while the API is down: nothing is lost, nothing dead.
  await driver.findElement(By.id('sync-now')).click()
  await waitEvent(/sync now: noNetwork/, 'no offline report')
  assert.equal(await text('pending-count'), String(MUTATIONS))
  assert.equal(await text('dead-count'), '0')
  await screenshot('1-offline')

  // The field worker's view: every visit saved on this device, an offline banner in words.
  await driver.wait(
    async () => {
      const rows = await visitRows()
      return (
        rows.length === VISITS.length && rows.every(([, st]) => st === 'saved')
      )
    },
    STEP,
    'visit list shows every visit as saved on this device'
  )
  for (const [site, , , row] of await visitRows()) {
    assert.ok(
      VISITS.some((v) => v.site === site),
      site
    )
    assert.match(row, /Saved on this device/)
  }
  const banner = await driver.findElement(By.id('offline-banner'))
  assert.ok(await banner.isDisplayed(), 'offline banner shown')
  assert.match(await banner.getText(), /You're offline/)
  // A drain the scheduler starts after the last save (offline: it finds no network) shows
  // "Sending your changes…" for a moment; the summary settles back once it has failed.
  const savedSummary = new RegExp(`^${MUTATIONS} changes saved on this device`)
  await driver.wait(
    async () => savedSummary.test(await text('sync-summary')),
    STEP,
    'summary says the changes are saved on this device'
  )
  await assertPlainMainView('offline')
  // Diagnostics render, from the desktop scheduler itself.
  await driver.wait(
    until.elementLocated(
      By.css('#diagnostics-problems li[data-code="backgroundOff"]')
    ),
    STEP,
    'diagnostics panel lists backgroundOff'
  )
  const os = JSON.parse(await text('diagnostics-os'))
  assert.equal(os.platform, 'desktop')
  assert.equal(os.schedulerRunning, true)
  await mainScreenshot('1-main-offline')

  // Back online, then sync: everything is delivered except the visit the server rejects.
  await driver.findElement(By.id('server-online')).click()
  await waitEvent(/API server online/, 'server start')
  const health = await fetch(`${api}/health`, {
    signal: AbortSignal.timeout(5_000)
  })
  assert.equal(health.status, 200, 'the API is back')
  await driver.findElement(By.id('sync-now')).click()
  await waitText('pending-count', '0', 'delivered')
  await waitText('uploads-count', '0', 'photo uploaded')
  await waitText('dead-count', '1', 'the rejected visit is a dead letter')
  // The status stream reported the deliveries (progress + the run's report).
  await waitEvent(/progress: [1-9]\d* delivered/, 'no progress event')
  await waitEvent(/report: \w+, [1-9]\d* delivered/, 'no delivery report')

  // The dead letter: the server's reason, then fixed in the UI and sent again.
  const dead = await driver.wait(
    until.elementLocated(By.css('[data-testid="dead-letter"]')),
    STEP,
    'dead letter not listed'
  )
  assert.match(await dead.findElement(By.css('p')).getText(), /422/)
  const area = await dead.findElement(By.css('[data-testid="dead-body"]'))
  const body = JSON.parse(await area.getAttribute('value'))
  assert.equal(body.__reject, true)
  assert.equal(body.site, 'Silo 2')
  delete body.__reject
  await area.clear()
  await area.sendKeys(JSON.stringify(body))
  // The edit survives the list refreshes that status events trigger.
  await driver.sleep(300)
  assert.deepEqual(JSON.parse(await area.getAttribute('value')), body)
  await screenshot('2-dead-letter')
  // Delivered visits carry the server's id (from `delivered` events); the rejected one needs
  // attention; no temp id is shown.
  await driver.wait(
    async () => {
      const rows = await visitRows()
      return (
        rows.filter(([, st, sid]) => st === 'synced' && /^srv_\d+$/.test(sid))
          .length ===
          VISITS.length - 1 &&
        rows.filter(([site, st]) => st === 'attention' && site === 'Silo 2')
          .length === 1
      )
    },
    STEP,
    'four visits synced with server ids, the rejected one needs attention'
  )
  assert.equal(
    await driver.findElement(By.id('offline-banner')).isDisplayed(),
    false,
    'no offline banner once online'
  )
  const online = await assertPlainMainView('one dead letter')
  assert.doesNotMatch(online, TEMP_ID, 'temp ids swapped for server ids')
  assert.match(online, /1 change needs attention/)
  assert.match(await text('last-synced'), /^Last synced /)
  await mainScreenshot('2-main-attention')
  await dead.findElement(By.css('[data-testid="dead-edit"]')).click()
  await waitText('dead-count', '0', 'edited dead letter queued again')
  await waitText('pending-count', '1', 'edited dead letter queued again')
  await driver.findElement(By.id('sync-now')).click()
  await waitText('pending-count', '0', 'edited visit delivered')
  await waitText('dead-count', '0', 'no dead letters')
  await driver.wait(
    async () => (await text('last-report')).includes('stopped: empty'),
    STEP,
    'report'
  )
  await driver.wait(
    async () =>
      (await driver.findElements(By.css('#pending-list tr, #dead-list > *')))
        .length === 0,
    STEP,
    'lists emptied'
  )
  await screenshot('3-delivered')
  await driver.wait(
    async () => (await visitRows()).every(([, st]) => st === 'synced'),
    STEP,
    'every visit synced'
  )
  assert.equal(await text('sync-summary'), 'Everything is synced.')
  await assertPlainMainView('all synced')
  await mainScreenshot('3-main-synced')

  // The server's view: each mutation applied exactly once, in order, with server ids.
  const log = await getJson('/_admin/log')
  const stats = await getJson('/_admin/stats')
  assert.equal(log.length, MUTATIONS, `server applied ${log.length} mutations`)
  assert.equal(
    new Set(log.map((e) => e.idempotencyKey)).size,
    MUTATIONS,
    'each key once'
  )
  assert.equal(stats.applied, MUTATIONS, JSON.stringify(stats))
  assert.equal(stats.replayed, 0, 'no resend needed a replay')
  assert.equal(
    stats.rejected,
    1,
    'the rejected body was sent once (4xx is not retried)'
  )
  const creates = log.filter((e) => e.method === 'POST')
  const updates = log.filter((e) => e.method === 'PATCH')
  assert.equal(creates.length, VISITS.length)
  assert.equal(updates.length, UPDATES)
  for (const u of updates) {
    const c = creates.find((c) => c.entityId === u.entityId)
    assert.ok(c, `update ${u.path} targets a created visit`)
    assert.ok(
      c.seq < u.seq,
      `create of ${u.entityId} applied before its update`
    )
    assert.match(u.path, /^\/visits\/srv_\d+$/)
  }
  const state = await getJson('/_admin/state')
  const visits = Object.values(state.visits ?? {})
  // The ids the app swapped in are the server's own.
  for (const [site, , sid] of await visitRows())
    assert.equal(
      state.visits?.[sid]?.site,
      site,
      `${site} is ${sid} on the server`
    )
  assert.equal(visits.length, VISITS.length, JSON.stringify(state))
  for (const v of VISITS) {
    const got = visits.filter((s) => s.site === v.site)
    assert.equal(got.length, 1, `${v.site} stored once`)
    assert.equal(got[0].priority, v.priority)
    if (v.notes)
      assert.equal(
        got[0].notes,
        v.notes,
        `${v.site}: the update reached the created visit`
      )
    assert.equal('__reject' in got[0], false)
  }
  const serverSide = JSON.stringify({ log, state })
  assert.doesNotMatch(serverSide, TEMP_ID, 'no temp id reached the server')
  for (const id of ids)
    assert.equal(serverSide.includes(id), false, `${id} leaked`)
  assert.doesNotMatch(
    serverSide,
    /att_/,
    'no upload placeholder reached the server'
  )
  const objects = await getJson('/_admin/objects')
  assert.equal(objects.length, 1, 'one photo stored')
  const north = visits.find((v) => v.site === VISITS[0].site)
  assert.equal(north.photoUrl, objects[0].url, 'the visit points at its photo')

  // Closed with visits queued; the OS drains in the background; opened again.
  await driver.findElement(By.id('server-online')).click()
  await waitEvent(/API server offline/, 'server stop')
  await setBox('bg-enabled', true) // the user opted in to background sync
  const LATER = [
    { site: 'Weir 4', notes: 'level 1.2 m', priority: 'normal' },
    { site: 'Shed 9', notes: '', priority: 'high' }
  ]
  const laterIds = []
  for (const v of LATER) laterIds.push(await addVisit(v))
  await waitText('pending-count', '3', 'queued before the app is closed')
  await closeApp()
  const run = JSON.parse(
    execFileSync(
      'python3',
      [
        'e2e/background_drain.py',
        APP_LIB,
        `${BGSYNC_EXAMPLE_DATA}/outbox.db`,
        SERVER_BIN,
        BGSYNC_EXAMPLE_PORT,
        `${BGSYNC_EXAMPLE_DATA}/reference-server.db`
      ],
      { encoding: 'utf8', timeout: 60_000 }
    )
  )
  assert.equal(run.report.done, 3, JSON.stringify(run))
  assert.equal(run.report.trigger, 'ios-refresh')
  driver = await openApp()
  await driver.wait(
    until.elementLocated(By.css('body[data-ready="true"]')),
    STEP,
    'UI never ready after the restart'
  )
  await driver.findElement(By.id('dev-toggle')).click()
  await waitEvent(
    /settled \(while the app was closed\): 3 delivered, 0 dead/,
    'the background run was not replayed'
  )
  await driver.findElement(By.id('server-online')).click()
  await waitEvent(/API server online/, 'server start after the restart')
  const after = await getJson('/_admin/state')
  await driver.wait(
    async () => (await visitRows()).every(([, st]) => st === 'synced'),
    STEP,
    'every visit synced after the background run'
  )
  for (const [site, , sid] of await visitRows())
    assert.equal(after.visits?.[sid]?.site, site, `${site} is ${sid}`)
  const reopened = await assertPlainMainView('after the background run')
  assert.doesNotMatch(reopened, TEMP_ID, 'temp ids swapped after the replay')
  for (const id of laterIds)
    assert.equal(reopened.includes(id), false, `${id} shown`)
  await mainScreenshot('4-main-after-background-run')

  console.log(
    `e2e passed in ${((Date.now() - started) / 1000).toFixed(1)} s: ${VISITS.length} visits ` +
      `(${MUTATIONS} mutations incl. ${UPDATES} temp-id updates) + 1 photo queued offline, ` +
      `0 lost offline, 1 dead letter edited in the UI; server applied ${log.length} ` +
      `mutations (${new Set(log.map((e) => e.idempotencyKey)).size} distinct keys), ` +
      `${objects.length} photo, 0 temp ids; then ${LATER.length} visits (3 mutations) delivered ` +
      `by a background run through the app's C ABI while it was closed, replayed on reopening; ` +
      `screenshots in ${ARTIFACTS}`
  )
} catch (e) {
  failed = true
  console.error(e)
  try {
    await screenshot('failure')
    console.error('events:', await text('events'))
  } catch {}
} finally {
  await withTimeout(driver.quit(), 15_000, 'quit').catch(() => {})
}
process.exit(failed ? 1 : 0)
