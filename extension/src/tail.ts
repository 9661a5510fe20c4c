/**
 * A session's events folded into the rows a person reads, as `%agh tail` shows them.
 *
 * Owns: `summary` (one line of plain text per event, the rules of `agh_nb/kernel/describe.py`)
 * and `TailRows` (a run of message chunks is one growing row, a tool call and its updates and
 * result are one row, every other event is a row of its own; at most `limit` rows). Rows hold
 * plain text only: the panel puts it into the page with `textContent`. No JupyterLab imports.
 */

/** An event row as the HTTP API sends it (`GET .../events`, the session stream's `data:`). */
export interface IEventRow {
  sequence: number;
  type: string;
  turn_id: string | null;
  content: { [key: string]: unknown };
  timestamp?: string;
  synthetic?: boolean;
}

/** One row of the tail. */
export interface ITailRow {
  /** Stable while the row grows (what the panel keys its DOM nodes by). */
  key: string;
  /** The type shown: that of the newest event folded in. */
  type: string;
  /** The newest event's sequence. */
  sequence: number;
  /** `#<sequence> <type> <summary>` without the sequence and type: plain text. */
  text: string;
  /** A tool call that ended with an error. */
  failed: boolean;
}

export const SUMMARY_CHARS = 300;
const PREVIEW_CHARS = 80;
const TEXT_CHARS = 4000;
const CHUNK_TYPES = new Set(['agent_message', 'thought']);
const TOOL_TYPES = new Set(['tool_call', 'tool_result']);

/** `text` cut to `limit` characters (an ellipsis marks the cut). */
export function clip(text: string, limit: number): string {
  return text.length <= limit ? text : text.slice(0, limit - 1) + '…';
}

function keepNewest(text: string, limit: number): string {
  return text.length <= limit ? text : '…' + text.slice(text.length - (limit - 1));
}

function oneLine(text: string): string {
  return text.split(/\s+/).filter(Boolean).join(' ');
}

/** A tool input or result as text: strings as they are, other JSON as JSON ('' for null). */
export function asText(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  if (typeof value === 'string') {
    return value;
  }
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function field(content: { [key: string]: unknown }, name: string): string {
  const value = content[name];
  return value === null || value === undefined ? '' : asText(value);
}

/** What a person wants to read about one event, in one line (plain text). */
export function summary(event: IEventRow): string {
  const c = event.content || {};
  switch (event.type) {
    case 'permission':
      return oneLine(
        `${field(c, 'action')} ${field(c, 'resource')} ${field(c, 'decision') || 'pending'} ${field(c, 'error')}`
      );
    case 'usage':
      return usage((c.usage as { [key: string]: unknown }) || {});
    case 'session_stopped': {
      const failure = (c.failure as { [key: string]: unknown }) || {};
      return oneLine(`${field(c, 'stop_reason')} ${field(failure, 'kind')} ${field(failure, 'summary')}`);
    }
    default:
      for (const key of ['text', 'error', 'stop_reason', 'title']) {
        const value = field(c, key);
        if (value) {
          return value;
        }
      }
      return '';
  }
}

function usage(u: { [key: string]: unknown }): string {
  const bits: string[] = [];
  if (u.total_tokens !== undefined && u.total_tokens !== null) {
    bits.push(`${asText(u.total_tokens)} tokens`);
  }
  if (u.used !== undefined && u.used !== null) {
    bits.push(`context ${asText(u.used)}/${u.size ? asText(u.size) : '?'}`);
  }
  const cost = u.cost as { [key: string]: unknown } | undefined;
  if (cost && cost.amount !== undefined && cost.amount !== null) {
    bits.push(`cost so far ${asText(cost.amount)} ${field(cost, 'currency')}`.trim());
  }
  return bits.join(', ');
}

interface IToolState {
  title: string;
  kind: string;
  status: string;
  result: string;
  error: string;
  finished: boolean;
}

interface IRowState extends ITailRow {
  turnId: string | null;
  tool?: IToolState;
  chunks?: string;
}

/** Events folded into rows, oldest first; events must be added in sequence order. */
export class TailRows {
  private readonly _rows = new Map<string, IRowState>();
  private _lastKey: string | null = null;
  private _lastSequence = 0;

  constructor(readonly limit = 300) {}

  /** The newest sequence folded in (0 before any). */
  get lastSequence(): number {
    return this._lastSequence;
  }

  /** Fold one event in; an event at or before `lastSequence` is ignored (a replay). */
  add(event: IEventRow): void {
    if (event.sequence <= this._lastSequence && !event.synthetic) {
      return;
    }
    this._lastSequence = Math.max(this._lastSequence, event.sequence);
    const c = event.content || {};
    if (CHUNK_TYPES.has(event.type)) {
      const text = field(c, 'text');
      const previous = this._lastKey !== null ? this._rows.get(this._lastKey) : undefined;
      if (previous && previous.type === event.type && previous.turnId === event.turn_id) {
        previous.chunks = keepNewest((previous.chunks || '') + text, TEXT_CHARS);
        previous.text = keepNewest(previous.chunks.trim(), SUMMARY_CHARS);
        previous.sequence = event.sequence;
        this._put(previous.key, previous);
        return;
      }
      const key = `chunks:${event.sequence}`;
      const chunks = keepNewest(text, TEXT_CHARS);
      this._put(key, {
        key,
        type: event.type,
        sequence: event.sequence,
        turnId: event.turn_id,
        chunks,
        text: keepNewest(chunks.trim(), SUMMARY_CHARS),
        failed: false
      });
      this._lastKey = key;
      return;
    }
    const callId = field(c, 'tool_call_id');
    if (TOOL_TYPES.has(event.type) && callId) {
      const key = `tool:${event.turn_id}:${callId}`;
      const row: IRowState = this._rows.get(key) || {
        key,
        type: event.type,
        sequence: event.sequence,
        turnId: event.turn_id,
        text: '',
        failed: false,
        tool: { title: '', kind: '', status: '', result: '', error: '', finished: false }
      };
      const tool = row.tool!;
      row.type = event.type;
      row.sequence = event.sequence;
      tool.title = field(c, 'title') || tool.title;
      tool.kind = field(c, 'tool_name') || tool.kind;
      const raw = c.raw as { [key: string]: unknown } | undefined;
      if (raw && typeof raw === 'object' && raw.status) {
        tool.status = asText(raw.status);
      }
      if (event.type === 'tool_result') {
        tool.finished = true;
        tool.error = keepNewest(field(c, 'tool_error'), TEXT_CHARS);
        tool.result = keepNewest(field(c, 'tool_result'), TEXT_CHARS);
      }
      row.failed = Boolean(tool.error);
      row.text = toolHeadline(tool);
      this._put(key, row);
      this._lastKey = key;
      return;
    }
    const key = `event:${event.sequence}:${event.synthetic ? 'synthetic' : ''}`;
    this._put(key, {
      key,
      type: event.type,
      sequence: event.sequence,
      turnId: event.turn_id,
      text: clip(oneLine(summary(event)), SUMMARY_CHARS),
      failed: false
    });
    this._lastKey = key;
  }

  /** The rows, oldest first (copies: plain data). */
  rows(): ITailRow[] {
    return Array.from(this._rows.values(), r => ({
      key: r.key,
      type: r.type,
      sequence: r.sequence,
      text: r.text,
      failed: r.failed
    }));
  }

  private _put(key: string, row: IRowState): void {
    // An updated row moves to the newest end: rows stay ordered by their newest sequence.
    this._rows.delete(key);
    this._rows.set(key, row);
    while (this._rows.size > this.limit) {
      const oldest = this._rows.keys().next().value as string;
      this._rows.delete(oldest);
      if (oldest === this._lastKey) {
        this._lastKey = null;
      }
    }
  }
}

function toolHeadline(tool: IToolState): string {
  const bits = [tool.title || '(untitled tool call)'];
  if (tool.kind) {
    bits.push(`[${tool.kind}]`);
  }
  if (tool.error) {
    bits.push(`✗ error: ${clip(oneLine(tool.error), PREVIEW_CHARS)}`);
  } else if (tool.finished) {
    const preview = clip(oneLine(tool.result), PREVIEW_CHARS);
    bits.push(preview ? `→ ${preview}` : '✓');
  } else if (tool.status) {
    bits.push(`(${tool.status})`);
  }
  return clip(bits.join(' '), SUMMARY_CHARS);
}
