/**
 * What a corpus family is: a named class of images (one feature, one corruption, one attack) that
 * can make any number of cases from a random stream. Families are pure: a case depends only on its
 * stream (seed, family name, index).
 */
import type { CorpusCase } from './manifest.ts';
import type { Prng } from './prng.ts';

/** One file of a case, path relative to the corpus directory. */
export interface CaseFile {
  readonly path: string;
  readonly bytes: Uint8Array;
}

/** A generated case: its manifest entry and its files (the image first). */
export interface GeneratedCase {
  readonly entry: CorpusCase;
  readonly files: readonly CaseFile[];
}

/**
 * A file that lives in the corpus directory itself rather than in a case's directory (e.g. the file
 * the "escaping reference" cases point at). Shared by every case that names it; written once.
 */
export type SharedFile = CaseFile;

/** What a family gets to make one case. */
export interface FamilyContext {
  /** The case's own random stream. */
  readonly prng: Prng;
  /** The case id (filename-safe); also the name of its directory in the corpus. */
  readonly id: string;
}

/** The output of a family for one case, before expectations are attached. */
export interface FamilyOutput extends GeneratedCase {
  /** Corpus-level files the case refers to. */
  readonly shared?: readonly SharedFile[];
}

/** A class of corpus images. */
export interface Family {
  /** e.g. "extended-l2", "invalid/l1-too-large". */
  readonly name: string;
  readonly valid: boolean;
  /** What the family's images have in common, in a sentence. */
  readonly doc: string;
  /**
   * A lower bound on the bytes of any case of the family, when it is large (e.g. three clusters of
   * 2 MiB): the generator skips the family without building anything when --max-size is below it.
   */
  readonly minBytes?: number;
  /**
   * Feature tags (src/corpus/features.ts) every case of the family has: what the family is about.
   * Generating a case without them fails.
   */
  readonly features?: readonly string[];
  /** Makes one case; deterministic in `ctx.prng`. Throws when the model disagrees with the family's intent. */
  generate(ctx: FamilyContext): FamilyOutput;
}

/** The case id of case `index` of family `name`: '/' becomes '.', index zero-padded to 4 digits. */
export function caseId(name: string, index: number): string {
  return `${name.replace(/\//g, '.')}.${String(index).padStart(4, '0')}`;
}
