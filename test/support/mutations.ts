/**
 * fast-check arbitraries over the one mutation engine (src/corrupt/mutate.ts): truncation (half at a
 * structure boundary ± 8 bytes), bit flips inside metadata regions (region kind chosen first, so the
 * many L2 tables of one image do not drown the header), and boundary values written into header,
 * extension, table-entry, snapshot and bitmap fields. Where the metadata is comes from the engine's
 * own walk of the image (`mutationTargets`); the arbitraries only pick among those places. Used by
 * the decoder-mutation and invariant properties and by the hostile-input campaign.
 */
import fc from 'fast-check';
import { boundaryValues, mutationTargets, type Mutation, type MutationTargets } from '../../src/corrupt/mutate.ts';

export { applyMutations, type Mutation } from '../../src/corrupt/mutate.ts';

/** Where one named image can be mutated. */
export interface ImageLayout extends MutationTargets {
  readonly name: string;
}

/** The mutation targets of `bytes` (an image whose header decodes), under `name`. */
export function locateMetadata(name: string, bytes: Uint8Array): ImageLayout {
  return { name, ...mutationTargets(bytes) };
}

/** The kinds of mutation; a campaign class may restrict its cases to one. */
export type MutationKind = 'flip' | 'boundary' | 'truncate' | 'extension';
export const MUTATION_KINDS: readonly MutationKind[] = ['flip', 'boundary', 'truncate', 'extension'];

/** A boundary value written into one of `fields`. */
function writeInto(t: MutationTargets, fields: MutationTargets['fields']): fc.Arbitrary<Mutation> {
  return fc.constantFrom(...fields).chain((f) => fc.constantFrom(...boundaryValues(f, t)).map((value): Mutation => ({ kind: 'write', field: f.name, offset: f.offset, width: f.width, value })));
}

/** One mutation of `kind` of the image `t` describes (every kind has a fallback target). */
export function mutationOfKind(t: MutationTargets, kind: MutationKind): fc.Arbitrary<Mutation> {
  switch (kind) {
    case 'truncate':
      return fc.oneof(
        fc.tuple(fc.constantFrom(...t.boundaries), fc.integer({ min: -8, max: 8 })).map(([b, d]): Mutation => ({ kind: 'truncate', length: Math.max(0, Math.min(t.fileLength, b + d)) })),
        fc.integer({ min: 0, max: t.fileLength }).map((length): Mutation => ({ kind: 'truncate', length })),
      );
    case 'flip': {
      const kinds = [...new Set(t.regions.map((r) => r.kind))];
      return fc
        .constantFrom(...kinds)
        .chain((k) => fc.constantFrom(...t.regions.filter((r) => r.kind === k)))
        .chain((r) => fc.tuple(fc.integer({ min: r.start, max: r.end - 1 }), fc.integer({ min: 0, max: 7 })).map(([offset, bit]): Mutation => ({ kind: 'flip', region: r.kind, offset, bit })));
    }
    case 'boundary':
      return writeInto(t, t.fields);
    case 'extension': {
      // Extension lengths and the header fields that bound the extension area.
      const pool = t.fields.filter((f) => f.role === 'extension-length' || f.name === 'header.backing_file_offset' || f.name === 'header.backing_file_size' || f.name === 'header.header_length');
      return pool.length === 0 ? writeInto(t, t.fields) : writeInto(t, pool);
    }
  }
}

/** One mutation of any kind: truncations, flips and boundary writes weighted 2 : 3 : 4. */
export function mutationArbitrary(t: MutationTargets): fc.Arbitrary<Mutation> {
  return fc.oneof(
    { arbitrary: mutationOfKind(t, 'truncate'), weight: 2 },
    { arbitrary: mutationOfKind(t, 'flip'), weight: 3 },
    { arbitrary: mutationOfKind(t, 'boundary'), weight: 4 },
  );
}

/** One to three mutations of the image `t` describes, applied in order. */
export function mutationsArbitrary(t: MutationTargets): fc.Arbitrary<Mutation[]> {
  return fc.array(mutationArbitrary(t), { minLength: 1, maxLength: 3 });
}
