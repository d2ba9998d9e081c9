/** The surface of the corpus layer (ARCHITECTURE.md): what the other layers may import from it. */
export type { GeneratedCase } from './family.ts';
export { ALL_FAMILIES, CORPUS_GENERATOR_VERSION, SIZE_ATTEMPTS, checkCorpusDir, generateCorpus, prepareCorpusDir, selectFamilies, writeCaseFiles, writeCorpusIndex, writeFlatCorpus } from './generate.ts';
export type { FlatFile, SkippedCase } from './generate.ts';
export { MANIFEST_FILE, readManifest } from './manifest.ts';
export type { CorpusCase } from './manifest.ts';
export { minimizeCases } from './minimize.ts';
export { verifyCases } from './verify.ts';
