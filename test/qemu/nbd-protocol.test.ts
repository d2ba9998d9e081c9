/**
 * The NBD protocol of `qcow2-ref serve`, byte by byte, with qemu-nbd as the oracle: scripted
 * sessions — every option of the handshake with good and bad payloads, every command with good and
 * bad arguments (past the end, too long, bad flags, unknown types, FAST_ZERO that cannot be fast,
 * REQ_ONE, DF, FUA, simple and structured replies, read-only exports) — are played against both
 * servers by a raw client (test/support/nbd-client.ts), and what each answers (reply types and
 * payloads, error numbers, data, extents, whether the connection is closed) must be the same.
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawNbd, infoPayload, metaPayload, type Answer } from '../support/nbd-client.ts';
import { requireTool, runTool, serveOurs, serveQemu, type Served } from '../support/nbd.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-nbd-protocol-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

beforeAll(() => {
  requireTool('qemu-nbd');
  const sh = (...a: string[]): void => {
    const r = runTool(a[0]!, a.slice(1), { cwd: dir });
    if (r.status !== 0) throw new Error(`${a.join(' ')}: ${r.stderr}`);
  };
  sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', String(SIZE));
  sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 1M', '-c', 'write -P 2 3M 100k', '-c', 'write -z 5M 1M', '-c', 'write -c -P 3 8M 64k', 'base.qcow2');
});

type Observation = unknown;

/** What an answer looks like, for comparison: error, data (hex digest by value), extents; chunk kinds when asked. */
function seen(a: Answer | null, withChunks = false): Observation {
  if (a === null) return 'closed';
  return {
    error: a.error,
    ...(a.data !== undefined && a.error === 0 ? { data: digest(a.data) } : {}),
    ...(a.extents.size > 0 ? { extents: [...a.extents.entries()] } : {}),
    ...(withChunks ? { chunks: a.chunks } : {}),
  };
}

/** A short, exact summary of bytes: length and runs of equal bytes. */
function digest(b: Uint8Array): string {
  const runs: string[] = [];
  let i = 0;
  while (i < b.length) {
    let j = i + 1;
    while (j < b.length && b[j] === b[i]) j++;
    runs.push(`${b[i]}x${j - i}`);
    i = j;
  }
  return `${b.length}:${runs.slice(0, 64).join(',')}${runs.length > 64 ? `,…(${runs.length})` : ''}`;
}

/** Plays `script` on a fresh copy of base.qcow2 served by qcow2-ref serve and by qemu-nbd with `args`; returns both observation lists. */
async function both(name: string, args: readonly string[], script: (connect: () => Promise<RawNbd>) => Promise<Observation[]>): Promise<[Observation[], Observation[]]> {
  const out: Observation[][] = [];
  for (const which of ['ours', 'qemu'] as const) {
    const image = `${name}-${which}.qcow2`;
    copyFileSync(join(dir, 'base.qcow2'), join(dir, image));
    const sock = join(dir, `${name}-${which}.sock`);
    const s: Served = which === 'ours' ? await serveOurs(image, sock, ['-t', '-e', '0', ...args], dir) : await serveQemu(image, sock, ['-t', '-e', '0', ...args], dir);
    try {
      out.push(await script(() => RawNbd.connect(sock)));
    } finally {
      const r = await s.stop();
      if (which === 'ours') expect(r.code, r.stderr).toBe(0);
    }
  }
  return [out[0]!, out[1]!];
}

/** Option replies as (type, payload text) pairs; null when the server closed. */
async function replies(c: RawNbd): Promise<Observation> {
  const r = await c.optionReplies();
  if (r === null) return 'closed';
  return r.map((x) => [x.type >= 2 ** 31 ? `ERR+${x.type - 2 ** 31}` : x.type, Buffer.from(x.payload).toString('hex')]);
}

describe('handshake: qcow2-ref serve answers every option as qemu-nbd does', () => {
  it('options with good and bad payloads, in one session', async () => {
    const [ours, qemu] = await both('options', ['-x', 'disk', '-D', 'a description', '-A'], async (connect) => {
      const c = await connect();
      const obs: Observation[] = [await c.greeting()];
      c.sendClientFlags(3);
      const opt = async (option: number, payload?: Uint8Array, declared?: number): Promise<void> => {
        c.sendOption(option, payload, declared);
        obs.push([option, await replies(c)]);
      };
      await opt(3); // LIST
      await opt(3, new Uint8Array(3)); // LIST with data: INVALID
      await opt(6, infoPayload('disk', [0, 1, 2, 3])); // INFO, every info
      await opt(6, infoPayload('other', [])); // unknown export
      await opt(6, infoPayload('disk', [1]).subarray(0, 7)); // truncated: INVALID
      await opt(6, new Uint8Array([0, 0, 0x20, 0, 1, 2])); // name length 8192 > 4096: INVALID
      await opt(6, Uint8Array.from([...infoPayload('disk', []), 9])); // trailing byte: INVALID
      await opt(6, new Uint8Array([0, 0, 0, 1, 0, 0, 0])); // embedded NUL in the name: INVALID
      await opt(5); // STARTTLS: POLICY
      await opt(5, new Uint8Array(1)); // STARTTLS with data: INVALID
      await opt(99, new Uint8Array(100)); // unknown: UNSUP
      await opt(4); // PEEK_EXPORT: UNSUP
      await opt(10, metaPayload('disk', ['base:allocation'])); // SET before structured: INVALID
      await opt(9, metaPayload('disk', [])); // LIST all
      await opt(9, metaPayload('disk', ['base:', 'qemu:', 'x-y:z', 'nocolon'])); // wildcards, unknown namespaces
      await opt(9, metaPayload('nope', ['base:allocation'])); // unknown export
      await opt(9, metaPayload('disk', ['base:allocation']).subarray(0, 10)); // truncated: INVALID
      await opt(8); // STRUCTURED_REPLY
      await opt(8); // again: INVALID
      await opt(8, new Uint8Array(2)); // with data: INVALID
      await opt(10, metaPayload('disk', ['base:', 'qemu:'])); // SET wildcards select nothing
      await opt(10, metaPayload('disk', ['qemu:allocation-depth', 'base:allocation', 'base:allocation'])); // ids 1 then 0
      await opt(6, infoPayload('disk', [3])); // INFO after structured: SEND_DF in the flags
      await opt(7, infoPayload('disk', [])); // GO
      // Now in transmission: a block status with both contexts.
      const bs = c.request(7, 0, 0n, 12 * MiB);
      obs.push(seen(await c.answer(bs)));
      return obs;
    });
    expect(ours).toEqual(qemu);
  });

  it('NBD_OPT_EXPORT_NAME with and without NO_ZEROES, non-fixed newstyle, ABORT', async () => {
    const [ours, qemu] = await both('export-name', [], async (connect) => {
      const obs: Observation[] = [];
      for (const flags of [1, 3, 0]) {
        const c = await connect();
        await c.greeting();
        c.sendClientFlags(flags);
        if (flags === 0) {
          // Non-fixed newstyle: any option but EXPORT_NAME ends the session.
          c.sendOption(3);
          await c.untilClosed();
          obs.push([flags, 'closed']);
          continue;
        }
        c.sendOption(1, new TextEncoder().encode(''));
        const r = await c.recv(flags === 3 ? 10 : 134);
        obs.push([flags, r === null ? 'closed' : Buffer.from(r).toString('hex')]);
        const rd = c.request(0, 0, 0n, 4096);
        obs.push(seen(await c.answer(rd)));
        c.destroy();
      }
      const a = await connect();
      await a.greeting();
      a.sendClientFlags(1);
      a.sendOption(2);
      // "The client SHOULD gracefully handle the server closing the connection after receiving an
      // NBD_OPT_ABORT without it sending a reply": qemu-nbd's ACK can be lost in its hang-up.
      const abort = await replies(a);
      obs.push(abort === 'closed' || JSON.stringify(abort) === JSON.stringify([[1, '']]) ? 'ack or closed' : abort);
      await a.untilClosed();
      // An unknown export name: no error reply exists, the server hangs up.
      const b = await connect();
      await b.greeting();
      b.sendClientFlags(1);
      b.sendOption(1, new TextEncoder().encode('nope'));
      await b.untilClosed();
      obs.push('closed');
      // Unknown client flags: the server hangs up.
      const d = await connect();
      await d.greeting();
      d.sendClientFlags(1 | 8);
      await d.untilClosed();
      obs.push('closed');
      return obs;
    });
    expect(ours).toEqual(qemu);
  });
});

describe('transmission: qcow2-ref serve answers every command as qemu-nbd does', () => {
  /** The commands of one session (`structured`: with structured replies and both contexts). */
  async function commands(c: RawNbd, structured: boolean): Promise<Observation[]> {
    const obs: Observation[] = [];
    const h = await c.handshake(structured ? { structured: true, contexts: ['base:allocation', 'qemu:allocation-depth'] } : {});
    obs.push([h.size.toString(), h.flags, [...h.contextIds.entries()]]);
    const ask = async (type: number, flags: number, offset: bigint, length: number, data?: Uint8Array, chunks = false): Promise<void> => {
      const k = c.request(type, flags, offset, length, data);
      obs.push([type, flags, offset.toString(), length, seen(await c.answer(k), chunks)]);
    };
    const S = BigInt(SIZE);
    await ask(0, 0, 0n, 2 * MiB, undefined, true); // data then holes (structured: DATA + HOLE chunks)
    await ask(0, 4, 0n, 2 * MiB, undefined, true); // DF: one data chunk
    await ask(0, 1, 3n * BigInt(MiB), 100 * 1024); // FUA on a read: flush first
    await ask(0, 0, 8n * BigInt(MiB), 64 * 1024); // a compressed cluster
    await ask(0, 0, S - 512n, 512);
    await ask(0, 0, S - 512n, 1024); // past the end: EINVAL
    await ask(0, 0, S + 1n, 0); // offset past the end: EINVAL
    await ask(0, 0, 0n, 0); // zero length
    await ask(0, 0, 0n, 33 * MiB); // longer than 32 MiB: EINVAL, the connection stays
    await ask(0, 8, 0n, 4096); // REQ_ONE on a read: EINVAL
    await ask(1, 0, 100n, 5000, new Uint8Array(5000).fill(9));
    await ask(1, 1, 6n * BigInt(MiB), 4096, new Uint8Array(4096).fill(8)); // FUA
    await ask(1, 0, S - 100n, 200, new Uint8Array(200).fill(7)); // past the end (QEMU 7.2: EINVAL)
    await ask(1, 2, 0n, 16, new Uint8Array(16)); // NO_HOLE on a write: EINVAL (payload consumed)
    await ask(6, 0, 200n * 1024n, 100 * 1024); // zero with unmap
    await ask(6, 2, 400n * 1024n, 64 * 1024); // NO_HOLE
    await ask(6, 16, 5n * BigInt(MiB) + 4096n, 8192); // FAST_ZERO inside zeros: fast
    await ask(6, 16, 3n * BigInt(MiB) + 1000n, 8192); // FAST_ZERO over data, unaligned: ENOTSUP
    await ask(6, 16 | 2, 10n * BigInt(MiB), MiB); // FAST_ZERO, aligned
    await ask(6, 0, S - 4096n, 8192); // past the end (QEMU 7.2: EINVAL)
    await ask(6, 4, 0n, 4096); // DF on zero: EINVAL
    await ask(4, 0, 2n * BigInt(MiB), MiB); // TRIM (ignored without --discard=unmap)
    await ask(4, 1, 0n, 4096); // TRIM with FUA
    await ask(4, 0, S, 1); // past the end: EINVAL
    await ask(3, 0, 0n, 0); // FLUSH
    await ask(3, 1, 0n, 0);
    await ask(5, 0, 0n, MiB); // CACHE
    await ask(5, 0, 0n, 33 * MiB); // CACHE too long: EINVAL
    await ask(7, 0, 0n, SIZE); // BLOCK_STATUS
    await ask(7, 8, 0n, SIZE); // REQ_ONE
    await ask(7, 8, 100n * 1024n, 1000); // REQ_ONE inside one extent
    await ask(7, 0, 0n, 0); // zero length: EINVAL
    await ask(7, 0, S - 4096n, 8192); // past the end: EINVAL
    await ask(7, 4, 0n, 4096); // bad flag
    await ask(99, 0, 0n, 0); // unknown command: EINVAL
    await ask(99, 1, 0n, 0);
    await ask(0, 0, 0n, 2 * MiB); // what all of it did
    await ask(0, 0, 5n * BigInt(MiB), 6 * MiB);
    await ask(7, 0, 0n, SIZE);
    // Pipelined: 40 requests at once, then all the answers.
    // Requests in flight together may run in any order (qemu-nbd runs them concurrently), so the
    // reads cover ranges no write in the batch touches.
    const cookies: bigint[] = [];
    for (let i = 0; i < 40; i++) {
      cookies.push(i % 3 === 0
        ? c.request(1, 0, BigInt(i * 70_000), 3000, new Uint8Array(3000).fill(i + 1))
        : i % 3 === 1 ? c.request(0, 0, 6n * BigInt(MiB) + BigInt(i * 50_000), 70_000) : c.request(6, 0, 12n * BigInt(MiB) + BigInt(i * 90_000), 10_000));
    }
    for (const k of cookies) obs.push(seen(await c.answer(k)));
    await ask(0, 0, 0n, 4 * MiB);
    return obs;
  }

  for (const structured of [true, false]) {
    it(`${structured ? 'structured' : 'simple'} replies`, async () => {
      const [ours, qemu] = await both(`cmds-${structured}`, ['-A'], async (connect) => commands(await connect(), structured));
      expect(ours).toEqual(qemu);
    });
  }

  it('pipelined reads of different data, many more than are in flight at once (read buffers are reused)', async () => {
    const [ours, qemu] = await both('pipelined-reads', [], async (connect) => {
      const c = await connect();
      await c.handshake({ structured: true });
      // 64 KiB stripes, each its own byte, over the first 4 MiB.
      for (let i = 0; i < 64; i++) {
        const k = c.request(1, 0, BigInt(i * 65536), 65536, new Uint8Array(65536).fill(i + 10));
        await c.answer(k);
      }
      const lengths = [4096, 65536, 300_000, MiB];
      const cookies: bigint[] = [];
      for (let i = 0; i < 120; i++) {
        const length = lengths[i % 4]!;
        const offset = BigInt(((i * 7919 * 4096) % (4 * MiB - length)) & ~511);
        cookies.push(c.request(0, 0, offset, length));
      }
      const obs: Observation[] = [];
      for (const k of cookies) obs.push(seen(await c.answer(k)));
      return obs;
    });
    expect(ours).toEqual(qemu);
    // The reads saw the stripes (not zeros): the comparison is not between two empty answers.
    expect(JSON.stringify(ours)).toContain('73x');
  });

  it('with --discard=unmap and --detect-zeroes=unmap', async () => {
    const [ours, qemu] = await both('cmds-unmap', ['-A', '--discard=unmap', '--detect-zeroes=unmap'], async (connect) => commands(await connect(), true));
    expect(ours).toEqual(qemu);
  });

  it('read-only exports refuse changes (EINVAL, as qemu-nbd 7.2 answers)', async () => {
    const [ours, qemu] = await both('cmds-ro', ['-r'], async (connect) => {
      const c = await connect();
      const h = await c.handshake({ structured: true });
      const obs: Observation[] = [h.flags];
      for (const [type, data] of [[1, new Uint8Array(512)], [6, undefined], [4, undefined], [1, new Uint8Array(512)]] as const) {
        const k = c.request(type, 0, 0n, 512, data);
        obs.push(seen(await c.answer(k)));
      }
      const k = c.request(3, 0, 0n, 0);
      obs.push(seen(await c.answer(k)));
      return obs;
    });
    expect(ours).toEqual(qemu);
  });

  it('protocol violations end the connection: bad magic, a write longer than 32 MiB, DISC', async () => {
    const [ours, qemu] = await both('fatal', [], async (connect) => {
      const obs: Observation[] = [];
      const a = await connect();
      await a.handshake({ structured: true });
      a.send(RawNbd.requestHeader(0, 0, 1n, 0n, 512, 0x12345678));
      await a.untilClosed();
      obs.push('bad magic: closed');
      const b = await connect();
      await b.handshake({ structured: true });
      const k = b.request(1, 0, 0n, 33 * MiB);
      obs.push(seen(await b.answer(k)));
      await b.untilClosed();
      const d = await connect();
      await d.handshake({ structured: false });
      // (A DISC sent while requests are in flight: qemu-nbd hangs up at once and drops their
      // replies; qcow2-ref serve sends them first. Both are allowed, so the client waits here.)
      const w = d.request(1, 0, 0n, 512, new Uint8Array(512).fill(5));
      obs.push(seen(await d.answer(w)));
      d.send(RawNbd.requestHeader(2, 0, 99n, 0n, 0));
      await d.untilClosed();
      // The write before DISC was done.
      const e = await connect();
      await e.handshake({ structured: false });
      const r = e.request(0, 0, 0n, 512);
      obs.push(seen(await e.answer(r)));
      e.destroy();
      return obs;
    });
    expect(ours).toEqual(qemu);
  });
});
