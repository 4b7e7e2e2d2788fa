/**
 * An fsck of the registry's storage, written from the layout alone (not from the registry's own code):
 * every blob hashes to its digest, every link points at bytes that exist, every manifest's references are
 * held with the sizes it claims (a client may unlink them from the repository since, as on CNCF
 * distribution, but the bytes stay), every tag names a manifest of its repository, every referrer listed is a
 * manifest of its repository whose subject it is listed under, every version's release record is a digest
 * that its tag, where it still exists, names too, and every upload part matches the digest recorded beside it.
 */
import { createHash } from 'node:crypto';
import type { StorageDriver } from '../../src/storage/driver.js';

export interface StorageReport {
  blobs: number;
  manifests: number;
  tags: number;
  uploadParts: number;
  /** One line per broken promise; empty when the storage verifies. */
  problems: string[];
}

const HEX = '[0-9a-f]{64}';
const BLOB = new RegExp(`^blobs/sha256/([0-9a-f]{2})/(${HEX})/data$`);
const REPO_KEY = /^repositories\/(.+?)\/(_layers|_manifests|_uploads)\/(.+)$/;

async function hashOf(storage: StorageDriver, key: string): Promise<string | undefined> {
  const body = await storage.read(key);
  if (!body) return undefined;
  const hash = createHash('sha256');
  for await (const c of body) hash.update(c as Buffer);
  return 'sha256:' + hash.digest('hex');
}

const blobKey = (hex: string) => `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;

export async function verifyStorage(storage: StorageDriver): Promise<StorageReport> {
  const problems: string[] = [];
  const report: StorageReport = { blobs: 0, manifests: 0, tags: 0, uploadParts: 0, problems };
  const sizes = new Map<string, number>();

  for await (const o of storage.list('blobs')) {
    const m = BLOB.exec(o.key);
    if (!m || m[1] !== m[2]!.slice(0, 2)) {
      problems.push(`stray object under blobs/: ${o.key}`);
      continue;
    }
    const actual = await hashOf(storage, o.key);
    if (actual !== `sha256:${m[2]}`) problems.push(`blob ${m[2]} hashes to ${actual}`);
    sizes.set(`sha256:${m[2]}`, o.size);
    report.blobs++;
  }

  const keys: string[] = [];
  for await (const o of storage.list('repositories')) keys.push(o.key);
  const present = new Set(keys);
  const parts = new Map<string, { offset: number; size: number; file: string; dir: string }[]>();

  for (const key of keys) {
    const m = REPO_KEY.exec(key);
    if (!m) {
      problems.push(`stray object under repositories/: ${key}`);
      continue;
    }
    const [, name, area, rest] = m as unknown as [string, string, string, string];
    const base = `repositories/${name}`;
    if (area === '_layers') {
      const l = new RegExp(`^sha256/(${HEX})/link$`).exec(rest);
      if (!l) problems.push(`stray layer key ${key}`);
      else if ((await storage.get(key))?.toString() !== `sha256:${l[1]}`) problems.push(`layer link ${key} does not name its digest`);
      else if (!sizes.has(`sha256:${l[1]}`)) problems.push(`${name} links blob ${l[1]}, which is absent`);
    } else if (area === '_manifests') {
      const rev = new RegExp(`^revisions/sha256/(${HEX})/link$`).exec(rest);
      const tag = /^tags\/([^/]+)\/current\/link$/.exec(rest);
      const release = /^tags\/([^/]+)\/release\/link$/.exec(rest);
      const referrer = new RegExp(`^referrers/sha256/(${HEX})/(${HEX})/link$`).exec(rest);
      if (referrer) {
        const [, subject, hex] = referrer as unknown as [string, string, string];
        const listed = JSON.parse((await storage.get(key))?.toString() ?? '{}') as { digest?: string };
        const manifest = JSON.parse((await storage.get(blobKey(hex)))?.toString() ?? '{}') as { subject?: { digest?: string } };
        if (listed.digest !== `sha256:${hex}`) problems.push(`referrer link ${key} lists ${listed.digest}`);
        else if (!present.has(`${base}/_manifests/revisions/sha256/${hex}/link`)) problems.push(`${name} lists ${hex} as a referrer of ${subject}, but has no such manifest`);
        else if (manifest.subject?.digest !== `sha256:${subject}`) problems.push(`${name} lists ${hex} as a referrer of ${subject}, but its subject is ${manifest.subject?.digest}`);
      } else if (rev) {
        report.manifests++;
        await checkManifest(storage, name, rev[1]!, sizes, problems);
      } else if (tag) {
        report.tags++;
        const digest = (await storage.get(key))?.toString() ?? '';
        const hex = /^sha256:([0-9a-f]{64})$/.exec(digest)?.[1];
        if (!hex || !present.has(`${base}/_manifests/revisions/sha256/${hex}/link`)) problems.push(`tag ${name}:${tag[1]} names ${digest}, not a manifest of ${name}`);
      } else if (release) {
        // Outlives its tag and even its manifest (a deleted version), so it names only a digest.
        const digest = (await storage.get(key))?.toString() ?? '';
        const current = (await storage.get(`${base}/_manifests/tags/${release[1]}/current/link`))?.toString();
        if (!/^sha256:[0-9a-f]{64}$/.test(digest)) problems.push(`version ${name}:${release[1]} was released as ${digest}, not a digest`);
        else if (current !== undefined && current !== digest) problems.push(`version ${name}:${release[1]} was released as ${digest}, but its tag names ${current}`);
      } else {
        problems.push(`stray manifest key ${key}`);
      }
    } else {
      const u = /^([0-9a-f-]{36})\/(data|sha256)\/((\d{16})\.[0-9a-f-]{36})$/.exec(rest);
      if (u?.[2] === 'data') {
        const dir = `${base}/_uploads/${u[1]}`;
        const list = parts.get(dir) ?? [];
        list.push({ offset: Number(u[4]), size: (await storage.stat(key)) ?? -1, file: u[3]!, dir });
        parts.set(dir, list);
      } else if (!u && !/^[0-9a-f-]{36}\/startedat$/.test(rest)) {
        problems.push(`stray upload key ${key}`);
      }
    }
  }

  for (const [dir, list] of parts) {
    list.sort((a, b) => a.offset - b.offset);
    let expected = 0;
    for (const p of list) {
      report.uploadParts++;
      if (p.offset !== expected) problems.push(`upload ${dir}: part at ${p.offset}, expected ${expected}`);
      expected = p.offset + p.size;
      const recorded = (await storage.get(`${dir}/sha256/${p.file}`))?.toString();
      if (recorded !== undefined && recorded !== (await hashOf(storage, `${dir}/data/${p.file}`))) problems.push(`upload ${dir}: part ${p.file} does not match its digest`);
    }
  }
  return report;
}

async function checkManifest(
  storage: StorageDriver,
  name: string,
  hex: string,
  sizes: Map<string, number>,
  problems: string[],
): Promise<void> {
  const where = `manifest ${name}@sha256:${hex}`;
  const bytes = await storage.get(blobKey(hex));
  if (!bytes) {
    problems.push(`${where}: its bytes are absent`);
    return;
  }
  let doc: { config?: Ref; layers?: Ref[]; manifests?: Ref[] };
  try {
    doc = JSON.parse(bytes.toString());
  } catch {
    problems.push(`${where}: not JSON`);
    return;
  }
  for (const ref of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? []), ...(doc.manifests ?? [])]) {
    if (!/^sha256:[0-9a-f]{64}$/.test(ref.digest ?? '')) problems.push(`${where}: references ${ref.digest}`);
    else if (!sizes.has(ref.digest!)) problems.push(`${where}: references ${ref.digest}, which is absent`);
    else if (sizes.get(ref.digest!) !== ref.size) problems.push(`${where}: ${ref.digest} is ${sizes.get(ref.digest!)} bytes, descriptor says ${ref.size}`);
  }
}

interface Ref {
  digest?: string;
  size?: number;
}
