/**
 * The NBD server's write log for the crash simulator: `qcow2-ref serve`'s pieces (Qcow2Disk, the
 * NbdExport, NbdServer's sessions on a Unix socket) in this process, on memory backends that record
 * every host call (src/crash recordingBackend), driven by the raw test client (nbd-client.ts) one
 * command at a time — so the log is what the disk under the server really issued for what a client
 * sent, not what the driver would do if called directly.
 *
 * Guest op → NBD command (structured replies negotiated, as QEMU's client does):
 * - write → NBD_CMD_WRITE;
 * - writeZeroes → NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE when !unmap. `noFallback` is not
 *   sent (no FAST_ZERO): the op is recorded without it, as the plain zero write the server did;
 * - discard → NBD_CMD_TRIM, on an export served with --discard=unmap (and the disk opened with
 *   discard passthrough, as serve opens it then): TRIM is then a real discard, which is the
 *   raw-disk oracle's `discard`. With serve's default --discard=ignore a TRIM changes nothing the
 *   guest sees, which no Op expresses, so that mode is not taken here;
 * - flush → NBD_CMD_FLUSH.
 * writeCompressed, snapshots and resize have no NBD command: nbdWriteLog leaves them out of the run
 * (they are absent from the log's guest list; `nbdSendable` says which ops are kept).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recordingBackend, type GuestEvent, type WriteLog } from '../../src/crash/index.ts';
import { Qcow2Disk, memoryBackend } from '../../src/disk/index.ts';
import { NbdServer } from '../../src/io/index.ts';
import type { HostIO, Op } from '../../src/model/index.ts';
import { NbdExport, nbdProtocol as P } from '../../src/nbd/index.ts';
import { RawNbd } from './nbd-client.ts';

/** Whether NBD can send `op` (everything else is left out of an NBD run). */
export function nbdSendable(op: Op): boolean {
  return op.kind === 'write' || op.kind === 'writeZeroes' || op.kind === 'discard' || op.kind === 'flush';
}

/** The op as the server carries it out (a zero write loses `noFallback`: FAST_ZERO is not sent). */
function asSent(op: Op): Op {
  if (op.kind !== 'writeZeroes' || op.noFallback === undefined) return op;
  const { noFallback: _, ...rest } = op;
  return rest;
}

/** Sends `op` as its NBD command; returns its cookie. */
function send(client: RawNbd, op: Op): bigint {
  switch (op.kind) {
    case 'write':
      return client.request(P.NBD_CMD_WRITE, 0, op.offset, op.data.length, op.data);
    case 'writeZeroes':
      return client.request(P.NBD_CMD_WRITE_ZEROES, op.unmap ? 0 : P.NBD_CMD_FLAG_NO_HOLE, op.offset, Number(op.length));
    case 'discard':
      return client.request(P.NBD_CMD_TRIM, 0, op.offset, Number(op.length));
    case 'flush':
      return client.request(P.NBD_CMD_FLUSH, 0, 0n, 0);
    default:
      throw new Error(`NBD has no command for ${op.kind}`);
  }
}

/**
 * The NBD server's write log for the NBD-sendable `ops` (others are left out, see the module
 * comment) on an image whose file is `base` (and data file `baseData`): Qcow2Disk opened writable
 * (write-back with `writeback`, as `serve` opens it; write-through otherwise) on recording memory
 * backends, exported with --discard=unmap and served on a Unix socket in a temporary directory; the
 * client connects, sends each op and awaits its reply — the op's guest range is the host log
 * between the send and the reply, an error reply makes it `ok: false` — then NBD_CMD_DISC; the
 * server ends with its last client and the disk is closed, whose writes end the log.
 */
export async function nbdWriteLog(base: Uint8Array, ops: readonly Op[], opts: { readonly writeback?: boolean; readonly baseData?: Uint8Array } = {}): Promise<WriteLog> {
  const host: HostIO[] = [];
  const guest: GuestEvent[] = [];
  const backend = recordingBackend(memoryBackend(base), host);
  const data = opts.baseData !== undefined ? recordingBackend(memoryBackend(opts.baseData), host, 'data') : undefined;
  const disk = await Qcow2Disk.open(backend, {
    readOnly: false, discardPassthrough: true,
    ...(opts.writeback === true ? { writeback: true } : {}),
    ...(data !== undefined ? { dataFile: data } : {}),
  });
  const serverLog: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'qcow2-crash-nbd-'));
  try {
    const exp = new NbdExport(disk, { discard: 'unmap' });
    const socketPath = join(dir, 'nbd.sock');
    const server = await NbdServer.listen([exp], { socketPath, log: (line) => serverLog.push(line) });
    const client = await RawNbd.connect(socketPath);
    try {
      await client.handshake({ structured: true });
      for (const original of ops) {
        if (!nbdSendable(original)) continue;
        const op = asSent(original);
        const start = host.length;
        const answer = await client.answer(send(client, op));
        if (answer === null) throw new Error(`the NBD server closed the connection at ${op.kind}: ${serverLog.join('; ')}`);
        const end = host.length;
        guest.push(answer.error === 0 ? { op, start, end, ok: true } : { op, start, end, ok: false, message: `NBD error ${answer.error}${answer.message !== undefined ? `: ${answer.message}` : ''}` });
      }
      client.forget(client.request(P.NBD_CMD_DISC, 0, 0n, 0));
      await client.untilClosed();
    } finally {
      client.destroy();
      await server.shutdown();
    }
  } finally {
    await disk.close();
    await rm(dir, { recursive: true, force: true });
  }
  const writer = opts.writeback === true ? 'nbd-writeback' : 'nbd';
  return opts.baseData === undefined ? { writer, base, host, guest } : { writer, base, baseData: opts.baseData, host, guest };
}
