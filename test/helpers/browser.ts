// Chromium for the browser tests (playwright-core drives the system's Chromium; the tests skip without one).
import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';

export const CHROMIUM = process.env.RINGFENCE_CHROMIUM ?? '/usr/bin/chromium';

/** A browser test's `skip`: false when Chromium is there, otherwise why the test does not run. */
export const NO_CHROMIUM: false | string = existsSync(CHROMIUM)
  ? false
  : `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;

/** Starts a headless Chromium (playwright-core is loaded only then). */
export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}
