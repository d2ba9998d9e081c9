/**
 * `qcow2-ref/testing`: the tools for testing a qcow2 implementation (yours or this one) — the
 * raw-disk oracle and the independent invariant checker (src/oracle), the corruption catalog
 * (src/corrupt), the JSON op-script format (src/script), the deterministic corpus of valid and
 * broken images with expected outcomes (src/corpus), the conformance harness (src/conform) and typed
 * drivers for qemu-img and qemu-io (src/qemu). Node only (files, child processes). The types of the
 * core (Image, Op, ...) come from `qcow2-ref`.
 */
export { RawDisk, RawDiskError, writeRawFile, type RawDiskConfig, type RawDiskErrorCode } from './oracle/raw-disk.ts';
export { checkInvariants, type InvariantKind, type InvariantOptions, type InvariantViolation } from './oracle/invariants.ts';
export { CORRUPTIONS, CORRUPTION_CATEGORIES, applicableCorruptions, corrupt, corruptionNamed, type AppliedCorruption, type Corruption, type CorruptionCategory, type CorruptionName, type CorruptionOutcome, type NotApplicable } from './corrupt/catalog.ts';
export { seededRng, type Rng } from './corrupt/rng.ts';
export { SCRIPT_OP_NAMES, ScriptError, formatScript, parseScript, parseScriptValue, type ScriptOpName } from './script/script.ts';
export { formatManifest, parseManifest, readManifest, writeManifest, ManifestError, MANIFEST_FILE, type CorpusCase } from './corpus/manifest.ts';
export { ALL_FAMILIES, CORPUS_GENERATOR_VERSION, generateCorpus, selectFamilies, writeCaseFiles, writeCorpusIndex, writeFlatCorpus, type CorpusParams, type GeneratedCorpus } from './corpus/generate.ts';
export type { GeneratedCase } from './corpus/family.ts';
export { verifyCases, type CaseVerdict } from './corpus/verify.ts';
export { HarnessError, runConformance, type ConformReport, type HarnessOptions } from './conform/harness.ts';
export { BUILTIN_IMPLS, adapterFromTemplate, builtinAdapters, type Adapter, type BuiltinImpl } from './conform/adapter.ts';
export { ExpectedFailuresError, parseExpectedFailures, type ExpectedFailure, type TestRole } from './conform/expected-failures.ts';
export { TemplateError } from './conform/command-template.ts';
export { formatHumanReport, reportJson } from './conform/report.ts';
export { QemuCommandError, QemuToolMissingError, requireQemu, type RunResult } from './qemu/run.ts';
export { qemuImgCheck, qemuImgCompare, qemuImgConvert, qemuImgCreate, qemuImgInfo, qemuImgMap, qemuIo, type QemuCheckResult, type QemuImgInfo, type QemuMapExtent } from './qemu/qemu-img.ts';
