/**
 * `qcow2-ref serve` against real NBD clients, with qemu-nbd serving the same image as the oracle:
 * - reads: for images QEMU wrote (data, zero clusters, compressed clusters, subclusters, 512-byte
 *   clusters, a v2 image, a backing chain whose backing file is shorter than the image), `qemu-img
 *   info` and `qemu-img map --output=json` through the server, `nbdinfo --json`, `nbdinfo --map`
 *   and `nbdinfo --map=qemu:allocation-depth` give exactly what they give through qemu-nbd; `qemu-img
 *   convert`, `nbdcopy` and `qemu-img compare` read the image's content;
 * - writes: nbdcopy and qemu-img convert into an empty image, a fio job (ioengine=nbd,
 *   verify=crc32c), and the same qemu-io writes through both servers with each --discard and
 *   --detect-zeroes mode — after which the two files are byte-identical and pass `qemu-img check`.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool, runTool, serveOurs, serveQemu, type Served } from '../support/nbd.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-nbd-clients-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sh(tool: string, ...args: string[]): string {
  const r = runTool(tool, args, { cwd: dir });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function qemuIo(image: string, ...cmds: string[]): void {
  sh('qemu-io', '-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), image);
}

interface Fixture {
  readonly name: string;
  /** Options of both servers beyond -k, -t, -r. */
  readonly ours: readonly string[];
  build(): void;
}

const FIXTURES: readonly Fixture[] = [
  {
    name: 'plain', ours: [], build: () => {
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'plain.qcow2', '64M');
      qemuIo('plain.qcow2', 'write -P 1 0 4k', 'write -P 2 1M 68k', 'write -z 2M 64k', 'write -c -P 3 3M 64k', 'write -P 4 5000000 3000',
        'write -P 5 8M 1M', 'write -z -u 8M 256k', 'discard 8704k 128k', 'write -P 6 63M 1M');
    },
  },
  {
    name: 'subclusters', ours: [], build: () => {
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', 'subclusters.qcow2', '32M');
      qemuIo('subclusters.qcow2', 'write -P 7 0 2k', 'write -P 8 6k 4k', 'write -z 64k 64k', 'write -P 9 130k 2k', 'write -z 132k 2k',
        'write -P 10 1M 200k', 'write -z -u 1060k 8k');
    },
  },
  {
    name: 'tiny-clusters', ours: [], build: () => {
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'tiny-clusters.qcow2', '4M');
      qemuIo('tiny-clusters.qcow2', 'write -P 1 0 1000', 'write -P 2 100k 300k', 'write -z 200k 50k', 'write -z -u 300k 10k', 'write -P 3 4095k 1k');
    },
  },
  {
    name: 'v2', ours: [], build: () => {
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '16M');
      qemuIo('v2.qcow2', 'write -P 1 0 100k', 'write -z 64k 64k', 'write -P 2 5M 1M', 'discard 5M 512k');
    },
  },
  {
    name: 'chain', ours: ['--allow-backing'], build: () => {
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'chain-base.qcow2', '32M');
      qemuIo('chain-base.qcow2', 'write -P 1 0 8M', 'write -P 2 16M 1M', 'write -z 20M 1M', 'write -P 3 31M 1M');
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'chain-base.qcow2', '-F', 'qcow2', 'chain.qcow2', '64M');
      qemuIo('chain.qcow2', 'write -P 4 1M 64k', 'write -z 2M 128k', 'discard 4M 1M', 'write -P 5 30M 4M', 'write -P 6 40M 1M');
    },
  },
];

beforeAll(() => {
  for (const t of ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo', 'nbdcopy', 'fio']) requireTool(t);
  for (const f of FIXTURES) f.build();
});

/** Runs `fn` with the image served read-only by qcow2-ref serve and by qemu-nbd (both -t -e 0 -A). */
async function withBoth(f: Fixture, fn: (ours: Served, qemu: Served) => Promise<void> | void): Promise<void> {
  const image = `${f.name}.qcow2`;
  const common = ['-t', '-r', '-e', '0', '-A', '-D', 'served'];
  const ours = await serveOurs(image, join(dir, `${f.name}-ours.sock`), [...common, ...f.ours], dir);
  let qemu: Served | undefined;
  try {
    qemu = await serveQemu(image, join(dir, `${f.name}-qemu.sock`), common, dir);
    await fn(ours, qemu);
  } finally {
    const a = await ours.stop();
    const b = await qemu?.stop();
    expect(a.code, a.stderr).toBe(0);
    if (b !== undefined) expect(b.signal ?? b.code, b.stderr).not.toBeUndefined();
  }
}

/** Replaces a server's socket path by a placeholder, so two servers' outputs compare. */
function unsock(text: string, s: Served): string {
  return text.split(s.socket).join('SOCKET');
}

describe.each(FIXTURES)('$name: reads through qcow2-ref serve equal reads through qemu-nbd', (f) => {
  it('qemu-img info and map, nbdinfo --json, --map and --map=qemu:allocation-depth', async () => {
    await withBoth(f, (ours, qemu) => {
      for (const args of [['info', '--output=json'], ['map', '--output=json']]) {
        const a = unsock(sh('qemu-img', ...args, ours.uri()), ours);
        const b = unsock(sh('qemu-img', ...args, qemu.uri()), qemu);
        expect(a, `qemu-img ${args.join(' ')}`).toBe(b);
      }
      const infoA = JSON.parse(unsock(sh('nbdinfo', '--json', ours.uri()), ours)) as unknown;
      const infoB = JSON.parse(unsock(sh('nbdinfo', '--json', qemu.uri()), qemu)) as unknown;
      expect(infoA).toEqual(infoB);
      for (const m of ['--map', '--map=qemu:allocation-depth']) {
        expect(sh('nbdinfo', m, ours.uri()), `nbdinfo ${m}`).toBe(sh('nbdinfo', m, qemu.uri()));
      }
      // The maps say something: the fixtures hold data, zeros and (for the chain) backing data.
      expect(sh('nbdinfo', '--map', ours.uri())).toMatch(/data/);
    });
  });

  it('qemu-img convert, nbdcopy and qemu-img compare read the content', async () => {
    sh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', `${f.name}.qcow2`, `${f.name}.expected.raw`);
    await withBoth(f, (ours) => {
      sh('qemu-img', 'convert', '-O', 'raw', ours.uri(), `${f.name}.convert.raw`);
      sh('nbdcopy', ours.uri(), join(dir, `${f.name}.nbdcopy.raw`));
      const expected = readFileSync(join(dir, `${f.name}.expected.raw`));
      expect(readFileSync(join(dir, `${f.name}.convert.raw`)).equals(expected)).toBe(true);
      expect(readFileSync(join(dir, `${f.name}.nbdcopy.raw`)).equals(expected)).toBe(true);
      expect(runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', ours.uri(), `${f.name}.expected.raw`], { cwd: dir }).status).toBe(0);
    });
  });
});

describe('writes through qcow2-ref serve', () => {
  it('nbdcopy and qemu-img convert write an empty image that then equals the source and checks clean', async () => {
    sh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', 'plain.qcow2', 'copy-src.raw');
    for (const [tool, name] of [['nbdcopy', 'copy-nbdcopy'], ['qemu-img', 'copy-convert']] as const) {
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', `${name}.qcow2`, '64M');
      const s = await serveOurs(`${name}.qcow2`, join(dir, `${name}.sock`), ['-t', '-e', '4', '--discard=unmap'], dir);
      try {
        if (tool === 'nbdcopy') sh('nbdcopy', join(dir, 'copy-src.raw'), s.uri());
        else sh('qemu-img', 'convert', '-n', '-f', 'raw', '-O', 'raw', 'copy-src.raw', s.uri());
      } finally {
        const r = await s.stop();
        expect(r.code, r.stderr).toBe(0);
      }
      expect(runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', `${name}.qcow2`, 'copy-src.raw'], { cwd: dir }).status, name).toBe(0);
      expect(runTool('qemu-img', ['check', `${name}.qcow2`], { cwd: dir }).status, name).toBe(0);
    }
  });

  it('a fio job (ioengine=nbd, random writes with verify=crc32c) passes', async () => {
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'fio.qcow2', '64M');
    const s = await serveOurs('fio.qcow2', join(dir, 'fio.sock'), ['-t'], dir);
    let out: { status: number; stdout: string; stderr: string };
    try {
      out = runTool('fio', ['--name=verify', '--ioengine=nbd', `--uri=${s.uri()}`, '--rw=randwrite', '--bs=4k', '--size=16M',
        '--iodepth=8', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--randrepeat=1', '--output-format=json', `--output=${join(dir, 'fio.json')}`], { cwd: dir });
    } finally {
      const r = await s.stop();
      expect(r.code, r.stderr).toBe(0);
    }
    expect(out.status, out.stderr).toBe(0);
    const job = (JSON.parse(readFileSync(join(dir, 'fio.json'), 'utf8')) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs[0]!;
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(16 * 1024 * 1024);
    // The verify phase read everything back.
    expect(job.read.io_bytes).toBe(16 * 1024 * 1024);
    expect(runTool('qemu-img', ['check', 'fio.qcow2'], { cwd: dir }).status).toBe(0);
  });

  describe.each([
    { flags: [] as string[] },
    { flags: ['--discard=unmap'] },
    { flags: ['--detect-zeroes=on'] },
    { flags: ['--discard=unmap', '--detect-zeroes=unmap'] },
  ])('the same qemu-io writes through qcow2-ref serve $flags and qemu-nbd $flags', ({ flags }) => {
    it('give byte-identical files that check clean', async () => {
      const tag = flags.join('').replace(/[^a-z]/g, '') || 'default';
      const cmds = ['write -P 1 0 200k', 'write -P 0 64k 64k', 'write -z 128k 64k', 'write -z -u 300k 100k', 'write -P 2 1M 64k',
        'discard 1M 64k', 'write -P 3 2M 1M', 'discard 2100k 300k', 'write -z -u 2M 64k', 'flush', 'write -P 0 4M 4k', 'write -P 4 5000k 10k'];
      const files: Buffer[] = [];
      for (const which of ['ours', 'qemu'] as const) {
        const image = `io-${tag}-${which}.qcow2`;
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', image, '8M');
        const sock = join(dir, `io-${tag}-${which}.sock`);
        const s = which === 'ours' ? await serveOurs(image, sock, ['-t', ...flags], dir) : await serveQemu(image, sock, ['-t', ...flags], dir);
        try {
          sh('qemu-io', '-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), s.uri());
        } finally {
          await s.stop();
        }
        expect(runTool('qemu-img', ['check', image], { cwd: dir }).status, image).toBe(0);
        files.push(readFileSync(join(dir, image)));
      }
      expect(files[0]!.length).toBe(files[1]!.length);
      expect(files[0]!.equals(files[1]!)).toBe(true);
    });
  });
});

describe('qcow2-ref serve, the command', () => {
  it('--help answers; bad options and unopenable images are one-line errors', () => {
    const bin = [join(import.meta.dirname, '../../bin/qcow2-ref.mjs'), 'serve'];
    const help = runTool(process.execPath, [...bin, '--help'], { cwd: dir });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: qcow2-ref serve/);
    const cases: [string[], number, RegExp][] = [
      [['-k', 'x.sock', '-p', '1', 'plain.qcow2'], 2, /--socket cannot be combined/],
      [['--discard=maybe', 'plain.qcow2'], 2, /Invalid discard option 'maybe'/],
      [['--detect-zeroes=unmap', '-k', 'x.sock', 'plain.qcow2'], 2, /detect-zeroes to unmap is not allowed without setting discard operation to unmap/],
      [['-k', 'x.sock', 'missing.qcow2'], 1, /missing\.qcow2: Could not open/],
      [['-k', 'x.sock', 'chain.qcow2'], 1, /chain\.qcow2: .*backing/],
      [['-p', '70000', 'plain.qcow2'], 2, /Invalid port '70000'/],
      [[], 2, /missing IMAGE/],
    ];
    for (const [args, code, message] of cases) {
      const r = runTool(process.execPath, [...bin, ...args], { cwd: dir });
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr.trimEnd().split('\n').length, args.join(' ')).toBeLessThanOrEqual(2);
    }
  });

  it('without -t it exits (0) when its client leaves; writes are then in the closed, clean file', async () => {
    copyFileSync(join(dir, 'plain.qcow2'), join(dir, 'once.qcow2'));
    const pid = join(dir, 'once.pid');
    const s = await serveOurs('once.qcow2', join(dir, 'once.sock'), [`--pid-file=${pid}`], dir, pid);
    sh('qemu-io', '-f', 'raw', '-c', 'write -P 42 10M 1M', s.uri());
    const r = await s.exited();
    expect(r.signal).toBeNull();
    expect(r.code, r.stderr).toBe(0);
    expect(runTool('qemu-img', ['check', 'once.qcow2'], { cwd: dir }).status).toBe(0);
    expect(runTool('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 42 10M 1M', 'once.qcow2'], { cwd: dir }).stdout).not.toMatch(/fail|mismatch/i);
  });

  it('what a FLUSH acknowledged survives SIGKILL; SIGTERM closes the image cleanly', async () => {
    for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
      const image = `durable-${signal}.qcow2`;
      sh('qemu-img', 'create', '-q', '-f', 'qcow2', image, '64M');
      const s = await serveOurs(image, join(dir, `durable-${signal}.sock`), ['-t'], dir);
      // qemu-io's flush is NBD_CMD_FLUSH; then more writes that are never flushed by the client.
      sh('qemu-io', '-f', 'raw', '-c', 'write -P 7 0 3M', '-c', 'write -P 8 20M 1M', '-c', 'flush', s.uri());
      const after = runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 9 40M 1M', s.uri()], { cwd: dir });
      expect(after.status).toBe(0);
      // stop() sends SIGTERM itself (a second one would make the server exit at once).
      if (signal === 'SIGKILL') s.process.kill(signal);
      const r = signal === 'SIGKILL' ? await s.exited() : await s.stop();
      if (signal === 'SIGTERM') expect(r.code, r.stderr).toBe(0);
      // Leaks are allowed after a kill (exit 3), corruption is not.
      expect([0, 3]).toContain(runTool('qemu-img', ['check', image], { cwd: dir }).status);
      if (signal === 'SIGTERM') expect(runTool('qemu-img', ['check', image], { cwd: dir }).status).toBe(0);
      const read = runTool('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 7 0 3M', '-c', 'read -P 8 20M 1M', ...(signal === 'SIGTERM' ? ['-c', 'read -P 9 40M 1M'] : []), image], { cwd: dir });
      expect(`${read.stdout}${read.stderr}`, signal).not.toMatch(/fail|mismatch|error/i);
    }
  });

  it('read-only: qemu-io writes fail and the file is unchanged', async () => {
    const before = readFileSync(join(dir, 'plain.qcow2'));
    const s = await serveOurs('plain.qcow2', join(dir, 'ro.sock'), ['-t', '-r'], dir);
    let out: { status: number; stdout: string; stderr: string };
    try {
      out = runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', s.uri()], { cwd: dir });
    } finally {
      await s.stop();
    }
    expect(`${out.stdout}${out.stderr}`).toMatch(/Operation not permitted|read-only|Permission denied/i);
    expect(readFileSync(join(dir, 'plain.qcow2')).equals(before)).toBe(true);
  });
});
