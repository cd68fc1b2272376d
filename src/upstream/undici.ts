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

const load = createRequire(import.meta.url);

/** undici's module files, relative to the package, for each export here. */
const UNDICI_MODULES = {
  Agent: 'undici/lib/dispatcher/agent.js',
  Client: 'undici/lib/dispatcher/client.js',
  Pool: 'undici/lib/dispatcher/pool.js',
  Dispatcher: 'undici/lib/dispatcher/dispatcher.js',
  api: 'undici/lib/api/index.js',
  buildConnector: 'undici/lib/core/connect.js',
  global: 'undici/lib/global.js',
} as const;

export type { Dispatcher };
export const Agent: typeof Undici.Agent = load(UNDICI_MODULES.Agent);
export type Agent = Undici.Agent;
export const Client: typeof Undici.Client = load(UNDICI_MODULES.Client);
export type Client = Undici.Client;
export const Pool: typeof Undici.Pool = load(UNDICI_MODULES.Pool);
export type Pool = Undici.Pool;
export const buildConnector: typeof Undici.buildConnector = load(UNDICI_MODULES.buildConnector);
/** `buildConnector`'s options and the connector it returns. */
export type ConnectorOptions = Undici.buildConnector.BuildOptions;
export type Connector = Undici.buildConnector.connector;
export const { getGlobalDispatcher } = load(UNDICI_MODULES.global) as Pick<typeof Undici, 'getGlobalDispatcher'>;

// What undici's index does before anything else: the request, stream, pipeline, upgrade and connect methods of
// every dispatcher live in lib/api and are copied onto Dispatcher's prototype there. Copying them again when
// the index is loaded as well (a dependency's import) puts the same functions back.
Object.assign((load(UNDICI_MODULES.Dispatcher) as typeof Undici.Dispatcher).prototype, load(UNDICI_MODULES.api));

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
