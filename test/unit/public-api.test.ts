/**
 * The package's entry points from the sources: the core (src/index.ts) creates, changes, stores and
 * loads an image that reads like the raw-disk oracle of the testing entry (src/testing.ts); the Node
 * entry (src/node.ts) is the core plus the file layer, with the same module instances. The built and
 * packed package is checked from the outside by test/qemu/package.test.ts.
 */
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.ts';
import * as nodeApi from '../../src/node.ts';
import * as testing from '../../src/testing.ts';

describe('public API', () => {
  it('create → step → store → load → read/map, checked against RawDisk and checkInvariants', () => {
    let img = api.createImage({ size: 4n << 20n, clusterSize: 4096 }).image;
    const oracle = new testing.RawDisk({ size: 4n << 20n, clusterSize: 4096n, version: 3 });
    const ops = testing.parseScript(JSON.stringify([
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
    expect(testing.checkInvariants(bytes)).toEqual([]);
    const again = api.loadImage(bytes);
    expect(Buffer.from(api.readGuest(again, 0n, 1 << 17)).equals(Buffer.from(oracle.read(0n, 1 << 17)))).toBe(true);
    expect(api.mapImage(again)).toEqual(api.mapImage(closed));
    const refused = api.step(again, { kind: 'write', offset: 4n << 20n, data: new Uint8Array(1) });
    expect(refused.ok ? 'ok' : refused.error).toBeInstanceOf(api.ModelError);
  });

  it('the Node entry re-exports the whole core (the same bindings) and adds the file layer', () => {
    for (const [name, value] of Object.entries(api)) expect(nodeApi[name as keyof typeof nodeApi], name).toBe(value);
    expect(typeof nodeApi.openImageFile).toBe('function');
    expect(Object.keys(nodeApi).length).toBeGreaterThan(Object.keys(api).length);
    // The testing entry does not repeat the core: its users import both.
    expect(Object.keys(testing).filter((k) => k in api)).toEqual([]);
  });
});
