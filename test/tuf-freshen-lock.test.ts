// Freshening the timestamp (every GET /v1/tuf/timestamp.json) takes the repository's shared lock only when
// something is due for re-signing: with replicas that lock is a PostgreSQL advisory lock, which must not stand
// in front of every device's metadata request (nor wait behind an approval in progress).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { shareRepositoryLock, TufRepository } from '../src/trust/signer/tuf-repository.ts';

describe('timestamp freshen and the shared repository lock', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-freshen-'));
  after(() => {
    shareRepositoryLock(dir, null);
    rmSync(dir, { recursive: true, force: true });
  });

  it('fresh metadata: no lock taken; due for re-signing: the lock is taken and a new timestamp signed', async () => {
    const { repo } = TufRepository.init(dir);
    let taken = 0;
    shareRepositoryLock(dir, async (fn) => {
      taken++;
      return fn();
    });
    const before = repo.timestamp().signed;
    const now = Date.now();
    for (let i = 0; i < 5; i++) assert.equal((await repo.freshen(now)).changed, false);
    assert.equal(taken, 0, 'fresh metadata is served without the lock');
    assert.equal(repo.timestamp().signed.version, before.version);
    // Past half of the timestamp's validity: re-signed under the lock.
    const later = now + (Date.parse(before.expires) - now) * 0.75;
    await repo.freshen(later);
    assert.equal(taken, 1);
    assert.ok(repo.timestamp().signed.version > before.version, 'a new timestamp was signed');
  });
});
