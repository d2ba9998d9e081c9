/** The surface of the qemu layer (ARCHITECTURE.md): what the other layers may import from it. */
export { checkCounter, qcow2Specific, qemuImgCheck, qemuImgCompare, qemuImgConvert, qemuImgCreate, qemuImgInfo, toBigInt } from './qemu-img.ts';
export { planQemuSteps, runQemuSteps } from './qemu-steps.ts';
export { QemuCommandError, QemuToolMissingError, formatCommandLine, requireQemu, runTool } from './run.ts';
export { BlkLogWritesError, LOG_MARK_FLAG, parseBlkLogWrites, parseBlkLogWritesSuperblock } from './blklogwrites.ts';
export type { BlkLogWrites, BlkLogWritesEntry, BlkLogWritesSuperblock } from './blklogwrites.ts';
export { QemuLoggedRunError, blkLogWritesImageOpts, runQemuLogged } from './logged-run.ts';
export type { QemuLoggedRunErrorCode, QemuLoggedRunOptions, QemuWriteLog } from './logged-run.ts';
