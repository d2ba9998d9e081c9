/**
 * The worker thread that runs hostile-input cases (started by hostile-campaign.ts through
 * hostile-worker-boot.mjs). Running them off the main thread is what makes the bounds enforceable:
 * a case that loops forever is ended by terminating the worker, and the worker's V8 heap is capped
 * (resourceLimits), so a runaway allocation kills the worker instead of the test process.
 *
 * Messages: `{ type: 'init', pool }` → `{ type: 'ready' }`;
 * `{ type: 'case', image, mutations }` → `{ type: 'report', report }`. Before each case the worker
 * collects garbage, so the case's memory reading starts from its own baseline.
 */
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { parentPort } from 'node:worker_threads';
import { applyMutations, type Mutation } from '../../src/corrupt/mutate.ts';
import { checkImage } from '../../src/check/check.ts';
import { loadImage } from '../../src/model/load-store.ts';
import { openImage } from '../../src/open/open.ts';
import { repairImage } from '../../src/check/repair.ts';
import { qcow2ImageInfo } from '../../src/views/info.ts';
import { mapImage } from '../../src/model/block-status.ts';
import { readGuest } from '../../src/model/read.ts';
import { runHostileCase, type HostileSystem } from './hostile-harness.ts';
import type { PoolImage } from './hostile-pool.ts';
// Node's faster inflate for the model's codecs, as the Node entry and the CLI install it.
import '../../src/io/node-compression.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** The system under test: the model's functions. */
const system: HostileSystem = {
  load: (source, dataFile) => loadImage(source, dataFile !== undefined ? { dataFile } : {}),
  open: (source, opts) => openImage(source, opts),
  info: (image) => qcow2ImageInfo(image, { filename: 'hostile.qcow2' }),
  map: (image, offset, length) => mapImage(image, offset, length),
  read: (image, offset, length) => readGuest(image, offset, length),
  check: (image) => checkImage(image),
  repair: (image, mode) => repairImage(image, mode),
};

let pool: readonly PoolImage[] = [];

parentPort!.on('message', (m: { type: 'init'; pool: PoolImage[] } | { type: 'case'; image: number; mutations: Mutation[] }) => {
  if (m.type === 'init') {
    pool = m.pool;
    parentPort!.postMessage({ type: 'ready' });
    return;
  }
  const p = pool[m.image]!;
  const bytes = applyMutations(p.bytes, m.mutations);
  gc();
  const report = runHostileCase(bytes, p.dataFile, system);
  parentPort!.postMessage({ type: 'report', report });
});
