// One task: what it is and where it runs, its timeline from its events, its containers and
// attachments, and stopping it (StopTask).

import * as api from '../api.js';
import { h, badge, table, link, facts, short, time, jsonBlock, confirmAction, errorBox } from '../dom.js';
import { taskTimeline } from '../charts.js';

export async function taskView([cluster, id], _query, { redraw }) {
  const { tasks, failures } = await api.call('DescribeTasks', { cluster, tasks: [id], include: ['TAGS'] });
  const task = tasks[0];
  const base = `#/clusters/${encodeURIComponent(cluster)}`;
  if (!task) {
    return h('div', {}, h('h1', {}, `Task ${id}`), errorBox({ type: 'TaskNotFound', message: failures?.[0]?.reason === 'MISSING' ? 'The task is not found (stopped tasks are kept for an hour).' : failures?.[0]?.reason || 'The task is not found.' }));
  }
  let events = [];
  let eventsProblem = null;
  try {
    events = await api.events({ resource: task.taskArn, cluster, 'detail-type': 'ECS Task State Change' });
  } catch (err) {
    eventsProblem = errorBox(err);
  }
  const problem = h('div', { 'aria-live': 'assertive' });
  const stop = h('button', {
    type: 'button', class: 'danger', disabled: task.desiredStatus === 'STOPPED' || null,
    onclick: async () => {
      if (!(await confirmAction('Stop the task', `Stop task ${short(task.taskArn)}?`, 'Stop task'))) return;
      try {
        await api.call('StopTask', { cluster, task: task.taskArn, reason: 'Stopped from the ecsd console' });
        redraw();
      } catch (err) {
        problem.replaceChildren(errorBox(err));
      }
    },
  }, 'Stop task');
  const instance = task.containerInstanceArn;
  return h('div', {},
    h('p', { class: 'crumbs' }, link('#/', 'Clusters'), ' / ', link(`${base}?tab=tasks`, cluster), ' / '),
    h('h1', {}, `Task ${short(task.taskArn)} `, badge(task.lastStatus)),
    h('section', { class: 'panel', 'aria-label': 'Summary' }, facts([
      ['Last status', badge(task.lastStatus)], ['Desired status', badge(task.desiredStatus)],
      ['Health', badge(task.healthStatus)], ['Task definition', short(task.taskDefinitionArn)],
      ['Launch type', task.launchType || task.capacityProviderName],
      ['Group', task.group], ['Started by', task.startedBy],
      ['Container instance', instance ? link(`${base}/instances/${short(instance)}`, short(instance).slice(0, 12)) : ''],
      ['Stop code', task.stopCode], ['Stopped reason', task.stoppedReason],
      ['Created', time(task.createdAt)], ['Started', time(task.startedAt)], ['Stopped', time(task.stoppedAt)],
    ])),
    h('div', { class: 'actions' }, stop), problem,
    h('h2', {}, 'Timeline'),
    eventsProblem, taskTimeline(task, events),
    h('h2', {}, 'Containers'),
    table([
      ['Container', (c) => c.name],
      ['Last status', (c) => badge(c.lastStatus)],
      ['Health', (c) => badge(c.healthStatus)],
      ['Exit code', (c) => c.exitCode ?? '', { num: true }],
      ['Reason', (c) => c.reason || ''],
      ['Image', (c) => c.image || '', { cls: 'hide-narrow' }],
      ['Ports', (c) => (c.networkBindings || []).map((b) => `${b.hostPort}→${b.containerPort}/${b.protocol}`).join(', '), { cls: 'hide-narrow' }],
    ], task.containers || []),
    (task.attachments || []).length ? [h('h2', {}, 'Attachments'), table([
      ['Attachment', (a) => short(a.id)], ['Type', (a) => a.type], ['Status', (a) => badge(a.status)],
      ['Details', (a) => (a.details || []).map((d) => `${d.name}: ${d.value}`).join('; '), { cls: 'hide-narrow' }],
    ], task.attachments)] : null,
    jsonBlock(task, 'Task JSON'));
}
