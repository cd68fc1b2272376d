import { Counter, type Registry } from './promClient.js';
import type { PeerEvents, PeerFailure } from '../registry/peerTelemetry.js';

/**
 * The peer metrics (README "Node-local cache for a cluster"): blob bytes
 * from peers and to peers, and peers skipped or penalised. Bytes from the
 * upstream are `pullthrough_upstream_fetched_bytes_total{kind="blob"}`.
 * Made before the mirror's registry exists (the peer parts are built first),
 * then registered into it.
 */
export class PeerMetrics implements PeerEvents {
  private readonly receivedBytes = new Counter({
    name: 'pullthrough_peer_received_bytes_total', help: 'Blob bytes received from peers.', registers: [],
  });
  private readonly servedBytes = new Counter({
    name: 'pullthrough_peer_served_bytes_total', help: 'Blob bytes sent to peers over the internal endpoint.', registers: [],
  });
  private readonly failures = new Counter({
    name: 'pullthrough_peer_failures_total', help: 'Peers skipped (gone, slow) or penalised (wrong-bytes).', labelNames: ['reason'], registers: [],
  });

  constructor() {
    for (const reason of ['gone', 'slow', 'wrong-bytes']) this.failures.inc({ reason }, 0);
  }

  register(registry: Registry): void {
    for (const metric of [this.receivedBytes, this.servedBytes, this.failures]) registry.registerMetric(metric);
  }

  received(bytes: number): void {
    this.receivedBytes.inc(bytes);
  }

  served(bytes: number): void {
    this.servedBytes.inc(bytes);
  }

  failed(reason: PeerFailure): void {
    this.failures.inc({ reason });
  }
}
