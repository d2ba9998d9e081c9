/**
 * `qcow2-ref serve [OPTIONS] IMAGE`: an NBD server for a qcow2 image, with qemu-nbd's option names
 * and meanings (qemu-nbd.c), so that it can stand in for `qemu-nbd` in front of qemu-img, qemu-io,
 * libnbd's tools (nbdinfo, nbdcopy, nbdfuse), fio's nbd engine or the kernel's nbd-client. The image
 * is read and written by the driver (src/disk: every decision the model's), served by the NBD
 * session (src/nbd) on Node's sockets (src/io/nbd-server.ts).
 *
 * Lifecycle, as qemu-nbd: listen; serve at most --shared clients at once; without --persistent,
 * exit when the last client disconnects. SIGINT and SIGTERM stop it cleanly: no new requests are
 * read, those in flight are answered, the connections close, and the image is flushed and closed as
 * QEMU closes it (so it is clean afterwards: `qemu-img check` passes, lazy refcounts are settled).
 */
import { writeFile, rm } from 'node:fs/promises';
import { isQcow2FormatError } from '../codec/index.ts';
import { isDiskError, type Qcow2Disk } from '../disk/index.ts';
import { NbdExport, NbdExportError, type DetectZeroesMode, type DiscardMode } from '../nbd/index.ts';
import { isOpenError } from '../open/index.ts';
import { ModelError, type HostAllocation } from '../model/index.ts';
import { NbdServer, NbdServerError, OPEN_POLICY_OPTIONS, OpenImageError, SeekDataProbeServer, openDiskFile, openPolicyFrom } from '../io/index.ts';
import { EXIT_DECODE, EXIT_OK, EXIT_USAGE, UsageError, type CliIo, errnoText, oneImage, parseCommand, showHelp } from './io.ts';

/** Help text of the serve command. */
export const SERVE_HELP = `Usage: qcow2-ref serve [-k PATH | -p PORT [-b ADDR]] [-r] [-x NAME] [-D TEXT]
                     [-e NUM] [-t] [-A] [--discard=ignore|unmap] [--cache=MODE]
                     [--detect-zeroes=off|on|unmap] [-f qcow2] [--pid-file=PATH]
                     [-v] [--allow-backing] [--allow-backing-path]
                     [--allow-data-file-path] IMAGE

Serves the qcow2 image IMAGE over NBD, as 'qemu-nbd' (QEMU 7.2) serves it,
with qemu-nbd's option names. Clients: qemu-img and qemu-io
(nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME), libnbd's nbdinfo,
nbdcopy and nbdfuse, fio's nbd engine, the kernel's nbd-client. Every read
and write goes through qcow2-ref's driver: the image changes exactly as QEMU
would change it.

The protocol: fixed newstyle handshake; options EXPORT_NAME, GO, INFO, LIST,
ABORT, STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT; block sizes
1 / 4096 / 32 MiB; commands READ (with structured replies, ranges that read
as zeros are sent as holes), WRITE, WRITE_ZEROES, TRIM, FLUSH, CACHE,
BLOCK_STATUS (contexts base:allocation and, with -A, qemu:allocation-depth,
answering as qemu-nbd does) and DISC; FUA on every command. Requests may be
pipelined (up to 16 in flight per client); they are carried out one at a
time, in the order they arrive.

Options:
  -k, --socket=PATH    Listen on the Unix socket PATH (a stale file there is
                       replaced; the socket is removed on exit).
  -p, --port=PORT      Listen on TCP port PORT (default 10809).
  -b, --bind=ADDR      Listen on address ADDR (default 0.0.0.0).
  -r, --read-only      Export read-only: writes, zeroes and trims fail with
                       EPERM, and IMAGE is opened read-only.
  -x, --export-name=NAME
                       The export's name (default: the empty name).
  -D, --description=TEXT
                       A description clients may show (NBD_INFO_DESCRIPTION,
                       and the export list).
  -e, --shared=NUM     Serve at most NUM clients at once (default 1; 0: no
                       limit). With NUM other than 1 the export advertises
                       multi-connection consistency (CAN_MULTI_CONN): every
                       connection goes through the one driver. A connection
                       beyond the limit is closed at once (qemu-nbd leaves it
                       waiting in the listen queue).
  -t, --persistent     Keep serving after the last client disconnects
                       (default: exit then, as qemu-nbd does).
  -A, --allocation-depth
                       Offer the qemu:allocation-depth metadata context: 0
                       for ranges no image of the chain allocates, else 1 +
                       the depth of the image that does.
  --discard=MODE       ignore (default, as qemu-nbd; also 'off'): TRIM does
                       nothing, and clusters a zero write frees keep their
                       bytes in the file; unmap (also 'on'): TRIM discards
                       whole clusters, and freed clusters are punched out of
                       the file. (WRITE_ZEROES without NO_HOLE may free
                       clusters in both modes, as in qemu-nbd.)
  --cache=MODE         writeback (default, as qemu-nbd; also 'none'): data is
                       written to IMAGE as it arrives, metadata in batches
                       that keep QEMU's crash-safe order; all of it is
                       durable once a FLUSH (or a request with FUA) is
                       answered; writethrough (also 'directsync'): every
                       change is durable before its reply; unsafe: FLUSH
                       and FUA do nothing (IMAGE is flushed when the server
                       stops).
  --detect-zeroes=MODE off (default), on (a write of zeros becomes a zero
                       write), unmap (and may free clusters; needs
                       --discard=unmap).
  -f, --format=FMT     The image format: only qcow2.
  --pid-file=PATH      Write the process id to PATH once listening (removed
                       on exit).
  -v, --verbose        Say where the server listens and when clients come
                       and go, on stderr.
  --allow-backing      Open IMAGE's backing files (needed when it has one;
                       they are read-only). Their names are taken relative to
                       the directory of the image naming them; a name that is
                       absolute, leads out of that directory or names a
                       protocol is refused unless --allow-backing-path.
  --allow-backing-path Accept such backing file names (implies
                       --allow-backing).
  --allow-data-file-path
                       Accept an external data file name that is absolute or
                       leads out of IMAGE's directory.
  -h, --help           Show this help.

Why backing files need a flag: an image's header names the files it refers
to, and whoever made the image chose those names (CVE-2015-1851,
CVE-2024-32498). qemu-nbd follows them; qcow2-ref asks first.

Stopping: SIGINT or SIGTERM stop reading requests, answer those in flight,
close the connections, then flush and close IMAGE as QEMU closes it. A second
signal exits at once (exit code 1) without closing the image cleanly.

Hostile clients get the protocol's error replies, or their connection closed
when the protocol allows nothing else (a bad magic number, a write longer
than 32 MiB); no client can crash the server, stall the others, make it hold
more than about 64 MiB per connection, or change the image other than by
well-formed writes.

Differences from qemu-nbd: only qcow2 images; no TLS, no -c/--connect (use
nbd-client), no --fork, no -o/--offset, no bitmaps (-B), no snapshots (-s,
-l); the holes of a sparse, metadata-preallocated image are looked up (as
qemu-nbd does) only in IMAGE itself, not in its backing files or external
data file (python3 finds them with SEEK_DATA; without it they count as data).

Exit codes:
  0  the server stopped: the last client left (without -t), or a signal
  1  IMAGE could not be opened, the server could not listen, or closing
     IMAGE failed; one line on stderr: qcow2-ref: FILE: PROBLEM
  2  usage error (unknown option, bad value, missing IMAGE)
`;

/** The integer `text` for option `name`, within [min, max]; otherwise a UsageError. */
function intOption(name: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new UsageError(`Invalid ${name} '${text}'`);
  return Number(text);
}

/** Runs `serve` with the arguments after the command name; returns the exit code when the server stops. */
export async function runServe(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(args, {
    socket: { type: 'string', short: 'k' },
    port: { type: 'string', short: 'p' },
    bind: { type: 'string', short: 'b' },
    'read-only': { type: 'boolean', short: 'r' },
    'export-name': { type: 'string', short: 'x' },
    description: { type: 'string', short: 'D' },
    shared: { type: 'string', short: 'e' },
    persistent: { type: 'boolean', short: 't' },
    'allocation-depth': { type: 'boolean', short: 'A' },
    discard: { type: 'string' },
    cache: { type: 'string' },
    'detect-zeroes': { type: 'string' },
    format: { type: 'string', short: 'f' },
    'pid-file': { type: 'string' },
    verbose: { type: 'boolean', short: 'v' },
    ...OPEN_POLICY_OPTIONS,
  }, true);
  const v = parsed.values;
  if (v.help === true) return showHelp(io, SERVE_HELP);
  const imagePath = oneImage(parsed.positionals);
  if (v.socket !== undefined && (v.port !== undefined || v.bind !== undefined)) throw new UsageError('--socket cannot be combined with --port or --bind');
  const port = v.port !== undefined ? intOption('port', v.port, 0, 65535) : undefined;
  const shared = v.shared !== undefined ? intOption('shared', v.shared, 0, 1 << 30) : 1;
  if (v.format !== undefined && v.format !== 'qcow2') throw new UsageError(`format '${v.format}' is not supported (only qcow2)`);
  // bdrv_parse_discard_flags: off/ignore, on/unmap.
  const discardText = v.discard ?? 'ignore';
  const discard: DiscardMode | undefined = discardText === 'ignore' || discardText === 'off' ? 'ignore' : discardText === 'unmap' || discardText === 'on' ? 'unmap' : undefined;
  if (discard === undefined) throw new UsageError(`Invalid discard option '${discardText}'`);
  const detectText = v['detect-zeroes'] ?? 'off';
  if (detectText !== 'off' && detectText !== 'on' && detectText !== 'unmap') throw new UsageError(`Invalid detect-zeroes option '${detectText}'`);
  const detectZeroes: DetectZeroesMode = detectText;
  // qemu-nbd's cache modes; without O_DIRECT here, 'none' behaves as 'writeback' and 'directsync'
  // as 'writethrough'.
  const cacheText = v.cache ?? 'writeback';
  const cache = cacheText === 'writeback' || cacheText === 'none' ? 'writeback' : cacheText === 'writethrough' || cacheText === 'directsync' ? 'writethrough' : cacheText === 'unsafe' ? 'unsafe' : undefined;
  if (cache === undefined) throw new UsageError(`Invalid cache mode '${cacheText}'`);
  const readOnly = v['read-only'] === true;
  const verbose = v.verbose === true;
  const say = (line: string): void => io.stderr(`qcow2-ref: serve: ${line}\n`);

  let disk: Qcow2Disk;
  try {
    // qemu-nbd opens the image with BDRV_O_UNMAP only for --discard=unmap.
    disk = await openDiskFile(imagePath, { readOnly, discardPassthrough: discard === 'unmap', syncIo: true, writeback: true, ...openPolicyFrom(v) });
  } catch (e) {
    return reportFailure(io, imagePath, e);
  }
  // qemu-nbd reports the holes of a sparse, metadata-preallocated image as zeros: the export asks
  // the file system (SEEK_DATA through python3) how the file is stored.
  const probe = new SeekDataProbeServer();
  let warned = false;
  const hostAllocation = async (): Promise<HostAllocation> => {
    try {
      return (await probe.probe([imagePath]))[0]!;
    } catch (e) {
      if (!warned) say(`warning: ${(e as Error).message}; block status treats the file as fully allocated`);
      warned = true;
      throw e;
    }
  };
  let exp: NbdExport;
  try {
    exp = new NbdExport(disk, {
      name: v['export-name'] ?? '', readOnly, discard, detectZeroes,
      allocationDepth: v['allocation-depth'] === true,
      multiConn: shared !== 1,
      hostAllocation,
      cache,
      ...(v.description !== undefined ? { description: v.description } : {}),
    });
  } catch (e) {
    await disk.close().catch(() => undefined);
    probe.close();
    if (e instanceof NbdExportError) {
      io.stderr(`qcow2-ref: serve: ${e.message}\nTry 'qcow2-ref serve --help' for more information.\n`);
      return EXIT_USAGE;
    }
    throw e;
  }

  let server: NbdServer;
  try {
    server = await NbdServer.listen([exp], {
      ...(v.socket !== undefined ? { socketPath: v.socket } : { port: port ?? 10809, host: v.bind ?? '0.0.0.0' }),
      shared,
      persistent: v.persistent === true,
      log: say,
    });
  } catch (e) {
    await disk.close().catch(() => undefined);
    probe.close();
    if (e instanceof NbdServerError) {
      io.stderr(`qcow2-ref: ${e.message}\n`);
      return EXIT_DECODE;
    }
    throw e;
  }
  if (verbose) say(`serving ${imagePath} (${exp.size} bytes${exp.readOnly ? ', read-only' : ''}) on ${server.address}`);

  const pidFile = v['pid-file'];
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      say(`${sig} again: exiting without closing the image`);
      process.exit(1);
    }
    if (verbose) say(`${sig}: stopping`);
    void server.shutdown();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let code = EXIT_OK;
  try {
    if (pidFile !== undefined) {
      try {
        await writeFile(pidFile, `${process.pid}\n`);
      } catch (e) {
        io.stderr(`qcow2-ref: ${pidFile}: Failed to write pid file: ${errnoText(e)}\n`);
        await server.shutdown();
        code = EXIT_DECODE;
      }
    }
    await server.done;
  } finally {
    try {
      await disk.close();
    } catch (e) {
      io.stderr(`qcow2-ref: ${imagePath}: closing the image failed: ${(e as Error).message}\n`);
      code = EXIT_DECODE;
    }
    if (pidFile !== undefined && code === EXIT_OK) await rm(pidFile, { force: true }).catch(() => undefined);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    probe.close();
  }
  if (verbose) say('stopped');
  return code;
}

/** Reports an image that cannot be opened, one line, and returns EXIT_DECODE; rethrows an untyped error. */
function reportFailure(io: CliIo, image: string, e: unknown): number {
  if (e instanceof OpenImageError) io.stderr(`qcow2-ref: ${e.file}: ${e.detail}\n`);
  else if (isOpenError(e) || isQcow2FormatError(e) || isDiskError(e) || e instanceof ModelError) {
    io.stderr(`qcow2-ref: ${image}: ${(e as Error).message.replace(/\r?\n/g, ' ')}\n`);
  } else throw e;
  return EXIT_DECODE;
}
