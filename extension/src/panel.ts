/**
 * The "Agent sessions" sidebar: every session of the server, its pending approvals, and the
 * live tail of the session opened.
 *
 * Owns: `SessionsPanel`, a Lumino widget that renders server state and nothing else: the
 * sessions (polled while the panel is shown), the pending approvals (the approvals stream:
 * `added`/`resolved`), the opened session's events (its stream, resumed with `Last-Event-ID`).
 * It stores nothing: a reload asks the server again. Every string that came from an agent or
 * a user (names, titles, paths, diffs, event text) reaches the page through `textContent`.
 */

import { Widget } from '@lumino/widgets';

import { AghClient, ApiError, Decision, IApproval, ISession, NotEnabledError } from './api';
import { ISseMessage } from './sse';
import { EventStream, StreamClosedError } from './stream';
import { IEventRow, TailRows } from './tail';
import { approvalCard, button, el, errorLine, healthText, sessionItem, tailRowNode } from './views';

/** What the panel asks of JupyterLab: a notification per new request, dismissed once decided. */
export interface INotifier {
  /** Show that `approval` (of `session`) waits; returns an id for `dismiss`. */
  added(approval: IApproval, session: string): string | null;
  dismiss(id: string): void;
}

export const NOT_ENABLED = 'agh_nb server extension not enabled';
const POLL_MS = 2000;
const POLL_HIDDEN_MS = 15000;
const POLL_NOT_ENABLED_MS = 30000;
const TAIL_BACKLOG = 100;

type Mode = 'loading' | 'ready' | 'not-enabled';

/** The "Agent sessions" sidebar widget. */
export class SessionsPanel extends Widget {
  readonly client: AghClient;
  private readonly _notifier: INotifier;
  private _mode: Mode = 'loading';
  private _sessions: ISession[] = [];
  private _sessionsAsked = 0;
  private _sessionsShown = 0;
  private _sessionsKey = '';
  private readonly _approvals = new Map<string, IApproval>();
  private readonly _seen = new Set<string>();
  private readonly _notifications = new Map<string, string>();
  private readonly _deciding = new Set<string>();
  private _approvalStream: EventStream | null = null;
  private _approvalsStarted = false;
  private _selected: string | null = null;
  private _tail: TailRows | null = null;
  private _tailStream: EventStream | null = null;
  private _tailNodes = new Map<string, HTMLLIElement>();
  private _acting: string | null = null;
  private _pollTimer: number | null = null;
  private _polling = false;
  private _isClosed = false;

  // DOM
  private readonly _status: HTMLElement;
  private readonly _connection: HTMLElement;
  private readonly _body: HTMLElement;
  private readonly _approvalsList: HTMLElement;
  private readonly _approvalsHeading: HTMLElement;
  private readonly _approvalsEmpty: HTMLElement;
  private readonly _sessionsList: HTMLElement;
  private readonly _sessionsHeading: HTMLElement;
  private readonly _sessionsEmpty: HTMLElement;
  private readonly _detail: HTMLElement;
  private readonly _detailTitle: HTMLElement;
  private readonly _detailMeta: HTMLElement;
  private readonly _stopButton: HTMLButtonElement;
  private readonly _resumeButton: HTMLButtonElement;
  private readonly _tailList: HTMLElement;
  private readonly _notEnabled: HTMLElement;

  constructor(client: AghClient, notifier: INotifier) {
    super();
    this.client = client;
    this._notifier = notifier;
    this.addClass('jp-AghSidebar');
    this.node.setAttribute('aria-label', 'Agent sessions');
    this.node.setAttribute('role', 'region');

    this._notEnabled = el('p', 'jp-AghSidebar-notEnabled', NOT_ENABLED);
    this._body = el('div', 'jp-AghSidebar-body');
    const header = el('h2', 'jp-AghSidebar-title', 'Agent sessions');
    this._status = el('div', 'jp-AghSidebar-status');
    this._status.setAttribute('role', 'status');
    this._connection = el('div', 'jp-AghSidebar-connection jp-mod-error');
    this._connection.hidden = true;

    const approvals = el('section', 'jp-AghSidebar-approvals');
    approvals.setAttribute('aria-label', 'Pending approvals');
    this._approvalsHeading = el('h3', 'jp-AghSidebar-heading', 'Pending approvals');
    this._approvalsEmpty = el('p', 'jp-AghSidebar-empty', 'No pending approvals.');
    this._approvalsList = el('div', 'jp-AghSidebar-approvalList');
    approvals.append(this._approvalsHeading, this._approvalsEmpty, this._approvalsList);

    const sessions = el('section', 'jp-AghSidebar-sessions');
    sessions.setAttribute('aria-label', 'Sessions');
    this._sessionsHeading = el('h3', 'jp-AghSidebar-heading', 'Sessions');
    this._sessionsEmpty = el('p', 'jp-AghSidebar-empty', 'Loading sessions…');
    this._sessionsList = el('ul', 'jp-AghSidebar-sessionList');
    sessions.append(this._sessionsHeading, this._sessionsEmpty, this._sessionsList);

    this._detail = el('section', 'jp-AghSidebar-detail');
    this._detail.setAttribute('aria-label', 'Session events');
    this._detail.hidden = true;
    this._detailTitle = el('h3', 'jp-AghSidebar-heading');
    this._detailMeta = el('div', 'jp-AghSidebar-detailMeta');
    const actions = el('div', 'jp-AghSidebar-actions');
    this._stopButton = button('Stop', 'jp-mod-warn', () => void this._act('stop'));
    this._resumeButton = button('Resume', 'jp-mod-accept', () => void this._act('resume'));
    const close = button('Close', '', () => this.openSession(null));
    close.setAttribute('aria-label', 'Close session events');
    actions.append(this._stopButton, this._resumeButton, close);
    this._tailList = el('ol', 'jp-AghSidebar-tail');
    this._tailList.setAttribute('role', 'log');
    this._tailList.setAttribute('aria-label', 'Events, newest first');
    this._detail.append(this._detailTitle, this._detailMeta, actions, this._tailList);

    this._body.append(header, this._connection, this._status, approvals, sessions, this._detail);
    this.node.append(this._body);
  }

  /** The id of the session whose events are shown (null: none). */
  get selected(): string | null {
    return this._selected;
  }

  /** Start polling and streaming. Idempotent. */
  start(): void {
    if (this._pollTimer === null && !this._polling) {
      void this._poll();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._isClosed = true;
    this._clearTimer();
    this._approvalStream?.close();
    this._tailStream?.close();
    super.dispose();
  }

  protected onAfterShow(): void {
    // Shown again: do not wait for the slow hidden-panel poll.
    this._schedule(0);
  }

  // -- sessions -------------------------------------------------------------------------------

  private _clearTimer(): void {
    if (this._pollTimer !== null) {
      window.clearTimeout(this._pollTimer);
      this._pollTimer = null;
    }
  }

  private _schedule(ms: number): void {
    if (this._isClosed) {
      return;
    }
    this._clearTimer();
    if (this._polling) {
      return; // the running poll schedules the next one
    }
    this._pollTimer = window.setTimeout(() => {
      this._pollTimer = null;
      void this._poll();
    }, ms);
  }

  /** Refresh the sessions now (also after Stop, Resume and decisions). */
  async refresh(): Promise<void> {
    this._clearTimer();
    await this._poll();
  }

  private async _poll(): Promise<void> {
    if (this._polling || this._isClosed) {
      return;
    }
    this._polling = true;
    let next = this.isVisible ? POLL_MS : POLL_HIDDEN_MS;
    try {
      const sessions = await this._fetchSessions();
      if (this._mode !== 'ready') {
        this._setMode('ready');
      }
      this._setConnection(null);
      if (sessions !== null) {
        this._setSessions(sessions);
      }
      if (!this._approvalsStarted) {
        await this._startApprovals();
      }
    } catch (error) {
      if (error instanceof NotEnabledError) {
        this._setMode('not-enabled');
        next = POLL_NOT_ENABLED_MS;
      } else {
        this._setConnection(`sessions: ${errorLine(error)}`);
      }
    } finally {
      this._polling = false;
    }
    this._schedule(next);
  }

  private _setMode(mode: Mode): void {
    this._mode = mode;
    if (mode === 'not-enabled') {
      // Exactly one line: nothing else of the panel is shown.
      this._approvalStream?.close();
      this._approvalStream = null;
      this._approvalsStarted = false;
      this.openSession(null);
      this.node.replaceChildren(this._notEnabled);
    } else if (this._body.parentNode !== this.node) {
      this.node.replaceChildren(this._body);
    }
  }

  /** The sessions, or null when a list asked for later has already been shown: two fetches
   * can overlap (the poll, and a request for a session not listed yet), and an older answer
   * must not replace a newer one (a session would go back to "starting"). */
  private async _fetchSessions(): Promise<ISession[] | null> {
    const asked = ++this._sessionsAsked;
    const sessions = await this.client.sessions();
    if (asked < this._sessionsShown) {
      return null;
    }
    this._sessionsShown = asked;
    return sessions;
  }

  private _setSessions(sessions: ISession[]): void {
    this._sessions = sessions;
    this._renderSessions();
    this._renderDetailHeader();
  }

  private _session(id: string): ISession | undefined {
    return this._sessions.find(s => s.id === id);
  }

  private _label(sessionId: string): string {
    const session = this._session(sessionId);
    return session?.name ? `${session.name} (${session.agent_name})` : sessionId;
  }

  private _pendingCount(sessionId: string): number {
    let n = 0;
    for (const approval of this._approvals.values()) {
      if (approval.session_id === sessionId) {
        n += 1;
      }
    }
    return n;
  }

  private _renderSessions(): void {
    const rows = this._sessions.map(s => [
      s.id,
      s.name,
      s.agent_name,
      s.state,
      s.health?.state,
      s.health?.health,
      this._pendingCount(s.id),
      s.id === this._selected
    ]);
    const key = JSON.stringify(rows);
    if (key === this._sessionsKey) {
      return; // unchanged: keep the nodes (a click in progress is not lost)
    }
    this._sessionsKey = key;
    this._sessionsHeading.textContent = `Sessions (${this._sessions.length})`;
    this._sessionsEmpty.textContent = 'No sessions yet.';
    this._sessionsEmpty.hidden = this._sessions.length > 0;
    const items = this._sessions.map(s =>
      sessionItem(s, this._pendingCount(s.id), s.id === this._selected, () =>
        this.openSession(s.id === this._selected ? null : s.id)
      )
    );
    this._sessionsList.replaceChildren(...items);
  }

  // -- approvals ------------------------------------------------------------------------------

  private async _startApprovals(): Promise<void> {
    this._approvalsStarted = true;
    // What was pending before this page looked is not news: no notification for it.
    try {
      for (const approval of await this.client.approvals()) {
        this._seen.add(approval.request_id);
        this._approvals.set(approval.request_id, approval);
      }
    } catch (error) {
      this._setStatus(errorLine(error), true);
    }
    this._renderApprovals();
    this._approvalStream = new EventStream({
      request: this.client.request,
      url: this.client.approvalsStreamUrl(),
      onOpen: () => {
        // The stream first sends every request pending now, as `added`: start from those.
        this._setConnection(null);
        this._approvals.clear();
        this._renderApprovals();
      },
      onMessage: message => this._onApproval(message),
      onRetry: error => this._setConnection(`approvals stream: ${errorLine(error)}; reconnecting`),
      onFatal: error => this._onFatal(error)
    });
    void this._approvalStream.start();
  }

  private _onFatal(error: StreamClosedError): void {
    if (error.status === 404) {
      void this.refresh(); // the routes went away: the next poll says so
    } else {
      this._setStatus(errorLine(error), true);
    }
  }

  private async _notify(approval: IApproval): Promise<void> {
    if (this._session(approval.session_id) === undefined) {
      // A request can arrive before the next poll lists its new session: fetch it, so the
      // notification names the session rather than showing its id.
      try {
        const sessions = await this._fetchSessions();
        if (sessions !== null) {
          this._setSessions(sessions);
        }
      } catch {
        // the id will do
      }
    }
    if (!this._approvals.has(approval.request_id)) {
      return; // decided while the sessions were fetched
    }
    const notification = this._notifier.added(approval, this._label(approval.session_id));
    if (notification !== null) {
      this._notifications.set(approval.request_id, notification);
    }
  }

  private _onApproval(message: ISseMessage): void {
    let approval: IApproval;
    try {
      approval = JSON.parse(message.data) as IApproval;
    } catch {
      return;
    }
    const id = approval.request_id;
    if (message.event === 'added') {
      this._approvals.set(id, approval);
      if (!this._seen.has(id)) {
        this._seen.add(id);
        void this._notify(approval);
      }
    } else if (message.event === 'resolved') {
      this._approvals.delete(id);
      this._seen.add(id);
      const notification = this._notifications.get(id);
      if (notification !== undefined) {
        this._notifications.delete(id);
        this._notifier.dismiss(notification);
      }
      this._setStatus(`${id}: ${approval.decision ?? 'resolved'} (${approval.source ?? 'unknown'})`);
    } else {
      return;
    }
    this._renderApprovals();
    this._renderSessions();
  }

  private _renderApprovals(): void {
    const count = this._approvals.size;
    this._approvalsHeading.textContent = `Pending approvals (${count})`;
    this._approvalsEmpty.hidden = count > 0;
    // Keyed: a card that stays keeps its node (and the button under the pointer).
    const existing = new Map<string, HTMLElement>();
    for (const child of Array.from(this._approvalsList.children) as HTMLElement[]) {
      existing.set(child.dataset.requestId || '', child);
    }
    const cards: HTMLElement[] = [];
    for (const approval of this._approvals.values()) {
      cards.push(
        existing.get(approval.request_id) ||
          approvalCard(approval, (decision, card) => void this._decide(approval, decision, card))
      );
    }
    this._approvalsList.replaceChildren(...cards);
  }

  private async _decide(a: IApproval, decision: Decision, card: HTMLElement): Promise<void> {
    if (this._deciding.has(a.request_id)) {
      return;
    }
    this._deciding.add(a.request_id);
    const buttons = Array.from(card.querySelectorAll('button'));
    buttons.forEach(b => (b.disabled = true));
    try {
      await this.client.approve(a.session_id, a.request_id, decision);
      // The approvals stream removes the card (`resolved`); do not wait for it.
      this._approvals.delete(a.request_id);
      this._setStatus(`${a.request_id}: ${decision} (user)`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        this._approvals.delete(a.request_id); // decided elsewhere first
      } else {
        buttons.forEach(b => (b.disabled = false));
      }
      this._setStatus(errorLine(error), true);
    } finally {
      this._deciding.delete(a.request_id);
    }
    this._renderApprovals();
    this._renderSessions();
  }

  // -- one session's events -------------------------------------------------------------------

  /** Show the live events of `sessionId` (null: close the events view). */
  openSession(sessionId: string | null): void {
    if (sessionId === this._selected) {
      return;
    }
    this._tailStream?.close();
    this._tailStream = null;
    this._tail = null;
    this._tailNodes = new Map();
    this._tailList.replaceChildren();
    this._selected = sessionId;
    this._detail.hidden = sessionId === null;
    this._renderSessions();
    this._renderDetailHeader();
    if (sessionId !== null) {
      void this._follow(sessionId);
    }
  }

  private async _follow(sessionId: string): Promise<void> {
    const tail = new TailRows();
    this._tail = tail;
    let backlog: IEventRow[] = [];
    try {
      backlog = await this.client.events(sessionId, TAIL_BACKLOG);
    } catch (error) {
      this._setStatus(errorLine(error), true);
    }
    if (this._tail !== tail) {
      return; // another session was opened meanwhile
    }
    backlog.forEach(e => tail.add(e));
    this._renderTail();
    // Then live, after the newest event shown; a reconnect resumes after the last one received.
    this._tailStream = new EventStream({
      request: this.client.request,
      url: this.client.sessionStreamUrl(sessionId),
      lastEventId: String(tail.lastSequence),
      onMessage: message => {
        try {
          tail.add(JSON.parse(message.data) as IEventRow);
        } catch {
          return;
        }
        this._renderTail();
      },
      onOpen: () => this._setConnection(null),
      onRetry: error => this._setConnection(`event stream: ${errorLine(error)}; reconnecting`),
      onFatal: error => this._setStatus(errorLine(error), true)
    });
    void this._tailStream.start();
  }

  private _renderDetailHeader(): void {
    const id = this._selected;
    if (id === null) {
      return;
    }
    const s = this._session(id);
    this._detailTitle.textContent = s?.name ? `${s.name}` : id;
    this._detailMeta.textContent = s
      ? `${s.id} · ${s.agent_name} · ${s.state}${s.stop_reason ? ` (${s.stop_reason})` : ''} · ${healthText(s)}`
      : id;
    const acting = this._acting !== null;
    this._stopButton.disabled = acting || !s || s.state !== 'active';
    this._resumeButton.disabled = acting || !s || s.state !== 'stopped';
  }

  private _renderTail(): void {
    if (!this._tail) {
      return;
    }
    const rows = this._tail.rows();
    const keep = new Map<string, HTMLLIElement>();
    const nodes: HTMLLIElement[] = [];
    for (let i = rows.length - 1; i >= 0; i--) {
      // Newest first, as %agh tail shows them.
      const row = rows[i];
      const node = tailRowNode(row, this._tailNodes.get(row.key));
      keep.set(row.key, node);
      nodes.push(node);
    }
    this._tailNodes = keep;
    this._tailList.replaceChildren(...nodes);
  }

  private async _act(action: 'stop' | 'resume'): Promise<void> {
    const id = this._selected;
    if (id === null || this._acting !== null) {
      return;
    }
    this._acting = action;
    this._renderDetailHeader();
    this._setStatus(`${action === 'stop' ? 'Stopping' : 'Resuming'} ${this._label(id)}…`);
    try {
      const record = action === 'stop' ? await this.client.stop(id) : await this.client.resume(id);
      this._setStatus(`${this._label(id)}: ${record.state}${record.stop_reason ? ` (${record.stop_reason})` : ''}`);
    } catch (error) {
      this._setStatus(errorLine(error), true);
    } finally {
      this._acting = null;
    }
    await this.refresh();
    this._renderDetailHeader();
  }

  // -- status line ----------------------------------------------------------------------------

  /** The line about the server connection (null: all is well, hidden). */
  private _setConnection(text: string | null): void {
    this._connection.textContent = text ?? '';
    this._connection.hidden = text === null;
  }

  private _setStatus(text: string, error = false): void {
    this._status.textContent = text;
    this._status.classList.toggle('jp-mod-error', error);
  }
}
