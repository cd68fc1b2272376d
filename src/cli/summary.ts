import type { ResolvedConfig } from '../config/settings.js';

/**
 * The fields of the start-up line: what is on. Redis is named by host only,
 * since its URL may carry a password.
 */
export function startupSummary(config: ResolvedConfig, version: string, listen: string, admin: string): Record<string, unknown> {
  return {
    version,
    listen,
    upstreams: config.upstreams.map((u) => u.name),
    offline: config.upstreams.filter((u) => u.offline).map((u) => u.name),
    storage: config.storageRoot,
    maxSize: config.storage.maxBytes ?? null,
    redis: config.redis ? redisHost(config.redis.url) : null,
    tls: config.listen.tls !== undefined,
    auth: config.auth !== undefined,
    admin,
  };
}

function redisHost(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return 'configured';
  }
}
