// One cluster: its counts, and its services, tasks (filtered as ListTasks filters) and
// container instances.

import * as api from '../api.js';
import { h, badge, table, link, facts, short, bar, jsonBlock, field, time, errorBox } from '../dom.js';

const TABS = [['services', 'Services'], ['tasks', 'Tasks'], ['instances', 'Container instances']];

export async function clusterView([name], query) {
  const tab = TABS.some(([t]) => t === query.get('tab')) ? query.get('tab') : 'services';
  const { clusters, failures } = await api.call('DescribeClusters', { clusters: [name], include: ['STATISTICS', 'SETTINGS', 'CONFIGURATIONS'] });
  const cluster = clusters[0];
  if (!cluster) {
    return h('div', {}, h('h1', {}, name), errorBox({ type: 'ClusterNotFoundException', message: failures?.[0]?.reason || 'The cluster is not found.' }));
  }
  const base = `#/clusters/${encodeURIComponent(name)}`;
  const body = tab === 'services' ? await services(name, base)
    : tab === 'tasks' ? await tasks(name, base, query)
      : await instances(name, base);
  return h('div', {},
    h('p', { class: 'crumbs' }, link('#/', 'Clusters'), ' / '),
    h('h1', {}, cluster.clusterName, ' ', badge(cluster.status)),
    h('section', { class: 'panel', 'aria-label': 'Summary' }, facts([
      ['Active services', cluster.activeServicesCount],
      ['Running tasks', cluster.runningTasksCount],
      ['Pending tasks', cluster.pendingTasksCount],
      ['Container instances', cluster.registeredContainerInstancesCount],
      ['Capacity providers', (cluster.capacityProviders || []).join(', ')],
      ['Default strategy', (cluster.defaultCapacityProviderStrategy || []).map((s) => `${s.capacityProvider} (weight ${s.weight ?? 0}${s.base ? `, base ${s.base}` : ''})`).join('; ')],
    ])),
    h('nav', { class: 'tabs', 'aria-label': 'Cluster resources' },
      TABS.map(([t, label]) => h('a', { href: `${base}?tab=${t}`, 'aria-current': t === tab ? 'page' : null }, label))),
    h('section', { 'aria-label': TABS.find(([t]) => t === tab)[1] }, body),
    jsonBlock(cluster, 'Cluster JSON'));
}

async function services(cluster, base) {
  const arns = await api.all('ListServices', { cluster }, 'serviceArns');
  const list = arns.length ? await api.describeAll('DescribeServices', { cluster }, 'services', arns, 'services', 10) : [];
  list.sort((a, b) => a.serviceName.localeCompare(b.serviceName));
  return table([
    ['Service', (s) => link(`${base}/services/${encodeURIComponent(s.serviceName)}`, s.serviceName)],
    ['Status', (s) => badge(s.status)],
    ['Desired', (s) => s.desiredCount, { num: true }],
    ['Running', (s) => s.runningCount, { num: true }],
    ['Pending', (s) => s.pendingCount, { num: true }],
    ['Deployments', (s) => (s.deployments || []).map((d) => h('div', {}, badge(d.status), ' ', badge(d.rolloutState)))],
    ['Launch', (s) => s.launchType || (s.capacityProviderStrategy || []).map((p) => p.capacityProvider).join(', ') || (s.schedulingStrategy === 'DAEMON' ? 'DAEMON' : ''), { cls: 'hide-narrow' }],
    ['Task definition', (s) => short(s.taskDefinition), { cls: 'hide-narrow' }],
  ], list, { empty: 'No services in this cluster.' });
}

const FILTERS = ['desiredStatus', 'serviceName', 'family', 'containerInstance', 'startedBy', 'launchType'];

async function tasks(cluster, base, query) {
  const input = { cluster };
  for (const f of FILTERS) if (query.get(f)) input[f] = query.get(f);
  const arns = await api.all('ListTasks', input, 'taskArns');
  const list = arns.length ? await api.describeAll('DescribeTasks', { cluster }, 'tasks', arns, 'tasks') : [];
  list.sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
  const form = h('form', {
    class: 'filters', role: 'search', 'aria-label': 'Filter tasks',
    onsubmit: (e) => {
      e.preventDefault();
      const params = new URLSearchParams({ tab: 'tasks' });
      for (const el of e.target.elements) if (el.name && el.value) params.set(el.name, el.value);
      location.hash = `${base.slice(1)}?${params}`;
    },
  },
  field('Desired status', h('select', { name: 'desiredStatus' },
    ['', 'RUNNING', 'PENDING', 'STOPPED'].map((v) => h('option', { value: v, selected: query.get('desiredStatus') === v || null }, v || 'RUNNING (default)')))),
  field('Service', h('input', { name: 'serviceName', value: query.get('serviceName') || '' })),
  field('Family', h('input', { name: 'family', value: query.get('family') || '' })),
  field('Container instance', h('input', { name: 'containerInstance', value: query.get('containerInstance') || '' })),
  field('Started by', h('input', { name: 'startedBy', value: query.get('startedBy') || '' })),
  field('Launch type', h('select', { name: 'launchType' },
    ['', 'EC2', 'FARGATE', 'EXTERNAL'].map((v) => h('option', { value: v, selected: query.get('launchType') === v || null }, v || 'Any')))),
  h('button', { type: 'submit' }, 'Filter'));
  return h('div', {}, form, taskTable(list, base));
}

export function taskTable(list, base) {
  return table([
    ['Task', (t) => link(`${base}/tasks/${short(t.taskArn)}`, short(t.taskArn).slice(0, 12))],
    ['Definition', (t) => short(t.taskDefinitionArn)],
    ['Last status', (t) => badge(t.lastStatus)],
    ['Desired', (t) => badge(t.desiredStatus)],
    ['Health', (t) => badge(t.healthStatus === 'UNKNOWN' ? '' : t.healthStatus), { cls: 'hide-narrow' }],
    ['Stop code / reason', (t) => [t.stopCode || '', t.stoppedReason ? h('div', { class: 'muted' }, t.stoppedReason) : null], { cls: 'hide-narrow' }],
    ['Exit codes', (t) => (t.containers || []).filter((c) => c.exitCode !== undefined).map((c) => `${c.name}: ${c.exitCode}`).join(', '), { cls: 'hide-narrow' }],
    ['Created', (t) => time(t.createdAt), { cls: 'hide-narrow' }],
  ], list, { empty: 'No tasks match.' });
}

async function instances(cluster, base) {
  const arns = await api.all('ListContainerInstances', { cluster }, 'containerInstanceArns');
  const list = arns.length ? await api.describeAll('DescribeContainerInstances', { cluster }, 'containerInstances', arns, 'containerInstances') : [];
  return table([
    ['Instance', (i) => link(`${base}/instances/${short(i.containerInstanceArn)}`, short(i.containerInstanceArn).slice(0, 12))],
    ['EC2 instance', (i) => i.ec2InstanceId, { cls: 'hide-narrow' }],
    ['Status', (i) => badge(i.status)],
    ['Agent', (i) => badge(i.agentConnected ? 'CONNECTED' : 'DISCONNECTED')],
    ['Running / pending', (i) => `${i.runningTasksCount} / ${i.pendingTasksCount}`, { num: true }],
    ['CPU', (i) => usage(i, 'CPU', 'units')],
    ['Memory', (i) => usage(i, 'MEMORY', 'MiB'), { cls: 'hide-narrow' }],
  ], list, { empty: 'No container instances registered. Start agents (ecsd serve --simulate-agents 2) or a real ECS agent.' });
}

export function usage(instance, name, unit) {
  const total = (instance.registeredResources || []).find((r) => r.name === name)?.integerValue ?? 0;
  const left = (instance.remainingResources || []).find((r) => r.name === name)?.integerValue ?? 0;
  return bar(name === 'CPU' ? 'CPU' : 'Memory', total - left, total, unit);
}
