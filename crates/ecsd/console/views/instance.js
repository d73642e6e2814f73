// One container instance: its agent, resources used of registered, attributes and tasks, and
// draining it or making it active again (UpdateContainerInstancesState).

import * as api from '../api.js';
import { h, badge, table, link, facts, short, time, jsonBlock, confirmAction, errorBox } from '../dom.js';
import { usage, taskTable } from './cluster.js';

export async function instanceView([cluster, id], _query, { redraw }) {
  const { containerInstances, failures } = await api.call('DescribeContainerInstances', { cluster, containerInstances: [id], include: ['TAGS'] });
  const instance = containerInstances[0];
  const base = `#/clusters/${encodeURIComponent(cluster)}`;
  if (!instance) {
    return h('div', {}, h('h1', {}, `Instance ${id}`), errorBox({ type: 'ContainerInstanceNotFound', message: failures?.[0]?.reason || 'The container instance is not found.' }));
  }
  const arns = await api.all('ListTasks', { cluster, containerInstance: instance.containerInstanceArn }, 'taskArns');
  const tasks = arns.length ? await api.describeAll('DescribeTasks', { cluster }, 'tasks', arns, 'tasks') : [];
  const problem = h('div', { 'aria-live': 'assertive' });
  const draining = instance.status === 'DRAINING';
  const toggle = h('button', {
    type: 'button', class: draining ? '' : 'danger',
    onclick: async () => {
      const status = draining ? 'ACTIVE' : 'DRAINING';
      const text = draining ? 'Make the instance ACTIVE again, so that new tasks may be placed on it?'
        : 'Drain the instance? Service tasks on it are replaced elsewhere and no new tasks are placed on it.';
      if (!(await confirmAction(draining ? 'Activate the instance' : 'Drain the instance', text, draining ? 'Activate' : 'Drain'))) return;
      try {
        await api.call('UpdateContainerInstancesState', { cluster, containerInstances: [instance.containerInstanceArn], status });
        redraw();
      } catch (err) {
        problem.replaceChildren(errorBox(err));
      }
    },
  }, draining ? 'Activate' : 'Drain');
  const agent = instance.versionInfo || {};
  return h('div', {},
    h('p', { class: 'crumbs' }, link('#/', 'Clusters'), ' / ', link(`${base}?tab=instances`, cluster), ' / '),
    h('h1', {}, `Instance ${short(instance.containerInstanceArn)} `, badge(instance.status)),
    h('section', { class: 'panel', 'aria-label': 'Summary' }, facts([
      ['Status', badge(instance.status)], ['Agent', badge(instance.agentConnected ? 'CONNECTED' : 'DISCONNECTED')],
      ['EC2 instance', instance.ec2InstanceId], ['Agent version', agent.agentVersion], ['Docker', agent.dockerVersion],
      ['Running tasks', instance.runningTasksCount], ['Pending tasks', instance.pendingTasksCount],
      ['Capacity provider', instance.capacityProviderName], ['Registered', time(instance.registeredAt)],
      ['CPU', usage(instance, 'CPU', 'units')], ['Memory', usage(instance, 'MEMORY', 'MiB')],
    ])),
    h('div', { class: 'actions' }, toggle), problem,
    h('h2', {}, 'Tasks'), taskTable(tasks, base),
    h('h2', {}, 'Attributes'),
    table([['Name', (a) => a.name], ['Value', (a) => a.value || '']], [...(instance.attributes || [])].sort((a, b) => a.name.localeCompare(b.name))),
    jsonBlock(instance, 'Container instance JSON'));
}
