// Entry of the hostile-input worker thread (test/support/hostile-worker.ts): a worker does not
// inherit the TypeScript loader of the thread that starts it (tsx under `npm run fuzz`, vite under
// vitest), so it registers tsx itself and then imports the module named in workerData.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
