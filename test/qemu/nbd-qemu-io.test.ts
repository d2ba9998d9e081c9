/**
 * qemu-io writing through the NBD server: a fast-check model run (fc.commands, size 'max') of
 * writes (any alignment, zeros included), write_zeroes with and without unmap, discards and
 * flushes, issued by qemu-io processes (one NBD connection each; requests of one process pipelined
 * as qemu-io sends them) to the server (src/io/nbd-server.ts, in this process) over images
 * `qemu-img create` made — cluster sizes 512 B to 64 KiB, v2 and v3, extended L2, lazy refcounts,
 * a qcow2 backing file (shorter than the image, with data), every --discard and --detect-zeroes
 * mode. After the server closes the image:
 * - `qemu-img check` finds nothing;
 * - `qemu-img compare` finds the guest content equal to the raw-disk oracle's;
 * - the file is byte-identical to the pure model's image after the same requests (loadImage of the
 *   created file, `step` of what each NBD request means, closeImage).
 * A failure prints fast-check's seed and path, the configuration and the qemu-io command lines.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isZeroBytes } from '../../src/codec/index.ts';
import { NbdServer, openDiskFile } from '../../src/io/index.ts';
import { imageBackingSource, closeImage, loadImage, step, storeImage, type Image, type Op } from '../../src/model/index.ts';
import { NbdExport, type DetectZeroesMode, type DiscardMode } from '../../src/nbd/index.ts';
import { RawDisk, writeRawFile } from '../../src/oracle/raw-disk.ts';
import { requireTool, runTool, runToolAsync } from '../support/nbd.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-nbd-qemu-io-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => {
  for (const t of ['qemu-img', 'qemu-io']) requireTool(t);
});

const RUNS = Number(process.env['QCOW2_NBD_QEMU_IO_RUNS'] ?? 20);
const KiB = 1024;

interface Cfg {
  readonly clusterBits: number;
  readonly extendedL2: boolean;
  readonly v2: boolean;
  readonly lazyRefcounts: boolean;
  /** Image size (at most 16 MiB: qemu's NBD client splits zero requests at 32 MiB, the server would see two). */
  readonly size: number;
  /** A qcow2 backing file of this size, with data, or none. */
  readonly backingSize: number | undefined;
  readonly discard: DiscardMode;
  readonly detectZeroes: DetectZeroesMode;
}

const cfgArb: fc.Arbitrary<Cfg> = fc.record({
  clusterBits: fc.constantFrom(9, 12, 14, 16),
  extendedL2: fc.boolean(),
  v2: fc.boolean(),
  lazyRefcounts: fc.boolean(),
  size: fc.integer({ min: 1, max: 32 }).map((k) => k * 512 * KiB),
  backing: fc.option(fc.integer({ min: 1, max: 32 }).map((k) => k * 512 * KiB), { nil: undefined }),
  mode: fc.constantFrom<[DiscardMode, DetectZeroesMode]>(['ignore', 'off'], ['unmap', 'off'], ['ignore', 'on'], ['unmap', 'unmap'], ['unmap', 'on']),
}).map((r) => ({
  clusterBits: r.clusterBits,
  // extended_l2 needs v3 and clusters of at least 16 KiB; lazy refcounts need v3.
  extendedL2: r.extendedL2 && !r.v2 && r.clusterBits >= 14,
  v2: r.v2,
  lazyRefcounts: r.lazyRefcounts && !r.v2,
  size: r.size,
  backingSize: r.backing,
  discard: r.mode[0],
  detectZeroes: r.mode[1],
}));

/** The model, the oracle, and the qemu-io commands not yet sent. */
interface Model {
  readonly cfg: Cfg;
  image: Image;
  readonly oracle: RawDisk;
  pending: string[];
  /** Every qemu-io invocation so far (for the failure report). */
  readonly log: string[];
}

interface Real {
  readonly uri: string;
}

/** Applies one NBD request's meaning to the model and the oracle, as the export carries it out. */
function apply(m: Model, op: Op): void {
  const r = step(m.image, op);
  if (!r.ok) throw new Error(`the model refused ${op.kind}: ${r.error.message}`);
  m.image = r.image;
  m.oracle.apply(op);
}

abstract class Cmd implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true;
  }
  abstract qemuIo(): string;
  abstract ops(m: Model): Op[];
  async run(m: Model): Promise<void> {
    m.pending.push(this.qemuIo());
    for (const op of this.ops(m)) apply(m, op);
  }
  toString(): string {
    return this.qemuIo();
  }
}

/** `write -P pattern offset length`: NBD_CMD_WRITE (a zero write with --detect-zeroes). */
class WriteCmd extends Cmd {
  constructor(readonly offset: number, readonly length: number, readonly pattern: number) {
    super();
  }
  qemuIo(): string {
    return `write -P ${this.pattern} ${this.offset} ${this.length}`;
  }
  ops(m: Model): Op[] {
    const data = new Uint8Array(this.length).fill(this.pattern);
    if (m.cfg.detectZeroes !== 'off' && isZeroBytes(data)) {
      return [{ kind: 'writeZeroes', offset: BigInt(this.offset), length: BigInt(this.length), unmap: m.cfg.detectZeroes === 'unmap' }];
    }
    return [{ kind: 'write', offset: BigInt(this.offset), data }];
  }
}

/** `write -z [-u]`: NBD_CMD_WRITE_ZEROES, with NO_HOLE unless -u. */
class ZeroCmd extends Cmd {
  constructor(readonly offset: number, readonly length: number, readonly unmap: boolean) {
    super();
  }
  qemuIo(): string {
    return `write -z${this.unmap ? ' -u' : ''} ${this.offset} ${this.length}`;
  }
  ops(): Op[] {
    return [{ kind: 'writeZeroes', offset: BigInt(this.offset), length: BigInt(this.length), unmap: this.unmap }];
  }
}

/** `discard`: NBD_CMD_TRIM (nothing without --discard=unmap). */
class DiscardCmd extends Cmd {
  constructor(readonly offset: number, readonly length: number) {
    super();
  }
  qemuIo(): string {
    return `discard ${this.offset} ${this.length}`;
  }
  ops(m: Model): Op[] {
    return m.cfg.discard === 'unmap' ? [{ kind: 'discard', offset: BigInt(this.offset), length: BigInt(this.length) }] : [];
  }
}

/** `flush`: NBD_CMD_FLUSH. */
class FlushCmd extends Cmd {
  qemuIo(): string {
    return 'flush';
  }
  ops(): Op[] {
    return [{ kind: 'flush' }];
  }
}

/** Sends the pending commands: one qemu-io process, one connection (it flushes when it closes). */
class SendCmd implements fc.AsyncCommand<Model, Real> {
  check(m: Readonly<Model>): boolean {
    return m.pending.length > 0;
  }
  async run(m: Model, r: Real): Promise<void> {
    await send(m, r);
  }
  toString(): string {
    return 'send';
  }
}

async function send(m: Model, r: Real): Promise<void> {
  const args = ['-f', 'raw', ...m.pending.flatMap((c) => ['-c', c]), r.uri];
  m.log.push(`qemu-io ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ')}`);
  m.pending = [];
  const out = await runToolAsync('qemu-io', args, { cwd: dir });
  expect(out.status, `${m.log[m.log.length - 1]}\n${out.stderr}`).toBe(0);
  expect(`${out.stdout}${out.stderr}`, m.log[m.log.length - 1]).not.toMatch(/failed|error/i);
  // bdrv_close flushes the NBD client: NBD_CMD_FLUSH before it disconnects.
  apply(m, { kind: 'flush' });
}

/** Commands over `size` bytes; offsets mostly near a few hot spots so requests overlap. */
function commandsArb(cfg: Cfg): fc.Arbitrary<Iterable<fc.AsyncCommand<Model, Real>>> {
  const cs = 1 << cfg.clusterBits;
  const hot = fc.integer({ min: 0, max: Math.max(0, Math.floor(cfg.size / cs) - 1) });
  const offset = fc.oneof(
    fc.integer({ min: 0, max: cfg.size - 1 }),
    fc.tuple(hot, fc.integer({ min: -512, max: cs + 512 })).map(([c, d]) => Math.min(cfg.size - 1, Math.max(0, c * cs + d))),
    fc.tuple(hot, fc.constantFrom(0, cs / 2, 512)).map(([c, d]) => Math.min(cfg.size - 1, c * cs + d)),
  );
  const range = <T>(f: (o: number, n: number) => T, max: number): fc.Arbitrary<T> =>
    fc.tuple(offset, fc.oneof(fc.integer({ min: 1, max: 3 * cs }), fc.integer({ min: 1, max }), fc.constantFrom(cs, 2 * cs, 512)))
      .map(([o, n]) => f(o, Math.max(1, Math.min(n, cfg.size - o))));
  const cmds: fc.Arbitrary<fc.AsyncCommand<Model, Real>>[] = [
    fc.tuple(range((o, n) => [o, n] as const, 256 * KiB), fc.integer({ min: 0, max: 255 })).map(([[o, n], p]) => new WriteCmd(o, n, p)),
    fc.tuple(range((o, n) => [o, n] as const, 1024 * KiB), fc.boolean()).map(([[o, n], u]) => new ZeroCmd(o, n, u)),
    range((o, n) => new DiscardCmd(o, n), 1024 * KiB),
    fc.constant(new FlushCmd()),
    fc.constant(new SendCmd()),
  ];
  return fc.commands(cmds, { size: 'max', maxCommands: 40 });
}

function sh(tool: string, args: readonly string[]): string {
  const r = runTool(tool, args, { cwd: dir });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

let runNo = 0;

/** One run: images, the in-process server, the commands, then the judges. */
async function runOnce(cfg: Cfg, cmds: Iterable<fc.AsyncCommand<Model, Real>>): Promise<void> {
  const n = runNo++;
  const image = join(dir, `r${n}.qcow2`);
  const backing = join(dir, `r${n}-base.qcow2`);
  const opts = [`cluster_size=${1 << cfg.clusterBits}`, `compat=${cfg.v2 ? '0.10' : '1.1'}`,
    ...(cfg.extendedL2 ? ['extended_l2=on'] : []), ...(cfg.lazyRefcounts ? ['lazy_refcounts=on'] : [])].join(',');
  const created: string[] = [];
  let backingImage: Image | undefined;
  let oracleBacking: RawDisk | undefined;
  if (cfg.backingSize !== undefined) {
    created.push(`qemu-img create -f qcow2 ${backing} ${cfg.backingSize}`, `qemu-io -c 'write -P 170 0 ${cfg.backingSize}' -c 'write -z ${cfg.backingSize / 2} 4096' ${backing}`);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', backing, String(cfg.backingSize)]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 170 0 ${cfg.backingSize}`, '-c', `write -z ${cfg.backingSize / 2} 4096`, backing]);
    backingImage = loadImage(readFileSync(backing));
    oracleBacking = new RawDisk({ size: BigInt(cfg.backingSize) });
    oracleBacking.apply({ kind: 'write', offset: 0n, data: new Uint8Array(cfg.backingSize).fill(170) });
    oracleBacking.apply({ kind: 'writeZeroes', offset: BigInt(cfg.backingSize / 2), length: 4096n, unmap: false });
  }
  const createArgs = ['create', '-q', '-f', 'qcow2', '-o', opts, ...(cfg.backingSize !== undefined ? ['-b', backing, '-F', 'qcow2'] : []), image, String(cfg.size)];
  created.push(`qemu-img ${createArgs.join(' ')}`);
  sh('qemu-img', createArgs);
  const start = loadImage(readFileSync(image));
  const model: Model = {
    cfg,
    image: {
      ...start,
      ...(backingImage !== undefined ? { backing: imageBackingSource(backingImage) } : {}),
      session: { ...start.session, ...(cfg.discard === 'unmap' ? {} : { noDiscardPassthrough: true }) },
    },
    oracle: new RawDisk({
      size: BigInt(cfg.size), version: cfg.v2 ? 2 : 3, clusterSize: BigInt(1 << cfg.clusterBits),
      subclusterSize: BigInt((1 << cfg.clusterBits) / (cfg.extendedL2 ? 32 : 1)),
      ...(oracleBacking !== undefined ? { backing: oracleBacking } : {}),
    }),
    pending: [],
    log: created,
  };
  const disk = await openDiskFile(image, { readOnly: false, allowBacking: true, allowBackingPath: true, discardPassthrough: cfg.discard === 'unmap', writeback: true, syncIo: true });
  const socket = join(dir, `r${n}.sock`);
  const server = await NbdServer.listen([new NbdExport(disk, { discard: cfg.discard, detectZeroes: cfg.detectZeroes })], { socketPath: socket, persistent: true, shared: 0 });
  const real: Real = { uri: `nbd+unix:///?socket=${socket}` };
  const report = (): string => `configuration ${JSON.stringify(cfg)}\n${model.log.join('\n')}`;
  try {
    try {
      await fc.asyncModelRun(() => ({ model, real }), cmds);
      if (model.pending.length > 0) await send(model, real);
    } finally {
      await server.shutdown();
      await disk.close();
    }
    const closed = closeImage(model.image).image;
    const check = runTool('qemu-img', ['check', image], { cwd: dir });
    expect(check.status, `qemu-img check: ${check.stdout}${check.stderr}\n${report()}`).toBe(0);
    const raw = join(dir, `r${n}.raw`);
    writeRawFile(model.oracle, raw);
    const cmp = runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, raw], { cwd: dir });
    expect(cmp.status, `qemu-img compare with the oracle: ${cmp.stdout}${cmp.stderr}\n${report()}`).toBe(0);
    const file = readFileSync(image);
    const expected = storeImage(closed);
    if (!file.equals(Buffer.from(expected))) {
      writeFileSync(join(dir, `r${n}.model.qcow2`), expected);
      let at = 0;
      while (at < Math.min(file.length, expected.length) && file[at] === expected[at]) at++;
      expect.fail(`the file differs from the model's image (lengths ${file.length} / ${expected.length}, first difference at ${at})\n${report()}`);
    }
  } finally {
    rmSync(image, { force: true });
    rmSync(backing, { force: true });
  }
}

describe('qemu-io through the NBD server', () => {
  it('op sequences leave a clean file equal to the oracle and byte-identical to the model', async () => {
    await fc.assert(
      fc.asyncProperty(cfgArb.chain((cfg) => commandsArb(cfg).map((cmds) => ({ cfg, cmds }))), async ({ cfg, cmds }) => runOnce(cfg, cmds)),
      { numRuns: RUNS, includeErrorInReport: true },
    );
  });
});
