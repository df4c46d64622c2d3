/// <reference lib="dom" />
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { launchChromium } from './browser-helpers.js';
import { connect, nextMessages, onCleanup, startBroker } from './helpers.js';

const bundle = readFileSync(new URL('../node_modules/mqtt/dist/mqtt.min.js', import.meta.url));

/** A page that connects to Heron over WebSocket with mqtt.js's browser bundle and lists what it receives. */
function page(wsUrl: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Heron browser test</title>
<script src="/mqtt.min.js"></script></head><body>
<p id="status">connecting</p><ul id="received"></ul>
<script>
  const client = mqtt.connect(${JSON.stringify(wsUrl)}, {
    clientId: 'browser-tab', protocolVersion: 5,
    will: { topic: 'wills/browser', payload: 'tab closed', qos: 1, retain: false },
  });
  client.on('connect', () => {
    client.subscribe('to/browser', { qos: 1 }, () => {
      document.getElementById('status').textContent = 'subscribed';
      client.publish('from/browser', 'hello from chromium', { qos: 1 });
    });
  });
  client.on('message', (topic, payload) => {
    const li = document.createElement('li');
    li.textContent = topic + ': ' + payload.toString();
    document.getElementById('received').appendChild(li);
  });
</script></body></html>`;
}

describe('a real browser over WebSocket', () => {
  it('Chromium with mqtt.js subscribes, publishes and shows a message from a Node client', async () => {
    const { broker, url } = await startBroker({ wsPort: 0 });
    const wsUrl = `ws://127.0.0.1:${broker.port('ws')}/mqtt`;
    const http = createServer((req, res) => {
      if (req.url === '/mqtt.min.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
      else res.writeHead(200, { 'content-type': 'text/html' }).end(page(wsUrl));
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => http.close(resolve)));
    const pageUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/`;

    const node = await connect(url, { protocolVersion: 4 });
    await node.subscribeAsync('from/browser', { qos: 1 });
    const fromBrowser = nextMessages(node, 1);

    const browser = await launchChromium();
    const tab = await browser.newPage();
    await tab.goto(pageUrl);
    await tab.waitForFunction(() => document.getElementById('status')?.textContent === 'subscribed');

    expect((await fromBrowser)[0].payload).toBe('hello from chromium');
    await node.publishAsync('to/browser', 'hello from node', { qos: 1 });
    await tab.waitForFunction(() =>
      document.getElementById('received')?.textContent?.includes('hello from node'),
    );
    expect(await tab.textContent('#received')).toBe('to/browser: hello from node');

    // Closing the tab drops the WebSocket without DISCONNECT: the will fires [MQTT-3.1.2-8].
    await node.subscribeAsync('wills/browser', { qos: 1 });
    const will = nextMessages(node, 1);
    await tab.close();
    expect((await will)[0].payload).toBe('tab closed');
  }, 60000);
});
