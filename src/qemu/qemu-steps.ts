/**
 * The model's op vocabulary (src/model/ops.ts) executed by real QEMU: consecutive data ops run as `-c`
 * commands of ONE qemu-io process; snapshot ops and resizes, which qemu-io cannot do, run as
 * `qemu-img snapshot` / `qemu-img resize` between those processes. Every process boundary is a new
 * QEMU session (allocation hint and compressed-packing cursor start afresh, docs/format/allocation.md#cluster-allocator), which
 * callers comparing layouts must mirror in the model (`freshSession`).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Op } from '../model/index.ts';
import { qemuImgResize, qemuImgSnapshot, qemuIo, type QemuOpenOptions } from './qemu-img.ts';

/** A data buffer a qemu-io command reads with `-s FILE` (written to a temporary file when run). */
export interface QemuDataFile {
  readonly name: string;
  readonly bytes: Uint8Array;
}

/** One QEMU process. */
export type QemuStep =
  | { readonly tool: 'qemu-io'; readonly commands: readonly string[]; readonly dataFiles: readonly QemuDataFile[] }
  | { readonly tool: 'qemu-img'; readonly action: 'snapshot-create' | 'snapshot-apply' | 'snapshot-delete'; readonly name: string }
  | { readonly tool: 'qemu-img'; readonly action: 'resize'; readonly size: bigint; readonly shrink: boolean };

/** The byte every element of `b` has, or undefined when they differ (or `b` is empty). */
function uniformByte(b: Uint8Array): number | undefined {
  if (b.length === 0) return undefined;
  const v = b[0]!;
  for (let i = 1; i < b.length; i++) if (b[i] !== v) return undefined;
  return v;
}

/** Placeholder for the data file directory in planned commands; runQemuSteps substitutes it. */
export const DATA_DIR = '@DATA@';

/**
 * The QEMU processes that perform `ops` in order on an image of virtual size `initialSize`. Pure.
 * Writes of one repeated byte use `-P`; other data is passed with `-s DATA_DIR/name` (qemu-io reads a
 * pattern file of exactly the request's length, i.e. the data itself). A zero-length write or
 * compressed write is skipped (qemu-io refuses length 0; the model treats it as a no-op). Shrinking
 * resizes get `--shrink`: the size is followed through resizes and snapshot applies (an apply brings
 * back the disk size the snapshot was taken at, docs/format/snapshots.md#applying-a-snapshot), so a resize after an apply is judged
 * against the restored size. A snapshot op naming a snapshot the plan has not seen created (one that
 * was in the image before) leaves the size unknown to the plan: later resizes then get `--shrink`
 * when they might shrink, which qemu-img accepts for growing too.
 */
export function planQemuSteps(ops: readonly Op[], initialSize: bigint): QemuStep[] {
  const steps: QemuStep[] = [];
  let commands: string[] = [];
  let dataFiles: QemuDataFile[] = [];
  let size: bigint | undefined = initialSize;
  const snapshotSizes = new Map<string, bigint | undefined>();
  const close = (): void => {
    if (commands.length > 0) steps.push({ tool: 'qemu-io', commands, dataFiles });
    commands = [];
    dataFiles = [];
  };
  const source = (data: Uint8Array): string => {
    const p = uniformByte(data);
    if (p !== undefined) return `-P ${p}`;
    const name = `d${steps.length}-${dataFiles.length}.bin`;
    dataFiles.push({ name, bytes: data });
    return `-s ${DATA_DIR}/${name}`;
  };
  for (const op of ops) {
    switch (op.kind) {
      case 'write':
        if (op.data.length > 0) commands.push(`write -q ${source(op.data)} ${op.offset} ${op.data.length}`);
        break;
      case 'writeCompressed':
        if (op.data.length > 0) commands.push(`write -q -c ${source(op.data)} ${op.offset} ${op.data.length}`);
        break;
      case 'writeZeroes':
        if (op.length > 0n) commands.push(`write -q -z${op.unmap ? ' -u' : ''} ${op.offset} ${op.length}`);
        break;
      case 'discard':
        if (op.length > 0n) commands.push(`discard -q ${op.offset} ${op.length}`);
        break;
      case 'flush':
        commands.push('flush');
        break;
      case 'snapshotCreate':
      case 'snapshotApply':
      case 'snapshotDelete':
        if (op.kind === 'snapshotCreate') snapshotSizes.set(op.name, size);
        else if (op.kind === 'snapshotApply') size = snapshotSizes.get(op.name);
        else snapshotSizes.delete(op.name);
        close();
        steps.push({
          tool: 'qemu-img',
          action: op.kind === 'snapshotCreate' ? 'snapshot-create' : op.kind === 'snapshotApply' ? 'snapshot-apply' : 'snapshot-delete',
          name: op.name,
        });
        break;
      case 'resize':
        close();
        steps.push({ tool: 'qemu-img', action: 'resize', size: op.size, shrink: size === undefined || op.size < size });
        size = op.size;
        break;
    }
  }
  close();
  return steps;
}

/**
 * Runs `steps` on the image at `path` in order (data files in a temporary directory, removed
 * afterwards). Throws QemuCommandError at the first process that fails; the image then holds what
 * QEMU left after the steps before it.
 */
export async function runQemuSteps(path: string, steps: readonly QemuStep[], opts: QemuOpenOptions = {}): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-qemu-steps-'));
  try {
    for (const s of steps) {
      if (s.tool === 'qemu-io') {
        for (const f of s.dataFiles) writeFileSync(join(dir, f.name), f.bytes);
        await qemuIo(path, s.commands.map((c) => c.replace(DATA_DIR, dir)), opts);
      } else if (s.action === 'resize') {
        await qemuImgResize(path, s.size, { ...opts, shrink: s.shrink });
      } else {
        await qemuImgSnapshot(path, s.action === 'snapshot-create' ? 'create' : s.action === 'snapshot-apply' ? 'apply' : 'delete', s.name, opts);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
