/** The surface of the conform layer (ARCHITECTURE.md): what the other layers may import from it. */
export { BUILTIN_DESCRIPTIONS, BUILTIN_IMPLS, repoRoot, adapterFromTemplate, builtinAdapters, builtinProblem, isBuiltinImpl } from './adapter.ts';
export type { Adapter } from './adapter.ts';
export { TemplateError } from './command-template.ts';
export { ExpectedFailuresError, globToRegExp, parseExpectedFailures } from './expected-failures.ts';
export type { ExpectedFailure, TestRole } from './expected-failures.ts';
export { DEFAULT_MAX_OUTPUT_BYTES, HarnessError, runConformance } from './harness.ts';
export { formatHumanReport, reportJson } from './report.ts';
export { CRASH_WRITERS, qemuCheckDisagreement, runCrashConformance } from './crash-conform.ts';
export type { CrashConformOptions, CrashFamilyRow, CrashReport, CrashWriter, CrashWriterName } from './crash-conform.ts';
export { parseTemplate, requirePlaceholders } from './command-template.ts';
