/**
 * The DOM pieces of the sidebar, built from server data: a session row, an approval card, an
 * event row, and the small helpers they share.
 *
 * Owns: how each piece looks and what its accessible names are. Every string that came from an
 * agent or a user (names, titles, paths, diffs, event text) is set with `textContent`, never as
 * markup. No state: `panel.ts` decides what is shown and handles the clicks.
 */

import { ApiError, Decision, DECISIONS, IApproval, IDiff, ISession } from './api';
import { ITailRow } from './tail';

/** The accessible names of the decision buttons (exactly these words). */
export const DECISION_LABELS: { [key in Decision]: string } = {
  'allow-once': 'Allow once',
  'allow-always': 'Allow always',
  'reject-once': 'Reject once',
  'reject-always': 'Reject always'
};

const DIFF_PREVIEW_CHARS = 4000;

/** A new element with a class and text (set as `textContent`). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A button of JupyterLab's look. */
export function button(label: string, className: string, onClick: () => void): HTMLButtonElement {
  const node = el('button', `jp-Button jp-mod-styled ${className}`.trim(), label);
  node.type = 'button';
  node.addEventListener('click', onClick);
  return node;
}

/** Any error as one line (an API error as `Type: message`). */
export function errorLine(error: unknown): string {
  if (error instanceof ApiError) {
    return error.line;
  }
  const text = error instanceof Error ? error.message : String(error);
  return text.split(/\s+/).filter(Boolean).join(' ');
}

/** `--- path / +++ path / -old / +new`, cut to a preview. */
export function diffText(diff: IDiff): string {
  const path = diff.path || '';
  const lines = [`--- ${path}`, `+++ ${path}`];
  if (diff.oldText) {
    lines.push(...diff.oldText.split('\n').map(line => `-${line}`));
  }
  if (diff.newText) {
    lines.push(...diff.newText.split('\n').map(line => `+${line}`));
  }
  const text = lines.join('\n');
  return text.length > DIFF_PREVIEW_CHARS ? text.slice(0, DIFF_PREVIEW_CHARS) + '\n… (preview truncated)' : text;
}

/** `healthy · idle`: the health and the activity state of a session. */
export function healthText(s: ISession): string {
  const h = s.health;
  return h ? [h.health, h.state].filter(Boolean).join(' · ') : '';
}

/** One session: its name (a button that opens its events), agent, state badge, health, pending count. */
export function sessionItem(s: ISession, pending: number, selected: boolean, onOpen: () => void): HTMLLIElement {
  const item = el('li', 'jp-AghSidebar-session');
  item.dataset.sessionId = s.id;
  item.classList.toggle('jp-mod-selected', selected);
  const open = el('button', 'jp-AghSidebar-sessionName', s.name || s.id);
  open.type = 'button';
  open.title = `Show the events of ${s.id}`;
  open.setAttribute('aria-expanded', String(selected));
  open.addEventListener('click', onOpen);
  const agent = el('span', 'jp-AghSidebar-agent', s.agent_name);
  agent.title = 'agent';
  const state = el('span', `jp-AghSidebar-badge jp-AghSidebar-state-${s.state}`, s.state);
  state.title = 'state';
  const health = el('span', 'jp-AghSidebar-health', healthText(s));
  health.title = 'health';
  const count = el('span', 'jp-AghSidebar-pendingCount', `${pending} pending`);
  count.title = 'pending approvals';
  count.classList.toggle('jp-mod-pending', pending > 0);
  const meta = el('div', 'jp-AghSidebar-sessionMeta');
  meta.append(agent, state, health, count);
  item.append(open, meta);
  return item;
}

/** One pending request: title, kind and ids, paths, diff previews, and the four decision buttons. */
export function approvalCard(a: IApproval, onDecide: (decision: Decision, card: HTMLElement) => void): HTMLElement {
  const card = el('div', 'jp-AghSidebar-approval');
  card.dataset.requestId = a.request_id;
  card.dataset.sessionId = a.session_id;
  card.setAttribute('role', 'group');
  card.setAttribute('aria-label', `Approval ${a.request_id}`);
  card.append(
    el('div', 'jp-AghSidebar-approvalTitle', a.title || '(untitled tool call)'),
    el('div', 'jp-AghSidebar-approvalMeta', `[${a.kind || 'other'}] ${a.request_id} · session ${a.session_id}`)
  );
  if (a.paths && a.paths.length) {
    const paths = el('ul', 'jp-AghSidebar-paths');
    paths.append(...a.paths.map(path => el('li', undefined, path)));
    card.append(paths);
  }
  for (const diff of a.diff || []) {
    card.append(el('pre', 'jp-AghSidebar-diff', diffText(diff)));
  }
  const buttons = el('div', 'jp-AghSidebar-decisions');
  for (const decision of DECISIONS) {
    const kind = decision.startsWith('allow') ? 'jp-mod-accept' : 'jp-mod-reject';
    const node = button(DECISION_LABELS[decision], kind, () => onDecide(decision, card));
    node.title = decision;
    buttons.append(node);
  }
  card.append(buttons);
  return card;
}

/** An event row `#<sequence> <type> <text>`; `node` (the row's previous node) is updated in place. */
export function tailRowNode(row: ITailRow, node?: HTMLLIElement): HTMLLIElement {
  if (!node) {
    node = el('li', 'jp-AghSidebar-row');
    node.append(el('span', 'jp-AghSidebar-seq'), el('span', 'jp-AghSidebar-type'), el('span', 'jp-AghSidebar-text'));
  }
  const [seq, type, text] = Array.from(node.children) as HTMLElement[];
  seq.textContent = `#${row.sequence}`;
  type.textContent = row.type;
  type.className = `jp-AghSidebar-type jp-AghSidebar-type-${row.failed ? 'failed' : row.type}`;
  text.textContent = row.text;
  return node;
}
