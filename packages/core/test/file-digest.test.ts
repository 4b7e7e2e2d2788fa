import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cachedHashFile, checkFile, fileDigestStats, RACY_MS } from '../src/modules/file-digest.js';
import { testDir } from './support/models.js';
import { flipKeepingStat } from './support/tamper.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const good = Buffer.from('the quick brown fox jumps over the lazy dog'.repeat(100));

describe('file digests (stat records)', function () {
  this.timeout(20_000);
  let dir: string;
  let records: string;
  const path = () => join(dir, 'f.bin');

  before(async () => {
    dir = testDir('digest');
    records = join(dir, 'records');
    await writeFile(path(), good);
    await utimes(path(), 1_700_000_000, 1_700_000_000);
    // A file changed within RACY_MS is hashed but not recorded: its timestamps could miss a write in the same tick.
    const h0 = fileDigestStats.hashed;
    expect((await cachedHashFile(path(), undefined, records)).sha256).to.equal(sha(good));
    expect(await readdir(records).catch(() => [])).to.deep.equal([]);
    expect(fileDigestStats.hashed).to.equal(h0 + 1);
    await new Promise((r) => setTimeout(r, RACY_MS + 100));
  });

  it('a record that cannot be put in place leaves no temp file behind, and the digest is still right', async () => {
    const blocked = join(dir, 'blocked-records');
    await cachedHashFile(path(), undefined, blocked);
    const [name] = await readdir(blocked);
    // A directory where the record goes: the record's temp file is written, but cannot be renamed over it.
    await rm(join(blocked, name!));
    await mkdir(join(blocked, name!, 'in-the-way'), { recursive: true });
    expect((await cachedHashFile(path(), undefined, blocked)).sha256).to.equal(sha(good));
    expect(await readdir(blocked)).to.deep.equal([name]);
  });

  it('a damaged record does not condemn a good file when checked against its digest', async () => {
    await cachedHashFile(path(), undefined, records);
    const [name] = await readdir(records);
    const record = join(records, name!);
    const text = await readFile(record, 'utf8');
    // A record that still parses but names another digest.
    await writeFile(record, text.replace(/"sha256":"(.)/, (_m, c: string) => `"sha256":"${c === '0' ? '1' : '0'}`));
    expect((await cachedHashFile(path(), undefined, records)).sha256).to.not.equal(sha(good));
    expect((await checkFile(path(), sha(good), undefined, records)).sha256).to.equal(sha(good));
    expect((await cachedHashFile(path(), undefined, records)).sha256, 'the record was replaced').to.equal(sha(good));
  });

  it('hashes an unchanged file once, and sees bytes changed with size, inode and mtime put back', async () => {
    expect((await cachedHashFile(path(), undefined, records)).sha256).to.equal(sha(good));
    const h1 = fileDigestStats.hashed;
    expect((await cachedHashFile(path(), undefined, records)).sha256).to.equal(sha(good));
    expect(fileDigestStats.hashed, 'answered from the record').to.equal(h1);

    await flipKeepingStat(path(), 100);
    const bad = sha(await readFile(path()));
    expect(bad).to.not.equal(sha(good));
    expect((await cachedHashFile(path(), undefined, records)).sha256, 'ctime moved, so the record no longer holds').to.equal(bad);
  });
});
