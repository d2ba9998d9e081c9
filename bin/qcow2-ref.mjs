#!/usr/bin/env node
// Entry point of the qcow2-ref command: runs the bundled CLI (dist/cli.mjs), rebuilding it first
// when a source file is newer (scripts/build.mjs), so the command always runs the current sources.
import { ensureBuilt } from '../scripts/build.mjs';

await ensureBuilt();
const { main } = await import('../dist/cli.mjs');
process.exitCode = await main(process.argv.slice(2));
