/**
 * For the `ops` bench row only: serves plugins/metrics' text at GET /metrics on 127.0.0.1:<port>,
 * as the admin HTTP server will, so the generator can scrape it. Loaded with `--plugin`.
 */
import { createServer } from 'node:http';
import { definePlugin } from '../plugins/api.js';
import { createPrometheus } from '../plugins/metrics/index.js';

export default definePlugin<{ port: number }>({
  name: 'bench-metrics',
  async setup(api, options) {
    const prom = createPrometheus(api);
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.statusCode = 404;
        res.end();
        return;
      }
      prom.metrics().then(
        (text) => {
          res.setHeader('content-type', prom.contentType);
          res.end(text);
        },
        () => {
          res.statusCode = 500;
          res.end();
        },
      );
    });
    await new Promise<void>((resolve) => server.listen(options.port, '127.0.0.1', resolve));
    api.onClose(() => new Promise<void>((resolve) => server.close(() => resolve())));
  },
});
