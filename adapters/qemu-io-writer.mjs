#!/usr/bin/env node
// qcow2-ref conform writer adapter for QEMU: applies an op script (docs/op-script.md) to a qcow2 image
// with qemu-io, one `-c` command per data op, in as few qemu-io processes as possible; the ops qemu-io
// cannot do (snapshot-create/apply/delete, resize) run as `qemu-img snapshot` / `qemu-img resize
// [--shrink]` between them. The translation is src/qemu/qemu-steps.ts (planQemuSteps), the one the
// project's tests compare the model with.
//
//   node adapters/qemu-io-writer.mjs IMAGE SCRIPT
//
// Exit status: 0 every op succeeded; 1 a QEMU process failed (its command line and stderr are
// printed; the image holds what the processes before it left); 2 usage error or invalid script.
// Run it in IMAGE's directory when the image has an external data file (QEMU 7.2 resolves its name
// against the current directory); `qcow2-ref conform` does.
//
// Use: qcow2-ref conform --corpus corpus --impl qemu-io
//  or: qcow2-ref conform --corpus corpus --writer "node $PWD/adapters/qemu-io-writer.mjs {image} {script}"
import { readFileSync } from 'node:fs';
import { register } from 'tsx/esm/api';

register();
const { parseScript, ScriptError } = await import('../src/script/script.ts');
const { planQemuSteps, runQemuSteps } = await import('../src/qemu/qemu-steps.ts');
const { qemuImgInfo, toBigInt } = await import('../src/qemu/qemu-img.ts');

async function main(argv) {
  if (argv.length !== 2) {
    process.stderr.write('usage: qemu-io-writer.mjs IMAGE SCRIPT\n');
    return 2;
  }
  const [image, scriptPath] = argv;
  let ops;
  try {
    ops = parseScript(readFileSync(scriptPath, 'utf8'));
  } catch (e) {
    process.stderr.write(`qemu-io-writer: ${scriptPath}: ${e instanceof ScriptError ? e.message : e.message ?? e}\n`);
    return 2;
  }
  try {
    // The virtual size decides which resizes shrink (qemu-img resize needs --shrink for those).
    const info = await qemuImgInfo(image);
    await runQemuSteps(image, planQemuSteps(ops, toBigInt(info['virtual-size'])));
  } catch (e) {
    process.stderr.write(`qemu-io-writer: ${String(e.message ?? e).replace(/\n/g, ' | ')}\n`);
    return 1;
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
