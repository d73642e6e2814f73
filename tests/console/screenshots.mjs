// Refreshes the console's screenshots in docs/console (scripts/console-screenshots runs it):
// a server with simulated agents, a service rolled to a new revision, a task that failed, and
// each main page as a person sees it.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ecsd, launch, open, signIn, eventually } from './harness.mjs';

const out = process.argv[2] || 'docs/console';
mkdirSync(out, { recursive: true });
const ecsd = await new Ecsd({ args: ['--simulate-agents', '3'] }).start();
const browser = await launch();
try {
  const web = (image) => ({ family: 'web', cpu: '256', memory: '512', containerDefinitions: [{ name: 'app', image, portMappings: [{ containerPort: 8080 }], environment: [{ name: 'MODE', value: 'production' }] }] });
  await ecsd.boto('create_cluster', { clusterName: 'default' });
  await ecsd.boto('create_cluster', { clusterName: 'staging' });
  await ecsd.boto('register_task_definition', web('example/web:1.0'));
  await ecsd.boto('register_task_definition', web('example/web:1.1'));
  await ecsd.boto('register_task_definition', { family: 'report', containerDefinitions: [{ name: 'job', image: 'example/report', memory: 128, dockerLabels: { 'ecsd.simulate.run-seconds': '2', 'ecsd.simulate.exit-code': '1' } }] });
  await eventually(async () => (await ecsd.boto('list_container_instances', {})).containerInstanceArns.length === 3, { what: 'three agents' });
  await ecsd.boto('create_service', {
    serviceName: 'web', taskDefinition: 'web:1', desiredCount: 3,
    deploymentConfiguration: { minimumHealthyPercent: 50, maximumPercent: 200, deploymentCircuitBreaker: { enable: true, rollback: true } },
  });
  const service = async () => (await ecsd.boto('describe_services', { services: ['web'] })).services[0];
  await eventually(async () => (await service()).deployments[0].rolloutState === 'COMPLETED', { what: 'the first deployment' });
  await new Promise((r) => setTimeout(r, 2000));
  await ecsd.boto('update_service', { service: 'web', taskDefinition: 'web:2' });
  await eventually(async () => { const s = await service(); return s.deployments.length === 1 && s.deployments[0].rolloutState === 'COMPLETED'; }, { what: 'the rollout', timeout: 60000 });
  const { tasks } = await ecsd.boto('run_task', { taskDefinition: 'report' });
  await eventually(async () => (await ecsd.boto('describe_tasks', { tasks: [tasks[0].taskArn] })).tasks[0].lastStatus === 'STOPPED', { what: 'the report task' });

  const page = await open(browser, ecsd, { viewport: { width: 1280, height: 860 } });
  await signIn(page);
  const shot = async (hash, name, ready) => {
    await page.goto(`${ecsd.url}/console/#${hash}`);
    await page.waitForLoadState('networkidle');
    await ready();
    await page.screenshot({ path: join(out, `${name}.png`), fullPage: name !== 'service' });
  };
  await shot('/', 'clusters', () => page.getByRole('link', { name: 'staging' }).waitFor());
  await shot('/clusters/default/services/web', 'service', () => page.getByRole('img', { name: /Running tasks per deployment/ }).waitFor());
  await page.screenshot({ path: join(out, 'service.png'), fullPage: true });
  await shot(`/clusters/default/tasks/${tasks[0].taskArn.split('/').pop()}`, 'task', () => page.getByRole('img', { name: /Timeline of task/ }).waitFor());
  const instances = (await ecsd.boto('list_container_instances', {})).containerInstanceArns;
  await shot(`/clusters/default/instances/${instances[0].split('/').pop()}`, 'instance', () => page.getByRole('meter', { name: /CPU/ }).waitFor());
  await shot('/task-definitions/web', 'task-definition', () => page.getByRole('cell', { name: 'example/web:1.1' }).waitFor());
  const phone = await open(browser, ecsd, { viewport: { width: 390, height: 844 } });
  await signIn(phone);
  await phone.goto(`${ecsd.url}/console/#/clusters/default`);
  await phone.getByRole('link', { name: 'web' }).waitFor();
  await phone.screenshot({ path: join(out, 'phone.png') });
} finally {
  await browser.close();
  await ecsd.close();
}
