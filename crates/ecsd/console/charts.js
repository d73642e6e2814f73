// Timelines drawn as SVG: a task's state changes (the task, each container, each attachment)
// and a service's deployments (running tasks per deployment over time, the band the
// deployment configuration keeps them in, tasks started and stopped, the circuit breaker).
// Each chart comes with the same facts as a list, for screen readers and for copying.

import { h, s, short, duration, toMillis } from './dom.js';

const COLORS = {
  PROVISIONING: '#a5b4fc', PENDING: '#93c5fd', ACTIVATING: '#67e8f9', RUNNING: '#22c55e',
  DEACTIVATING: '#fcd34d', STOPPING: '#f59e0b', DEPROVISIONING: '#fdba74', STOPPED: '#ef4444',
  PRECREATED: '#c4b5fd', ATTACHED: '#22c55e', DETACHING: '#f59e0b', DETACHED: '#ef4444', DELETED: '#ef4444',
  NONE: '#d1d5db', CREATED: '#93c5fd',
};
const PALETTE = ['#2563eb', '#db2777', '#059669', '#d97706', '#7c3aed', '#0891b2'];

function ms(t) {
  return t === undefined || t === null ? NaN : toMillis(t);
}

/// The tracks of a task's timeline: for the task, each container and each attachment, the
/// statuses it went through and when, from its events (or, without events, its timestamps).
export function taskTracks(task, events) {
  const tracks = new Map();
  const add = (key, label, status, at) => {
    if (!status || !isFinite(at)) return;
    if (!tracks.has(key)) tracks.set(key, { label, points: [] });
    const points = tracks.get(key).points;
    if (!points.length || points[points.length - 1].status !== status) points.push({ status, at });
  };
  for (const event of events) {
    const d = event.detail || {};
    const at = ms(d.updatedAt || event.time);
    add('task', 'Task', d.lastStatus, at);
    for (const c of d.containers || []) add(`c:${c.name}`, `Container ${c.name}`, c.lastStatus, at);
    for (const a of d.attachments || []) add(`a:${a.id}`, `${a.type || 'Attachment'} ${short(a.id).slice(0, 8)}`, a.status, at);
  }
  if (!tracks.size) {
    add('task', 'Task', 'PROVISIONING', ms(task.createdAt));
    add('task', 'Task', 'PENDING', ms(task.pullStartedAt));
    add('task', 'Task', 'RUNNING', ms(task.startedAt));
    add('task', 'Task', 'STOPPING', ms(task.stoppingAt));
    add('task', 'Task', 'STOPPED', ms(task.stoppedAt));
  }
  return [...tracks.values()];
}

function axis(start, end, x, top, height) {
  const span = Math.max(end - start, 1);
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200].map((v) => v * 1000);
  const step = steps.find((st) => span / st <= 8) || 14400000;
  const ticks = [];
  for (let t = Math.ceil(start / step) * step; t <= end; t += step) {
    ticks.push(s('g', { class: 'axis' },
      s('line', { x1: x(t), x2: x(t), y1: top, y2: top + height }),
      s('text', { x: x(t), y: top + height + 14, 'text-anchor': 'middle' }, new Date(t).toLocaleTimeString())));
  }
  return ticks;
}

export function taskTimeline(task, events) {
  const tracks = taskTracks(task, events);
  const all = tracks.flatMap((t) => t.points.map((p) => p.at));
  const stopped = task.lastStatus === 'STOPPED';
  const start = Math.min(...all);
  const end = Math.max(stopped ? Math.max(...all) : Date.now(), start + 1000);
  const left = 170, width = 900, right = 20, row = 28, top = 10;
  const height = tracks.length * row;
  const x = (t) => left + ((t - start) / (end - start)) * (width - left - right);
  const rows = tracks.map((track, i) => {
    const y = top + i * row;
    const segments = track.points.map((p, j) => {
      const next = track.points[j + 1];
      const until = next ? next.at : (p.status === 'STOPPED' || p.status === 'DELETED' ? p.at : end);
      const x1 = x(p.at), x2 = Math.max(x(until), x1 + 4);
      const label = `${track.label}: ${p.status} at ${new Date(p.at).toLocaleTimeString()}${next ? ` for ${duration((next.at - p.at) / 1000)}` : ''}`;
      return s('g', {},
        s('rect', { x: x1, y: y + 4, width: x2 - x1, height: row - 8, rx: 3, fill: COLORS[p.status] || '#9ca3af' }, s('title', {}, label)),
        x2 - x1 > 70 ? s('text', { x: x1 + 4, y: y + row / 2 + 4 }, next && x2 - x1 > 140 ? `${p.status} · ${duration((next.at - p.at) / 1000)}` : p.status) : null);
    });
    return s('g', {}, s('text', { x: 4, y: y + row / 2 + 4 }, track.label.length > 24 ? `${track.label.slice(0, 23)}…` : track.label), segments);
  });
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${width} ${top + height + 24}`, role: 'img',
    'aria-label': `Timeline of task ${short(task.taskArn)}: ${tracks[0]?.points.map((p) => p.status).join(' → ') || 'no changes'}`,
  }, axis(start, end, x, top, height), rows);
  const transitions = [];
  for (const track of tracks) {
    track.points.forEach((p, j) => {
      const prev = track.points[j - 1];
      transitions.push({ at: p.at, text: `${track.label}: ${prev ? `${prev.status} → ` : ''}${p.status}${prev ? ` after ${duration((p.at - prev.at) / 1000)}` : ''}` });
    });
  }
  transitions.sort((a, b) => a.at - b.at);
  const used = [...new Set(tracks.flatMap((t) => t.points.map((p) => p.status)))];
  return h('figure', { class: 'timeline' }, svg,
    legend(used.map((st) => [st, COLORS[st] || '#9ca3af'])),
    h('figcaption', {}, h('details', { 'data-key': 'transitions' }, h('summary', {}, `Every change (${transitions.length})`),
      h('ol', { class: 'transitions' }, transitions.map((t) => h('li', {}, h('time', { datetime: new Date(t.at).toISOString() }, new Date(t.at).toLocaleTimeString()), ' — ', t.text))))));
}

function legend(entries) {
  return h('ul', { class: 'legend', 'aria-hidden': 'true' }, entries.map(([name, color]) => {
    const li = h('li', {}, name);
    li.style.setProperty('--swatch', color);
    return li;
  }));
}

/// Running tasks per deployment over time, the min/max band of the primary deployment, and
/// each task start (above the axis) and stop (below it).
export function deploymentChart(service, history, tasks) {
  const ids = new Map();
  for (const d of [...(service.deployments || [])].reverse()) ids.set(d.id, d);
  for (const t of tasks) if (t.startedBy && !ids.has(t.startedBy)) ids.set(t.startedBy, null);
  const deployments = [...ids.keys()];
  if (!tasks.length && !deployments.length) return h('p', { class: 'muted' }, 'No tasks yet.');
  const color = (id) => PALETTE[deployments.indexOf(id) % PALETTE.length];
  const times = tasks.flatMap((t) => [ms(t.startedAt), ms(t.createdAt), ms(t.stoppedAt)]).filter(isFinite);
  for (const d of service.deployments || []) times.push(ms(d.createdAt));
  const end = Date.now();
  const first = Math.min(...times, end - 10000);
  const start = first - (end - first) * 0.05;
  const primary = (service.deployments || []).find((d) => d.status === 'PRIMARY');
  const desired = primary?.desiredCount ?? service.desiredCount;
  const minPct = service.deploymentConfiguration?.minimumHealthyPercent ?? 100;
  const maxPct = service.deploymentConfiguration?.maximumPercent ?? 200;
  const low = Math.ceil((desired * minPct) / 100), high = Math.floor((desired * maxPct) / 100);
  // Step series: running count of each deployment, and of all.
  const steps = (filter) => {
    const changes = [];
    for (const t of tasks.filter(filter)) {
      if (isFinite(ms(t.startedAt))) changes.push([ms(t.startedAt), 1]);
      if (isFinite(ms(t.startedAt)) && isFinite(ms(t.stoppedAt))) changes.push([ms(t.stoppedAt), -1]);
    }
    changes.sort((a, b) => a[0] - b[0]);
    let n = 0;
    const points = [[start, 0]];
    for (const [at, d] of changes) { points.push([at, n]); n += d; points.push([at, n]); }
    points.push([end, n]);
    return points;
  };
  const series = deployments.map((id) => ({ id, points: steps((t) => t.startedBy === id) }));
  const total = steps(() => true);
  const peak = Math.max(high, ...total.map((p) => p[1]), 1);
  const left = 40, width = 900, right = 20, top = 10, plot = 180, lanes = 40;
  const x = (t) => left + ((t - start) / Math.max(end - start, 1)) * (width - left - right);
  const y = (n) => top + plot - (n / peak) * plot;
  const path = (points) => points.map(([t, n], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(n).toFixed(1)}`).join(' ');
  const laneY = top + plot + 22;
  const marks = tasks.flatMap((t) => {
    const out = [];
    const c = color(t.startedBy);
    if (isFinite(ms(t.startedAt))) {
      out.push(s('path', { d: `M${x(ms(t.startedAt))},${laneY - 10} l-4,7 h8 z`, fill: c }, s('title', {}, `${short(t.taskArn).slice(0, 8)} started`)));
    }
    if (isFinite(ms(t.stoppedAt))) {
      // Stopped by the scheduler (a scale-in, a replacement) is not a failure.
      const failed = t.stopCode === 'TaskFailedToStart' || t.stopCode === 'EssentialContainerExited' || t.healthStatus === 'UNHEALTHY';
      out.push(s('path', { d: `M${x(ms(t.stoppedAt))},${laneY + 12} l-4,-7 h8 z`, fill: failed ? '#b91c1c' : '#6b7280' },
        s('title', {}, `${short(t.taskArn).slice(0, 8)} stopped: ${t.stoppedReason || t.stopCode || ''}`)));
    }
    return out;
  });
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${width} ${top + plot + lanes + 24}`, role: 'img',
    'aria-label': `Running tasks per deployment; desired ${desired}, kept between ${low} and ${high}`,
  },
  s('rect', { class: 'band', x: left, width: width - left - right, y: y(high), height: Math.max(y(low) - y(high), 1) }, s('title', {}, `min ${low} – max ${high} running (${minPct}%–${maxPct}%)`)),
  [0, low, high, peak].filter((v, i, a) => a.indexOf(v) === i).map((n) => s('g', {},
    s('line', { class: 'grid-line', x1: left, x2: width - right, y1: y(n), y2: y(n) }),
    s('text', { x: left - 6, y: y(n) + 4, 'text-anchor': 'end' }, n))),
  (service.deployments || []).map((d) => s('g', {},
    s('line', { x1: x(ms(d.createdAt)), x2: x(ms(d.createdAt)), y1: top, y2: top + plot, stroke: color(d.id), 'stroke-dasharray': '4 3' }),
    s('text', { x: x(ms(d.createdAt)) + (x(ms(d.createdAt)) > width / 2 ? -4 : 4), y: top + 12, 'text-anchor': x(ms(d.createdAt)) > width / 2 ? 'end' : 'start' }, `${short(d.id).slice(0, 10)} ${d.rolloutState || ''}`))),
  s('path', { d: path(total), fill: 'none', stroke: '#111827', 'stroke-width': 1.5, 'stroke-dasharray': '2 2' }, s('title', {}, 'all running tasks')),
  series.map((se) => s('path', { d: path(se.points), fill: 'none', stroke: color(se.id), 'stroke-width': 2.5 }, s('title', {}, `running tasks of ${short(se.id)}`))),
  s('line', { x1: left, x2: width - right, y1: laneY, y2: laneY, stroke: '#9ca3af' }),
  marks,
  axis(start, end, x, top + plot + lanes - 6, 0));
  const summary = deployments.map((id) => {
    const d = ids.get(id);
    const own = tasks.filter((t) => t.startedBy === id);
    const started = own.filter((t) => isFinite(ms(t.startedAt))).length;
    const stopped = own.filter((t) => isFinite(ms(t.stoppedAt))).length;
    return h('li', {},
      h('strong', {}, short(id)), d ? ` (${d.status}, ${d.rolloutState || ''})` : ' (ended)',
      `: ${started} tasks started, ${stopped} stopped`,
      d && d.failedTasks ? `, ${d.failedTasks} failed` : '',
      d?.rolloutStateReason ? h('div', { class: 'muted' }, d.rolloutStateReason) : null);
  });
  const rollback = history.find((sd) => sd.rollback);
  const cb = history[0]?.deploymentCircuitBreaker;
  return h('figure', {}, svg,
    legend([...deployments.map((id) => [short(id), color(id)]), ['min–max band', '#bfdbfe']]),
    h('figcaption', {}, h('ul', { class: 'transitions' }, summary),
      cb ? h('p', {}, `Circuit breaker of the latest deployment: ${cb.failureCount ?? 0} failed of a threshold of ${cb.threshold ?? '—'} (${cb.status}).`) : null,
      rollback ? h('p', { class: 'notice' }, `Rolled back to ${short(rollback.rollback.serviceRevisionArn)}: ${rollback.rollback.reason || rollback.statusReason || ''}`) : null));
}
