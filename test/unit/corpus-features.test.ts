/**
 * Every valid corpus family (src/corpus/valid-families.ts) makes a case with the features it declares
 * (Family.features, src/corpus/features.ts tags read back from the image's bytes) for every seed and
 * index, and every invalid family (src/corpus/invalid-families.ts) makes a case at all — properties
 * over seeds, through the families' recipes and the model alone (no QEMU; QEMU confirms the
 * checked-in corpus in test/qemu/corpus.test.ts).
 *
 * Found as: `qcow2-ref corpus --out DIR --seed 7 --count 60` failed at compressed-zlib.0026, whose
 * random ops left no two compressed clusters in one host cluster; such families now append ops that
 * make their feature by construction when the random ones did not (ValidRecipe.guarantee). The same
 * command then failed at invalid/unaligned-l2-entry.0022 (eight random bases of 512-byte clusters).
 *
 * Runs per family: RANDOM_RUNS for the families whose features come from random ops, fewer for those
 * that get theirs from the create options (the same for every seed) and for the large ones (clusters
 * of 128 KiB and more, a 2 MiB file, a 4 GiB disk whose content is hashed). QCOW2_CORPUS_RUNS scales
 * RANDOM_RUNS.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { caseId } from '../../src/corpus/family.ts';
import { caseStream } from '../../src/corpus/generate.ts';
import { INVALID_FAMILIES } from '../../src/corpus/invalid-families.ts';
import { VALID_FAMILIES } from '../../src/corpus/valid-families.ts';

const RANDOM_RUNS = Number(process.env['QCOW2_CORPUS_RUNS'] ?? 300);
/** Runs per invalid family (a few milliseconds each). */
const INVALID_RUNS = Math.max(1, Math.floor(RANDOM_RUNS / 5));
/** Families whose declared features depend on what random ops leave behind. */
const RANDOM_FEATURES = new Set(['compressed-zlib', 'compressed-zstd', 'zero-plain', 'zero-alloc', 'snapshots', 'extended-l2', 'extended-l2-prealloc', 'l1-multi-cluster', 'v2']);
/** Families with large files or disks: a few seeds. */
const LARGE = new Set(['cluster-128k', 'cluster-256k', 'cluster-512k', 'cluster-1m', 'cluster-2m', 'refcount-table-grown', 'size-above-4g']);

/** Seed and index of cases that once lacked their family's features (replayed first). */
const KNOWN_CASES: Readonly<Record<string, readonly [string, number][]>> = {
  // `qcow2-ref corpus --seed 7 --count 60`: no two compressed clusters shared a host cluster.
  'compressed-zlib': [['7', 26]],
  // The same command: eight bases of 512-byte clusters, where no offset can be unaligned.
  'invalid/unaligned-l2-entry': [['7', 22]],
};

function runsFor(name: string): number {
  if (LARGE.has(name)) return name === 'size-above-4g' ? 1 : 3;
  return RANDOM_FEATURES.has(name) ? RANDOM_RUNS : Math.max(1, Math.floor(RANDOM_RUNS / 6));
}

describe('valid corpus families make their declared features for every seed', () => {
  it('the families that are about a feature declare it', () => {
    const declared = new Map(VALID_FAMILIES.map((f) => [f.name, f.features ?? []]));
    expect(declared.get('compressed-zlib')).toEqual(expect.arrayContaining(['l2:compressed', 'compressed:shared-host-cluster']));
    expect(declared.get('zero-plain')).toContain('l2:zero-plain');
    expect(declared.get('cluster-64k')).toContain('cluster-size:65536');
    for (const name of RANDOM_FEATURES) expect(declared.get(name)?.length ?? 0, name).toBeGreaterThan(0);
  });

  for (const family of VALID_FAMILIES) {
    it(`${family.name}: ${(family.features ?? []).join(', ') || '(declares none: generation succeeds)'}`, () => {
      fc.assert(
        fc.property(fc.string({ minLength: 1, maxLength: 8 }), fc.nat(9999), (seed, index) => {
          const out = family.generate({ prng: caseStream(seed, family.name, index), id: caseId(family.name, index) });
          for (const tag of family.features ?? []) expect(out.entry.features, `seed ${JSON.stringify(seed)} index ${index}`).toContain(tag);
        }),
        { numRuns: runsFor(family.name), examples: [...(KNOWN_CASES[family.name] ?? [])] },
      );
    }, 600_000);
  }
});

describe('invalid corpus families make a case for every seed', () => {
  it.each(INVALID_FAMILIES.map((f) => [f.name, f] as const))('%s', (_name, family) => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 8 }), fc.nat(9999), (seed, index) => {
        const out = family.generate({ prng: caseStream(seed, family.name, index), id: caseId(family.name, index) });
        expect(out.entry.valid).toBe(false);
      }),
      { numRuns: INVALID_RUNS, examples: [...(KNOWN_CASES[family.name] ?? [])] },
    );
  }, 600_000);
});
