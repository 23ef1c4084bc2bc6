// stop() ends the driver's work: a nudge queued just before it (a check-in's reports) must not start a pass on
// a store that is being closed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { openStore } from '../src/server/db/database.ts';
import { RolloutDriver } from '../src/server/rollout-driver.ts';

describe('rollout driver stop', () => {
  it('a nudge queued before stop() runs no pass after it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-driver-'));
    const store = await openStore({ dataDir: dir });
    try {
      const driver = new RolloutDriver(store, pino({ level: 'silent' }));
      let passes = 0;
      const tick = driver.tick.bind(driver);
      driver.tick = () => {
        passes++;
        return tick();
      };
      driver.nudge(); // queued for the next turn of the event loop
      await driver.stop();
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.equal(passes, 0);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
