/**
 * A server-sent event stream read with `fetch`, which (unlike `EventSource`) can send headers:
 * Jupyter's token and XSRF headers, and `Last-Event-ID` when it reconnects.
 *
 * Owns: `EventStream`, one logical stream that reconnects after a dropped connection or a
 * server restart, resuming after the last `id:` it delivered. The HTTP layer is a function
 * handed in (`Requester`): the panel passes `ServerConnection.makeRequest`, the unit tests a
 * handler that answers from memory. No JupyterLab imports.
 */

import { ISseMessage, SseParser } from './sse';

/** Sends one request; resolves with the response (`fetch`'s signature, narrowed). */
export type Requester = (url: string, init: RequestInit) => Promise<Response>;

/** Why a stream gave up for good. */
export class StreamClosedError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

/** What `EventStream` needs. */
export interface IEventStreamOptions {
  /** Sends the GET request (adds auth headers). */
  request: Requester;
  /** The stream's URL; `Last-Event-ID` is sent as a header, never added to it. */
  url: string;
  /** Resume after this id on the first connection too (e.g. the newest event already shown). */
  lastEventId?: string | null;
  /** Each message, in order, exactly once per stream even across reconnects. */
  onMessage: (message: ISseMessage) => void;
  /** Each time a connection is open (its headers arrived): the first one and every reconnect. */
  onOpen?: () => void;
  /** A connection ended or failed; the stream will try again after `delay` ms. */
  onRetry?: (error: unknown, delay: number) => void;
  /** The server refused the stream with a status that retrying cannot fix (404, 403, 400). */
  onFatal?: (error: StreamClosedError) => void;
  /** First reconnect delay (ms); doubled after each failure up to `maxDelay`. */
  minDelay?: number;
  maxDelay?: number;
  /** Waits `ms` milliseconds (the tests pass one that does not wait). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const FATAL_STATUSES = new Set([400, 401, 403, 404, 410]);

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * One SSE stream that stays open until `close()`: after a dropped connection it reconnects
 * with `Last-Event-ID` set to the last id it delivered, so the server sends the rest with no
 * gap and no duplicate. A message whose id is not past the last delivered one (a number) is
 * dropped, so a server that replays more than asked still delivers each message once.
 */
export class EventStream {
  private readonly _options: IEventStreamOptions;
  private readonly _abort = new AbortController();
  private _lastEventId: string | null;
  private _running: Promise<void> | null = null;
  private _connections = 0;

  constructor(options: IEventStreamOptions) {
    this._options = options;
    this._lastEventId = options.lastEventId ?? null;
  }

  /** The id of the last message delivered (what the next connection resumes after). */
  get lastEventId(): string | null {
    return this._lastEventId;
  }

  /** How many connections were opened so far. */
  get connections(): number {
    return this._connections;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this._abort.signal.aborted;
  }

  /** Start reading (idempotent); the promise settles when the stream is closed or gave up. */
  start(): Promise<void> {
    if (!this._running) {
      this._running = this._run();
    }
    return this._running;
  }

  /** Stop for good: abort the open request, no reconnect. Idempotent. */
  close(): void {
    this._abort.abort();
  }

  private async _run(): Promise<void> {
    const options = this._options;
    const signal = this._abort.signal;
    const sleep = options.sleep ?? defaultSleep;
    const minDelay = options.minDelay ?? 500;
    const maxDelay = options.maxDelay ?? 10000;
    let delay = minDelay;
    while (!signal.aborted) {
      try {
        const opened = await this._connect(signal);
        if (opened) {
          delay = minDelay; // it worked: the next drop retries quickly
        }
        if (signal.aborted) {
          return;
        }
        options.onRetry?.(new Error('the stream ended'), delay);
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        if (error instanceof StreamClosedError) {
          options.onFatal?.(error);
          return;
        }
        options.onRetry?.(error, delay);
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, maxDelay);
    }
  }

  /** One connection: returns true if it opened (and then ended), throws if it could not. */
  private async _connect(signal: AbortSignal): Promise<boolean> {
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this._lastEventId !== null) {
      headers['Last-Event-ID'] = this._lastEventId;
    }
    const response = await this._options.request(this._options.url, {
      method: 'GET',
      headers,
      signal,
      cache: 'no-cache'
    });
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      const message = `${response.status} ${response.statusText || ''}`.trim() + (text ? `: ${text.slice(0, 300)}` : '');
      if (FATAL_STATUSES.has(response.status)) {
        throw new StreamClosedError(message, response.status);
      }
      throw new Error(message);
    }
    if (!response.body) {
      throw new Error('the stream response has no body');
    }
    this._connections += 1;
    this._options.onOpen?.();
    const parser = new SseParser();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        this._deliver(parser.feed(decoder.decode(value, { stream: true })));
      }
    } finally {
      reader.releaseLock();
    }
    return true;
  }

  private _deliver(messages: ISseMessage[]): void {
    for (const message of messages) {
      if (this._abort.signal.aborted) {
        return;
      }
      if (message.id !== null) {
        if (isStale(message.id, this._lastEventId)) {
          continue;
        }
        this._lastEventId = message.id;
      }
      this._options.onMessage(message);
    }
  }
}

/** True when both ids are sequence numbers and `id` is not past `last`. */
function isStale(id: string, last: string | null): boolean {
  if (last === null || !/^\d+$/.test(id) || !/^\d+$/.test(last)) {
    return false;
  }
  return Number(id) <= Number(last);
}
