// The status store against the contracts UI frameworks rely on: React's
// `useSyncExternalStore` (https://react.dev/reference/react/useSyncExternalStore: bound
// `subscribe` returning an unsubscribe, `getSnapshot` returning the same value until the store
// changes), Svelte's store contract (https://svelte.dev/docs/svelte/stores#Store-contract: `run`
// called synchronously on subscribe and on every change; checked with svelte/store itself) and
// Vue's reactivity (the README's snippet, run with vue itself).
import { afterEach, describe, expect, it } from 'vitest'
import { mockIPC, clearMocks } from '@tauri-apps/api/mocks'
import { Channel } from '@tauri-apps/api/core'
import { derived, get } from 'svelte/store'
import { shallowRef, watch, nextTick } from 'vue'
import {
  createSyncStore,
  type StatusEvent,
  type SyncSnapshot,
  type SyncStatus
} from './index'

const P = 'plugin:background-sync|'

interface Internals {
  runCallback(id: number, data: unknown): void
}

const status: SyncStatus = {
  state: 'idle',
  enabled: false,
  configured: true,
  pending: 3,
  inFlight: 0,
  dead: 0,
  blocked: 0,
  lastSyncAt: null,
  lastError: null,
  nextAttemptAt: null,
  lastReport: null,
  uploadsPending: 0,
  uploadsDead: 0
}

/** The plugin side: records subscribe/unsubscribe and lets a test send on the live channels. */
function plugin(
  opts: { failSubscribe?: unknown; holdSubscribe?: boolean } = {}
) {
  const calls: string[] = []
  const replays: unknown[] = []
  const channels: Channel<unknown>[] = []
  const indexes = new Map<Channel<unknown>, number>()
  const held: (() => void)[] = []
  let nextId = 1
  mockIPC((cmd, args) => {
    calls.push(cmd.replace(P, ''))
    const a = (args ?? {}) as Record<string, unknown>
    if (cmd === P + 'subscribe') {
      if (opts.failSubscribe !== undefined) throw opts.failSubscribe
      const ch = a.onEvent as Channel<unknown>
      replays.push(a.replay)
      channels.push(ch)
      const id = nextId++
      if (opts.holdSubscribe) return new Promise((r) => held.push(() => r(id)))
      return id
    }
    if (cmd === P + 'unsubscribe') return null
    throw new Error(`unexpected command ${cmd}`)
  })
  function send(e: StatusEvent, ch = channels[channels.length - 1]) {
    const index = indexes.get(ch) ?? 0
    indexes.set(ch, index + 1)
    const internals = (window as unknown as { __TAURI_INTERNALS__: Internals })
      .__TAURI_INTERNALS__
    internals.runCallback(ch.id, { index, message: e })
  }
  return {
    calls,
    replays,
    channels,
    send,
    release: () => held.splice(0).forEach((r) => r())
  }
}

/** Let the IPC promises settle. */
const settle = () => new Promise((r) => setTimeout(r, 0))

afterEach(() => clearMocks())

describe('createSyncStore', () => {
  it('leaves replayed outcomes to the app: its subscription asks for live events only', async () => {
    const p = plugin()
    const stop = createSyncStore().subscribe(() => {})
    await settle()
    expect(p.replays).toEqual([false])
    stop()
  })

  it('subscribes to the plugin only while it has subscribers, once for all of them', async () => {
    const p = plugin()
    const store = createSyncStore()
    expect(p.calls).toEqual([])
    const a = store.subscribe(() => {})
    const b = store.subscribe(() => {})
    await settle()
    expect(p.calls).toEqual(['subscribe'])
    a()
    await settle()
    expect(p.calls).toEqual(['subscribe'])
    b()
    b() // idempotent
    await settle()
    expect(p.calls).toEqual(['subscribe', 'unsubscribe'])
    // A new subscriber opens a new subscription.
    store.subscribe(() => {})
    await settle()
    expect(p.calls).toEqual(['subscribe', 'unsubscribe', 'subscribe'])
  })

  it('calls a listener at once with the current snapshot and on every change', async () => {
    const p = plugin()
    const store = createSyncStore()
    const seen: SyncSnapshot[] = []
    store.subscribe((s) => seen.push(s))
    expect(seen).toHaveLength(1)
    expect(seen[0]).toBe(store.getServerSnapshot())
    expect(seen[0].status).toBeNull()
    await settle()
    p.send({ type: 'status', ...status })
    expect(seen).toHaveLength(2)
    expect(seen[1].status).toStrictEqual(status)
    expect(seen[1]).toBe(store.getSnapshot())
    expect(Object.isFrozen(seen[1])).toBe(true)
  })

  it('keeps the same snapshot object until something it shows changes', async () => {
    const p = plugin()
    const store = createSyncStore()
    let calls = 0
    store.subscribe(() => calls++)
    await settle()
    p.send({ type: 'status', ...status })
    const first = store.getSnapshot()
    expect(store.getSnapshot()).toBe(first)
    // Per-mutation events change nothing a snapshot shows: no new object, no call.
    p.send({
      type: 'delivered',
      id: 'm1',
      entity: { kind: 'visit', id: '1' },
      method: 'POST',
      path: '/visits',
      status: 201,
      tempId: null,
      serverId: null,
      deliveredAt: 1
    })
    p.send({
      type: 'uploadProgress',
      id: 'u',
      placeholder: 'p',
      bytesSent: 1,
      total: 2
    })
    expect(store.getSnapshot()).toBe(first)
    expect(calls).toBe(2)
  })

  it('tracks progress during a drain and clears it when the drain reports', async () => {
    const p = plugin()
    const store = createSyncStore()
    store.subscribe(() => {})
    await settle()
    p.send({ type: 'status', ...status, state: 'running' })
    p.send({ type: 'progress', runId: 'r', done: 1, dead: 0, remaining: 2 })
    expect(store.getSnapshot().progress).toStrictEqual({
      type: 'progress',
      runId: 'r',
      done: 1,
      dead: 0,
      remaining: 2
    })
    p.send({ type: 'settled', runId: 'r', delivered: ['m1'], dead: [] })
    expect(store.getSnapshot().lastSettled?.delivered).toEqual(['m1'])
    // Only the type matters to the store; a full DrainReport is in index.test.ts.
    p.send({ type: 'report', runId: 'r' } as unknown as StatusEvent)
    expect(store.getSnapshot().progress).toBeNull()
    expect(store.getSnapshot().lastSettled?.delivered).toEqual(['m1'])
  })

  it('the same function subscribed twice is two subscribers', async () => {
    const p = plugin()
    const store = createSyncStore()
    let calls = 0
    const f = () => calls++
    const un1 = store.subscribe(f)
    store.subscribe(f)
    expect(calls).toBe(2)
    await settle()
    un1()
    p.send({ type: 'status', ...status })
    expect(calls).toBe(3)
    await settle()
    expect(p.calls).toEqual(['subscribe'])
  })

  it('closes a subscription left before the plugin answered, and ignores its events', async () => {
    const p = plugin({ holdSubscribe: true })
    const store = createSyncStore()
    const seen: SyncSnapshot[] = []
    const un = store.subscribe((s) => seen.push(s))
    await settle()
    un()
    p.send({ type: 'status', ...status }, p.channels[0])
    p.release()
    await settle()
    expect(p.calls).toEqual(['subscribe', 'unsubscribe'])
    expect(seen).toHaveLength(1)
    expect(store.getSnapshot().status).toBeNull()
  })

  it('a resubscribe ignores the abandoned subscription', async () => {
    const p = plugin({ holdSubscribe: true })
    const store = createSyncStore()
    store.subscribe(() => {})()
    store.subscribe(() => {})
    await settle()
    expect(p.channels).toHaveLength(2)
    p.send({ type: 'status', ...status, pending: 99 }, p.channels[0])
    expect(store.getSnapshot().status).toBeNull()
    p.send({ type: 'status', ...status, pending: 1 }, p.channels[1])
    expect(store.getSnapshot().status?.pending).toBe(1)
    p.release()
    await settle()
    expect(p.calls).toEqual(['subscribe', 'subscribe', 'unsubscribe'])
  })

  it('reports a failed subscribe in the snapshot, and retries on the next first subscriber', async () => {
    plugin({ failSubscribe: { kind: 'platform', message: 'no webview' } })
    const store = createSyncStore()
    const seen: SyncSnapshot[] = []
    const un = store.subscribe((s) => seen.push(s))
    await settle()
    expect(seen.at(-1)?.error).toStrictEqual({
      kind: 'platform',
      message: 'no webview'
    })
    un()
    const p = plugin()
    store.subscribe(() => {})
    await settle()
    p.send({ type: 'status', ...status })
    expect(store.getSnapshot().error).toBeNull()
    expect(store.getSnapshot().status).toStrictEqual(status)
  })

  it('wraps a non-plugin failure as a platform error', async () => {
    plugin({ failSubscribe: 'IPC unavailable' })
    const store = createSyncStore()
    store.subscribe(() => {})
    await settle()
    expect(store.getSnapshot().error).toStrictEqual({
      kind: 'platform',
      message: 'IPC unavailable'
    })
  })

  it('rejects a listener that is not a function', () => {
    plugin()
    expect(() => createSyncStore().subscribe(undefined as never)).toThrow()
  })

  it('works unbound, as React passes subscribe and getSnapshot', async () => {
    const p = plugin()
    const { subscribe, getSnapshot, getServerSnapshot } = createSyncStore()
    let changed = 0
    const un = subscribe(() => changed++)
    await settle()
    p.send({ type: 'status', ...status })
    expect(getSnapshot().status?.pending).toBe(3)
    expect(getServerSnapshot().status).toBeNull()
    expect(changed).toBe(2)
    un()
  })

  it("satisfies Svelte's store contract (svelte/store get and derived)", async () => {
    const p = plugin()
    const store = createSyncStore()
    expect(get(store).status).toBeNull()
    const pending = derived(store, ($s) => $s.status?.pending ?? 0)
    const values: number[] = []
    const un = pending.subscribe((v) => values.push(v))
    await settle()
    p.send({ type: 'status', ...status, pending: 2 })
    p.send({ type: 'status', ...status, pending: 0 })
    expect(values).toEqual([0, 2, 0])
    un()
    await settle()
    // get() subscribes and unsubscribes once; derived holds one subscription while used.
    expect(p.calls.filter((c) => c === 'unsubscribe')).toHaveLength(2)
  })

  it("drives Vue's reactivity as the README shows", async () => {
    const p = plugin()
    const store = createSyncStore()
    const sync = shallowRef(store.getSnapshot())
    const un = store.subscribe((s) => (sync.value = s))
    const pendings: number[] = []
    watch(sync, (s) => pendings.push(s.status?.pending ?? -1))
    await settle()
    p.send({ type: 'status', ...status, pending: 5 })
    await nextTick()
    expect(pendings).toEqual([5])
    un()
  })
})
