/**
 * The parts of undici the mirror uses (its dispatchers, connector and
 * `request`), loaded from undici's own modules rather than its index. The
 * index also loads fetch, WebSocket, EventSource, CacheStorage, cookies and
 * the mock agents at once: about 80 modules none of ours uses, and a fifth
 * of the CPU a command spends (0.12 of 0.59 CPU-seconds for `pullthrough
 * gc --dry-run` on a 2-core machine), paid again by every process that
 * imports undici. Everything here is the very object the
 * index exports (test/upstream/undici.test.ts checks that against the
 * installed undici), so an upgrade that moves a module fails that test, not
 * a pull. Import undici through this module only.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';
import type { Dispatcher } from 'undici';

// undici's own module files (it has no exports map to keep them from us).
const load = createRequire(import.meta.url);

export type { Dispatcher };
export const Agent: typeof Undici.Agent = load('undici/lib/dispatcher/agent.js');
export type Agent = Undici.Agent;
export const Client: typeof Undici.Client = load('undici/lib/dispatcher/client.js');
export type Client = Undici.Client;
export const Pool: typeof Undici.Pool = load('undici/lib/dispatcher/pool.js');
export type Pool = Undici.Pool;
export const buildConnector: typeof Undici.buildConnector = load('undici/lib/core/connect.js');
/** `buildConnector`'s options and the connector it returns. */
export type ConnectorOptions = Undici.buildConnector.BuildOptions;
export type Connector = Undici.buildConnector.connector;
export const { getGlobalDispatcher } = load('undici/lib/global.js') as Pick<typeof Undici, 'getGlobalDispatcher'>;

// What undici's index does before anything else: the request, stream, pipeline, upgrade and connect methods of
// every dispatcher live in lib/api and are copied onto Dispatcher's prototype there. Copying them again when
// the index is loaded as well (a dependency's import) puts the same functions back.
Object.assign((load('undici/lib/dispatcher/dispatcher.js') as typeof Undici.Dispatcher).prototype, load('undici/lib/api/index.js'));

/** `request`'s options: a dispatcher's, with the origin and path taken from the URL. */
export type UrlRequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'>
  & { readonly method?: Dispatcher.HttpMethod; readonly dispatcher?: Dispatcher };

/**
 * undici's `request(url, options)`: `url`'s origin, path and query on
 * `options.dispatcher` (default the global one), GET unless a method is
 * given (PUT when there is a body, as undici has it).
 */
export function request(url: string | URL, options: UrlRequestOptions = {}): Promise<Dispatcher.ResponseData> {
  const { dispatcher = getGlobalDispatcher(), method, ...rest } = options;
  const target = typeof url === 'string' ? new URL(url) : url;
  return dispatcher.request({ ...rest, origin: target.origin, path: `${target.pathname}${target.search}`, method: method ?? (rest.body ? 'PUT' : 'GET') });
}
