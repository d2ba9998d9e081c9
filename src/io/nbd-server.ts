/**
 * The NBD server on Node's sockets: listens on a Unix socket or TCP port, gives each connection an
 * NbdSession (src/nbd) over a socket channel, and applies qemu-nbd's connection rules — at most
 * `shared` clients at once, and without `persistent` the server ends when its last client leaves
 * (qemu-nbd.c: nbd_update_server_watch, nbd_client_closed). Lives in the io layer because it is
 * the Node half of `qcow2-ref serve`; the protocol itself is platform neutral.
 *
 * The socket channel is where back-pressure happens: it stops reading from the socket while more
 * is buffered than the session asked for (so a client streaming data faster than the disk takes it
 * waits in TCP flow control, not in our memory), and reports the queued output so that the session
 * stops reading requests while a client does not read its replies.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { NbdSession, type NbdChannel, type NbdExport, type NbdServerContext } from '../nbd/index.ts';

/** Where and how to serve. */
export interface NbdListenOptions {
  /** A Unix socket path (qemu-nbd -k); a stale file at the path is replaced, as QEMU does. */
  readonly socketPath?: string;
  /** TCP port (qemu-nbd -p; default 10809, the IANA port). Ignored with socketPath. 0 picks a free one. */
  readonly port?: number;
  /** TCP address (qemu-nbd -b; default 0.0.0.0). */
  readonly host?: string;
  /** Clients served at once (qemu-nbd -e; default 1; 0: no limit). Connections beyond it are closed at once. */
  readonly shared?: number;
  /** Keep serving after the last client disconnects (qemu-nbd -t). */
  readonly persistent?: boolean;
  /** Where the lines about clients go (protocol violations, failed requests). */
  readonly log?: (line: string) => void;
}

/** The server could not listen (address in use, permission, bad path). */
export class NbdServerError extends Error {
  override readonly name = 'NbdServerError';
}

/** Bytes buffered from a socket beyond what the session is waiting for before the socket is paused. */
const READ_HIGH_WATER = 1024 * 1024;
/** Queued reply bytes beyond which the session reads no new request. */
const WRITE_HIGH_WATER = 4 * 1024 * 1024;
/** How long an ended connection may take to deliver its last bytes before it is cut. */
const LINGER_MS = 10_000;

/** A running NBD server. */
export class NbdServer {
  private readonly sessions = new Map<NbdSession, Socket>();
  private served = 0;
  private stopping: Promise<void> | undefined;
  private resolveDone!: () => void;
  /** Resolves once the server has stopped: shutdown() was called, or (not persistent) the last client left. */
  readonly done: Promise<void> = new Promise<void>((r) => (this.resolveDone = r));

  private constructor(
    private readonly server: Server,
    private readonly exports: readonly NbdExport[],
    private readonly opts: NbdListenOptions,
    /** Where clients connect: `unix:PATH` or `HOST:PORT`. */
    readonly address: string,
  ) {}

  /** Starts serving `exports` (the first is the default export of an empty name only if it is named ''). */
  static async listen(exports: readonly NbdExport[], opts: NbdListenOptions = {}): Promise<NbdServer> {
    const server = createServer({ pauseOnConnect: false, noDelay: true });
    if (opts.socketPath !== undefined) {
      // unix_listen_saddr unlinks whatever is at the path first.
      await rm(opts.socketPath, { force: true }).catch(() => undefined);
    }
    await new Promise<void>((resolve, reject) => {
      const fail = (e: NodeJS.ErrnoException): void => reject(new NbdServerError(`${opts.socketPath ?? `${opts.host ?? '0.0.0.0'}:${opts.port ?? 10809}`}: ${e.message}`));
      server.once('error', fail);
      const ok = (): void => {
        server.off('error', fail);
        resolve();
      };
      if (opts.socketPath !== undefined) server.listen(opts.socketPath, ok);
      else server.listen(opts.port ?? 10809, opts.host ?? '0.0.0.0', ok);
    });
    const a = server.address();
    const address = opts.socketPath !== undefined ? `unix:${opts.socketPath}` : typeof a === 'object' && a !== null ? `${a.address}:${a.port}` : String(a);
    const s = new NbdServer(server, exports, opts, address);
    server.on('connection', (socket) => s.accept(socket));
    server.on('error', (e) => s.log(`server: ${e.message}`));
    return s;
  }

  /** The TCP port listened on (undefined for a Unix socket). */
  get port(): number | undefined {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a.port : undefined;
  }

  /** Clients connected now. */
  get clients(): number {
    return this.sessions.size;
  }

  /**
   * Stops: no new connections; every session stops reading requests, answers those in flight and
   * is closed. Resolves when all are gone (the caller then closes the disks). Idempotent.
   */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      // server.close's callback waits for every connection to end: close them first.
      const closed = new Promise<void>((r) => this.server.close(() => r()));
      await Promise.all([...this.sessions].map(async ([session, socket]) => {
        session.stop();
        await session.settled();
        socket.destroy();
      }));
      await closed;
      if (this.opts.socketPath !== undefined) await rm(this.opts.socketPath, { force: true }).catch(() => undefined);
      this.resolveDone();
    })();
    return this.stopping;
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  private accept(socket: Socket): void {
    const limit = this.opts.shared ?? 1;
    if (this.stopping !== undefined || (limit > 0 && this.sessions.size >= limit)) {
      // qemu-nbd stops accepting (the connection waits in the listen backlog); Node cannot pause
      // accepting, so the connection is refused outright.
      socket.destroy();
      return;
    }
    this.served++;
    const n = this.served;
    const ctx: NbdServerContext = { exports: this.exports, log: (line) => this.log(line) };
    const session = new NbdSession(new SocketChannel(socket), ctx, `client ${n}`);
    this.sessions.set(session, socket);
    socket.on('error', () => undefined);
    void session.run().finally(() => {
      this.sessions.delete(session);
      // nbd_client_closed: the last client gone ends a server that is not persistent.
      if (this.sessions.size === 0 && this.opts.persistent !== true) void this.shutdown();
    });
  }
}

/** An NbdChannel over a Node socket, with back-pressure both ways. */
export class SocketChannel implements NbdChannel {
  private readonly chunks: Buffer[] = [];
  private head = 0;
  private buffered = 0;
  private ended = false;
  private partial = false;
  private reader: { readonly n: number; readonly resolve: (b: Uint8Array | null) => void } | undefined;
  private skipping = 0;
  private skipper: ((ok: boolean) => void) | undefined;
  private readonly drainers: (() => void)[] = [];
  private corked = false;

  constructor(private readonly socket: Socket) {
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('end', () => this.onEnd());
    socket.on('close', () => {
      this.onEnd();
      this.wakeDrainers();
    });
    socket.on('drain', () => this.wakeDrainers());
  }

  get truncated(): boolean {
    return this.partial;
  }

  read(n: number): Promise<Uint8Array | null> {
    if (n === 0) return Promise.resolve(new Uint8Array(0));
    if (this.buffered >= n) return Promise.resolve(this.take(n));
    if (this.ended) {
      this.partial ||= this.buffered > 0;
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      this.reader = { n, resolve };
      this.flow();
    });
  }

  skip(n: number): Promise<boolean> {
    const now = Math.min(n, this.buffered);
    this.drop(now);
    if (now === n) return Promise.resolve(true);
    if (this.ended) {
      this.partial = true;
      return Promise.resolve(false);
    }
    this.skipping = n - now;
    return new Promise((resolve) => {
      this.skipper = resolve;
      this.flow();
    });
  }

  write(chunks: readonly Uint8Array[], sent?: () => void): void {
    if (this.socket.destroyed || !this.socket.writable) {
      sent?.();
      return;
    }
    // Replies finished in the same turn of the event loop (pipelined requests the driver answered
    // one after the other) leave in one writev: the socket is corked until the next tick.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        if (!this.socket.destroyed) this.socket.uncork();
      });
    }
    // The callback of a reply's last chunk runs once the chunk is handed to the kernel: the queue
    // may then be under the high-water mark long before it is empty ('drain').
    // Node calls a write's callback once the chunk is handed to the kernel, or with an error when
    // the socket is destroyed first: either way Node holds the chunks no longer.
    const done = sent === undefined ? this.progress : (): void => {
      this.progress();
      sent();
    };
    chunks.forEach((c, i) => (i === chunks.length - 1 ? this.socket.write(c, done) : this.socket.write(c)));
  }

  /** Called as queued output leaves: wakes the session once the queue is below the high-water mark. */
  private readonly progress = (): void => this.wakeDrainers();

  drained(): Promise<void> {
    if (this.socket.destroyed || this.socket.writableLength <= WRITE_HIGH_WATER) return Promise.resolve();
    return new Promise((resolve) => this.drainers.push(resolve));
  }

  end(): void {
    if (this.socket.destroyed) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }

  private onData(b: Buffer): void {
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, b.length);
      this.skipping -= n;
      b = b.subarray(n);
      if (this.skipping === 0) {
        const s = this.skipper;
        this.skipper = undefined;
        s?.(true);
      }
      if (b.length === 0) return;
    }
    this.chunks.push(b);
    this.buffered += b.length;
    const r = this.reader;
    if (r !== undefined && this.buffered >= r.n) {
      this.reader = undefined;
      r.resolve(this.take(r.n));
    }
    this.flow();
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    const r = this.reader;
    this.reader = undefined;
    if (r !== undefined) {
      this.partial ||= this.buffered > 0;
      r.resolve(null);
    }
    const s = this.skipper;
    this.skipper = undefined;
    if (s !== undefined) {
      this.partial = true;
      s(false);
    }
  }

  /** Pauses the socket while more than needed is buffered, resumes it otherwise. */
  private flow(): void {
    if (this.ended) return;
    const need = Math.max(READ_HIGH_WATER, this.reader?.n ?? 0);
    if (this.skipping === 0 && this.buffered >= need) this.socket.pause();
    else this.socket.resume();
  }

  /** The next `n` buffered bytes (n ≤ buffered). */
  private take(n: number): Uint8Array {
    const first = this.chunks[0]!;
    let out: Uint8Array;
    if (first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
    } else {
      out = new Uint8Array(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const k = Math.min(n - at, c.length - this.head);
        out.set(c.subarray(this.head, this.head + k), at);
        at += k;
        this.head += k;
        if (this.head === c.length) {
          this.chunks.shift();
          this.head = 0;
        }
      }
    }
    this.buffered -= n;
    this.flow();
    return out;
  }

  /** Drops the next `n` buffered bytes (n ≤ buffered). */
  private drop(n: number): void {
    let left = n;
    while (left > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(left, c.length - this.head);
      left -= k;
      this.head += k;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.buffered -= n;
  }

  private wakeDrainers(): void {
    if (!this.socket.destroyed && this.socket.writableLength > WRITE_HIGH_WATER) return;
    for (const d of this.drainers.splice(0)) d();
  }
}
