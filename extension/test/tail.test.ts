// TailRows (src/tail.ts): events folded into the rows %agh tail shows, as plain text.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { IEventRow, summary, TailRows } from '../src/tail';

function ev(sequence: number, type: string, content: { [key: string]: unknown }, turn = 'turn_1'): IEventRow {
  return { sequence, type, turn_id: turn, content };
}

test('message chunks grow one row; a tool call and its result are one row', () => {
  const rows = new TailRows();
  rows.add(ev(1, 'user_message', { text: 'write a.txt <b>x</b>' }));
  rows.add(ev(2, 'agent_message', { text: 'Hel' }));
  rows.add(ev(3, 'agent_message', { text: 'lo' }));
  rows.add(ev(4, 'tool_call', { tool_call_id: 'c1', title: 'Write a.txt', tool_name: 'edit', raw: { status: 'pending' } }));
  rows.add(ev(5, 'permission', { action: 'edit', resource: '/w/a.txt' }));
  rows.add(ev(6, 'tool_result', { tool_call_id: 'c1', tool_result: 'ok' }));
  rows.add(ev(7, 'done', { stop_reason: 'end_turn' }));
  assert.deepEqual(
    rows.rows().map(r => [r.sequence, r.type, r.text]),
    [
      [1, 'user_message', 'write a.txt <b>x</b>'],
      [3, 'agent_message', 'Hello'],
      [5, 'permission', 'edit /w/a.txt pending'],
      [6, 'tool_result', 'Write a.txt [edit] → ok'],
      [7, 'done', 'end_turn']
    ]
  );
});

test('a replayed event is ignored; the limit drops the oldest rows', () => {
  const rows = new TailRows(2);
  rows.add(ev(1, 'user_message', { text: 'a' }));
  rows.add(ev(2, 'done', { stop_reason: 'end_turn' }));
  rows.add(ev(2, 'done', { stop_reason: 'end_turn' }));
  rows.add(ev(3, 'user_message', { text: 'b' }));
  assert.deepEqual(rows.rows().map(r => r.sequence), [2, 3]);
  assert.equal(rows.lastSequence, 3);
});

test('summaries: a failed tool call, a stop with its failure, usage', () => {
  const rows = new TailRows();
  rows.add(ev(1, 'tool_result', { tool_call_id: 'c', title: 'Run ls', tool_error: 'denied\nby policy' }));
  assert.deepEqual(rows.rows().map(r => [r.text, r.failed]), [['Run ls ✗ error: denied by policy', true]]);
  assert.equal(
    summary(ev(2, 'session_stopped', { stop_reason: 'agent_crashed', failure: { kind: 'process_exit', summary: 'exit 1' } })),
    'agent_crashed process_exit exit 1'
  );
  assert.equal(summary(ev(3, 'usage', { usage: { total_tokens: 12, used: 5, size: 100 } })), '12 tokens, context 5/100');
});
