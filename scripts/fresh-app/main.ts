// The whole frontend of the fresh app made by scripts/test-fresh-app.sh: what a new user writes
// from the README's JavaScript API. Saving a visit enqueues it (the API is down at first), the
// page shows the outbox status, and "Sync now" drains it.
import { enqueue, onStatus, status, syncNow, tempId } from 'tauri-plugin-background-sync-api'

const out = document.querySelector<HTMLPreElement>('#status')!

async function show() {
  const s = await status()
  out.textContent = JSON.stringify({ pending: s.pending, dead: s.dead, state: s.state })
}

document.querySelector<HTMLButtonElement>('#save')!.addEventListener('click', async () => {
  const id = tempId('visit')
  await enqueue({
    method: 'POST',
    path: '/visits',
    body: { site: 'Farm 12' },
    entity: { kind: 'visit', id },
    tempId: id,
    priority: 'high',
  })
  await show()
})

document.querySelector<HTMLButtonElement>('#sync')!.addEventListener('click', async () => {
  const report = await syncNow({ budgetMs: 10_000 })
  document.querySelector('#report')!.textContent = `${report.stopReason} ${report.done}`
  await show()
})

await onStatus(() => void show())
await show()
