/**
 * The agh_nb HTTP API (docs/http-api.md) as the sidebar uses it.
 *
 * Owns: `AghClient` (the routes under `<base_url>agh/api/`, sent with
 * `ServerConnection.makeRequest`, which adds Jupyter's token and XSRF headers), the shapes of
 * what the routes answer, and the two errors: `NotEnabledError` (the routes are not there: the
 * server extension is not enabled) and `ApiError` (an agh_nb error body, one line). Only
 * existing routes; nothing here goes through a kernel.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { Requester } from './stream';
import { IEventRow } from './tail';

/** The health object of `GET /agh/api/sessions?include_health=1` (SPEC 3). */
export interface IHealth {
  state?: string;
  health?: string;
  active_prompt?: string | null;
  last_error?: string | null;
}

/** A session record (SPEC field names), with its health when asked for. */
export interface ISession {
  id: string;
  name: string | null;
  agent_name: string;
  state: string;
  stop_reason: string | null;
  stop_detail: string | null;
  workspace_path: string;
  permissions: string;
  created_at: string;
  updated_at: string;
  health?: IHealth;
}

/** One diff item of a permission request (ACP `diff` content). */
export interface IDiff {
  path?: string;
  oldText?: string | null;
  newText?: string | null;
}

/** A pending permission request, as `GET /agh/api/approvals` and its stream give it. */
export interface IApproval {
  request_id: string;
  session_id: string;
  turn_id: string | null;
  title: string | null;
  kind: string | null;
  paths: string[];
  diff: IDiff[];
  created_at: string;
  decision: string | null;
  source: string | null;
}

/** The four decisions (SPEC 5), in the order the buttons show them. */
export const DECISIONS = ['allow-once', 'allow-always', 'reject-once', 'reject-always'] as const;
export type Decision = (typeof DECISIONS)[number];

/** The routes answered 404 with a body that is not an agh_nb error: the extension is not there. */
export class NotEnabledError extends Error {
  constructor() {
    super('agh_nb server extension not enabled');
  }
}

/** An error answer of the API: `{"error": {"type", "message"}}`, shown as one line. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string
  ) {
    super(message);
  }

  /** `Type: message`, one line. */
  get line(): string {
    return oneLine(this.type ? `${this.type}: ${this.message}` : this.message);
  }
}

function oneLine(text: string): string {
  return text.split(/\s+/).filter(Boolean).join(' ');
}

/** The `{"error": {...}}` of an agh_nb error body, or null when the body is something else. */
function aghError(text: string): { type: string; message: string } | null {
  try {
    const body = JSON.parse(text);
    const error = body && typeof body === 'object' ? body.error : null;
    if (error && typeof error === 'object' && typeof error.message === 'string') {
      return { type: typeof error.type === 'string' ? error.type : '', message: error.message };
    }
  } catch {
    // not JSON: Jupyter's own HTML 404 page, a proxy's error page
  }
  return null;
}

/** The sidebar's view of the agh_nb HTTP API. */
export class AghClient {
  constructor(readonly settings: ServerConnection.ISettings) {}

  /** `ServerConnection.makeRequest` (token, XSRF); `no-cache` so no cache-buster is added to URLs. */
  readonly request: Requester = (url, init) =>
    ServerConnection.makeRequest(url, { cache: 'no-cache', ...init }, this.settings);

  /** The URL of a route: `url('sessions', id, 'stream')`, each part URL-encoded. */
  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'agh', 'api', ...parts.map(encodeURIComponent));
  }

  /** Every session of the server, with health. */
  async sessions(): Promise<ISession[]> {
    const body = await this._json<{ sessions: ISession[] }>('GET', this.url('sessions') + '?include_health=1');
    return body.sessions;
  }

  /** Pending requests of every session. */
  async approvals(): Promise<IApproval[]> {
    const body = await this._json<{ pending: IApproval[] }>('GET', this.url('approvals'));
    return body.pending;
  }

  /** The newest `limit` events of a session, ascending. */
  async events(sessionId: string, limit: number): Promise<IEventRow[]> {
    const body = await this._json<{ events: IEventRow[] }>('GET', this.url('sessions', sessionId, 'events') + `?limit=${limit}`);
    return body.events;
  }

  /** Decide a pending request; resolves with the resolved request. */
  approve(sessionId: string, requestId: string, decision: Decision): Promise<IApproval> {
    return this._json('POST', this.url('sessions', sessionId, 'approve'), { request_id: requestId, decision });
  }

  /** Stop a session; resolves with its final record. */
  stop(sessionId: string): Promise<ISession> {
    return this._json('POST', this.url('sessions', sessionId, 'stop'), {});
  }

  /** Resume a stopped session; resolves with its record. */
  resume(sessionId: string): Promise<ISession> {
    return this._json('POST', this.url('sessions', sessionId, 'resume'), {});
  }

  /** The live stream of one session's committed events (kept open across stop and resume). */
  sessionStreamUrl(sessionId: string): string {
    return this.url('sessions', sessionId, 'stream') + '?keep_open=1';
  }

  /** The `added`/`resolved` stream of every session's permission requests. */
  approvalsStreamUrl(): string {
    return this.url('approvals', 'stream');
  }

  private async _json<T>(method: string, url: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
    }
    const response = await this.request(url, init);
    const text = await response.text();
    if (!response.ok) {
      const error = aghError(text);
      if (error === null) {
        if (response.status === 404) {
          throw new NotEnabledError();
        }
        throw new ApiError(response.status, '', `HTTP ${response.status} ${response.statusText}`.trim());
      }
      throw new ApiError(response.status, error.type, error.message);
    }
    return JSON.parse(text) as T;
  }
}
