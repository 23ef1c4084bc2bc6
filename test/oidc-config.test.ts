// server.yaml `oidc:` (src/server/config.ts): off by default, defaults filled in, plain HTTP only for a loopback
// issuer and only when allowed, roles checked, the client secret read from its file; errors name file and line.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadServerConfig, oidcOf } from '../src/server/config.ts';

const dir = mkdtempSync(join(tmpdir(), 'rf-oidc-cfg-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function load(oidc: string) {
  writeFileSync(join(dir, 'server.yaml'), `port: 8080\noidc:\n${oidc}`);
  return loadServerConfig(dir).config;
}

describe('server.yaml oidc:', () => {
  it('is off unless configured', () => {
    writeFileSync(join(dir, 'server.yaml'), 'port: 8080\n');
    assert.equal(oidcOf(loadServerConfig(dir).config), undefined);
  });

  it('takes an https issuer with defaults', () => {
    const o = oidcOf(
      load('  issuer: https://idp.example.com\n  client_id: rf\n  roles: { admins: admin }\n'),
    );
    assert.deepEqual(o, {
      issuer: 'https://idp.example.com',
      clientId: 'rf',
      clientSecret: undefined,
      redirectUrl: undefined,
      roleClaim: 'groups',
      roles: { admins: 'admin' },
      nameClaim: 'preferred_username',
      sessionHours: 8,
      allowInsecureHttp: false,
    });
  });

  it('accepts plain HTTP only for a loopback issuer, and only when allowed', () => {
    const base = '  client_id: rf\n  roles: { admins: admin }\n';
    for (const host of ['127.0.0.1:9000', '127.8.9.10', 'localhost:1234', '[::1]:80'])
      assert.equal(
        oidcOf(load(`  issuer: http://${host}\n  allow_insecure_http: true\n${base}`))?.allowInsecureHttp,
        true,
        host,
      );
    assert.throws(
      () => load(`  issuer: http://127.0.0.1:9000\n${base}`),
      /server\.yaml:3: oidc\.issuer: must be https/,
    );
    assert.throws(
      () => load(`  issuer: http://idp.example.com\n  allow_insecure_http: true\n${base}`),
      /server\.yaml:\d+: oidc\.allow_insecure_http: true is accepted for a loopback issuer only/,
    );
  });

  it('refuses unknown roles, empty role maps, bad session lengths and unknown keys', () => {
    const i = '  issuer: https://idp.example.com\n  client_id: rf\n';
    assert.throws(() => load(`${i}  roles: { admins: root }\n`), /oidc\.roles/);
    assert.throws(() => load(`${i}  roles: {}\n`), /oidc\.roles/);
    assert.throws(() => load(`${i}  roles: { a: admin }\n  session_hours: 169\n`), /oidc\.session_hours/);
    assert.throws(() => load(`${i}  roles: { a: admin }\n  secret: x\n`), /oidc/);
  });

  it('reads the client secret file relative to the data folder', () => {
    writeFileSync(join(dir, 'oidc-secret'), 's3cret-value\n');
    const c = load(
      '  issuer: https://idp.example.com\n  client_id: rf\n  client_secret_file: oidc-secret\n  roles: { a: admin }\n',
    );
    assert.equal(oidcOf(c, dir)?.clientSecret, 's3cret-value');
    assert.throws(() => oidcOf(c, join(dir, 'nowhere')), /oidc\.client_secret_file: cannot read/);
  });
});
