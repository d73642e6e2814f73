// One service: its counts, deployments and their rollout, the deployments' timeline (tasks
// started and stopped, the min/max band, the circuit breaker), the service events, and the
// console's actions on it (scale, force a new deployment), each an UpdateService call.

import * as api from '../api.js';
import { h, badge, table, link, facts, short, time, jsonBlock, field, confirmAction, errorBox } from '../dom.js';
import { deploymentChart } from '../charts.js';
import { taskTable } from './cluster.js';

export async function serviceView([cluster, name], _query, { redraw }) {
  const { services, failures } = await api.call('DescribeServices', { cluster, services: [name] });
  const service = services[0];
  const base = `#/clusters/${encodeURIComponent(cluster)}`;
  if (!service) {
    return h('div', {}, h('h1', {}, name), errorBox({ type: 'ServiceNotFoundException', message: failures?.[0]?.reason || 'The service is not found.' }));
  }
  const [tasks, history] = await Promise.all([serviceTasks(cluster, service), serviceDeployments(cluster, service)]);
  const problem = h('div', { 'aria-live': 'assertive' });
  const act = async (title, text, ok, input) => {
    if (!(await confirmAction(title, text, ok))) return;
    problem.replaceChildren();
    try {
      await api.call('UpdateService', { cluster, service: service.serviceName, ...input });
      redraw();
    } catch (err) {
      problem.replaceChildren(errorBox(err));
    }
  };
  const desired = h('input', { type: 'number', min: '0', inputmode: 'numeric', value: String(service.desiredCount), name: 'desiredCount' });
  const actions = h('form', {
    class: 'actions', 'aria-label': 'Service actions',
    onsubmit: (e) => {
      e.preventDefault();
      const count = Number(desired.value);
      act('Scale the service', `Set the desired count of ${service.serviceName} from ${service.desiredCount} to ${count}?`, 'Scale', { desiredCount: count });
    },
  },
  service.schedulingStrategy === 'DAEMON' ? null : [field('Desired count', desired), h('button', { type: 'submit' }, 'Scale')],
  h('button', {
    type: 'button', class: 'quiet',
    onclick: () => act('Force a new deployment', `Start a new deployment of ${service.serviceName} with its current task definition?`, 'Force new deployment', { forceNewDeployment: true }),
  }, 'Force new deployment'));
  const breaker = service.deploymentConfiguration?.deploymentCircuitBreaker;
  return h('div', {},
    h('p', { class: 'crumbs' }, link('#/', 'Clusters'), ' / ', link(`${base}?tab=services`, cluster), ' / '),
    h('h1', {}, service.serviceName, ' ', badge(service.status)),
    h('section', { class: 'panel', 'aria-label': 'Summary' }, facts([
      ['Desired', service.desiredCount], ['Running', service.runningCount], ['Pending', service.pendingCount],
      ['Task definition', short(service.taskDefinition)],
      ['Launch', service.launchType || (service.capacityProviderStrategy || []).map((p) => p.capacityProvider).join(', ')],
      ['Scheduling', service.schedulingStrategy],
      ['Min / max healthy', `${service.deploymentConfiguration?.minimumHealthyPercent ?? '—'}% / ${service.deploymentConfiguration?.maximumPercent ?? '—'}%`],
      ['Circuit breaker', breaker ? `${breaker.enable ? 'on' : 'off'}${breaker.rollback ? ', rollback' : ''}` : 'off'],
      ['Created', time(service.createdAt)],
    ])),
    actions, problem,
    h('h2', {}, 'Deployments'),
    table([
      ['Deployment', (d) => short(d.id)],
      ['Status', (d) => badge(d.status)],
      ['Rollout', (d) => [badge(d.rolloutState), d.rolloutStateReason ? h('div', { class: 'muted' }, d.rolloutStateReason) : null]],
      ['Task definition', (d) => short(d.taskDefinition)],
      ['Desired', (d) => d.desiredCount, { num: true }],
      ['Pending', (d) => d.pendingCount, { num: true }],
      ['Running', (d) => d.runningCount, { num: true }],
      ['Failed', (d) => d.failedTasks, { num: true }],
      ['Progress', (d) => progress(d)],
      ['Updated', (d) => time(d.updatedAt), { cls: 'hide-narrow' }],
    ], service.deployments || []),
    history.length ? [h('h2', {}, 'Service deployments'), table([
      ['Service deployment', (d) => short(d.serviceDeploymentArn)],
      ['Status', (d) => badge(d.status)],
      ['From → to', (d) => `${(d.sourceServiceRevisions || []).map((r) => short(r.arn)).join(', ') || '—'} → ${short(d.targetServiceRevision?.arn)}`, { cls: 'hide-narrow' }],
      ['Circuit breaker', (d) => d.deploymentCircuitBreaker ? `${d.deploymentCircuitBreaker.failureCount ?? 0} of ${d.deploymentCircuitBreaker.threshold ?? '—'} (${d.deploymentCircuitBreaker.status})` : '—'],
      ['Rollback', (d) => d.rollback ? `to ${short(d.rollback.serviceRevisionArn)}` : '—'],
      ['Reason', (d) => d.statusReason || '', { cls: 'hide-narrow' }],
      ['Started', (d) => time(d.startedAt), { cls: 'hide-narrow' }],
    ], history)] : null,
    h('h2', {}, 'Deployment timeline'),
    deploymentChart(service, history, tasks),
    h('h2', {}, 'Events'),
    (service.events || []).length
      ? h('ol', { class: 'events-list panel', 'aria-label': 'Service events' },
        service.events.map((e) => h('li', {}, time(e.createdAt), e.message)))
      : h('p', { class: 'muted' }, 'No events yet.'),
    h('h2', {}, 'Tasks'),
    taskTable(tasks.filter((t) => t.lastStatus !== 'STOPPED'), base),
    jsonBlock(service, 'Service JSON'));
}

function progress(d) {
  const share = d.desiredCount ? Math.min(1, (d.runningCount || 0) / d.desiredCount) : 1;
  return `${Math.round(share * 100)}%`;
}

/// The service's tasks, running and recently stopped (what DescribeTasks still shows).
async function serviceTasks(cluster, service) {
  const [running, stopped] = await Promise.all([
    api.all('ListTasks', { cluster, serviceName: service.serviceName }, 'taskArns'),
    api.all('ListTasks', { cluster, serviceName: service.serviceName, desiredStatus: 'STOPPED' }, 'taskArns', 300),
  ]);
  const arns = [...new Set([...running, ...stopped])];
  return arns.length ? api.describeAll('DescribeTasks', { cluster }, 'tasks', arns, 'tasks') : [];
}

async function serviceDeployments(cluster, service) {
  try {
    const arns = (await api.call('ListServiceDeployments', { cluster, service: service.serviceName })).serviceDeployments?.map((d) => d.serviceDeploymentArn) || [];
    if (!arns.length) return [];
    const { serviceDeployments } = await api.call('DescribeServiceDeployments', { serviceDeploymentArns: arns.slice(0, 20) });
    return (serviceDeployments || []).sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
  } catch (err) {
    // A principal that may describe services but not their deployments still sees the rest.
    if (err.type === 'AccessDeniedException') return [];
    throw err;
  }
}
