/**
 * The model's op vocabulary (src/model/ops.ts) executed by real QEMU: consecutive data ops run as `-c`
 * commands of ONE qemu-io process; snapshot ops and resizes, which qemu-io cannot do, run as
 * `qemu-img snapshot` / `qemu-img resize` between those processes. Every process boundary is a new
 * QEMU session (allocation hint and compressed-packing cursor start afresh, docs/format/allocation.md#cluster-allocator), which
 * callers comparing layouts must mirror in the model (`freshSession`). The translation of one op is
 * QemuOpTranslator's, shared with src/qemu/logged-run.ts, which runs the same commands one at a time.
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

/** A qemu-img process that performs one op. */
export type QemuImgStep = Extract<QemuStep, { readonly tool: 'qemu-img' }>;

/**
 * What one op becomes: a qemu-io command (reading `dataFile` from DATA_DIR, if any), a qemu-img
 * process, or nothing (a zero-length write or compressed write, which qemu-io refuses and the model
 * treats as a no-op).
 */
export type QemuOpTranslation =
  | { readonly tool: 'qemu-io'; readonly command: string; readonly dataFile?: QemuDataFile }
  | QemuImgStep
  | { readonly tool: 'none' };

/**
 * Translates ops one at a time, in order, into QEMU commands, following the disk size through
 * resizes and snapshot applies (an apply brings back the disk size the snapshot was taken at,
 * docs/format/snapshots.md#applying-a-snapshot) so that a resize is judged against the size at that
 * point. A snapshot op naming a snapshot it has not seen created (one that was in the image before)
 * leaves the size unknown: later resizes then get `--shrink` when they might shrink, which qemu-img
 * accepts for growing too.
 */
export class QemuOpTranslator {
  private size: bigint | undefined;
  private readonly snapshotSizes = new Map<string, bigint | undefined>();

  /** A translator for an image of virtual size `initialSize`. */
  constructor(initialSize: bigint) {
    this.size = initialSize;
  }

  /**
   * The command for `op`, the next op in order. Writes of one repeated byte use `-P`; other data is
   * passed with `-s DATA_DIR/<dataFileName>` (qemu-io reads a pattern file of exactly the request's
   * length, i.e. the data itself), returned as `dataFile`. Shrinking resizes get `--shrink`.
   */
  translate(op: Op, dataFileName: string): QemuOpTranslation {
    let dataFile: QemuDataFile | undefined;
    const source = (data: Uint8Array): string => {
      const p = uniformByte(data);
      if (p !== undefined) return `-P ${p}`;
      dataFile = { name: dataFileName, bytes: data };
      return `-s ${DATA_DIR}/${dataFileName}`;
    };
    const io = (command: string): QemuOpTranslation => (dataFile === undefined ? { tool: 'qemu-io', command } : { tool: 'qemu-io', command, dataFile });
    switch (op.kind) {
      case 'write':
        return op.data.length > 0 ? io(`write -q ${source(op.data)} ${op.offset} ${op.data.length}`) : { tool: 'none' };
      case 'writeCompressed':
        return op.data.length > 0 ? io(`write -q -c ${source(op.data)} ${op.offset} ${op.data.length}`) : { tool: 'none' };
      case 'writeZeroes':
        return op.length > 0n ? io(`write -q -z${op.unmap ? ' -u' : ''} ${op.offset} ${op.length}`) : { tool: 'none' };
      case 'discard':
        return op.length > 0n ? io(`discard -q ${op.offset} ${op.length}`) : { tool: 'none' };
      case 'flush':
        return io('flush');
      case 'snapshotCreate':
        this.snapshotSizes.set(op.name, this.size);
        return { tool: 'qemu-img', action: 'snapshot-create', name: op.name };
      case 'snapshotApply':
        this.size = this.snapshotSizes.get(op.name);
        return { tool: 'qemu-img', action: 'snapshot-apply', name: op.name };
      case 'snapshotDelete':
        this.snapshotSizes.delete(op.name);
        return { tool: 'qemu-img', action: 'snapshot-delete', name: op.name };
      case 'resize': {
        const shrink = this.size === undefined || op.size < this.size;
        this.size = op.size;
        return { tool: 'qemu-img', action: 'resize', size: op.size, shrink };
      }
    }
  }
}

/**
 * The QEMU processes that perform `ops` in order on an image of virtual size `initialSize`. Pure.
 * Each op is translated by QemuOpTranslator; consecutive qemu-io commands share one process, and a
 * qemu-img process ends it. Data files are named `d<step>-<n>.bin`.
 */
export function planQemuSteps(ops: readonly Op[], initialSize: bigint): QemuStep[] {
  const steps: QemuStep[] = [];
  let commands: string[] = [];
  let dataFiles: QemuDataFile[] = [];
  const translator = new QemuOpTranslator(initialSize);
  const close = (): void => {
    if (commands.length > 0) steps.push({ tool: 'qemu-io', commands, dataFiles });
    commands = [];
    dataFiles = [];
  };
  for (const op of ops) {
    const t = translator.translate(op, `d${steps.length}-${dataFiles.length}.bin`);
    if (t.tool === 'qemu-io') {
      commands.push(t.command);
      if (t.dataFile !== undefined) dataFiles.push(t.dataFile);
    } else if (t.tool === 'qemu-img') {
      close();
      steps.push(t);
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
