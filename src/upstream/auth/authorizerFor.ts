/**
 * The production wiring: one `ChallengeAuthorizer` per configured upstream.
 * Pass `authorizerFor` as `MirrorOptions.authorizerFor`.
 */
import type { Logger } from 'pino';
import { Agent } from '../undici.js';
import type { UpstreamSettings } from '../../config/settings.js';
import { systemClock, type Clock } from '../../registry/clock.js';
import type { UpstreamEvents } from '../../registry/telemetry.js';
import type { UpstreamAuthorizer } from './authorizer.js';
import { ChallengeAuthorizer } from './challengeAuthorizer.js';
import type { TokenCache } from './tokenCache.js';
import { EgressPolicy } from '../egress.js';

/**
 * The authorizer for `upstream`: learns Bearer or Basic from its 401s, with
 * its credentials and trusted realms. Every upstream gets one, credentials
 * or not, because anonymous pulls from Docker Hub and most registries need
 * tokens too. A token exchange may take as long as connecting plus waiting
 * for headers on an upstream request. `tokenCache` lets upstreams share one
 * bounded cache (keys include the upstream name; give it the same clock).
 * `clock` measures token expiry, the race window and the exchange timeout.
 * `events` is told of every token exchange.
 * Token requests connect only where the upstream's egress policy allows.
 */
export function authorizerFor(
  upstream: UpstreamSettings, logger: Logger, tokenCache?: TokenCache, clock: Clock = systemClock, events?: Pick<UpstreamEvents, 'tokenFetched'>,
): UpstreamAuthorizer {
  return new ChallengeAuthorizer({
    upstreamName: upstream.name,
    upstreamUrl: upstream.url,
    credentials: upstream.credentials,
    trustedRealms: upstream.trustedRealms,
    logger,
    tokenTimeoutMs: upstream.timeouts.connectMs + upstream.timeouts.headersMs,
    maxTokenResponseBytes: upstream.limits.tokenResponseBytes,
    // The realm and its redirects are the upstream's choice: the same egress policy as its own requests.
    dispatcher: new Agent({ connect: EgressPolicy.forUpstream(upstream).connector({ timeout: upstream.timeouts.connectMs }) }),
    clock,
    ...(tokenCache ? { tokenCache } : {}),
    ...(events ? { events } : {}),
  });
}
