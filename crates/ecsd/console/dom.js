// Building the page: elements, tables, badges, times, the JSON view and the confirmation
// dialog. Text goes in as text nodes, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/// An SVG element.
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/// The last part of an ARN (an id or a name).
export function short(arn) {
  if (!arn) return '';
  const tail = String(arn).split('/');
  return tail[tail.length - 1];
}

/// `family:revision` of a task definition ARN.
export function definitionName(arn) {
  return short(arn);
}

export function time(epoch) {
  if (epoch === undefined || epoch === null) return '';
  const d = new Date(toMillis(epoch));
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

export function toMillis(t) {
  if (typeof t === 'number') return t * 1000;
  return Date.parse(t);
}

export function duration(seconds) {
  if (!isFinite(seconds)) return '';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60), rest = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${rest} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const TONES = {
  ACTIVE: 'ok', RUNNING: 'ok', HEALTHY: 'ok', COMPLETED: 'ok', PRIMARY: 'info', ATTACHED: 'ok',
  PENDING: 'info', PROVISIONING: 'info', ACTIVATING: 'info', IN_PROGRESS: 'info', DRAINING: 'warn',
  DEACTIVATING: 'warn', STOPPING: 'warn', DEPROVISIONING: 'warn', UNKNOWN: 'warn', DRAINING_TASKS: 'warn',
  CONNECTED: 'ok', DISCONNECTED: 'bad', SUCCESSFUL: 'ok',
  STOPPED: 'bad', FAILED: 'bad', UNHEALTHY: 'bad', INACTIVE: 'bad', DELETED: 'bad', ROLLBACK_FAILED: 'bad',
  ROLLBACK_IN_PROGRESS: 'warn', ROLLBACK_SUCCESSFUL: 'warn', STOP_REQUESTED: 'warn',
};

export function badge(status) {
  if (!status) return '';
  return h('span', { class: `badge ${TONES[status] || ''}` }, status);
}

/// A table: `columns` are [heading, cell(row), options] with options.num for numbers.
export function table(columns, rows, { empty = 'Nothing here.', caption } = {}) {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      caption ? h('caption', { class: 'muted' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map(([head, , o]) => h('th', { scope: 'col', class: o?.num ? 'num' : o?.cls }, head)))),
      h('tbody', {}, rows.map((row) => h('tr', {}, columns.map(([, cell, o]) => h('td', { class: o?.num ? 'num' : o?.cls }, cell(row))))))));
}

/// Name and value pairs.
export function facts(pairs) {
  return h('dl', { class: 'grid' }, pairs.filter(Boolean).map(([k, v]) =>
    h('div', {}, h('dt', {}, k), h('dd', {}, v === undefined || v === null || v === '' ? '—' : v))));
}

export function errorBox(err) {
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, err.type || 'Error'), err.message || String(err));
}

/// The raw JSON of a resource, folded, with a button that copies it.
export function jsonBlock(value, label = 'JSON') {
  const text = JSON.stringify(value, null, 2);
  const status = h('span', { class: 'muted', role: 'status' });
  const copy = h('button', {
    type: 'button', class: 'quiet', onclick: async () => {
      try { await navigator.clipboard.writeText(text); status.textContent = 'Copied.'; }
      catch { selectText(pre); status.textContent = 'Selected: press Ctrl+C to copy.'; }
    },
  }, `Copy ${label}`);
  const pre = h('pre', { class: 'json', tabindex: '0', 'aria-label': label }, text);
  return h('details', { class: 'raw', 'data-key': label }, h('summary', {}, label), h('div', { class: 'json-tools' }, copy, status), pre);
}

function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

/// Asks before a change; resolves to whether the user confirmed.
export function confirmAction(title, text, ok = 'Confirm') {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = ok;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

/// A used/total bar with its numbers.
export function bar(name, used, total, unit) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const fill = h('span');
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  return h('div', {},
    h('div', { class: 'bar', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': total, 'aria-valuenow': used, 'aria-label': `${name}: ${used} of ${total} ${unit} used` }, fill),
    h('span', { class: 'bar-label' }, `${used} / ${total} ${unit}`));
}

export function link(href, text) {
  return h('a', { href }, text);
}

export function field(labelText, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, labelText), input);
}
