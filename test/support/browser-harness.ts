/**
 * The real-browser harness of test/qemu/browser.test.ts: bundles test/browser/page.ts and worker.ts
 * with esbuild for the browser (no Node polyfills: a node:* import anywhere in what the core entry
 * loads fails the bundle), serves them, a page and the test's files from a local HTTP server on
 * 127.0.0.1 (a secure context, which OPFS needs), and drives Debian's chromium headless with
 * playwright-core (no browser download). A missing chromium is an error that says how to install it.
 *
 * Routes: GET / (the page), GET /page.js and /worker.js (the bundles), GET /files/NAME (a file the
 * test registered with serve()), POST /upload/NAME (stored as uploaded(NAME)).
 */
import { existsSync, createReadStream, createWriteStream, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { delimiter, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { build, type Message } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { PageApi } from '../browser/page.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** Thrown when no chromium binary is found. */
export class ChromiumMissingError extends Error {
  override readonly name = 'ChromiumMissingError';
}

/**
 * The chromium to drive: $QCOW2_CHROMIUM when set, else `chromium` on PATH (Debian's package
 * installs /usr/bin/chromium). Throws ChromiumMissingError, never skips.
 */
export function findChromium(): string {
  const env = process.env['QCOW2_CHROMIUM'];
  if (env !== undefined && env !== '') {
    if (!existsSync(env)) throw new ChromiumMissingError(`QCOW2_CHROMIUM=${env} does not exist`);
    return env;
  }
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    const p = join(dir, 'chromium');
    if (dir !== '' && existsSync(p)) return p;
  }
  throw new ChromiumMissingError(
    `chromium was not found on PATH (${process.env['PATH'] ?? ''}); the real-browser test drives Debian's chromium: ` +
      'run `bash scripts/setup.sh --tests` (apt-get install chromium), or set QCOW2_CHROMIUM to a Chromium binary',
  );
}

/** Thrown when the browser bundle cannot be built (e.g. the core imports node:*). */
export class BrowserBundleError extends Error {
  override readonly name = 'BrowserBundleError';
}

/** The bundles: page.js and worker.js, and every input file esbuild read. */
export interface BrowserBundle {
  readonly files: ReadonlyMap<string, Uint8Array>;
  readonly inputs: readonly string[];
}

function formatMessages(messages: readonly Message[]): string {
  return messages
    .map((m) => (m.location === null ? m.text : `${m.location.file}:${m.location.line}:${m.location.column}: ${m.text}`))
    .join('\n');
}

/**
 * Bundles the page and worker scripts for the browser (ESM, es2022, platform 'browser': Node's
 * built-in modules do not resolve, and nothing polyfills them). Throws BrowserBundleError with
 * esbuild's messages, which name every node:* import the core pulls in.
 */
export async function bundleBrowserScripts(): Promise<BrowserBundle> {
  const outdir = join(ROOT, '.browser-bundle'); // never written (write: false); names the outputs
  let result;
  try {
    result = await build({
      entryPoints: { page: join(ROOT, 'test/browser/page.ts'), worker: join(ROOT, 'test/browser/worker.ts') },
      absWorkingDir: ROOT, // input paths in the metafile and messages are relative to the repository
      bundle: true,
      platform: 'browser',
      format: 'esm',
      target: 'es2022',
      outdir,
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
  } catch (e) {
    const errors = (e as { errors?: Message[] }).errors;
    // esbuild's messages name each unresolvable import and where it is; they are the whole story.
    throw new BrowserBundleError(`the browser bundle of the core entry (src/index.ts) failed:\n${errors !== undefined ? formatMessages(errors) : String(e)}`);
  }
  const files = new Map(result.outputFiles.map((f) => [f.path.slice(outdir.length + 1), f.contents]));
  return { files, inputs: Object.keys(result.metafile.inputs) };
}

/** A running browser with one page on the harness's server. */
export interface BrowserHarness {
  readonly browser: Browser;
  readonly page: Page;
  /** Chromium's version string. */
  readonly version: string;
  /** Serves the file at `path` as /files/NAME. */
  serve(name: string, path: string): void;
  /** Where the body of POST /upload/NAME is stored. */
  uploaded(name: string): string;
  /** The page's console lines and errors so far (for failure messages). */
  log(): string;
  /** Closes the browser and the server; safe to call more than once. */
  close(): Promise<void>;
}

const PAGE_HTML = '<!doctype html><meta charset="utf-8"><title>qcow2-ref browser test</title><script type="module" src="/page.js"></script>\n';
const NAME = /^[A-Za-z0-9._-]+$/;

/**
 * Bundles the scripts, starts the server and chromium, and opens the page, waiting until it has
 * installed `globalThis.qcow2Browser`. Uploads go to `dir`. On any failure it closes what it started.
 */
export async function startBrowserHarness(dir: string): Promise<BrowserHarness> {
  const executablePath = findChromium();
  const bundle = await bundleBrowserScripts();
  const served = new Map<string, string>();
  const lines: string[] = [];

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const [, kind, rawName] = /^\/(files|upload)\/([^/]+)$/.exec(url.pathname) ?? [];
    const name = rawName === undefined ? undefined : decodeURIComponent(rawName);
    if (req.method === 'GET' && url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE_HTML);
    } else if (req.method === 'GET' && bundle.files.has(url.pathname.slice(1))) {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(bundle.files.get(url.pathname.slice(1)));
    } else if (req.method === 'GET' && kind === 'files' && name !== undefined && served.has(name)) {
      const path = served.get(name)!;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': statSync(path).size });
      await pipeline(createReadStream(path), res);
    } else if (req.method === 'POST' && kind === 'upload' && name !== undefined && NAME.test(name)) {
      await pipeline(req, createWriteStream(join(dir, `uploaded-${name}`)));
      res.writeHead(200).end();
    } else {
      res.writeHead(404).end();
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      lines.push(`[server] ${req.method} ${req.url}: ${String(e)}`);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  let browser: Browser | undefined;
  const close = async (): Promise<void> => {
    const b = browser;
    browser = undefined;
    await b?.close().catch(() => undefined);
    server.closeAllConnections();
    await new Promise<void>((ok) => server.close(() => ok()));
  };
  try {
    // Playwright passes --no-sandbox (its default chromiumSandbox: false), which root needs.
    browser = await chromium.launch({ executablePath, headless: true, timeout: 120_000 });
    const page = await browser.newPage();
    page.on('console', (m) => lines.push(`[console.${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => lines.push(`[pageerror] ${e.stack ?? e.message}`));
    page.on('worker', (w) => w.on('console', (m) => lines.push(`[worker console.${m.type()}] ${m.text()}`)));
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => 'qcow2Browser' in globalThis, undefined, { timeout: 120_000 }).catch((e: unknown) => {
      throw new Error(`the page did not start:\n${lines.join('\n')}`, { cause: e });
    });
    const b = browser;
    return {
      browser: b,
      page,
      version: b.version(),
      serve(name, path) {
        if (!NAME.test(name)) throw new Error(`bad file name ${name}`);
        served.set(name, path);
      },
      uploaded: (name) => join(dir, `uploaded-${name}`),
      log: () => lines.join('\n'),
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Calls `method` of the page's API (PageApi) with `args`; a failure carries the page's console and errors. */
export async function inPage<K extends keyof PageApi>(h: BrowserHarness, method: K, ...args: Parameters<PageApi[K]>): Promise<Awaited<ReturnType<PageApi[K]>>> {
  type Call = (...a: unknown[]) => Promise<Awaited<ReturnType<PageApi[K]>>>;
  try {
    return await h.page.evaluate(
      ([m, a]) => ((globalThis as unknown as { qcow2Browser: Record<string, Call> }).qcow2Browser[m]!)(...a),
      [method as string, args as unknown[]] as const,
    );
  } catch (e) {
    throw new Error(`${method} in the page failed: ${e instanceof Error ? e.message : String(e)}\npage log:\n${h.log()}`, { cause: e });
  }
}
