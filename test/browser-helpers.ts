/** Debian's chromium driven by playwright-core, closed after the test. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { type Browser, chromium } from 'playwright-core';
import { onCleanup } from './helpers.js';

export async function launchChromium(): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: execFileSync('which', ['chromium'], { encoding: 'utf8' }).trim(),
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  onCleanup(() => browser.close());
  assert.ok(browser.isConnected(), 'chromium started');
  return browser;
}
