/**
 * The `_reasonplug` extension: module search over manifest annotations and npm-style version
 * resolution, advertised through the OCI extension discovery endpoint.
 */
import type { Request, Response } from 'express';
import { nameInvalid, nameUnknown, RegistryError } from '../errors.js';
import { assertName } from '../names.js';
import { resolveVersion } from '../registry/resolve.js';
import type { Caller } from './access.js';
import { pageSize, query } from './request.js';
import type { Services } from './services.js';

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

export const discovery = {
  extensions: [
    {
      name: '_oci',
      url: 'https://github.com/opencontainers/distribution-spec/blob/main/extensions/_oci.md',
      description: 'Extension discovery',
      endpoints: ['_oci/ext/discover'],
    },
    {
      name: '_reasonplug',
      description:
        'reasonplug modules: search?task=&kind=&tokenizer=&n=&last= over manifest annotations; resolve?name=&range= with npm semantics',
      endpoints: ['_reasonplug/search', '_reasonplug/resolve'],
    },
  ],
};

export async function search(s: Services, req: Request, res: Response, caller: Caller): Promise<void> {
  if (!caller && s.access.enabled && !s.access.may(undefined, 'pull', 'any')) throw s.access.unauthorized('authentication required');
  const n = Math.min(pageSize(req) ?? DEFAULT_PAGE, MAX_PAGE);
  const filters = { task: query(req, 'task'), kind: query(req, 'kind'), tokenizer: query(req, 'tokenizer') };
  const last = query(req, 'last');
  const { results, more } = await s.index.search(
    { ...defined(filters), n, ...(last !== undefined ? { last } : {}) },
    (name) => s.access.may(caller, 'pull', name),
  );
  if (more && results.length > 0) {
    const next = new URLSearchParams({ ...defined(filters), n: String(n), last: results.at(-1)!.name });
    res.set('Link', `</v2/_reasonplug/search?${next}>; rel="next"`);
  }
  res.status(200).json({ results });
}

export async function resolve(s: Services, req: Request, res: Response, caller: Caller): Promise<void> {
  const name = query(req, 'name');
  if (name === undefined) throw nameInvalid('', 'name query parameter is required');
  s.access.check(caller, 'pull', assertName(name));
  const repo = await s.index.read(name);
  if (!repo) throw nameUnknown(name);
  const range = query(req, 'range') ?? '';
  if (range.length > 256) throw new RegistryError('UNSUPPORTED', 400, 'range too long');
  res.status(200).json(resolveVersion(repo, range));
}

function defined(o: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).filter((e): e is [string, string] => e[1] !== undefined));
}
