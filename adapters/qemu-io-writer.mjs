#!/usr/bin/env node
// qcow2-ref conform writer adapter for QEMU: applies an op script (docs/op-script.md) to a qcow2 image
// with qemu-io and qemu-img (src/conform/qemu-io-writer.ts, run from the bundle dist/qemu-io-writer.mjs).
//
//   node adapters/qemu-io-writer.mjs IMAGE SCRIPT
//
// Exit status: 0 every op succeeded; 1 a QEMU process failed; 2 usage error or invalid script.
// Run it in IMAGE's directory when the image has an external data file (QEMU 7.2 resolves its name
// against the current directory); `qcow2-ref conform` does.
//
// Use: qcow2-ref conform --corpus corpus --impl qemu-io
//  or: qcow2-ref conform --corpus corpus --writer "node $PWD/adapters/qemu-io-writer.mjs {image} {script}"
import { existsSync } from 'node:fs';

// In a checkout, rebuild the bundle first when a source is newer (an installed package ships it built).
const build = new URL('../scripts/build.mjs', import.meta.url);
if (existsSync(build)) await (await import(build.href)).ensureBuilt();
const { qemuIoWriterMain } = await import('../dist/qemu-io-writer.mjs');
process.exitCode = await qemuIoWriterMain(process.argv.slice(2), (t) => process.stderr.write(t));
