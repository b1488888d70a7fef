/// <reference types="node" />
import { readFileSync } from 'node:fs'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { mockIPC, clearMocks } from '@tauri-apps/api/mocks'
import { Channel } from '@tauri-apps/api/core'
import * as api from './index'
import {
  clearAuth,
  configure,
  deadLetters,
  disable,
  discard,
  discardUpload,
  editDeadLetter,
  enqueueUpload,
  retryUpload,
  uploads,
  enable,
  enqueue,
  enqueueMany,
  history,
  delivered,
  diagnostics,
  resolveTempId,
  isBackgroundSyncError,
  isEnabled,
  onStatus,
  pending,
  retry,
  setAuth,
  status,
  syncNow,
  tempId,
  ERROR_KINDS,
  type BackgroundSyncError,
  type DrainReport,
  type Mutation,
  type NewMutation,
  type StatusEvent,
  type StatusOptions,
  type Delivered,
  type SyncConfigInput,
  type SyncStatus
} from './index'

// ---------------------------------------------------------------------------------------------
// Fixtures and IPC mock
// ---------------------------------------------------------------------------------------------

const deliveredRow: Delivered = {
  id: 'm-1',
  entity: { kind: 'visit', id: 'tmp-1' },
  method: 'POST',
  path: '/visits',
  status: 201,
  tempId: 'tmp-1',
  serverId: 'srv-9',
  deliveredAt: 1_700_000_000_000
}

const report: DrainReport = {
  runId: 'run-1',
  trigger: 'foreground',
  startedAt: 1_700_000_000_000,
  finishedAt: 1_700_000_000_250,
  requests: 3,
  sent: 3,
  done: 2,
  retried: 1,
  dead: 0,
  remaining: 1,
  deadTotal: 0,
  stopReason: 'waiting',
  nextAttemptAt: 1_700_000_001_000,
  lastError: null,
  uploaded: 0,
  uploadRetried: 0,
  uploadDead: 0,
  bytesUploaded: 0,
  uploadsRemaining: 0
}

const syncStatus: SyncStatus = {
  state: 'idle',
  enabled: true,
  configured: true,
  pending: 1,
  inFlight: 0,
  dead: 2,
  blocked: 0,
  lastSyncAt: 1_700_000_000_250,
  lastError: null,
  nextAttemptAt: 1_700_000_001_000,
  lastReport: report,
  uploadsPending: 0,
  uploadsDead: 0
}

const queued: Mutation = {
  id: 'm-1',
  seq: 1,
  idempotencyKey: 'k-1',
  priority: 'normal',
  entity: { kind: 'visit', id: '42' },
  method: 'PATCH',
  path: '/visits/42',
  body: { note: 'x' },
  createdAt: 1_700_000_000_000,
  attempts: 0,
  nextAttemptAt: 1_700_000_000_000,
  lastStatus: null,
  lastError: null,
  state: 'pending'
}

const newMutation: NewMutation = {
  method: 'PATCH',
  path: '/visits/42',
  body: { note: 'x' },
  headers: { 'X-Trace': 'abc' },
  priority: 'high',
  entity: { kind: 'visit', id: '42' },
  idempotencyKey: 'k-1'
}

interface Call {
  cmd: string
  args: Record<string, unknown>
}

let calls: Call[] = []

/** Mock the IPC with `handler`, recording every call. */
function mock(
  handler: (cmd: string, args: Record<string, unknown>) => unknown
) {
  calls = []
  mockIPC((cmd, args) => {
    const a = (args ?? {}) as Record<string, unknown>
    calls.push({ cmd, args: a })
    return handler(cmd, a)
  })
}

/** Mock the IPC so that `cmd` returns `value` (any other command fails the test). */
function respond(cmd: string, value: unknown) {
  mock((c) => {
    if (c !== cmd) throw new Error(`unexpected command ${c}`)
    return value
  })
}

const P = 'plugin:background-sync|'

interface Internals {
  runCallback(id: number, data: unknown): void
  callbacks: Map<number, unknown>
}
function internals(): Internals {
  return (window as unknown as { __TAURI_INTERNALS__: Internals })
    .__TAURI_INTERNALS__
}

/** What the Rust side does on `Channel::send`: deliver `{ index, message }` to the callback. */
function sendOnChannel(ch: Channel<unknown>, index: number, message: unknown) {
  internals().runCallback(ch.id, { index, message })
}

beforeEach(() => {
  calls = []
})

afterEach(() => {
  clearMocks()
  vi.unstubAllGlobals()
  vi.restoreAllMocks()
})

// ---------------------------------------------------------------------------------------------
// Commands: right name, right args, right result
// ---------------------------------------------------------------------------------------------

describe('commands', () => {
  const diagnosticsAnswer = {
    configured: true,
    backgroundEnabled: false,
    autoSync: true,
    pending: 0,
    dead: 0,
    lastRunAt: null,
    lastBackgroundRunAt: null,
    os: { platform: 'headless' },
    problems: [{ code: 'backgroundOff', message: 'm', fix: 'f' }]
  }
  const cases: Array<{
    name: string
    run: () => Promise<unknown>
    cmd: string
    args: Record<string, unknown>
    result: unknown
    expected: unknown
  }> = [
    {
      name: 'enqueueUpload',
      run: () =>
        enqueueUpload({
          filePath: '/data/photo.jpg',
          contentType: 'image/jpeg',
          priority: 'high',
          destination: { type: 'direct', url: '/files/p1', method: 'PUT' }
        }),
      cmd: 'enqueue_upload',
      args: {
        upload: {
          filePath: '/data/photo.jpg',
          contentType: 'image/jpeg',
          priority: 'high',
          destination: { type: 'direct', url: '/files/p1', method: 'PUT' }
        }
      },
      result: { id: 'u1', placeholder: 'att_1', size: 3 },
      expected: { id: 'u1', placeholder: 'att_1', size: 3 }
    },
    {
      name: 'uploads (filtered, paged)',
      run: () => uploads({ states: ['dead'], limit: 5 }),
      cmd: 'uploads',
      args: { states: ['dead'], limit: 5 },
      result: [],
      expected: []
    },
    {
      name: 'uploads (no options)',
      run: () => uploads(),
      cmd: 'uploads',
      args: {},
      result: [],
      expected: []
    },
    {
      name: 'retryUpload',
      run: () => retryUpload('u1'),
      cmd: 'retry_upload',
      args: { id: 'u1' },
      result: null,
      expected: undefined
    },
    {
      name: 'discardUpload',
      run: () => discardUpload('u1'),
      cmd: 'discard_upload',
      args: { id: 'u1' },
      result: null,
      expected: undefined
    },
    {
      name: 'diagnostics',
      run: () => diagnostics(),
      cmd: 'diagnostics',
      args: {},
      result: diagnosticsAnswer,
      expected: diagnosticsAnswer
    },
    {
      name: 'enable',
      run: () => enable(),
      cmd: 'enable',
      args: {},
      result: null,
      expected: undefined
    },
    {
      name: 'disable',
      run: () => disable(),
      cmd: 'disable',
      args: {},
      result: null,
      expected: undefined
    },
    {
      name: 'isEnabled (true)',
      run: () => isEnabled(),
      cmd: 'is_enabled',
      args: {},
      result: true,
      expected: true
    },
    {
      name: 'isEnabled (false)',
      run: () => isEnabled(),
      cmd: 'is_enabled',
      args: {},
      result: false,
      expected: false
    },
    {
      name: 'configure',
      run: () => configure({ baseUrl: 'https://api.example.com/v1' }),
      cmd: 'configure',
      args: { config: { baseUrl: 'https://api.example.com/v1' } },
      result: null,
      expected: undefined
    },
    {
      name: 'setAuth',
      run: () =>
        setAuth({
          accessToken: 'a',
          refreshToken: 'r',
          refreshUrl: '/auth/refresh'
        }),
      cmd: 'set_auth',
      args: {
        auth: {
          accessToken: 'a',
          refreshToken: 'r',
          refreshUrl: '/auth/refresh'
        }
      },
      result: null,
      expected: undefined
    },
    {
      name: 'clearAuth',
      run: () => clearAuth(),
      cmd: 'clear_auth',
      args: {},
      result: null,
      expected: undefined
    },
    {
      name: 'enqueue',
      run: () => enqueue(newMutation),
      cmd: 'enqueue',
      args: { mutation: newMutation },
      result: { id: 'm-1', seq: 1, idempotencyKey: 'k-1' },
      expected: { id: 'm-1', seq: 1, idempotencyKey: 'k-1' }
    },
    {
      name: 'enqueueMany',
      run: () =>
        enqueueMany([
          newMutation,
          { ...newMutation, method: 'DELETE', body: undefined }
        ]),
      cmd: 'enqueue_many',
      args: {
        mutations: [
          newMutation,
          { ...newMutation, method: 'DELETE', body: undefined }
        ]
      },
      result: [
        { id: 'm-1', seq: 1, idempotencyKey: 'k-1' },
        { id: 'm-2', seq: 2, idempotencyKey: 'k-2' }
      ],
      expected: [
        { id: 'm-1', seq: 1, idempotencyKey: 'k-1' },
        { id: 'm-2', seq: 2, idempotencyKey: 'k-2' }
      ]
    },
    {
      name: 'syncNow()',
      run: () => syncNow(),
      cmd: 'sync_now',
      args: {},
      result: report,
      expected: report
    },
    {
      name: 'syncNow({ budgetMs })',
      run: () => syncNow({ budgetMs: 5000 }),
      cmd: 'sync_now',
      args: { budgetMs: 5000 },
      result: report,
      expected: report
    },
    {
      name: 'status',
      run: () => status(),
      cmd: 'status',
      args: {},
      result: syncStatus,
      expected: syncStatus
    },
    {
      name: 'pending()',
      run: () => pending(),
      cmd: 'pending',
      args: {},
      result: [queued],
      expected: [queued]
    },
    {
      name: 'pending({ limit, offset })',
      run: () => pending({ limit: 10, offset: 20 }),
      cmd: 'pending',
      args: { limit: 10, offset: 20 },
      result: [],
      expected: []
    },
    {
      name: 'pending({ entity })',
      run: () => pending({ entity: { kind: 'visit', id: 'tmp-1' }, limit: 5 }),
      cmd: 'pending',
      args: { limit: 5, entity: { kind: 'visit', id: 'tmp-1' } },
      result: [queued],
      expected: [queued]
    },
    {
      name: 'deadLetters()',
      run: () => deadLetters(),
      cmd: 'dead_letters',
      args: {},
      result: [{ ...queued, state: 'dead' }],
      expected: [{ ...queued, state: 'dead' }]
    },
    {
      name: 'deadLetters({ limit })',
      run: () => deadLetters({ limit: 5 }),
      cmd: 'dead_letters',
      args: { limit: 5 },
      result: [],
      expected: []
    },
    {
      name: 'retry',
      run: () => retry('m-1'),
      cmd: 'retry',
      args: { id: 'm-1' },
      result: null,
      expected: undefined
    },
    {
      name: 'discard',
      run: () => discard('m-1'),
      cmd: 'discard',
      args: { id: 'm-1' },
      result: null,
      expected: undefined
    },
    {
      name: 'editDeadLetter',
      run: () => editDeadLetter('m-1', { note: 'fixed' }),
      cmd: 'edit',
      args: { id: 'm-1', body: { note: 'fixed' } },
      result: null,
      expected: undefined
    },
    {
      name: 'editDeadLetter with a null body',
      run: () => editDeadLetter('m-1', null),
      cmd: 'edit',
      args: { id: 'm-1', body: null },
      result: null,
      expected: undefined
    },
    {
      name: 'history()',
      run: () => history(),
      cmd: 'history',
      args: {},
      result: [report],
      expected: [report]
    },
    {
      name: 'history({ limit })',
      run: () => history({ limit: 3 }),
      cmd: 'history',
      args: { limit: 3 },
      result: [report],
      expected: [report]
    },
    {
      name: 'delivered()',
      run: () => delivered(),
      cmd: 'delivered',
      args: { query: {} },
      result: [deliveredRow],
      expected: [deliveredRow]
    },
    {
      name: 'delivered({ since, entity, limit })',
      run: () =>
        delivered({
          since: 5,
          entity: { kind: 'visit', id: 'tmp-1' },
          limit: 2
        }),
      cmd: 'delivered',
      args: {
        query: { since: 5, entity: { kind: 'visit', id: 'tmp-1' }, limit: 2 }
      },
      result: [deliveredRow],
      expected: [deliveredRow]
    },
    {
      name: 'resolveTempId',
      run: () => resolveTempId('tmp-1'),
      cmd: 'resolve_temp_id',
      args: { tempId: 'tmp-1' },
      result: 'srv-9',
      expected: 'srv-9'
    }
  ]

  it.each(cases)('$name invokes $cmd with its args', async (c) => {
    respond(P + c.cmd, c.result)
    await expect(c.run()).resolves.toStrictEqual(c.expected)
    expect(calls).toHaveLength(1)
    expect(calls[0].cmd).toBe(P + c.cmd)
    expect(calls[0].args).toStrictEqual(c.args)
  })

  it('omits undefined options instead of sending them', async () => {
    respond(P + 'pending', [])
    await pending({ limit: undefined, offset: 3 })
    expect(Object.keys(calls[0].args)).toEqual(['offset'])
  })

  it('passes a deep-partial config (nested objects, nulls) through unchanged', async () => {
    const config: SyncConfigInput = {
      backoff: { maxMs: 60_000 },
      background: { requiresCharging: true },
      batch: { maxItems: 10 },
      concurrency: null,
      defaultHeaders: { 'X-Api-Version': '3' },
      durability: 'relaxed'
    }
    respond(P + 'configure', null)
    await configure(config)
    expect(calls[0].args).toStrictEqual({ config })
  })

  it('configure accepts batch: null (turns the batch endpoint off)', async () => {
    respond(P + 'configure', null)
    await configure({ batch: null })
    expect(calls[0].args).toStrictEqual({ config: { batch: null } })
  })
})

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

describe('errors from the plugin', () => {
  const everyCommand: Array<[string, () => Promise<unknown>]> = [
    ['enable', () => enable()],
    ['disable', () => disable()],
    ['isEnabled', () => isEnabled()],
    ['configure', () => configure({ baseUrl: 'ftp://x' })],
    ['setAuth', () => setAuth({ accessToken: 't' })],
    ['clearAuth', () => clearAuth()],
    ['enqueue', () => enqueue(newMutation)],
    ['enqueueMany', () => enqueueMany([newMutation])],
    ['syncNow', () => syncNow()],
    ['status', () => status()],
    ['pending', () => pending()],
    ['deadLetters', () => deadLetters()],
    ['retry', () => retry('m-1')],
    ['discard', () => discard('m-1')],
    ['editDeadLetter', () => editDeadLetter('m-1', {})],
    ['history', () => history()],
    ['onStatus', () => onStatus(() => {})]
  ]

  it.each(everyCommand)(
    '%s rejects with the plugin error as is',
    async (_, run) => {
      const err = {
        kind: 'storage',
        message: 'storage error: database or disk is full'
      }
      mock(() => {
        throw err
      })
      const e: unknown = await run().then(
        () => 'resolved',
        (e: unknown) => e
      )
      expect(e).toStrictEqual(err)
      expect(isBackgroundSyncError(e)).toBe(true)
      expect(calls).toHaveLength(1)
    }
  )

  it('keeps each kind so callers can branch on it', async () => {
    for (const kind of ERROR_KINDS) {
      mock(() => Promise.reject({ kind, message: `${kind}!` }))
      const e = (await enqueue(newMutation).catch(
        (e: unknown) => e
      )) as BackgroundSyncError
      expect(e.kind).toBe(kind)
      expect(e.message).toBe(`${kind}!`)
    }
  })

  it('passes Tauri-level failures (plain strings) through untouched', async () => {
    mock(() => {
      throw 'background-sync.enqueue not allowed. Permissions associated with this command: ...'
    })
    const e = await enqueue(newMutation).catch((e: unknown) => e)
    expect(typeof e).toBe('string')
    expect(isBackgroundSyncError(e)).toBe(false)
  })
})

describe('isBackgroundSyncError', () => {
  it.each([
    [{ kind: 'notFound', message: 'not found: m-1' }, true],
    [{ kind: 'invalidInput', message: '' }, true],
    [{ kind: 'teapot', message: 'no such kind' }, false],
    [{ kind: 'notFound' }, false],
    [{ message: 'x' }, false],
    [{ kind: 1, message: 'x' }, false],
    ['notFound', false],
    [null, false],
    [undefined, false],
    [new Error('boom'), false]
  ])('%j -> %s', (value, expected) => {
    expect(isBackgroundSyncError(value)).toBe(expected)
  })
})

// ---------------------------------------------------------------------------------------------
// Client-side validation: rejects without invoking
// ---------------------------------------------------------------------------------------------

describe('client-side validation', () => {
  async function expectInvalid(run: () => Promise<unknown>, match: RegExp) {
    mock(() => null)
    const e = await run().then(
      () => 'resolved',
      (e: unknown) => e
    )
    expect(isBackgroundSyncError(e)).toBe(true)
    expect((e as BackgroundSyncError).kind).toBe('invalidInput')
    expect((e as BackgroundSyncError).message).toMatch(match)
    expect(calls).toHaveLength(0)
  }

  it('rejects an upload without a file path, and upload ids that are empty', async () => {
    await expectInvalid(() => enqueueUpload({ filePath: '' }), /filePath/)
    await expectInvalid(() => enqueueUpload(null as never), /object/)
    await expectInvalid(() => retryUpload(''), /id/)
    await expectInvalid(() => discardUpload(''), /id/)
    await expectInvalid(() => uploads({ limit: -1 }), /limit/)
  })

  it('rejects a priority outside the union', async () => {
    await expectInvalid(
      () => enqueue({ ...newMutation, priority: 'urgent' as never }),
      /priority "urgent"/
    )
  })

  it('rejects a null priority (the plugin only accepts a name or nothing)', async () => {
    await expectInvalid(
      () => enqueue({ ...newMutation, priority: null as never }),
      /priority/
    )
  })

  it.each(['low', 'normal', 'high', 'critical'] as const)(
    'accepts priority %s',
    async (priority) => {
      respond(P + 'enqueue', { id: 'm', seq: 1, idempotencyKey: 'k' })
      await enqueue({ ...newMutation, priority })
      expect(calls).toHaveLength(1)
    }
  )

  it('rejects a coalesce mode outside the union, and passes merge and replace through', async () => {
    await expectInvalid(
      () => enqueue({ ...newMutation, coalesce: 'squash' as never }),
      /coalesce "squash" is not one of merge, replace/
    )
    expect(calls).toHaveLength(0)
    respond(P + 'enqueue', {
      id: 'm2',
      seq: 1,
      idempotencyKey: 'k',
      coalescedInto: 'm1'
    })
    const e = await enqueue({ ...newMutation, coalesce: 'merge' })
    expect(e.coalescedInto).toBe('m1')
    expect(calls[0].args).toStrictEqual({
      mutation: { ...newMutation, coalesce: 'merge' }
    })
    respond(P + 'enqueue', {
      id: 'm3',
      seq: 0,
      idempotencyKey: 'k',
      cancelled: true
    })
    const d = await enqueue({ ...newMutation, coalesce: 'replace' })
    expect(d.cancelled).toBe(true)
    expect(calls.at(-1)?.args).toStrictEqual({
      mutation: { ...newMutation, coalesce: 'replace' }
    })
  })

  it('accepts a mutation without priority', async () => {
    respond(P + 'enqueue', { id: 'm', seq: 1, idempotencyKey: 'k' })
    const { priority: _, ...rest } = newMutation
    await enqueue(rest)
    expect(calls[0].args).toStrictEqual({ mutation: rest })
  })

  it('rejects an unknown method', async () => {
    await expectInvalid(
      () => enqueue({ ...newMutation, method: 'GET' as never }),
      /method "GET"/
    )
  })

  it('accepts a lower-case method like the plugin does (sent as given)', async () => {
    respond(P + 'enqueue', { id: 'm', seq: 1, idempotencyKey: 'k' })
    await enqueue({ ...newMutation, method: 'post' as never })
    expect((calls[0].args.mutation as NewMutation).method).toBe('post')
  })

  it('rejects a missing or empty path', async () => {
    await expectInvalid(() => enqueue({ ...newMutation, path: '' }), /path/)
    await expectInvalid(
      () => enqueue({ ...newMutation, path: undefined as never }),
      /path/
    )
  })

  it('rejects a missing or incomplete entity', async () => {
    await expectInvalid(
      () => enqueue({ ...newMutation, entity: undefined as never }),
      /entity/
    )
    await expectInvalid(
      () => enqueue({ ...newMutation, entity: { kind: 'visit', id: '' } }),
      /entity/
    )
    await expectInvalid(
      () => enqueue({ ...newMutation, entity: { kind: 'visit' } as never }),
      /entity/
    )
  })

  it('rejects non-string header values', async () => {
    await expectInvalid(
      () => enqueue({ ...newMutation, headers: { 'X-N': 1 as never } }),
      /headers/
    )
  })

  it('rejects a mutation that is not an object', async () => {
    await expectInvalid(
      () => enqueue(null as never),
      /mutation must be an object/
    )
    await expectInvalid(
      () => enqueue([] as never),
      /mutation must be an object/
    )
  })

  it('enqueueMany names the bad item and sends nothing', async () => {
    await expectInvalid(
      () =>
        enqueueMany([
          newMutation,
          { ...newMutation, priority: 'asap' as never }
        ]),
      /mutations\[1\]\.priority/
    )
    await expectInvalid(() => enqueueMany('nope' as never), /array/)
  })

  it('enqueueMany with an empty list still asks the plugin', async () => {
    respond(P + 'enqueue_many', [])
    await expect(enqueueMany([])).resolves.toEqual([])
    expect(calls).toHaveLength(1)
  })

  it('rejects negative or fractional counts', async () => {
    await expectInvalid(() => syncNow({ budgetMs: -1 }), /budgetMs/)
    await expectInvalid(() => syncNow({ budgetMs: 1.5 }), /budgetMs/)
    await expectInvalid(() => pending({ limit: -1 }), /limit/)
    await expectInvalid(() => pending({ offset: Number.NaN }), /offset/)
    await expectInvalid(() => deadLetters({ offset: -5 }), /offset/)
    await expectInvalid(() => history({ limit: 2 ** 32 }), /limit/)
  })

  it('rejects a pending() entity without kind or id', async () => {
    await expectInvalid(
      () => pending({ entity: { kind: 'visit' } as never }),
      /entity must be/
    )
    await expectInvalid(() => pending({ entity: 'visit' as never }), /entity/)
  })

  it('rejects an empty id', async () => {
    await expectInvalid(() => retry(''), /id/)
    await expectInvalid(() => discard(''), /id/)
    await expectInvalid(() => editDeadLetter(undefined as never, {}), /id/)
  })

  it('rejects a non-object config or auth', async () => {
    await expectInvalid(() => configure('https://x' as never), /config/)
    await expectInvalid(() => setAuth(null as never), /auth/)
  })

  it('rejects a non-function status callback', async () => {
    await expectInvalid(() => onStatus(undefined as never), /cb/)
  })
})

// ---------------------------------------------------------------------------------------------
// Status stream
// ---------------------------------------------------------------------------------------------

describe('onStatus', () => {
  function subscribeMock(subscriptionId = 7) {
    let channel: Channel<unknown> | undefined
    mock((cmd, args) => {
      if (cmd === P + 'subscribe') {
        channel = args.onEvent as Channel<unknown>
        return subscriptionId
      }
      if (cmd === P + 'unsubscribe') return null
      throw new Error(`unexpected command ${cmd}`)
    })
    return () => {
      if (!channel) throw new Error('subscribe was not invoked')
      return channel
    }
  }

  const progress: StatusEvent = {
    type: 'progress',
    runId: 'run-1',
    done: 1,
    dead: 0,
    remaining: 2
  }
  const statusEvent: StatusEvent = { type: 'status', ...syncStatus }
  const reportEvent: StatusEvent = { type: 'report', ...report }

  it('subscribes with a Channel and delivers its events to the callback', async () => {
    const channel = subscribeMock()
    const events: StatusEvent[] = []
    await onStatus((e) => events.push(e))

    expect(calls).toHaveLength(1)
    expect(calls[0].cmd).toBe(P + 'subscribe')
    expect(Object.keys(calls[0].args)).toEqual(['onEvent', 'replay'])
    expect(calls[0].args.onEvent).toBeInstanceOf(Channel)
    // Serialized over IPC as a channel reference; replay of unheard outcomes by default.
    expect(JSON.stringify(calls[0].args)).toBe(
      `{"onEvent":"__CHANNEL__:${channel().id}","replay":true}`
    )

    sendOnChannel(channel(), 0, statusEvent)
    sendOnChannel(channel(), 1, progress)
    sendOnChannel(channel(), 2, reportEvent)
    const uploadProgress: StatusEvent = {
      type: 'uploadProgress',
      id: 'u1',
      placeholder: 'att_1',
      bytesSent: 65536,
      total: 131072
    }
    sendOnChannel(channel(), 3, uploadProgress)
    expect(events).toStrictEqual([
      statusEvent,
      progress,
      reportEvent,
      uploadProgress
    ])
  })

  it('replay: false asks for live events only; bad options are refused before any IPC', async () => {
    subscribeMock()
    await onStatus(() => {}, { replay: false })
    expect(calls[0].args.replay).toBe(false)
    await expect(
      onStatus(() => {}, { replay: 'yes' as unknown as boolean })
    ).rejects.toMatchObject({ kind: 'invalidInput' })
    await expect(
      onStatus(() => {}, null as unknown as StatusOptions)
    ).rejects.toMatchObject({ kind: 'invalidInput' })
    expect(calls).toHaveLength(1)
  })

  it('delivers events in send order even when they arrive out of order', async () => {
    const channel = subscribeMock()
    const events: StatusEvent[] = []
    await onStatus((e) => events.push(e))
    sendOnChannel(channel(), 1, progress)
    expect(events).toEqual([])
    sendOnChannel(channel(), 0, statusEvent)
    expect(events).toStrictEqual([statusEvent, progress])
  })

  it('delivers the initial status sent before subscribe returns', async () => {
    const events: StatusEvent[] = []
    mock((cmd, args) => {
      if (cmd === P + 'subscribe') {
        // The plugin sends the current status before answering.
        sendOnChannel(args.onEvent as Channel<unknown>, 0, statusEvent)
        return 1
      }
      return null
    })
    await onStatus((e) => events.push(e))
    expect(events).toStrictEqual([statusEvent])
  })

  it('the unlisten function invokes unsubscribe with the subscription id', async () => {
    const channel = subscribeMock(42)
    const events: StatusEvent[] = []
    const unlisten = await onStatus((e) => events.push(e))
    sendOnChannel(channel(), 0, statusEvent)

    await unlisten()
    expect(calls.map((c) => c.cmd)).toEqual([
      P + 'subscribe',
      P + 'unsubscribe'
    ])
    expect(calls[1].args).toStrictEqual({ id: 42 })

    // Nothing reaches the callback after unlisten, even if the plugin still sends.
    sendOnChannel(channel(), 1, progress)
    expect(events).toStrictEqual([statusEvent])
  })

  it('unlisten is idempotent', async () => {
    subscribeMock(3)
    const unlisten = await onStatus(() => {})
    await unlisten()
    await unlisten()
    expect(calls.filter((c) => c.cmd === P + 'unsubscribe')).toHaveLength(1)
  })

  it('separate subscriptions get separate channels and ids', async () => {
    let next = 10
    const channels: Channel<unknown>[] = []
    mock((cmd, args) => {
      if (cmd === P + 'subscribe') {
        channels.push(args.onEvent as Channel<unknown>)
        return next++
      }
      return null
    })
    const a: StatusEvent[] = []
    const b: StatusEvent[] = []
    const unA = await onStatus((e) => a.push(e))
    await onStatus((e) => b.push(e))
    expect(channels[0].id).not.toBe(channels[1].id)

    sendOnChannel(channels[0], 0, progress)
    sendOnChannel(channels[1], 0, reportEvent)
    expect(a).toStrictEqual([progress])
    expect(b).toStrictEqual([reportEvent])

    await unA()
    expect(calls.at(-1)).toStrictEqual({
      cmd: P + 'unsubscribe',
      args: { id: 10 }
    })
  })

  it('a failed subscribe rejects and leaves the callback detached', async () => {
    let channel: Channel<unknown> | undefined
    mock((cmd, args) => {
      channel = args.onEvent as Channel<unknown>
      throw { kind: 'storage', message: 'locked' }
    })
    const cb = vi.fn()
    await expect(onStatus(cb)).rejects.toStrictEqual({
      kind: 'storage',
      message: 'locked'
    })
    sendOnChannel(channel!, 0, statusEvent)
    expect(cb).not.toHaveBeenCalled()
  })

  it('the unlisten function rejects if unsubscribe fails', async () => {
    mock((cmd) => {
      if (cmd === P + 'subscribe') return 5
      throw { kind: 'internal', message: 'oops' }
    })
    const unlisten = await onStatus(() => {})
    await expect(unlisten()).rejects.toStrictEqual({
      kind: 'internal',
      message: 'oops'
    })
  })
})

// ---------------------------------------------------------------------------------------------
// tempId
// ---------------------------------------------------------------------------------------------

describe('tempId', () => {
  const UUID =
    '[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}'

  it('defaults to the tmp prefix', () => {
    expect(tempId()).toMatch(new RegExp(`^tmp-${UUID}$`))
  })

  it('uses the given prefix', () => {
    expect(tempId('visit')).toMatch(new RegExp(`^visit-${UUID}$`))
  })

  it('is unique', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => tempId()))
    expect(ids.size).toBe(1000)
  })

  it('uses crypto.randomUUID', () => {
    const spy = vi
      .spyOn(globalThis.crypto, 'randomUUID')
      .mockReturnValue('00000000-0000-4000-8000-000000000000')
    expect(tempId('x')).toBe('x-00000000-0000-4000-8000-000000000000')
    expect(spy).toHaveBeenCalledOnce()
  })

  it('falls back to getRandomValues where randomUUID is missing', () => {
    vi.stubGlobal('crypto', {
      getRandomValues: (a: Uint8Array) => a.fill(0xff)
    })
    expect(tempId('x')).toBe('x-ffffffff-ffff-4fff-bfff-ffffffffffff')
  })

  it.each(['a/b', 'a?b', 'a&b', 'a=b', 'a\nb'])(
    'rejects a prefix the plugin would refuse (%j)',
    (prefix) => {
      let thrown: unknown
      try {
        tempId(prefix)
      } catch (e) {
        thrown = e
      }
      expect(isBackgroundSyncError(thrown)).toBe(true)
      expect((thrown as BackgroundSyncError).kind).toBe('invalidInput')
    }
  )

  it('works as the tempId of an offline create and in later mutations', async () => {
    const id = tempId('visit')
    respond(P + 'enqueue_many', [
      { id: 'm-1', seq: 1, idempotencyKey: 'k-1' },
      { id: 'm-2', seq: 2, idempotencyKey: 'k-2' }
    ])
    await enqueueMany([
      {
        method: 'POST',
        path: '/visits',
        body: { id },
        entity: { kind: 'visit', id },
        tempId: id
      },
      {
        method: 'PATCH',
        path: `/visits/${id}`,
        body: { n: 1 },
        entity: { kind: 'visit', id }
      }
    ])
    const sent = calls[0].args.mutations as NewMutation[]
    expect(sent[0].tempId).toBe(id)
    expect(sent[1].path).toBe(`/visits/${id}`)
  })
})

// ---------------------------------------------------------------------------------------------
// Contract with the Rust side
// ---------------------------------------------------------------------------------------------

describe('contract', () => {
  it('exports the documented API', () => {
    const fns = [
      'enable',
      'disable',
      'isEnabled',
      'configure',
      'setAuth',
      'clearAuth',
      'enqueue',
      'enqueueMany',
      'syncNow',
      'status',
      'pending',
      'deadLetters',
      'retry',
      'discard',
      'editDeadLetter',
      'enqueueUpload',
      'uploads',
      'retryUpload',
      'discardUpload',
      'history',
      'delivered',
      'resolveTempId',
      'diagnostics',
      'onStatus',
      'tempId',
      'isBackgroundSyncError',
      'createSyncStore'
    ]
    for (const f of fns)
      expect(typeof (api as Record<string, unknown>)[f], f).toBe('function')
  })

  it('invokes exactly the commands build.rs registers', async () => {
    const buildRs = readFileSync(
      new URL('../build.rs', import.meta.url),
      'utf8'
    )
    const list = /const COMMANDS: &\[&str\] = &\[([\s\S]*?)\];/.exec(buildRs)
    expect(list, 'COMMANDS list in build.rs').not.toBeNull()
    const registered = [...list![1].matchAll(/"([a-z_]+)"/g)]
      .map((m) => m[1])
      .sort()

    const used = new Set<string>()
    mock((cmd) => {
      used.add(cmd.replace(P, ''))
      if (cmd === P + 'subscribe') return 1
      return null
    })
    await enable()
    await disable()
    await isEnabled()
    await configure({})
    await setAuth({})
    await clearAuth()
    await enqueue(newMutation)
    await enqueueMany([newMutation])
    await syncNow()
    await status()
    await pending()
    await deadLetters()
    await retry('m')
    await discard('m')
    await editDeadLetter('m', {})
    await enqueueUpload({ filePath: '/data/p.jpg' })
    await uploads()
    await retryUpload('u')
    await discardUpload('u')
    await history()
    await delivered()
    await resolveTempId('tmp-1')
    await diagnostics()
    const unlisten = await onStatus(() => {})
    await unlisten()

    expect([...used].sort()).toEqual(registered)
  })

  it('every error kind matches the Rust Error::kind list', () => {
    const errorRs = readFileSync(
      new URL('../crates/background-sync-core/src/error.rs', import.meta.url),
      'utf8'
    )
    const kinds = [
      ...errorRs.matchAll(/Error::\w+(?:\(_\)| \{ \.\. \})? => "(\w+)"/g)
    ].map((m) => m[1])
    expect(kinds.length).toBeGreaterThan(0)
    expect([...ERROR_KINDS].sort()).toEqual([...new Set(kinds)].sort())
  })
})
