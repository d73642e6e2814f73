// Signing in with an access key pair of the server's credentials file; on this machine with
// the development credentials, at one click.

import * as api from '../api.js';
import { h, field, errorBox } from '../dom.js';

export function signInView({ notice, development, onSignedIn }) {
  const key = h('input', { name: 'accessKeyId', autocomplete: 'username', required: true, spellcheck: 'false' });
  const secret = h('input', { name: 'secretAccessKey', type: 'password', autocomplete: 'current-password', required: true });
  const token = h('input', { name: 'sessionToken', autocomplete: 'off' });
  const region = h('input', { name: 'region', value: 'us-east-1', required: true, spellcheck: 'false' });
  const problem = h('div', { 'aria-live': 'assertive' });
  const submit = async (form) => {
    problem.replaceChildren();
    try {
      onSignedIn(await api.signIn(form));
    } catch (err) {
      problem.replaceChildren(errorBox(err));
    }
  };
  const formEl = h('form', {
    class: 'panel',
    onsubmit: (e) => {
      e.preventDefault();
      const form = { accessKeyId: key.value.trim(), secretAccessKey: secret.value, region: region.value.trim() };
      if (token.value) form.sessionToken = token.value;
      submit(form);
    },
  },
  h('h1', {}, 'Sign in to ecsd'),
  notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
  field('Access key ID', key),
  field('Secret access key', secret),
  field('Session token (if the key has one)', token),
  field('Region', region),
  problem,
  h('div', { class: 'actions' },
    h('button', { type: 'submit' }, 'Sign in'),
    development ? h('button', {
      type: 'button', class: 'quiet',
      onclick: () => submit({ accessKeyId: 'test', secretAccessKey: 'test', region: region.value.trim() || 'us-east-1' }),
    }, 'Sign in with the development credentials') : null));
  return h('div', { class: 'sign-in' }, formEl,
    h('p', { class: 'muted' }, 'The console acts as this principal: it sees and changes exactly what the same keys may through the API.'));
}
