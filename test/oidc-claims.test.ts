// Claims → operator (src/server/oidc/claims.ts), pure: the name claim must already be a valid operator name, the
// role claim may be a string or an array, the most powerful mapped role wins, and refusals are one line.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ClaimMapping, mapClaims } from '../src/server/oidc/claims.ts';

const M: ClaimMapping = {
  nameClaim: 'preferred_username',
  roleClaim: 'groups',
  roles: {
    'rf-admins': 'admin',
    'rf-approvers': 'approver',
    'rf-operators': 'operator',
    'rf-viewers': 'viewer',
  },
};

describe('mapClaims', () => {
  it('maps a name and an array of groups', () => {
    assert.deepEqual(mapClaims({ preferred_username: 'alice', groups: ['staff', 'rf-approvers'] }, M), {
      ok: true,
      name: 'alice',
      role: 'approver',
    });
  });

  it('takes a single string as the role claim', () => {
    assert.deepEqual(mapClaims({ preferred_username: 'vera', groups: 'rf-viewers' }, M), {
      ok: true,
      name: 'vera',
      role: 'viewer',
    });
  });

  it('gives the most powerful role when several match, whatever their order', () => {
    for (const groups of [
      ['rf-viewers', 'rf-admins', 'rf-operators'],
      ['rf-admins', 'rf-viewers'],
      ['rf-operators', 'rf-viewers'],
    ]) {
      const want = groups.includes('rf-admins') ? 'admin' : 'operator';
      assert.deepEqual(mapClaims({ preferred_username: 'al', groups }, M), {
        ok: true,
        name: 'al',
        role: want,
      });
    }
    // approver ranks above operator (the order of ROLES).
    assert.equal(
      (
        mapClaims({ preferred_username: 'al', groups: ['rf-operators', 'rf-approvers'] }, M) as {
          role: string;
        }
      ).role,
      'approver',
    );
  });

  it('uses the configured claims', () => {
    const m: ClaimMapping = { nameClaim: 'email_local', roleClaim: 'roles', roles: { boss: 'admin' } };
    assert.deepEqual(mapClaims({ email_local: 'bob', roles: ['boss'], groups: [] }, m), {
      ok: true,
      name: 'bob',
      role: 'admin',
    });
  });

  it('refuses no mapped group with the values seen', () => {
    assert.deepEqual(mapClaims({ preferred_username: 'bob', groups: ['staff', 'dev'] }, M), {
      ok: false,
      message: 'no Ringfence role for bob (claim groups: staff, dev)',
    });
    assert.deepEqual(mapClaims({ preferred_username: 'bob' }, M), {
      ok: false,
      message: 'no Ringfence role for bob (claim groups: none)',
    });
    assert.deepEqual(mapClaims({ preferred_username: 'bob', groups: [42, { x: 1 }] }, M), {
      ok: false,
      message: 'no Ringfence role for bob (claim groups: none)',
    });
  });

  it('does not match inherited object keys as claim values', () => {
    const r = mapClaims({ preferred_username: 'bob', groups: ['constructor', '__proto__', 'toString'] }, M);
    assert.equal(r.ok, false);
  });

  it('refuses a missing or invalid name, never rewriting it', () => {
    assert.match(
      (mapClaims({ groups: ['rf-admins'] }, M) as { message: string }).message,
      /no preferred_username claim/,
    );
    for (const bad of ['Alice', 'alice smith', 'a/b', '1abc', 'x'.repeat(65), 7, ['alice']]) {
      const r = mapClaims({ preferred_username: bad, groups: ['rf-admins'] }, M);
      assert.equal(r.ok, false, String(bad));
      assert.match((r as { message: string }).message, /is not a valid operator name/);
    }
  });

  it('keeps refusals one short line whatever the IdP sends', () => {
    const r = mapClaims({ preferred_username: 'bob', groups: [`evil\n\r\tline ${'x'.repeat(500)}`] }, M);
    assert.equal(r.ok, false);
    const msg = (r as { message: string }).message;
    assert.doesNotMatch(msg, /[\n\r\t]/);
    assert.ok(msg.length < 260, msg);
  });
});
