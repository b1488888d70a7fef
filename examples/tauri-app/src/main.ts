import { invoke } from '@tauri-apps/api/core'
import {
  deadLetters,
  diagnostics,
  disable,
  discard,
  editDeadLetter,
  enable,
  enqueue,
  enqueueUpload,
  isBackgroundSyncError,
  isEnabled,
  onStatus,
  pending,
  resolveTempId,
  retry,
  status,
  syncNow,
  tempId,
  type Mutation,
  type Priority,
  type StatusEvent,
  type SyncStatus
} from 'tauri-plugin-background-sync-api'

interface ServerInfo {
  online: boolean
  apiUrl: string
  storageUrl: string | null
}

const $ = <T extends HTMLElement>(id: string) =>
  document.getElementById(id) as T

function describe(e: unknown): string {
  return isBackgroundSyncError(e) ? `${e.kind}: ${e.message}` : String(e)
}

function log(line: string) {
  const li = document.createElement('li')
  li.textContent = `${new Date().toLocaleTimeString()} ${line}`
  const list = $('events')
  list.prepend(li)
  while (list.children.length > 200) list.lastChild?.remove()
}

// The app's own record of its visits, as a field app keeps them: created under a temp id,
// given the server's id once the create is delivered (from `delivered` events, replayed on the
// next start if the app was closed, or resolveTempId). Kept in localStorage for the demo.
interface Visit {
  localId: string
  serverId: string | null
  site: string
  createdAt: number
}
type VisitState = 'saved' | 'synced' | 'attention'
const STATE_LABEL: Record<VisitState, string> = {
  saved: 'Saved on this device',
  synced: 'Synced',
  attention: 'Needs attention'
}

const visits: Visit[] = JSON.parse(localStorage.getItem('visits') ?? '[]')
function saveVisits() {
  localStorage.setItem('visits', JSON.stringify(visits))
}
function learnServerId(localId: string, serverId: string) {
  const v = visits.find((v) => v.localId === localId)
  if (v && v.serverId !== serverId) {
    v.serverId = serverId
    saveVisits()
  }
}

/** A visit's state from the queue: dead → attention, anything unsent → saved, else synced. */
function visitState(
  v: Visit,
  unsent: Set<string>,
  dead: Set<string>
): VisitState {
  if (dead.has(v.localId)) return 'attention'
  if (unsent.has(v.localId) || v.serverId === null) return 'saved'
  return 'synced'
}

async function renderVisits() {
  const entityIds = (rows: Mutation[]) =>
    new Set(
      rows.filter((m) => m.entity.kind === 'visit').map((m) => m.entity.id)
    )
  const [queued, deadRows] = await Promise.all([
    pending({ limit: 1000 }),
    deadLetters({ limit: 1000 })
  ])
  const unsent = entityIds(queued)
  const dead = entityIds(deadRows)
  for (const v of visits.filter(
    (v) => v.serverId === null && !unsent.has(v.localId)
  )) {
    const id = await resolveTempId(v.localId)
    if (id) learnServerId(v.localId, id)
  }
  const list = $('visit-list')
  list.replaceChildren(
    ...[...visits].reverse().map((v) => {
      const state = visitState(v, unsent, dead)
      const li = document.createElement('li')
      li.dataset.testid = 'visit'
      li.dataset.localId = v.localId
      li.dataset.serverId = v.serverId ?? ''
      li.dataset.state = state
      const name = document.createElement('span')
      name.className = 'site'
      name.textContent = v.site
      const badge = document.createElement('span')
      badge.className = `state ${state}`
      badge.dataset.testid = 'visit-state'
      badge.textContent = STATE_LABEL[state]
      li.append(name, badge)
      if (v.serverId) {
        const ref = document.createElement('span')
        ref.className = 'muted'
        ref.textContent = `#${v.serverId}`
        li.append(ref)
      }
      return li
    })
  )
  $('visit-empty').hidden = visits.length > 0
}

/** The main view's words: never an OS error string (those are in the developer panel). */
function renderSummary(s: SyncStatus) {
  const waiting = s.pending + s.inFlight
  const offline =
    waiting > 0 &&
    (!navigator.onLine || s.lastReport?.stopReason === 'noNetwork')
  $('offline-banner').hidden = !offline
  const parts: string[] = []
  // While offline a run only finds the network still down: keep saying the changes are safe
  // here instead of flashing "Sending" at every doomed attempt.
  if (s.state === 'running' && waiting > 0 && !offline) parts.push('Sending your changes…')
  else if (waiting > 0)
    parts.push(
      `${waiting} change${waiting === 1 ? '' : 's'} saved on this device, not sent yet.`
    )
  else if (s.dead === 0) parts.push('Everything is synced.')
  if (s.dead > 0)
    parts.push(
      `${s.dead} change${s.dead === 1 ? '' : 's'} need${s.dead === 1 ? 's' : ''} attention.`
    )
  $('sync-summary').textContent = parts.join(' ')
  $('last-synced').textContent =
    s.lastSyncAt && s.lastReport?.stopReason !== 'noNetwork'
      ? `Last synced ${new Date(s.lastSyncAt).toLocaleTimeString()}`
      : ''
}

async function renderDiagnostics() {
  const d = await diagnostics()
  $('diagnostics-problems').replaceChildren(
    ...d.problems.map((p) => {
      const li = document.createElement('li')
      li.dataset.code = p.code
      li.textContent = `${p.message} ${p.fix}`
      return li
    })
  )
  if (d.problems.length === 0) {
    const li = document.createElement('li')
    li.textContent = 'Nothing stands in the way of background sync.'
    $('diagnostics-problems').append(li)
  }
  $('diagnostics-os').textContent = JSON.stringify(d.os, null, 2)
}

function renderStatus(s: SyncStatus) {
  renderSummary(s)
  $('state').textContent = s.state
  $('pending-count').textContent = String(s.pending)
  $('inflight-count').textContent = String(s.inFlight)
  $('blocked-count').textContent = String(s.blocked)
  $('dead-count').textContent = String(s.dead)
  $('uploads-count').textContent = String(s.uploadsPending)
  const r = s.lastReport
  $('last-report').textContent = r
    ? `last run (${r.trigger}): ${r.done} delivered, ${r.uploaded} photo(s), ${r.retried} retried, ` +
      `${r.dead} dead — stopped: ${r.stopReason}${r.lastError ? ` (${r.lastError})` : ''}`
    : 'no run yet'
}

let refreshQueued = false
function refreshLists() {
  if (refreshQueued) return
  refreshQueued = true
  setTimeout(async () => {
    refreshQueued = false
    try {
      await Promise.all([renderPending(), renderDead(), renderVisits()])
    } catch (e) {
      log(`refresh failed: ${describe(e)}`)
    }
  }, 100)
}

async function renderPending() {
  const rows = await pending({ limit: 100 })
  const body = $('pending-list')
  body.replaceChildren(
    ...rows.map((m) => {
      const tr = document.createElement('tr')
      tr.dataset.id = m.id
      tr.dataset.testid = 'pending-row'
      for (const v of [
        m.method,
        m.path,
        m.priority,
        String(m.attempts),
        (m.waitingFor ?? []).join(', ')
      ]) {
        const td = document.createElement('td')
        td.textContent = v
        tr.append(td)
      }
      return tr
    })
  )
}

// Dead letters are keyed by id and kept across refreshes (every status event refreshes the
// lists), so a body being edited is not wiped by an unrelated event.
async function renderDead() {
  const rows = await deadLetters({ limit: 100 })
  const list = $('dead-list')
  const existing = new Map(
    Array.from(list.querySelectorAll<HTMLElement>(':scope > .dead')).map(
      (d) => [d.dataset.id, d]
    )
  )
  const divs = rows.map((m) => {
    const body = JSON.stringify(m.body ?? null, null, 2)
    const div = existing.get(m.id) ?? deadLetterCard(m.id, body)
    div.querySelector('p')!.textContent =
      `${m.method} ${m.path} — ${m.lastError ?? ''}`
    const text = div.querySelector('textarea')!
    if (text.value === text.dataset.original && document.activeElement !== text)
      text.value = body
    text.dataset.original = body
    return div
  })
  const same =
    divs.length === list.children.length &&
    divs.every((d, i) => list.children[i] === d)
  if (!same) list.replaceChildren(...divs)
}

function deadLetterCard(id: string, body: string): HTMLElement {
  const div = document.createElement('div')
  div.className = 'dead'
  div.dataset.id = id
  div.dataset.testid = 'dead-letter'
  const title = document.createElement('p')
  const text = document.createElement('textarea')
  text.dataset.testid = 'dead-body'
  text.rows = 4
  text.value = body
  text.dataset.original = body
  const buttons = [
    ['Retry', 'dead-retry', () => retry(id)],
    [
      'Save edit',
      'dead-edit',
      () => editDeadLetter(id, JSON.parse(text.value))
    ],
    ['Discard', 'dead-discard', () => discard(id)]
  ] as const
  div.append(title, text)
  for (const [label, testid, act] of buttons) {
    const b = document.createElement('button')
    b.textContent = label
    b.dataset.testid = testid
    // Through a promise so an unparsable edit is reported like any other failure.
    b.onclick = () =>
      Promise.resolve()
        .then(act)
        .then(
          () => log(`${label.toLowerCase()} ${id}`),
          (e) => log(`${label} failed: ${describe(e)}`)
        )
    div.append(b)
  }
  return div
}

function onEvent(e: StatusEvent) {
  switch (e.type) {
    case 'status':
      renderStatus(e)
      refreshLists()
      break
    case 'progress': {
      log(`progress: ${e.done} delivered, ${e.remaining} left`)
      const bar = $<HTMLProgressElement>('sync-progress')
      bar.hidden = e.remaining === 0
      bar.max = e.done + e.remaining || 1
      bar.value = e.done
      break
    }
    case 'delivered':
      // A create sent under a temp id: the app swaps in the server's id.
      if (e.tempId && e.serverId) learnServerId(e.tempId, e.serverId)
      break
    case 'settled':
      // One refresh per confirmed round, not per mutation.
      log(
        `settled${e.runId === 'replay' ? ' (while the app was closed)' : ''}: ` +
          `${e.delivered.length} delivered, ${e.dead.length} dead`
      )
      refreshLists()
      break
    case 'uploadProgress': {
      const bar = $<HTMLProgressElement>('upload-progress')
      bar.max = e.total || 1
      bar.value = e.bytesSent
      if (e.bytesSent === e.total)
        log(`photo ${e.placeholder} uploaded (${e.total} bytes)`)
      break
    }
    case 'report':
      log(
        `report: ${e.stopReason}, ${e.done} delivered, ${e.uploaded} photo(s), ${e.remaining} left`
      )
      $('sync-progress').hidden = true
      renderDiagnostics().catch((err) => log(`diagnostics: ${describe(err)}`))
      break
  }
}

/** The photo's bytes: the chosen file, or a generated test image. */
async function photoBytes(): Promise<{ name: string; bytes: Uint8Array }> {
  const input = $<HTMLInputElement>('photo-file')
  const file = input.files?.[0]
  if (file)
    return { name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) }
  const canvas = document.createElement('canvas')
  canvas.width = 320
  canvas.height = 240
  const ctx = canvas.getContext('2d')!
  ctx.fillStyle = `hsl(${Math.floor(Math.random() * 360)}, 60%, 55%)`
  ctx.fillRect(0, 0, 320, 240)
  ctx.fillStyle = '#fff'
  ctx.font = '28px sans-serif'
  ctx.fillText(new Date().toISOString().slice(11, 19), 60, 130)
  const blob = await new Promise<Blob | null>((r) =>
    canvas.toBlob(r, 'image/jpeg', 0.8)
  )
  const bytes = blob
    ? new Uint8Array(await blob.arrayBuffer())
    : crypto.getRandomValues(new Uint8Array(20_000))
  return { name: `visit-${Date.now()}.jpg`, bytes }
}

async function saveVisit(ev: SubmitEvent) {
  ev.preventDefault()
  const site = $<HTMLInputElement>('site').value.trim()
  const notes = $<HTMLInputElement>('notes').value.trim()
  const priority = $<HTMLSelectElement>('priority').value as Priority
  const visit = tempId('visit')
  try {
    const body: Record<string, unknown> = { site, priority }
    // The reference server answers 422 to this flag: the visit becomes a dead letter, to be
    // edited (remove the flag), retried or discarded in the list below.
    if ($<HTMLInputElement>('reject').checked) body.__reject = true
    if ($<HTMLInputElement>('attach-photo').checked) {
      // The upload is queued first; the visit carries its placeholder and is sent with the
      // photo's URL once the file is up.
      const photo = await photoBytes()
      const filePath = await invoke<string>('save_photo', {
        name: photo.name,
        bytes: Array.from(photo.bytes)
      })
      const up = await enqueueUpload({
        filePath,
        contentType: 'image/jpeg',
        priority,
        entity: { kind: 'visit', id: visit }
      })
      body.photoUrl = up.placeholder
    }
    await enqueue({
      method: 'POST',
      path: '/visits',
      body,
      tempId: visit,
      entity: { kind: 'visit', id: visit },
      priority
    })
    if (notes) {
      // Refers to the visit by its temp id: waits for the create, then goes to /visits/srv_N.
      await enqueue({
        method: 'PATCH',
        path: `/visits/${visit}`,
        body: { notes },
        entity: { kind: 'visit', id: visit },
        priority
      })
    }
    visits.push({ localId: visit, serverId: null, site, createdAt: Date.now() })
    saveVisits()
    refreshLists()
    // Words for the user; the temp id stays out of sight (the e2e test reads the attribute).
    $('form-result').textContent = `Saved “${site}” on this device.`
    $('form-result').dataset.visitId = visit
    $<HTMLFormElement>('visit-form').reset()
  } catch (e) {
    $('form-result').textContent = 'Not saved: see the developer panel.'
    delete $('form-result').dataset.visitId
    log(`not saved: ${describe(e)}`)
  }
}

async function main() {
  await onStatus(onEvent)
  renderStatus(await status())
  refreshLists()

  const online = $<HTMLInputElement>('server-online')
  const info = await invoke<ServerInfo>('server_info')
  online.checked = info.online
  log(`API ${info.apiUrl} ${info.online ? 'online' : 'offline'}`)
  online.onchange = async () => {
    const i = await invoke<ServerInfo>('set_server_online', {
      online: online.checked
    })
    log(`API server ${i.online ? 'online' : 'offline'}`)
  }

  const bg = $<HTMLInputElement>('bg-enabled')
  bg.checked = await isEnabled()
  bg.onchange = () =>
    (bg.checked ? enable() : disable())
      .then(() => {
        log(`background sync ${bg.checked ? 'on' : 'off'}`)
        return renderDiagnostics()
      })
      .catch((e) => log(describe(e)))
  $('diagnostics-refresh').onclick = () =>
    renderDiagnostics().catch((e) => log(`diagnostics: ${describe(e)}`))
  await renderDiagnostics()
  window.addEventListener('online', () => refreshLists())
  window.addEventListener('offline', () => refreshLists())

  $('sync-now').onclick = async () => {
    try {
      const r = await syncNow({ budgetMs: 20_000 })
      log(`sync now: ${r.stopReason}`)
    } catch (e) {
      log(`sync failed: ${describe(e)}`)
    }
  }
  $<HTMLFormElement>('visit-form').addEventListener('submit', saveVisit)
  document.body.dataset.ready = 'true'
}

main().catch((e) => log(`startup failed: ${describe(e)}`))
