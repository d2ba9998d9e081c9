/**
 * The package entry point (src/index.ts) exposes the model and its oracles: an image created, changed
 * by `step`, stored and loaded again through the public API reads like the raw-disk oracle.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.ts';
import { REPO_ROOT } from '../../src/io/repo-root.ts';

describe('public API', () => {
  it('create → step → store → load → read/map, checked against RawDisk and checkInvariants', () => {
    let img = api.createImage({ size: 4n << 20n, clusterSize: 4096 }).image;
    const oracle = new api.RawDisk({ size: 4n << 20n, clusterSize: 4096n, version: 3 });
    const ops = api.parseScript(JSON.stringify([
      { op: 'write', offset: 1000, length: 10000, pattern: 7 },
      { op: 'zero', offset: 4096, length: 4096 },
      { op: 'compress', offset: 65536, length: 4096, pattern: 3 },
      { op: 'snapshot-create', name: 's' },
      { op: 'write', offset: 0, length: 512, pattern: 9 },
      { op: 'snapshot-apply', name: 's' },
    ]));
    for (const op of ops) {
      const r = api.step(img, op);
      if (!r.ok) throw r.error;
      img = r.image;
      oracle.apply(op);
    }
    const closed = api.closeImage(img).image;
    const bytes = api.storeImage(closed);
    expect(api.checkInvariants(bytes)).toEqual([]);
    const again = api.loadImage(bytes);
    expect(Buffer.from(api.readGuest(again, 0n, 1 << 17)).equals(Buffer.from(oracle.read(0n, 1 << 17)))).toBe(true);
    expect(api.mapImage(again)).toEqual(api.mapImage(closed));
    const refused = api.step(again, { kind: 'write', offset: 4n << 20n, data: new Uint8Array(1) });
    expect(refused.ok ? 'ok' : refused.error).toBeInstanceOf(api.ModelError);
  });

  it('the bundle package.json exports (dist/index.mjs, scripts/build.mjs) has the same exports and reads the same', async () => {
    // Variable paths: the .mjs files have no type declarations, and the bundle may not exist yet.
    const build = (await import(pathToFileURL(join(REPO_ROOT, 'scripts/build.mjs')).href)) as { ensureBuilt(): Promise<string[]> };
    await build.ensureBuilt();
    const dist = (await import(pathToFileURL(join(REPO_ROOT, 'dist/index.mjs')).href)) as typeof api;
    expect(Object.keys(dist).sort()).toEqual(Object.keys(api).sort());
    let img = dist.createImage({ size: 1n << 20n, clusterSize: 4096 }).image;
    const r = dist.step(img, { kind: 'write', offset: 5000n, data: new Uint8Array(3000).fill(7) });
    if (!r.ok) throw r.error;
    img = r.image;
    const buf = new Uint8Array(8192).fill(0xa5);
    dist.readGuestInto(img, 4096n, 8192, buf, 0);
    const want = new Uint8Array(8192);
    want.fill(7, 5000 - 4096, 8000 - 4096);
    expect(Buffer.from(buf).equals(Buffer.from(want))).toBe(true);
  });
});
