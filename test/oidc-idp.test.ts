// The test IdP on its own (test/helpers/oidc.ts): oidc-provider on loopback answers discovery, and a device
// authorization started with openid-client completes when Chromium enters the user code, logs in and consents;
// the ID token then names the account and carries its groups.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import type { Browser } from 'playwright-core';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import { type RunningIdp, startIdp, verifyDevice } from './helpers/oidc.ts';

describe('test IdP (oidc-provider)', { skip: NO_CHROMIUM }, () => {
  let idp: RunningIdp;
  let browser: Browser;

  before(async () => {
    idp = await startIdp({ accounts: { alice: ['ringfence-approvers'], bob: [] } });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await idp?.stop();
  });

  it('completes a device authorization in Chromium', async () => {
    const config = await client.discovery(new URL(idp.issuer), idp.clientId, undefined, client.None(), {
      execute: [client.allowInsecureRequests],
    });
    const device = await client.initiateDeviceAuthorization(config, { scope: 'openid profile groups' });
    assert.match(device.user_code, /^[A-Z]{4}-[A-Z]{4}$/);
    const polled = client.pollDeviceAuthorizationGrant(config, device);
    const page = await browser.newPage();
    try {
      await verifyDevice(page, device.verification_uri, device.user_code, 'alice');
    } finally {
      await page.close();
    }
    const tokens = await polled;
    const claims = tokens.claims();
    assert.ok(claims);
    assert.equal(claims.iss, idp.issuer);
    assert.equal(claims.aud, 'ringfence');
    assert.equal(claims.preferred_username, 'alice');
    assert.deepEqual(claims.groups, ['ringfence-approvers']);
  });

  it('completes a device authorization through verification_uri_complete', async () => {
    const config = await client.discovery(new URL(idp.issuer), idp.clientId, undefined, client.None(), {
      execute: [client.allowInsecureRequests],
    });
    const device = await client.initiateDeviceAuthorization(config, { scope: 'openid profile groups' });
    assert.ok(device.verification_uri_complete);
    const polled = client.pollDeviceAuthorizationGrant(config, device);
    const page = await browser.newPage();
    try {
      await verifyDevice(page, device.verification_uri_complete, device.user_code, 'bob');
    } finally {
      await page.close();
    }
    const claims = (await polled).claims();
    assert.equal(claims?.preferred_username, 'bob');
    assert.deepEqual(claims?.groups, []);
  });
});
