/** The surface of the crash layer (ARCHITECTURE.md): what the other layers may import from it. */
export { crashPoints, crashStates, crashStatesAt, epochsOf, SECTOR_SIZE } from './crash-states.ts';
export type { CrashPoint, CrashState, CrashStateOptions } from './crash-states.ts';
export { guestTimeline, judgeCrashState, judgeRun, VIOLATION_KINDS } from './judge.ts';
export type { GuestTimeline, Judgement, KnownWindow, RunVerdict, Violation, ViolationKind } from './judge.ts';
export { applyOpToDisk, driverWriteLog, modelWriteLog, recordingBackend } from './writers.ts';
export { validateWriteLog, WriteLogError } from './write-log.ts';
export type { CrashRun, GuestEvent, WriteLog } from './write-log.ts';
