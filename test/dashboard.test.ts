/// <reference lib="dom" />
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { launchChromium } from './browser-helpers.js';
import { connect, disconnected, onCleanup } from './helpers.js';
import { startAdmin, TOKEN } from './http-helpers.js';

const OUT = fileURLToPath(new URL('../test-output/', import.meta.url));

describe('the dashboard in Chromium', () => {
  it('asks for the token, shows connections and message rates moving, kicks a client from the table', async () => {
    await mkdir(OUT, { recursive: true });
    const a = await startAdmin();
    const browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${a.base}/`);

    // No token yet: the form; a wrong one is refused, the right one opens the dashboard.
    await page.fill('#token', 'wrong');
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#login-error', { state: 'visible' });
    await page.fill('#token', TOKEN);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#app', { state: 'visible' });
    await page.waitForFunction(() => document.getElementById('connections')?.textContent === '0');

    const sub = await connect(a.url, { protocolVersion: 5, clientId: 'dash-sub' });
    await sub.subscribeAsync('dash/#', { qos: 0 });
    const pub = await connect(a.url, { protocolVersion: 5, clientId: 'dash-pub' });
    // A shared group member, and a persistent session gone offline whose queue grows.
    const worker = await connect(a.url, { protocolVersion: 5, clientId: 'dash-worker' });
    await worker.subscribeAsync('$share/workers/dash/#', { qos: 1 });
    const offline = await connect(a.url, {
      protocolVersion: 5,
      clientId: 'dash-offline',
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    });
    await offline.subscribeAsync('dash/#', { qos: 1 });
    await offline.endAsync();
    await page.waitForFunction(() => document.getElementById('connections')?.textContent === '3');

    // A steady publisher: the rate tile, the chart's data and the top topics follow it.
    const timer = setInterval(() => pub.publish('dash/temperature', '21.5', { qos: 1 }), 20);
    onCleanup(() => clearInterval(timer));
    await page.waitForFunction(() => Number(document.getElementById('rate-in')?.textContent) > 5, undefined, {
      timeout: 15_000,
    });
    await page.waitForFunction(() => Number(document.getElementById('rate-out')?.textContent) > 5);
    await page.waitForFunction(() =>
      document.getElementById('top-topics')?.textContent?.includes('dash/temperature'),
    );
    // The clients table lists both, each with a kick button.
    await page.waitForSelector('button.kick[data-client="dash-sub"]');
    await page.waitForSelector('button.kick[data-client="dash-pub"]');
    await page.screenshot({ path: `${OUT}dashboard.png` });

    // Kick from the table: the client sees DISCONNECT 0x98, the table and the count follow.
    const reason = new Promise<number | undefined>((resolve) =>
      sub.on('disconnect', (p) => resolve(p.reasonCode)),
    );
    const gone = disconnected(a.broker, 'dash-sub');
    await page.click('button.kick[data-client="dash-sub"]');
    expect(await reason).toBe(0x98);
    await gone;
    await page.waitForSelector('button.kick[data-client="dash-sub"]', { state: 'detached' });
    await page.waitForFunction(() => document.getElementById('connections')?.textContent === '2');

    // Search narrows the table by client id prefix.
    await page.fill('#search', 'nobody-');
    await page.waitForSelector('button.kick[data-client="dash-pub"]', { state: 'detached' });
    await page.fill('#search', 'dash-p');
    await page.waitForSelector('button.kick[data-client="dash-pub"]');

    // Phone-sized: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= 391);
    await page.screenshot({ path: `${OUT}dashboard-phone.png`, fullPage: true });
    clearInterval(timer);
    expect(errors).toEqual([]);
  });
});
