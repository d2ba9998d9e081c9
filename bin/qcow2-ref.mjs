#!/usr/bin/env node
// Entry point of the qcow2-ref command: runs the bundled CLI (dist/cli.mjs). In a checkout it first
// rebuilds the bundle when a source file is newer (scripts/build.mjs), so the command always runs the
// current sources; an installed package ships the bundle built and needs no build tool.
import { existsSync } from 'node:fs';

const build = new URL('../scripts/build.mjs', import.meta.url);
if (existsSync(build)) await (await import(build.href)).ensureBuilt();
const { main } = await import('../dist/cli.mjs');
process.exitCode = await main(process.argv.slice(2));
