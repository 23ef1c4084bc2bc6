// The rehearsal report opens in a real browser (Chromium via playwright-core) from file://, charts and numbers render.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { RehearsalResult } from '../src/sim/rehearsal.ts';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import { guardProcesses } from './helpers/processes.ts';

const run = promisify(execFile);
const PLAN_FILE = new URL('../examples/plans/standard.yaml', import.meta.url).pathname;
const CLI = new URL('../bin/ringfence.js', import.meta.url).pathname;

test('the rehearsal report renders its charts and numbers in Chromium', {
  skip: NO_CHROMIUM,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-sim-report-'));
  const browser = await launchChromium();
  try {
    const out = join(dir, 'report');
    await run('node', [
      CLI,
      'rehearse',
      PLAN_FILE,
      '--fleet',
      '4000',
      '--fault',
      'crash',
      '--report',
      out,
      '--quiet',
    ]);
    const data = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as RehearsalResult;
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(pathToFileURL(join(out, 'index.html')).href);
    assert.deepEqual(errors, []);
    assert.deepEqual(
      requests.filter((u) => !u.endsWith('/index.html')),
      [],
      'the page loads nothing else: self-contained',
    );
    // Charts are laid out with a real size, and the series paths have real geometry.
    const chart = await page.locator('#exposure-chart').boundingBox();
    assert.ok(
      chart && chart.width > 400 && chart.height > 100,
      `exposure chart box ${JSON.stringify(chart)}`,
    );
    const pathLen = await page
      .locator('#exposure-chart path[data-series="exposed"]')
      .evaluate((p) => (p as SVGPathElement).getTotalLength());
    assert.ok(pathLen > 100, `exposure line has length ${pathLen}`);
    const bars = await page
      .locator('#wave-chart rect.bad')
      .evaluateAll((rs) => rs.map((r) => (r as SVGRectElement).getBBox().width));
    assert.equal(bars.length, data.waves.length);
    assert.ok(bars[0] > 10, 'the first wave shows its failures');
    assert.ok(
      bars.slice(1).every((w) => w === 0),
      'no failures drawn for waves never reached',
    );
    // Numbers match report.json, as rendered text (innerText: what a person sees, not the DOM source).
    const shown = (sel: ReturnType<typeof page.locator>) =>
      // biome-ignore lint/performance/useDomNodeTextContent: the rendered text is what is under test
      sel.innerText();
    assert.equal(await shown(page.locator('#kpi-exposed')), String(data.exposed));
    assert.equal(await shown(page.locator('#kpi-end')), 'rolled-back');
    const firstRow = page.locator('#waves tbody tr').first();
    assert.equal(await shown(firstRow.locator('td.n-exposed')), String(data.waves[0].exposed));
    assert.equal(await shown(firstRow.locator('td.n-failed')), String(data.waves[0].failed));
    assert.match(await shown(page.locator('#verdict')), /halted after .* in wave dev/);
    await page.screenshot({ path: join(tmpdir(), 'ringfence-rehearsal-report.png'), fullPage: true });
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
