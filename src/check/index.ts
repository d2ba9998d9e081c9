/** The surface of the check layer (ARCHITECTURE.md): what the other layers may import from it. */
export { checkExitCode, checkImage } from './check.ts';
export type { CheckResult } from './check.ts';
export { repairImage } from './repair.ts';
export type { RepairMode, RepairResult } from './repair.ts';
