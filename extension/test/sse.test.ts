// The SSE parser (src/sse.ts) on the frames agh_nb's streams send: run by `jlpm test`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ISseMessage, SseParser } from '../src/sse';

const FRAMES =
  ': keep-alive\n\n' +
  'id: 1\nevent: user_message\ndata: {"sequence":1,"text":"é ✓"}\n\n' +
  'id: 2\nevent: agent_message\ndata: {"sequence":2}\n\n' +
  'event: added\ndata: {"request_id":"req_1"}\n\n';

function parseAll(chunks: string[]): { messages: ISseMessage[]; parser: SseParser } {
  const parser = new SseParser();
  const messages = chunks.flatMap(c => parser.feed(c));
  return { messages, parser };
}

test('frames of the session and approvals streams', () => {
  const { messages, parser } = parseAll([FRAMES]);
  assert.deepEqual(messages, [
    { id: '1', event: 'user_message', data: '{"sequence":1,"text":"é ✓"}' },
    { id: '2', event: 'agent_message', data: '{"sequence":2}' },
    { id: null, event: 'added', data: '{"request_id":"req_1"}' }
  ]);
  assert.equal(parser.lastEventId, '2', 'an id persists across messages that carry none');
});

test('chunks split anywhere give the same messages', () => {
  const whole = parseAll([FRAMES]).messages;
  for (let size = 1; size <= 7; size++) {
    const chunks: string[] = [];
    for (let i = 0; i < FRAMES.length; i += size) {
      chunks.push(FRAMES.slice(i, i + size));
    }
    assert.deepEqual(parseAll(chunks).messages, whole, `chunks of ${size}`);
  }
});

test('CRLF, CR and LF line endings, a CRLF split between chunks', () => {
  const crlf = FRAMES.replace(/\n/g, '\r\n');
  const cr = FRAMES.replace(/\n/g, '\r');
  const whole = parseAll([FRAMES]).messages;
  assert.deepEqual(parseAll([crlf]).messages, whole);
  assert.deepEqual(parseAll([cr]).messages, whole);
  const cut = crlf.indexOf('\r\n') + 1; // between the \r and the \n
  assert.deepEqual(parseAll([crlf.slice(0, cut), crlf.slice(cut)]).messages, whole);
});

test('multi-line data, no space after the colon, unknown fields, retry', () => {
  const { messages, parser } = parseAll(['data:a\ndata: b\nfoo: bar\nretry: 2500\ndata\n\n']);
  assert.deepEqual(messages, [{ id: null, event: 'message', data: 'a\nb\n' }]);
  assert.equal(parser.retry, 2500);
});

test('a message without data is not dispatched; an unfinished one waits', () => {
  const parser = new SseParser();
  assert.deepEqual(parser.feed('id: 7\nevent: x\n\n'), []);
  assert.equal(parser.lastEventId, '7');
  assert.deepEqual(parser.feed('id: 8\ndata: {"a"'), []);
  assert.deepEqual(parser.feed(':1}\n\n'), [{ id: '8', event: 'message', data: '{"a":1}' }]);
});

test('reset drops a half-received message but keeps the last id', () => {
  const parser = new SseParser();
  parser.feed('id: 3\ndata: x\n\nid: 4\ndata: half');
  parser.reset();
  assert.equal(parser.lastEventId, '4');
  assert.deepEqual(parser.feed('\n\n'), []);
});
