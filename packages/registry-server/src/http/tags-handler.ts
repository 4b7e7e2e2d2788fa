/** `GET /v2/<name>/tags/list?n=&last=`: lexical order, `Link` to the next page. */
import type { Request, Response } from 'express';
import { nameUnknown } from '../errors.js';
import { pageSize, query } from './request.js';
import type { Services } from './services.js';

export async function listTags(s: Services, req: Request, res: Response, name: string): Promise<void> {
  const n = pageSize(req);
  const last = query(req, 'last');
  const all = await s.tags.list(name);
  if (all.length === 0 && !(await s.manifests.repositoryExists(name))) throw nameUnknown(name);
  const after = last === undefined ? all : all.filter((t) => t > last);
  const page = n === undefined ? after : after.slice(0, n);
  if (page.length > 0 && page.length < after.length) {
    res.set('Link', `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(page.at(-1)!)}>; rel="next"`);
  }
  res.status(200).json({ name, tags: page });
}
