// The console's shell: sign-in, the header, the routes (in the URL's hash, so that every view
// has an address to share and the browser's back button works), and redrawing the current view
// when the event stream says something changed.

import * as api from './api.js';
import { h, errorBox } from './dom.js';
import { Live } from './live.js';
import { signInView } from './views/signin.js';
import { clustersView } from './views/clusters.js';
import { clusterView } from './views/cluster.js';
import { serviceView } from './views/service.js';
import { taskView } from './views/task.js';
import { instanceView } from './views/instance.js';
import { familiesView, familyView } from './views/taskdefs.js';

const ROUTES = [
  [/^\/$/, clustersView, 'clusters'],
  [/^\/clusters\/([^/]+)$/, clusterView, 'clusters'],
  [/^\/clusters\/([^/]+)\/services\/([^/]+)$/, serviceView, 'clusters'],
  [/^\/clusters\/([^/]+)\/tasks\/([^/]+)$/, taskView, 'clusters'],
  [/^\/clusters\/([^/]+)\/instances\/([^/]+)$/, instanceView, 'clusters'],
  [/^\/task-definitions$/, familiesView, 'task-definitions'],
  [/^\/task-definitions\/([^/]+)$/, familyView, 'task-definitions'],
];

// The browser drops the cookie when the session expires, so the server cannot tell an
// expired session from none: the page, which had one, can.
const ENDED = 'The console session has expired or was ended; sign in again.';
const main = document.getElementById('main');
const top = document.getElementById('top');
const live = new Live(document.getElementById('live'), () => scheduleRedraw(), checkSession);
let drawing = 0;
let redrawTimer = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

/// Draws the current route; `quiet` keeps the focus and scroll where they are (a live update).
async function draw({ quiet = false } = {}) {
  const ticket = ++drawing;
  const { path, query } = parseHash();
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  for (const a of top.querySelectorAll('nav a')) {
    const section = a.getAttribute('href') === '#/' ? 'clusters' : 'task-definitions';
    if (route && route[2] === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  let node;
  try {
    if (!route) node = h('div', {}, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the clusters')));
    else node = await route[1](path.match(route[0]).slice(1).map(decodeURIComponent), query, { redraw: () => draw({ quiet: true }) });
  } catch (err) {
    node = h('div', {}, h('h1', {}, 'Something went wrong'), errorBox(err));
  }
  // A newer draw started, or the session ended while this one waited.
  if (ticket !== drawing || !api.current()) return;
  const scroll = window.scrollY;
  const openDetails = [...main.querySelectorAll('details[data-key][open]')].map((d) => d.dataset.key);
  const focused = quiet ? focusKey(document.activeElement) : null;
  main.replaceChildren(node);
  if (focused) [...main.querySelectorAll(focused.tag)].find((el) => focusKey(el)?.key === focused.key)?.focus({ preventScroll: true });
  for (const key of openDetails) main.querySelector(`details[data-key="${key}"]`)?.setAttribute('open', '');
  if (quiet) window.scrollTo(0, scroll);
  else main.focus();
  document.title = `${main.querySelector('h1')?.textContent || 'Console'} · ecsd`;
}

/// What identifies a focused control across a redraw (a live update keeps the keyboard focus).
function focusKey(el) {
  if (!el || !main.contains(el) || el === main) return null;
  return { tag: el.tagName.toLowerCase(), key: `${el.getAttribute('href') || ''}|${el.textContent}` };
}

/// A live change: redraw soon, unless the user is typing or confirming something.
function scheduleRedraw() {
  clearTimeout(redrawTimer);
  redrawTimer = setTimeout(() => {
    const busy = document.getElementById('confirm').open
      || (document.activeElement && main.contains(document.activeElement) && document.activeElement.matches('input, select, textarea'));
    if (busy) scheduleRedraw();
    else draw({ quiet: true });
  }, 300);
}

// Resources that change without an event (a new cluster, a task definition) are looked at
// again this often while the page is visible and live.
const LOOK_AGAIN_MS = 5000;
setInterval(() => {
  if (api.current() && !document.hidden && live.indicator.dataset.state === 'live') scheduleRedraw();
}, LOOK_AGAIN_MS);

/// When the stream drops: the session may have ended (the stream ends with it), or the server
/// may be away (then the stream keeps trying).
async function checkSession() {
  try {
    await api.loadSession();
  } catch (err) {
    if (err.type === 'MissingAuthenticationTokenException') showSignIn(ENDED, false);
  }
}

function showSignedIn(session) {
  top.hidden = false;
  document.getElementById('principal').textContent = `${session.principal} · ${session.account} · ${session.region}`;
  live.start();
  draw();
}

function showSignIn(notice, development) {
  live.stop();
  top.hidden = true;
  main.replaceChildren(signInView({ notice, development, onSignedIn: showSignedIn }));
  main.querySelector('input')?.focus();
}

document.getElementById('sign-out').addEventListener('click', async () => {
  await api.signOut();
  showSignIn('Signed out.', false);
});

const pause = document.getElementById('pause');
pause.addEventListener('click', () => {
  if (live.paused) { live.resume(); pause.textContent = 'Pause'; scheduleRedraw(); }
  else { live.pause(); pause.textContent = 'Resume'; }
});

api.onExpired(() => showSignIn(ENDED, false));
window.addEventListener('hashchange', () => { if (api.current()) draw(); });

api.loadSession().then(showSignedIn, (err) => {
  const signedOut = err.type === 'MissingAuthenticationTokenException';
  showSignIn(signedOut ? null : err.message, Boolean(err.body?.developmentSignIn));
});
