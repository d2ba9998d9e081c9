/**
 * Hostile images through the driver: images the model makes (compressed clusters, snapshots,
 * extended L2, lazy refcounts) mutated by the one mutation engine (bit flips in metadata, boundary
 * values in header/table/snapshot fields, truncation), then opened writable on a memory backend and
 * used — info, map, bounded reads, a write, check, repair, close. Whatever fails must fail with a
 * typed error (DiskError, ModelError, OpenError, Qcow2FormatError); nothing may escape as a
 * TypeError/RangeError, and no ReadPending may leak out of the driver.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memoryBackend, Qcow2Disk } from '../../src/disk/index.ts';
import '../../src/io/index.ts';
import { createImage, step, storeImage, type CreateOptions, type Op } from '../../src/model/index.ts';
import { applyMutations, locateMetadata, mutationsArbitrary } from '../support/mutations.ts';
import { readPlan, DEFAULT_LIMITS, typedErrorKey } from '../support/hostile-harness.ts';
import { pattern } from '../support/model-configs.ts';

/** Source images: small, with every kind of metadata the mutations can hit. */
function sourceImage(opts: Partial<CreateOptions>, snapshot = true): Uint8Array {
  const cs = opts.clusterSize ?? 4096;
  let img = createImage({ size: 4n * 1024n * 1024n, clusterSize: 4096, ...opts }).image;
  for (const op of opsFor(cs)) {
    if (!snapshot && op.kind === 'snapshotCreate') continue;
    const r = step(img, op);
    if (!r.ok) throw new Error(`source image: ${op.kind} refused: ${r.error.message}`);
    img = r.image;
  }
  return storeImage(img);
}

const opsFor = (cs: number): readonly Op[] => [
  { kind: 'write', offset: 0n, data: pattern(0n, 20_000, 3) },
  { kind: 'writeCompressed', offset: 65536n, data: new Uint8Array(cs).fill(5) },
  { kind: 'snapshotCreate', name: 'snap', dateSec: 1, dateNsec: 0 },
  { kind: 'write', offset: 8192n, data: pattern(8192n, 3000, 9) },
  { kind: 'writeZeroes', offset: 1n << 20n, length: 16384n, unmap: true },
];

const SOURCES = [
  sourceImage({}),
  sourceImage({ extendedL2: true, clusterSize: 16384, compressionType: 'zstd' }),
  sourceImage({ lazyRefcounts: true, refcountBits: 4 }, false),
  sourceImage({ compat: '0.10' }),
];

/** `e` as a typed error key (the driver's DiskError counts), or a failure. */
function typed(e: unknown): string {
  const key = typedErrorKey(e) ?? (e instanceof Error && e.name === 'DiskError' ? `DiskError:${String((e as { code?: unknown }).code)}` : undefined);
  if (key === undefined) throw new Error(`untyped error escaped the driver: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
  return key;
}

async function exercise(bytes: Uint8Array): Promise<string[]> {
  const outcomes: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
      outcomes.push(`${what}:ok`);
    } catch (e) {
      outcomes.push(`${what}:${typed(e)}`);
    }
  };
  let disk: Qcow2Disk | undefined;
  await attempt('open', async () => {
    disk = await Qcow2Disk.open(memoryBackend(bytes), { backing: 'none', dataFile: memoryBackend(), cacheBytes: 256 * 1024 });
  });
  if (disk === undefined) return outcomes;
  const d = disk;
  await attempt('info', () => d.info());
  const cs = 4096;
  let extents;
  await attempt('map', async () => {
    extents = await d.map(0n, d.size < 64n << 20n ? d.size & ~511n : 64n << 20n);
  });
  for (const r of readPlan(d.size, cs, extents, { ...DEFAULT_LIMITS, maxClusters: 64 })) await attempt('read', () => d.read(r.offset, r.length));
  await attempt('write', () => d.write(0n, new Uint8Array(Math.min(1000, Number(d.size))).fill(7)));
  await attempt('check', () => d.check());
  await attempt('repair', () => d.repair('all'));
  await attempt('close', () => d.close());
  return outcomes;
}

describe('hostile images through the driver give only typed errors', () => {
  it('mutated model images: open, info, map, reads, write, check, repair, close', async () => {
    const layouts = SOURCES.map((b, i) => ({ bytes: b, layout: locateMetadata(`source${i}`, b) }));
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...layouts).chain((s) => mutationsArbitrary(s.layout).map((m) => ({ s, m }))),
        async ({ s, m }) => {
          const outcomes = await exercise(applyMutations(s.bytes, m));
          for (const o of outcomes) seen.set(o, (seen.get(o) ?? 0) + 1);
        },
      ),
      { numRuns: Number(process.env.QCOW2_DISK_HOSTILE_RUNS ?? 150) },
    );
    // The generator reaches both outcomes: images the driver uses, and images it refuses.
    expect([...seen.keys()].some((k) => k === 'write:ok')).toBe(true);
    expect([...seen.keys()].some((k) => k.startsWith('open:') && k !== 'open:ok')).toBe(true);
  });
});
