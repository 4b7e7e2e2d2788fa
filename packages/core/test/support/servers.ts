/** Servers a test suite starts on loopback, each ready before it is used, all closed after the suite. */
import { startServer, type RunningServer } from '../../src/serve/server.js';

/** Registers the closing hook in the calling suite; `serve` starts a server on a free port and gives its URL once loaded. */
export function useServers(): { serve: (options: Parameters<typeof startServer>[0]) => Promise<string> } {
  const servers: RunningServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });
  return {
    serve: async (options) => {
      const server = await startServer({ port: 0, ...options });
      servers.push(server);
      await server.ready;
      return server.url;
    },
  };
}

/** A JSON body POSTed to `path` of the server at `at`. */
export function postJson(at: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${at}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body) });
}
