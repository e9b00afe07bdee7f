import * as http from 'node:http';
import client from 'prom-client';

/**
 * Metrics of the NBD server, in prom-client's default registry: the service's
 * /metrics endpoint exposes them when `serve nbd` runs inside it, and
 * `serve nbd --metrics-listen` serves the same registry on its own.
 */
function counter(name: string, help: string, labelNames: string[] = []): client.Counter<string> {
  return (client.register.getSingleMetric(name) as client.Counter<string>) ?? new client.Counter({ name, help, labelNames });
}

function gauge(name: string, help: string): client.Gauge<string> {
  return (client.register.getSingleMetric(name) as client.Gauge<string>) ?? new client.Gauge({ name, help });
}

function histogram(name: string, help: string, buckets: number[]): client.Histogram<string> {
  return (client.register.getSingleMetric(name) as client.Histogram<string>) ?? new client.Histogram({ name, help, buckets });
}

export const nbdMetrics = {
  chunkFetchSeconds: histogram(
    'pilotlight_nbd_chunk_fetch_seconds',
    'Time of one ranged GET of a pack and the verification of the chunks it brought',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  ),
  chunksFetched: counter('pilotlight_nbd_chunks_fetched_total', 'Chunks fetched from the repository and verified'),
  cacheHits: counter('pilotlight_nbd_cache_hits_total', 'Chunk reads served from the verified-chunk cache'),
  cacheMisses: counter('pilotlight_nbd_cache_misses_total', 'Chunk reads that had to fetch from the repository'),
  cacheBytes: gauge('pilotlight_nbd_cache_bytes', 'Bytes held by the verified-chunk cache'),
  bytesServed: counter('pilotlight_nbd_bytes_served_total', 'Bytes returned to NBD clients by reads'),
  bytesWritten: counter('pilotlight_nbd_bytes_written_total', 'Bytes written by NBD clients to an overlay'),
  requests: counter('pilotlight_nbd_requests_total', 'NBD requests by command and result', ['command', 'result']),
  chunkErrors: counter('pilotlight_nbd_chunk_errors_total', 'Reads refused with EIO because a chunk could not be fetched or did not verify'),
  connections: gauge('pilotlight_nbd_connections', 'Open NBD connections'),
  connectionsTotal: counter('pilotlight_nbd_connections_total', 'NBD connections accepted'),
};

/** Serves the default registry on http://HOST:PORT/metrics; resolves with the bound port. */
export async function listenMetrics(host: string, port: number): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404).end('not found\n');
      return;
    }
    client.register.metrics().then(
      (text) => res.writeHead(200, { 'content-type': client.register.contentType }).end(text),
      (err: Error) => res.writeHead(500).end(`${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
