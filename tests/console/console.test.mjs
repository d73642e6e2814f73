// The web console end to end: the real ecsd binary, changes made through boto3, and a person's
// view of them in headless Chromium.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Ecsd, launch, open, signIn, confirm, eventually, freePort } from './harness.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/// An ecsd for one test, closed when it ends.
async function server(t, options) {
  const ecsd = await new Ecsd(options).start();
  t.after(() => ecsd.close());
  return ecsd;
}

const idOf = (arn) => arn.split('/').pop();

test('signs in and shows a cluster created through boto3 without a reload', async (t) => {
  const ecsd = await server(t);
  const page = await open(browser, ecsd);
  // The development key on loopback may sign in at one click; this test types the keys.
  await assert.doesNotReject(page.getByRole('button', { name: 'Sign in with the development credentials' }).waitFor());
  await signIn(page);
  await page.getByText('No clusters yet').waitFor();
  await page.evaluate(() => { window.notReloaded = true; });

  await ecsd.boto('create_cluster', { clusterName: 'seen-live' });
  const link = page.getByRole('link', { name: 'seen-live' });
  await link.waitFor({ timeout: 15000 });
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
  await link.click();
  await page.getByRole('heading', { name: /seen-live/ }).waitFor();
  assert.match(await page.locator('main').innerText(), /ACTIVE/);
  assert.deepEqual(page.errors, []);
});

test("a task's timeline reaches STOPPED as a simulated agent runs it", async (t) => {
  const ecsd = await server(t, { args: ['--simulate-agents', '1'] });
  await ecsd.boto('create_cluster', { clusterName: 'default' });
  await ecsd.boto('register_task_definition', {
    family: 'short',
    containerDefinitions: [{ name: 'job', image: 'busybox', memory: 64, dockerLabels: { 'ecsd.simulate.run-seconds': '2', 'ecsd.simulate.exit-code': '3' } }],
  });
  await eventually(async () => (await ecsd.boto('list_container_instances', {})).containerInstanceArns.length === 1, { what: 'the simulated agent registered' });
  const page = await open(browser, ecsd);
  await signIn(page);
  const { tasks } = await ecsd.boto('run_task', { taskDefinition: 'short' });
  const id = idOf(tasks[0].taskArn);
  await page.goto(`${ecsd.url}/console/#/clusters/default/tasks/${id}`);
  await page.getByRole('heading', { name: new RegExp(`Task ${id}`) }).waitFor();
  await page.evaluate(() => { window.notReloaded = true; });

  const timeline = page.getByRole('img', { name: /Timeline of task/ });
  const label = await eventually(async () => {
    const text = await timeline.getAttribute('aria-label');
    return /STOPPED$/.test(text) && text;
  }, { what: 'the timeline reached STOPPED' });
  assert.match(label, /RUNNING → (STOPPING → )?STOPPED$/);
  assert.equal(await page.evaluate(() => window.notReloaded), true);
  // Each container has its own track, and every change is listed with its duration.
  assert.equal(await timeline.locator('text', { hasText: 'Container job' }).count(), 1);
  await page.getByText(/^Every change/).click();
  assert.match(await page.locator('ol.transitions').innerText(), /Container job: RUNNING → STOPPED after \d/);
  await eventually(async () => /Exit code[\s\S]*3/.test(await page.locator('main').innerText()), { what: 'the exit code shown' });
});

test('scales a service and forces a new deployment, watching each complete', async (t) => {
  const ecsd = await server(t, { args: ['--simulate-agents', '2'] });
  await ecsd.boto('create_cluster', { clusterName: 'default' });
  await ecsd.boto('register_task_definition', { family: 'web', containerDefinitions: [{ name: 'app', image: 'nginx', memory: 64 }] });
  await ecsd.boto('create_service', { serviceName: 'web', taskDefinition: 'web', desiredCount: 1 });
  const page = await open(browser, ecsd);
  await signIn(page);
  await page.goto(`${ecsd.url}/console/#/clusters/default/services/web`);
  await page.getByRole('heading', { name: /^web/ }).waitFor();

  await page.getByLabel('Desired count').fill('3');
  await page.getByRole('button', { name: 'Scale', exact: true }).click();
  await confirm(page, 'Scale');
  const running = async () => (await ecsd.boto('describe_services', { services: ['web'] })).services[0];
  await eventually(async () => (await running()).runningCount === 3, { what: 'three tasks running' });
  assert.equal((await running()).desiredCount, 3);
  const summary = page.getByRole('region', { name: 'Summary' });
  await eventually(async () => /Running\s*3/.test(await summary.innerText()), { what: 'the page shows three running' });

  const before = (await running()).deployments[0].id;
  await page.getByRole('button', { name: 'Force new deployment' }).click();
  await confirm(page, 'Force new deployment');
  await eventually(async () => {
    const s = await running();
    return s.deployments.length === 1 && s.deployments[0].id !== before && s.deployments[0].rolloutState === 'COMPLETED';
  }, { what: 'the new deployment completed', timeout: 30000 });
  const deployments = page.locator('table').nth(0);
  await eventually(async () => {
    const text = await deployments.innerText();
    return !text.includes(idOf(before)) && /PRIMARY\s+COMPLETED/.test(text);
  }, { what: 'the page shows the one completed deployment' });
  // The timeline draws both deployments' running tasks and the min/max band.
  const chart = page.getByRole('img', { name: /Running tasks per deployment; desired 3, kept between 3 and 6/ });
  assert.equal(await chart.locator('path[stroke-width="2.5"]').count(), 2);
  assert.deepEqual(page.errors, []);
});

test('stops a task and drains an instance through their operations', async (t) => {
  const ecsd = await server(t, { args: ['--simulate-agents', '1'] });
  await ecsd.boto('create_cluster', { clusterName: 'default' });
  await ecsd.boto('register_task_definition', { family: 'long', containerDefinitions: [{ name: 'app', image: 'nginx', memory: 64 }] });
  await eventually(async () => (await ecsd.boto('list_container_instances', {})).containerInstanceArns.length === 1, { what: 'the agent registered' });
  const { tasks } = await ecsd.boto('run_task', { taskDefinition: 'long' });
  const page = await open(browser, ecsd);
  await signIn(page);
  await page.goto(`${ecsd.url}/console/#/clusters/default/tasks/${idOf(tasks[0].taskArn)}`);
  await page.getByRole('button', { name: 'Stop task' }).click();
  await confirm(page, 'Stop task');
  await eventually(async () => {
    const [task] = (await ecsd.boto('describe_tasks', { tasks: [tasks[0].taskArn] })).tasks;
    return task.lastStatus === 'STOPPED' && task.stoppedReason === 'Stopped from the ecsd console';
  }, { what: 'the task stopped' });

  await page.getByRole('link', { name: /^[0-9a-f]{12}$/ }).click();
  await page.getByRole('heading', { name: /^Instance/ }).waitFor();
  assert.equal(await page.getByRole('meter', { name: /CPU/ }).count(), 1);
  await page.getByRole('button', { name: 'Drain' }).click();
  await confirm(page, 'Drain');
  await eventually(async () => {
    const arns = (await ecsd.boto('list_container_instances', {})).containerInstanceArns;
    const [i] = (await ecsd.boto('describe_container_instances', { containerInstances: arns })).containerInstances;
    return i.status === 'DRAINING';
  }, { what: 'the instance draining' });
  await page.getByRole('button', { name: 'Activate' }).waitFor();
});

const CREDENTIALS = `
[[principals]]
name = "admin"
access_key_id = "AKIAADMIN"
secret_access_key = "admin-secret"
account_id = "111111111111"
permissions = ["admin"]

[[principals]]
name = "team"
access_key_id = "AKIATEAM"
secret_access_key = "team-secret"
account_id = "111111111111"
permissions = ["ecs:Describe*", "ecs:List*", "ecs:ReadEvents"]
clusters = ["team-*"]

[[principals]]
name = "other"
access_key_id = "AKIAOTHER"
secret_access_key = "other-secret"
account_id = "222222222222"
permissions = ["admin"]
`;

test("a scoped principal sees neither another account's nor another cluster's resources", async (t) => {
  const ecsd = await server(t, { credentials: CREDENTIALS });
  const admin = ['AKIAADMIN', 'admin-secret'];
  await ecsd.boto('create_cluster', { clusterName: 'team-a' }, admin);
  await ecsd.boto('create_cluster', { clusterName: 'secret-b' }, admin);
  await ecsd.boto('create_cluster', { clusterName: 'elsewhere' }, ['AKIAOTHER', 'other-secret']);
  const page = await open(browser, ecsd);
  // No one-click sign-in with a credentials file.
  await page.getByLabel('Access key ID').waitFor();
  assert.equal(await page.getByRole('button', { name: /development credentials/ }).count(), 0);

  await page.getByLabel('Access key ID').fill('AKIATEAM');
  await page.getByLabel('Secret access key').fill('not-the-secret');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('alert').getByText('UnrecognizedClientException').waitFor();

  await signIn(page, 'AKIATEAM', 'team-secret');
  await page.getByRole('link', { name: 'team-a' }).waitFor();
  const listed = await page.locator('main table').innerText();
  assert.ok(!listed.includes('secret-b') && !listed.includes('elsewhere'), listed);

  await page.goto(`${ecsd.url}/console/#/clusters/secret-b`);
  const refusal = page.getByRole('alert');
  await refusal.getByText('AccessDeniedException').waitFor();
  assert.match(await refusal.innerText(), /User: arn:aws:iam::111111111111:user\/team is not authorized to perform: ecs:DescribeClusters/);
  // An action the principal lacks is refused as the API refuses it.
  const answer = await page.evaluate(async () => {
    const session = await (await fetch('/console/session')).json();
    const r = await fetch('/console/api/CreateCluster', { method: 'POST', headers: { 'x-ecsd-csrf': session.csrfToken }, body: JSON.stringify({ clusterName: 'team-new' }) });
    return [r.status, await r.json()];
  });
  assert.equal(answer[0], 400);
  assert.equal(answer[1].__type, 'AccessDeniedException');
  assert.match(answer[1].message, /ecs:CreateCluster/);
  // Nor does it read another cluster's events.
  const events = await page.evaluate(async () => (await fetch('/console/events?cluster=secret-b')).json());
  assert.equal(events.__type, 'AccessDeniedException');
  // Nor the events of a resource of another cluster, named by ARN.
  const arn = encodeURIComponent('arn:aws:ecs:us-east-1:111111111111:task/secret-b/0123456789abcdef0123456789abcdef');
  const byArn = await page.evaluate(async (q) => (await fetch(`/console/events?resource=${q}`)).json(), arn);
  assert.equal(byArn.__type, 'AccessDeniedException');
});

test('an expired or ended session is refused', async (t) => {
  const ecsd = await server(t, { args: ['--console-session-secs', '2'] });
  const page = await open(browser, ecsd);
  await signIn(page);
  const cookies = await page.context().cookies();
  const cookie = cookies.find((c) => c.name === 'ecsd_console');
  assert.ok(cookie.httpOnly, 'HttpOnly');
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie), '', 'the page cannot read the cookie');

  await new Promise((r) => setTimeout(r, 2500));
  const answer = await page.evaluate(async () => {
    const r = await fetch('/console/api/ListClusters', { method: 'POST', body: '{}' });
    return [r.status, await r.json()];
  });
  assert.equal(answer[0], 403);
  assert.equal(answer[1].__type, 'MissingAuthenticationTokenException');
  // The page goes back to the sign-in form and says why.
  await page.getByText('The console session has expired or was ended; sign in again.').waitFor({ timeout: 15000 });

  // Signed out, the old cookie opens nothing either.
  await signIn(page);
  const old = (await page.context().cookies()).find((c) => c.name === 'ecsd_console');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('Signed out.').waitFor();
  await page.context().addCookies([old]);
  const reused = await page.evaluate(async () => (await fetch('/console/session')).status);
  assert.equal(reused, 403);
});

test('a forged cross-site request changes nothing', async (t) => {
  const ecsd = await server(t);
  await ecsd.boto('create_cluster', { clusterName: 'victim' });
  const page = await open(browser, ecsd);
  await signIn(page);

  // A page of another site (localhost is not 127.0.0.1's site) posts to the console, as a
  // form and as a fetch, while the user is signed in.
  const target = `${ecsd.url}/console/api/DeleteCluster`;
  const attacker = createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<form id="f" method="POST" action="${target}" enctype="text/plain">
      <input name='{"cluster":"victim","x":"' value='"}'></form>
      <script>fetch(${JSON.stringify(target)}, {method: 'POST', mode: 'no-cors', credentials: 'include', body: '{"cluster":"victim"}'}).finally(() => document.getElementById('f').submit());</script>`);
  });
  await new Promise((r) => attacker.listen(0, 'localhost', r));
  t.after(() => attacker.close());
  const evil = await page.context().newPage();
  const posted = evil.waitForResponse((r) => r.url() === target && r.request().method() === 'POST' && r.request().resourceType() === 'document');
  await evil.goto(`http://localhost:${attacker.address().port}/`);
  const response = await posted;
  // Refused: the browser sends no SameSite=Strict cookie across sites, and the request has
  // neither the page's origin nor its CSRF token.
  assert.ok([400, 403].includes(response.status()), `answered ${response.status()}`);
  assert.match(response.headers()['x-amzn-errortype'], /MissingAuthenticationTokenException|AccessDeniedException/);

  // With the cookie but without the session's CSRF token, or from another origin, it is refused.
  const request = page.context().request;
  const bare = await request.post(target, { data: { cluster: 'victim' } });
  assert.equal(bare.status(), 400);
  assert.match((await bare.json()).message, /CSRF token/);
  const token = await page.evaluate(async () => (await (await fetch('/console/session')).json()).csrfToken);
  const foreign = await request.post(target, { data: { cluster: 'victim' }, headers: { 'x-ecsd-csrf': token, origin: 'http://evil.example' } });
  assert.equal(foreign.status(), 400);
  assert.match((await foreign.json()).message, /another origin/);

  const { clusters } = await ecsd.boto('describe_clusters', { clusters: ['victim'] });
  assert.equal(clusters[0].status, 'ACTIVE');
});

test('the live indicator shows a dropped stream and resumes when the server is back', async (t) => {
  const port = await freePort();
  const ecsd = new Ecsd();
  t.after(() => ecsd.close());
  await ecsd.start(port);
  const page = await open(browser, ecsd);
  await signIn(page);
  const live = page.getByRole('status').filter({ hasText: /Live|Connecting|Disconnected|Paused/ });
  await live.getByText('Live').waitFor();

  await page.getByRole('button', { name: 'Pause' }).click();
  await live.getByText('Paused').waitFor();
  await page.getByRole('button', { name: 'Resume' }).click();
  await live.getByText('Live').waitFor();

  await ecsd.stop();
  await live.getByText(/Disconnected/).waitFor({ timeout: 15000 });
  await ecsd.start(port);
  await live.getByText('Live').waitFor({ timeout: 20000 });
  // The session was kept in the store: still signed in, and still live.
  await ecsd.boto('create_cluster', { clusterName: 'after-restart' });
  await page.getByRole('link', { name: 'after-restart' }).waitFor({ timeout: 15000 });
});

test('task definitions read as containers, and any JSON is copied whole', async (t) => {
  const ecsd = await server(t);
  await ecsd.boto('register_task_definition', {
    family: 'site',
    containerDefinitions: [{ name: 'web', image: 'nginx:1.27', memory: 256, portMappings: [{ containerPort: 80 }], environment: [{ name: 'MODE', value: 'prod' }] }],
  });
  await ecsd.boto('register_task_definition', { family: 'site', containerDefinitions: [{ name: 'web', image: 'nginx:1.28', memory: 256 }] });
  const page = await open(browser, ecsd);
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write']);
  await signIn(page);
  await page.getByRole('link', { name: 'Task definitions' }).click();
  await page.getByRole('link', { name: 'site' }).click();
  await page.getByRole('heading', { name: 'site' }).waitFor();
  assert.match(await page.locator('main').innerText(), /nginx:1\.28/);
  await page.getByRole('combobox', { name: 'Revision' }).selectOption('1');
  await page.getByRole('cell', { name: 'nginx:1.27' }).waitFor();
  assert.match(await page.locator('main').innerText(), /MODE=prod/);
  await page.getByText('Task definition JSON', { exact: true }).click();
  await page.getByRole('button', { name: 'Copy Task definition JSON' }).click();
  await page.getByText('Copied.').waitFor();
  const copied = JSON.parse(await page.evaluate(() => navigator.clipboard.readText()));
  assert.equal(copied.taskDefinitionArn.endsWith(':task-definition/site:1'), true);
});

test('works with the keyboard alone and fits a phone screen', async (t) => {
  const ecsd = await server(t);
  for (const name of ['alpha', 'beta']) await ecsd.boto('create_cluster', { clusterName: name });
  const page = await open(browser, ecsd, { viewport: { width: 390, height: 844 } });
  await page.getByLabel('Access key ID').waitFor();
  // Every control is labelled.
  for (const label of ['Access key ID', 'Secret access key', 'Session token (if the key has one)', 'Region']) {
    assert.equal(await page.getByLabel(label).count(), 1, label);
  }
  await page.getByLabel('Access key ID').focus();
  await page.keyboard.type('test');
  await page.keyboard.press('Tab');
  await page.keyboard.type('test');
  await page.keyboard.press('Enter');
  await page.getByRole('link', { name: 'beta' }).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  // Tab to a cluster link and open it with Enter.
  let focused = '';
  for (let i = 0; i < 20 && focused !== 'beta'; i += 1) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement?.textContent);
  }
  assert.equal(focused, 'beta');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: /beta/ }).waitFor();
});
