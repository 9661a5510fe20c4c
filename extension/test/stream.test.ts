// EventStream (src/stream.ts): reconnects resume with Last-Event-ID, no gap, no duplicate.
// The HTTP layer is a handler answering from memory with real Response and ReadableStream objects.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ISseMessage } from '../src/sse';
import { EventStream, Requester } from '../src/stream';

/** A stored log of `n` events; a connection sends the ones after Last-Event-ID, `per` at most. */
function server(n: number, per: number, options: { ignoreHeader?: boolean; splitLast?: boolean } = {}) {
  const seen: (string | null)[] = [];
  const request: Requester = async (_url, init) => {
    const headers = new Headers(init.headers);
    const last = headers.get('Last-Event-ID');
    seen.push(last);
    const after = options.ignoreHeader ? 0 : Number(last ?? 0);
    const ids = Array.from({ length: n }, (_, i) => i + 1).filter(i => i > after).slice(0, per);
    let text = ids.map(i => `id: ${i}\nevent: agent_message\ndata: {"sequence":${i}}\n\n`).join('');
    if (options.splitLast && ids.length && ids[ids.length - 1] < n) {
      text += `id: ${ids[ids.length - 1] + 1}\nevent: agent_message\ndata: {"seq`; // dropped mid-message
    }
    const bytes = new TextEncoder().encode(text);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        // In pieces of 5 bytes: messages and UTF-8 sequences cross reads.
        for (let i = 0; i < bytes.length; i += 5) {
          controller.enqueue(bytes.slice(i, i + 5));
        }
        controller.close();
      }
    });
    return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
  };
  return { request, seen };
}

function collect(request: Requester, total: number, lastEventId: string | null = null) {
  const got: ISseMessage[] = [];
  let retries = 0;
  const stream = new EventStream({
    request,
    url: 'http://127.0.0.1/agh/api/sessions/sess_x/stream?keep_open=1',
    lastEventId,
    sleep: async () => undefined,
    onMessage: m => {
      got.push(m);
      if (got.length >= total) {
        stream.close();
      }
    },
    onRetry: () => {
      retries += 1;
      if (retries > 50) {
        stream.close();
      }
    }
  });
  return { stream, got };
}

test('each reconnect sends Last-Event-ID; every event arrives once, in order', async () => {
  const { request, seen } = server(10, 3, { splitLast: true });
  const { stream, got } = collect(request, 10);
  await stream.start();
  assert.deepEqual(got.map(m => m.id), ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']);
  assert.deepEqual(seen, [null, '3', '6', '9']);
  assert.equal(stream.connections, 4);
  assert.equal(stream.lastEventId, '10');
});

test('the first connection resumes after a given id', async () => {
  const { request, seen } = server(6, 100);
  const { stream, got } = collect(request, 2, '4');
  await stream.start();
  assert.deepEqual(seen[0], '4');
  assert.deepEqual(got.map(m => m.id), ['5', '6']);
});

test('a server that replays from the start still delivers each event once', async () => {
  const { request } = server(6, 4, { ignoreHeader: true });
  const got: string[] = [];
  let connections = 0;
  const stream = new EventStream({
    request: async (url, init) => {
      connections += 1;
      if (connections > 3) {
        stream.close();
        throw new Error('enough');
      }
      return request(url, init);
    },
    url: 'http://127.0.0.1/s',
    sleep: async () => undefined,
    onMessage: m => got.push(m.id ?? '')
  });
  await stream.start();
  assert.deepEqual(got, ['1', '2', '3', '4']);
});

test('404 is final: no retry, onFatal gets the status', async () => {
  let calls = 0;
  let fatal = 0;
  const stream = new EventStream({
    request: async () => {
      calls += 1;
      return new Response('<html>404</html>', { status: 404, statusText: 'Not Found' });
    },
    url: 'http://127.0.0.1/agh/api/approvals/stream',
    sleep: async () => undefined,
    onMessage: () => undefined,
    onFatal: error => {
      fatal = error.status;
    }
  });
  await stream.start();
  assert.equal(calls, 1);
  assert.equal(fatal, 404);
});

test('a 503 or a network error is retried with a growing delay', async () => {
  const delays: number[] = [];
  let calls = 0;
  const stream = new EventStream({
    request: async () => {
      calls += 1;
      if (calls === 1) {
        return new Response('{"error": {"type": "HostError", "message": "starting"}}', { status: 503 });
      }
      if (calls < 5) {
        throw new TypeError('Failed to fetch');
      }
      stream.close();
      throw new TypeError('Failed to fetch');
    },
    url: 'http://127.0.0.1/s',
    minDelay: 100,
    maxDelay: 400,
    sleep: async ms => {
      delays.push(ms);
    },
    onMessage: () => undefined
  });
  await stream.start();
  assert.deepEqual(delays, [100, 200, 400, 400]);
});
