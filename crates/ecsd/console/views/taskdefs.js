// Task definitions: the families, and a family's revisions with a readable view of the
// chosen revision's containers.

import * as api from '../api.js';
import { h, badge, table, link, facts, short, time, jsonBlock, field } from '../dom.js';

export async function familiesView() {
  const [active, inactive] = await Promise.all([
    api.all('ListTaskDefinitionFamilies', { status: 'ACTIVE' }, 'families'),
    api.all('ListTaskDefinitionFamilies', { status: 'INACTIVE' }, 'families'),
  ]);
  const rows = [...active.map((f) => [f, 'ACTIVE']), ...inactive.filter((f) => !active.includes(f)).map((f) => [f, 'INACTIVE'])];
  return h('div', {},
    h('h1', {}, 'Task definitions'),
    table([
      ['Family', ([f]) => link(`#/task-definitions/${encodeURIComponent(f)}`, f)],
      ['Status', ([, st]) => badge(st)],
    ], rows, { empty: 'No task definitions yet. Register one with RegisterTaskDefinition.' }));
}

export async function familyView([family], query) {
  const arns = (await api.all('ListTaskDefinitions', { familyPrefix: family, sort: 'DESC', status: 'ACTIVE' }, 'taskDefinitionArns'))
    .concat(await api.all('ListTaskDefinitions', { familyPrefix: family, sort: 'DESC', status: 'INACTIVE' }, 'taskDefinitionArns'))
    .filter((arn) => short(arn).split(':')[0] === family)
    .sort((a, b) => Number(short(b).split(':')[1]) - Number(short(a).split(':')[1]));
  const chosen = query.get('revision') || (arns[0] && short(arns[0]).split(':')[1]);
  const picker = h('select', {
    name: 'revision',
    onchange: (e) => { location.hash = `/task-definitions/${encodeURIComponent(family)}?revision=${e.target.value}`; },
  }, arns.map((arn) => {
    const rev = short(arn).split(':')[1];
    return h('option', { value: rev, selected: rev === chosen || null }, `Revision ${rev}`);
  }));
  let detail = h('p', { class: 'muted' }, 'No revisions.');
  if (chosen) {
    const { taskDefinition: td } = await api.call('DescribeTaskDefinition', { taskDefinition: `${family}:${chosen}` });
    detail = h('div', {},
      h('section', { class: 'panel', 'aria-label': 'Revision details' }, facts([
        ['Status', badge(td.status)], ['Network mode', td.networkMode], ['CPU', td.cpu], ['Memory', td.memory],
        ['Compatibilities', (td.compatibilities || []).join(', ')], ['Requires', (td.requiresCompatibilities || []).join(', ')],
        ['Task role', td.taskRoleArn], ['Execution role', td.executionRoleArn], ['Registered', time(td.registeredAt)],
      ])),
      h('h2', {}, 'Containers'),
      table([
        ['Name', (c) => [c.name, c.essential === false ? h('div', { class: 'muted' }, 'not essential') : null]],
        ['Image', (c) => c.image],
        ['CPU / memory', (c) => `${c.cpu ?? '—'} / ${c.memory ?? c.memoryReservation ?? '—'}`],
        ['Ports', (c) => (c.portMappings || []).map((p) => `${p.containerPort}${p.hostPort !== undefined ? `:${p.hostPort}` : ''}/${p.protocol || 'tcp'}`).join(', ')],
        ['Command', (c) => (c.command || []).join(' '), { cls: 'hide-narrow' }],
        ['Environment', (c) => (c.environment || []).map((e) => `${e.name}=${e.value}`).join(', '), { cls: 'hide-narrow' }],
        ['Health check', (c) => (c.healthCheck?.command || []).join(' '), { cls: 'hide-narrow' }],
      ], td.containerDefinitions || []),
      jsonBlock(td, 'Task definition JSON'));
  }
  return h('div', {},
    h('p', { class: 'crumbs' }, link('#/task-definitions', 'Task definitions'), ' / '),
    h('h1', {}, family),
    arns.length ? h('div', { class: 'filters' }, field('Revision', picker)) : null,
    detail);
}
