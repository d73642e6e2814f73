// What the console tests stand on: the real ecsd binary on a loopback port (ECSD_BIN), boto3
// for the changes made outside the browser (ECSD_PYTHON, a Python with boto3), and Debian's
// Chromium driven by playwright-core (CHROMIUM, default /usr/bin/chromium).

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);

export const BROWSER_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set (scripts/test sets it)`);
  return value;
}

/// A free loopback port (for a server that must come back on the same address).
export async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/// One `ecsd serve` on its own data directory; can be stopped and started again on the same
/// address and data.
export class Ecsd {
  constructor({ args = [], credentials } = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'ecsd-console-'));
    this.args = args;
    if (credentials) {
      this.credentials = join(this.dir, 'credentials.toml');
      writeFileSync(this.credentials, credentials);
    }
  }

  async start(port = 0) {
    const args = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', join(this.dir, 'data'), ...this.args];
    if (this.credentials) args.push('--credentials', this.credentials);
    this.process = spawn(required('ECSD_BIN'), args, { stdio: ['ignore', 'pipe', 'ignore'] });
    this.url = await new Promise((resolve, reject) => {
      let seen = '';
      this.process.stdout.on('data', (chunk) => {
        seen += chunk;
        const line = seen.split('\n')[0];
        if (seen.includes('\n')) {
          if (line.startsWith('ecsd listening on http://')) resolve(line.split(' on ')[1].trim());
          else reject(new Error(`unexpected first line: ${line}`));
        }
      });
      this.process.once('exit', (code) => reject(new Error(`ecsd exited with ${code}`)));
    });
    this.process.stdout.resume();
    this.port = Number(new URL(this.url).port);
    return this;
  }

  async stop() {
    if (!this.process || this.process.exitCode !== null) return;
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill('SIGTERM');
    await exited;
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /// One ECS operation through boto3 (snake_case name, as boto3 calls it).
  async boto(operation, params = {}, keys = ['test', 'test'], region = 'us-east-1') {
    const python = required('ECSD_PYTHON');
    try {
      const { stdout } = await run(python, [join(here, 'boto_call.py'), this.url, operation, JSON.stringify(params), ...keys, region]);
      return JSON.parse(stdout);
    } catch (err) {
      if (err.stdout) {
        const refusal = JSON.parse(err.stdout);
        const e = new Error(`${refusal.code}: ${refusal.message}`);
        e.code = refusal.code;
        throw e;
      }
      throw err;
    }
  }
}

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: BROWSER_ARGS });
}

/// A new page of the console, with the page's own errors collected.
export async function open(browser, ecsd, { viewport = { width: 1280, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(`${ecsd.url}/console/`);
  return page;
}

/// Signs in through the form, as a person would.
export async function signIn(page, key = 'test', secret = 'test', region = 'us-east-1') {
  await page.getByLabel('Access key ID').fill(key);
  await page.getByLabel('Secret access key').fill(secret);
  await page.getByLabel('Region').fill(region);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('heading', { name: 'Clusters' }).waitFor();
}

/// Confirms the dialog a console action opens.
export async function confirm(page, button) {
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await dialog.getByRole('button', { name: button }).click();
}

/// Waits until `check` returns something truthy, looking every 200 ms.
export async function eventually(check, { timeout = 20000, what = 'the condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${timeout} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
