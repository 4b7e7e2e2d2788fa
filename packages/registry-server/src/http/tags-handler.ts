/**
 * `GET /v2/<name>/tags/list?n=&last=` and `GET /v2/_catalog?n=&last=` (the repositories the caller may pull, as CNCF
 * distribution lists them): lexical order, `Link` to the next page.
 */
import type { Request, Response } from 'express';
import { nameUnknown } from '../errors.js';
import { pageSize, query } from './request.js';
import type { Services } from './services.js';
import type { Caller } from './access.js';

export async function listTags(s: Services, req: Request, res: Response, name: string): Promise<void> {
  const all = await s.tags.list(name);
  if (all.length === 0 && !(await s.manifests.repositoryExists(name))) throw nameUnknown(name);
  res.status(200).json({ name, tags: page(req, res, all, `/v2/${name}/tags/list`) });
}

export async function listCatalog(s: Services, req: Request, res: Response, caller: Caller): Promise<void> {
  if (!caller && s.access.enabled && !s.access.may(undefined, 'pull', 'any')) throw s.access.unauthorized('authentication required');
  const visible = (await s.manifests.repositories()).filter((name) => s.access.may(caller, 'pull', name));
  res.status(200).json({ repositories: page(req, res, visible, '/v2/_catalog') });
}

/** The page of sorted `all` that `n` and `last` ask for, with a `Link` to `path`'s next page when more remain. */
function page(req: Request, res: Response, all: string[], path: string): string[] {
  const n = pageSize(req);
  const last = query(req, 'last');
  const after = last === undefined ? all : all.filter((t) => t > last);
  const taken = n === undefined ? after : after.slice(0, n);
  if (taken.length > 0 && taken.length < after.length) {
    res.set('Link', `<${path}?n=${n}&last=${encodeURIComponent(taken.at(-1)!)}>; rel="next"`);
  }
  return taken;
}
