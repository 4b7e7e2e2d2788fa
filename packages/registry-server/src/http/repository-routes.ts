/**
 * Dispatch of `/v2/<name>/...` requests after validation and an access check: GET/HEAD pull, else push;
 * upload sessions are the pusher's at every method (a session's status is part of pushing, as in CNCF
 * distribution).
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { RegistryError } from '../errors.js';
import type { Caller } from './access.js';
import { deleteBlob, getBlob } from './blob-handlers.js';
import { deleteManifest, getManifest, listReferrers, putManifest } from './manifest-handlers.js';
import { parseTarget } from './routes.js';
import type { Services } from './services.js';
import { listTags } from './tags-handler.js';
import { cancelUpload, patchUpload, putUpload, startUpload, uploadStatus } from './upload-handlers.js';

export function repositoryRoutes(s: Services): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    const target = parseTarget(req.path);
    if (!target) return next();
    const caller = res.locals.caller as Caller;
    const read = req.method === 'GET' || req.method === 'HEAD';
    s.access.check(caller, read && target.kind !== 'upload' ? 'pull' : 'push', target.name);
    const m = req.method;
    switch (target.kind) {
      case 'manifest':
        if (read) return getManifest(s, req, res, target.name, target.reference);
        if (m === 'PUT') return putManifest(s, req, res, target.name, target.reference);
        if (m === 'DELETE') return deleteManifest(s, res, target.name, target.reference);
        break;
      case 'blob':
        if (read) return getBlob(s, req, res, target.name, target.digest);
        if (m === 'DELETE') return deleteBlob(s, res, target.name, target.digest);
        break;
      case 'uploads':
        if (m === 'POST') return startUpload(s, req, res, target.name, caller);
        break;
      case 'upload':
        if (m === 'GET') return uploadStatus(s, res, target.name, target.id);
        if (m === 'PATCH') return patchUpload(s, req, res, target.name, target.id);
        if (m === 'PUT') return putUpload(s, req, res, target.name, target.id);
        if (m === 'DELETE') return cancelUpload(s, res, target.name, target.id);
        break;
      case 'tags':
        if (m === 'GET') return listTags(s, req, res, target.name);
        break;
      case 'referrers':
        if (read) return listReferrers(s, req, res, target.name, target.digest);
        break;
    }
    throw new RegistryError('UNSUPPORTED', 405, `${m} is not supported on this endpoint`);
  };
}
