// The agent's reading of a check-in's wake-up offer: only a path on the check-in's own server is ever held.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { wakeOffer } from '../src/agent/wake.ts';

const SERVER = 'https://updates.example.com:8443';
const offer = (path: unknown) =>
  wakeOffer({ desired_tag: 'ab12', wake: { path, max_seconds: 25 } }, SERVER, 't');

describe('wake offer', () => {
  it('takes a plain path on the same server', () => {
    const o = offer('/v1/wait');
    assert.ok(o);
    assert.equal(new URL(o.path, o.server).origin, new URL(SERVER).origin);
  });

  it('refuses a path that URL resolution reads as another host (the token would go there)', () => {
    // `//2130706433` resolves to http(s)://127.0.0.1/: a different host, with the device token in the header.
    assert.notEqual(new URL('//2130706433', SERVER).origin, new URL(SERVER).origin);
    for (const p of ['//2130706433', '//intranet/v1/wait', '///x', 'v1/wait', '/v1/wait?x', '/a.b'])
      assert.equal(offer(p), null, p);
  });
});
