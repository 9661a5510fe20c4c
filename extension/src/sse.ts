/**
 * A parser of the `text/event-stream` format (the WHATWG "server-sent events" rules).
 *
 * Owns: `SseParser`, which turns decoded text chunks, split anywhere, into messages. It knows
 * nothing of HTTP: `stream.ts` feeds it what a `fetch` body delivers. No imports, so the node
 * unit tests (extension/test/) run it as it is.
 */

/** One dispatched message. */
export interface ISseMessage {
  /** The `id:` of this message, or null when it had none. */
  id: string | null;
  /** The `event:` type (`message` when the message named none). */
  event: string;
  /** The `data:` lines, joined with `\n`. */
  data: string;
}

/**
 * Incremental SSE parser: `feed` it text as it arrives; it returns the messages completed by
 * that text. Lines end with `\r\n`, `\n` or `\r` (a `\r` at the end of one chunk and a `\n` at
 * the start of the next are one line ending). Comment lines (`: keep-alive`) are ignored.
 */
export class SseParser {
  /**
   * The last event ID seen (an `id:` field persists across messages, as in `EventSource`):
   * what a reconnect sends as `Last-Event-ID`.
   */
  lastEventId: string | null = null;

  /** The `retry:` value the server asked for, in milliseconds (null until it sends one). */
  retry: number | null = null;

  private _line = '';
  private _skipLf = false;
  private _data: string[] = [];
  private _event = '';
  private _id: string | null = null;
  private _sawData = false;

  /** Parse `chunk`; returns every message it completed, in order. */
  feed(chunk: string): ISseMessage[] {
    const out: ISseMessage[] = [];
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 10 && c !== 13) {
        continue;
      }
      if (c === 10 && this._skipLf && i === start) {
        // The `\n` of a `\r\n` split across chunks (or right after the `\r`).
        this._skipLf = false;
        start = i + 1;
        continue;
      }
      this._line += chunk.slice(start, i);
      this._skipLf = c === 13;
      start = i + 1;
      this._processLine(this._line, out);
      this._line = '';
    }
    if (start < chunk.length) {
      this._skipLf = false;
      this._line += chunk.slice(start);
    }
    return out;
  }

  /** Forget a partly received message (the connection dropped); `lastEventId` is kept. */
  reset(): void {
    this._line = '';
    this._skipLf = false;
    this._data = [];
    this._event = '';
    this._id = null;
    this._sawData = false;
  }

  private _processLine(line: string, out: ISseMessage[]): void {
    if (line === '') {
      this._dispatch(out);
      return;
    }
    if (line.charCodeAt(0) === 58) {
      return; // ':' starts a comment (keep-alives)
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) {
      value = value.slice(1);
    }
    switch (field) {
      case 'data':
        this._data.push(value);
        this._sawData = true;
        break;
      case 'event':
        this._event = value;
        break;
      case 'id':
        if (value.indexOf('\0') < 0) {
          this._id = value;
          this.lastEventId = value;
        }
        break;
      case 'retry':
        if (/^\d+$/.test(value)) {
          this.retry = parseInt(value, 10);
        }
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  private _dispatch(out: ISseMessage[]): void {
    if (this._sawData) {
      out.push({ id: this._id, event: this._event || 'message', data: this._data.join('\n') });
    }
    this._data = [];
    this._event = '';
    this._id = null;
    this._sawData = false;
  }
}
