/**
 * Turning a recipe for a valid image — create options, one session of ops, optional backing layers
 * and an optional byte-level post-processing step — into a corpus case: the files, and a manifest
 * entry whose expectations come from the model (content hash read back from the stored bytes through
 * openImage, check result from checkImage).
 */
import type { CreateOptions } from '../model/index.ts';
import type { Op } from '../model/index.ts';
import { imageBackingSource, rawBackingSource } from '../model/index.ts';
import type { BackingSource } from '../model/index.ts';
import { checkInvariants } from '../oracle/index.ts';
import { buildImage, createOptionsRecord, type BuiltImage } from './build.ts';
import { checkExpectation, contentSha256, openCase } from './expect.ts';
import { imageFeatures } from './features.ts';
import type { CaseFile, FamilyContext, FamilyOutput } from './family.ts';
import type { CheckExpectation, CorpusCase } from './manifest.ts';

/** File name of a case's qcow2 image inside its directory. */
export const IMAGE_NAME = 'image.qcow2';
/** File name of a case's external data file inside its directory. */
export const DATA_FILE_NAME = 'data.raw';

/** One backing layer, nearest first in ValidRecipe.backing. */
export type BackingLayer =
  | { readonly kind: 'qcow2'; readonly create: CreateOptions; readonly ops: readonly Op[] }
  | { readonly kind: 'raw'; readonly bytes: Uint8Array };

/** What the post-processing step returns: new image bytes and the tags it adds. */
export interface PostResult {
  readonly bytes: Uint8Array;
  readonly features?: readonly string[];
}

/** How a valid case is made. */
export interface ValidRecipe {
  readonly family: string;
  /** Tags the family adds to the ones read from the image. */
  readonly features?: readonly string[];
  /** createImage options; backingFile/backingFmt are filled in from `backing`, dataFile with DATA_FILE_NAME when `dataFile`. */
  readonly create: CreateOptions;
  readonly ops: readonly Op[];
  readonly backing?: readonly BackingLayer[];
  /** Give the image an external data file (DATA_FILE_NAME). */
  readonly dataFile?: boolean;
  /** Close the image cleanly (default true). */
  readonly close?: boolean;
  /**
   * Changes the built image's bytes (header edits, added structures). The case then has no `script`
   * (the ops alone no longer produce the file).
   */
  readonly post?: (built: BuiltImage) => PostResult;
  /**
   * Feature tags (features.ts) the image must have: what the family is about. Generation fails when
   * the image lacks them, so a family never silently loses its point.
   */
  readonly requireFeatures?: readonly string[];
  /**
   * Ops that produce `requireFeatures` by construction, for families whose random ops usually but
   * not always do (a later op may overwrite what made the feature). They are appended to `ops`, and
   * the image built again, only when the image built from `ops` lacks one of the features: every
   * seed's case then has them, and a case that had them already keeps its bytes. They must not draw
   * from the random stream (a case's later draws would change).
   */
  readonly guarantee?: readonly Op[];
  /**
   * Whether a non-clean check is what this family is about (e.g. a crash left stale refcounts).
   * Otherwise the model's invariants must hold and the check must be clean, or generation fails.
   */
  readonly checkMayFail?: boolean;
}

/** The file name of backing layer `i` (0 = nearest). */
export function backingName(i: number, kind: 'qcow2' | 'raw'): string {
  return `backing-${i + 1}.${kind}`;
}

/**
 * Builds the case `recipe` describes. Throws when the model contradicts the recipe's intent: a valid
 * image whose invariants fail, whose check is not clean (unless `checkMayFail`), or that openImage
 * refuses.
 */
export function validCase(ctx: FamilyContext, recipe: ValidRecipe): FamilyOutput {
  const files: CaseFile[] = [];
  const backingPaths: string[] = [];
  // Build the backing chain from the deepest layer up, each layer reading through the one below.
  let below: BackingSource | undefined;
  let belowName: string | undefined;
  let belowKind: 'qcow2' | 'raw' | undefined;
  const layers = recipe.backing ?? [];
  const layerFiles: CaseFile[] = [];
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i]!;
    const name = backingName(i, layer.kind);
    if (layer.kind === 'raw') {
      layerFiles.unshift({ path: `${ctx.id}/${name}`, bytes: layer.bytes });
      below = rawBackingSource(layer.bytes);
    } else {
      const create: CreateOptions = belowName !== undefined ? { ...layer.create, backingFile: belowName, backingFmt: belowKind } : layer.create;
      const built = buildImage(create, layer.ops, below !== undefined ? { backing: below } : {});
      requireSound(built.bytes, `${recipe.family}: backing layer ${name}`);
      layerFiles.unshift({ path: `${ctx.id}/${name}`, bytes: built.bytes });
      // The next layer up reads this one as QEMU would: from its stored bytes.
      const reopened = openCase({ image: built.bytes, ...(below !== undefined ? { backing: below } : {}) });
      if (!reopened.ok) throw new Error(`${recipe.family}: backing layer ${name} is refused: ${reopened.qemuMessage}`);
      below = imageBackingSource(reopened.image);
    }
    belowName = name;
    belowKind = layer.kind;
  }
  backingPaths.push(...layerFiles.map((f) => f.path));

  const create: CreateOptions = {
    ...recipe.create,
    ...(belowName !== undefined ? { backingFile: belowName, backingFmt: belowKind } : {}),
    ...(recipe.dataFile === true ? { dataFile: DATA_FILE_NAME } : {}),
  };
  const buildOpts = {
    ...(below !== undefined ? { backing: below } : {}),
    ...(recipe.close !== undefined ? { close: recipe.close } : {}),
  };
  const required = recipe.requireFeatures ?? [];
  let built = buildImage(create, recipe.ops, buildOpts);
  let builtFeatures: string[] | undefined;
  if (recipe.guarantee !== undefined && recipe.guarantee.length > 0) {
    builtFeatures = imageFeatures(built.bytes);
    if (required.some((f) => !builtFeatures!.includes(f))) {
      built = buildImage(create, [...recipe.ops, ...recipe.guarantee], buildOpts);
      builtFeatures = undefined;
    }
  }
  const post = recipe.post?.(built);
  const bytes = post?.bytes ?? built.bytes;

  const opened = openCase({
    image: bytes,
    ...(built.dataFile !== undefined ? { dataFile: built.dataFile } : {}),
    ...(below !== undefined ? { backing: below } : {}),
  });
  if (!opened.ok) throw new Error(`${recipe.family}: the model refuses to open its own image: ${opened.code}: ${opened.qemuMessage}`);
  const check = checkExpectation(opened.image);
  if (recipe.checkMayFail !== true) {
    requireSound(bytes, recipe.family);
    if (check.exitCode !== 0) throw new Error(`${recipe.family}: the model's check of its own image is not clean: ${JSON.stringify(check)}`);
  }
  if (check.exitCode === 1) throw new Error(`${recipe.family}: the check of a valid image failed to complete`);

  files.push({ path: `${ctx.id}/${IMAGE_NAME}`, bytes });
  files.push(...layerFiles);
  if (built.dataFile !== undefined) files.push({ path: `${ctx.id}/${DATA_FILE_NAME}`, bytes: built.dataFile });

  const found = post === undefined && builtFeatures !== undefined ? builtFeatures : imageFeatures(bytes);
  const lacking = required.filter((f) => !found.includes(f));
  if (lacking.length > 0) throw new Error(`${recipe.family}: the image lacks ${lacking.join(', ')} (has ${found.join(', ')})`);
  const features = [...new Set([...(recipe.features ?? []), ...(post?.features ?? []), ...found,
    ...(layers.length > 0 ? [`backing-chain-depth:${layers.length}`] : [])])].sort();
  const entry: CorpusCase = {
    id: ctx.id,
    family: recipe.family,
    valid: true,
    features,
    options: createOptionsRecord(create),
    files: {
      image: `${ctx.id}/${IMAGE_NAME}`,
      ...(backingPaths.length > 0 ? { backing: backingPaths } : {}),
      ...(built.dataFile !== undefined ? { dataFile: `${ctx.id}/${DATA_FILE_NAME}` } : {}),
    },
    virtualSize: opened.image.header.size.toString(),
    expect: { kind: 'content', guestSha256: contentSha256(opened.image), check: check as CheckExpectation<0 | 2 | 3> },
    ...(post === undefined && (recipe.close ?? true) ? { script: built.script } : {}),
  };
  return { entry, files };
}

/** Throws when the model's invariants (src/oracle/invariants.ts) fail on `bytes`. */
function requireSound(bytes: Uint8Array, what: string): void {
  const v = checkInvariants(bytes);
  if (v.length > 0) throw new Error(`${what}: the model built an unsound image: ${v.slice(0, 3).map((x) => x.message).join('; ')}`);
}
