// Every cluster the principal may see, with its counts and capacity providers.

import * as api from '../api.js';
import { h, badge, table, link } from '../dom.js';

export async function clustersView() {
  const arns = await api.all('ListClusters', {}, 'clusterArns');
  const clusters = arns.length
    ? await api.describeAll('DescribeClusters', { include: ['STATISTICS'] }, 'clusters', arns, 'clusters')
    : [];
  clusters.sort((a, b) => a.clusterName.localeCompare(b.clusterName));
  return h('div', {},
    h('h1', {}, 'Clusters'),
    table([
      ['Cluster', (c) => link(`#/clusters/${encodeURIComponent(c.clusterName)}`, c.clusterName)],
      ['Status', (c) => badge(c.status)],
      ['Services', (c) => c.activeServicesCount, { num: true }],
      ['Running tasks', (c) => c.runningTasksCount, { num: true }],
      ['Pending tasks', (c) => c.pendingTasksCount, { num: true }],
      ['Container instances', (c) => c.registeredContainerInstancesCount, { num: true }],
      ['Capacity providers', (c) => (c.capacityProviders || []).join(', ') || '—', { cls: 'hide-narrow' }],
    ], clusters, { empty: 'No clusters yet. Create one with CreateCluster (aws ecs create-cluster --cluster-name NAME).' }));
}
