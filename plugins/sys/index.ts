import { definePlugin } from '../api.js';
import { LOAD_WINDOWS, LoadAverage } from './load.js';
import { sysTopics } from './topics.js';

export interface SysOptions {
  /** Seconds between updates; 0 disables `$SYS`. */
  interval: number;
}

/** How often a broker still restoring is checked for the first update, in ms. */
const READY_POLL_MS = 25;

/**
 * `$SYS` topics (Mosquitto's names, plus `$SYS/broker/heron/...`): retained, published through
 * api.publish every `interval` seconds, each only when its value changed. Delivery goes through
 * authorizeDeliver like any message, so an ACL decides who reads them; clients cannot publish
 * under `$SYS/` (the broker refuses it).
 */
export default definePlugin<SysOptions>({
  name: 'sys',
  setup(api, options) {
    const interval = options?.interval ?? 10;
    if (!(interval > 0)) return;
    const last = new Map<string, string>();
    const loads = {
      'messages/received': new LoadAverage(),
      'messages/sent': new LoadAverage(),
      'bytes/received': new LoadAverage(),
      'bytes/sent': new LoadAverage(),
      connections: new LoadAverage(),
    };
    let lastAt = 0;

    const send = (topic: string, payload: string) => {
      if (last.get(topic) === payload) return;
      last.set(topic, payload);
      api.publish({ topic, payload, qos: 0, retain: true });
    };

    const update = () => {
      const s = api.stats();
      if (!s.ready) return false;
      const now = Date.now();
      const dt = lastAt === 0 ? 0 : (now - lastAt) / 1000;
      lastAt = now;
      loads['messages/received'].update(s.messages.received, dt);
      loads['messages/sent'].update(s.messages.sent, dt);
      loads['bytes/received'].update(s.bytes.received, dt);
      loads['bytes/sent'].update(s.bytes.sent, dt);
      loads.connections.update(s.clients.connectsTotal, dt);
      for (const [topic, payload] of sysTopics(
        s,
        api.groups(),
        process.memoryUsage().heapUsed,
        api.queues.list(),
      ))
        send(topic, payload);
      for (const [name, load] of Object.entries(loads))
        for (let i = 0; i < LOAD_WINDOWS.length; i++)
          send(`$SYS/broker/load/${name}/${LOAD_WINDOWS[i][0]}`, load.values[i].toFixed(2));
      return true;
    };

    const tick = () => {
      try {
        update();
      } catch (err) {
        api.log.error({ err }, '$SYS update failed');
      }
    };
    // The first update as soon as the broker is restored, then every interval.
    let first: NodeJS.Timeout | undefined;
    const tryFirst = () => {
      first = undefined;
      try {
        if (!update()) {
          first = setTimeout(tryFirst, READY_POLL_MS);
          first.unref();
        }
      } catch (err) {
        api.log.error({ err }, '$SYS update failed');
      }
    };
    first = setTimeout(tryFirst, 0);
    first.unref();
    const timer = setInterval(tick, interval * 1000);
    timer.unref();
    api.onClose(() => {
      clearInterval(timer);
      if (first) clearTimeout(first);
    });
  },
});
