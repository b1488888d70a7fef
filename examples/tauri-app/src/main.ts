import { invoke } from '@tauri-apps/api/core'
import {
  deadLetters,
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
  retry,
  status,
  syncNow,
  tempId,
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

function renderStatus(s: SyncStatus) {
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
      await Promise.all([renderPending(), renderDead()])
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
    case 'progress':
      log(`progress: ${e.done} delivered, ${e.remaining} left`)
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
    $('form-result').textContent = `saved ${visit} (queued)`
    $<HTMLFormElement>('visit-form').reset()
  } catch (e) {
    $('form-result').textContent = `not saved: ${describe(e)}`
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
    (bg.checked ? enable() : disable()).then(
      () => log(`background sync ${bg.checked ? 'on' : 'off'}`),
      (e) => log(describe(e))
    )

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
