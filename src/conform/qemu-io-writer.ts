/**
 * The conformance writer adapter for QEMU itself (adapters/qemu-io-writer.mjs runs it): applies an op
 * script (docs/op-script.md) to a qcow2 image with qemu-io, one `-c` command per data op, in as few
 * qemu-io processes as possible; the ops qemu-io cannot do (snapshot-create/apply/delete, resize) run
 * as `qemu-img snapshot` / `qemu-img resize [--shrink]` between them. The translation is
 * src/qemu/qemu-steps.ts (planQemuSteps), the one the project's tests compare the model with.
 */
import { readFileSync } from 'node:fs';
import { qemuImgInfo, toBigInt } from '../qemu/index.ts';
import { planQemuSteps, runQemuSteps } from '../qemu/index.ts';
import { parseScript, ScriptError } from '../script/index.ts';

/**
 * `qemu-io-writer IMAGE SCRIPT`; returns the exit status: 0 every op succeeded; 1 a QEMU process
 * failed (its command line and stderr are printed; the image holds what the processes before it
 * left); 2 usage error or invalid script. Messages go to `stderr`.
 */
export async function qemuIoWriterMain(argv: readonly string[], stderr: (text: string) => void): Promise<number> {
  if (argv.length !== 2) {
    stderr('usage: qemu-io-writer.mjs IMAGE SCRIPT\n');
    return 2;
  }
  const [image, scriptPath] = argv as [string, string];
  let ops;
  try {
    ops = parseScript(readFileSync(scriptPath, 'utf8'));
  } catch (e) {
    stderr(`qemu-io-writer: ${scriptPath}: ${e instanceof ScriptError ? e.message : String((e as Error).message ?? e)}\n`);
    return 2;
  }
  try {
    // The virtual size decides which resizes shrink (qemu-img resize needs --shrink for those).
    const info = await qemuImgInfo(image);
    await runQemuSteps(image, planQemuSteps(ops, toBigInt(info['virtual-size'])));
  } catch (e) {
    stderr(`qemu-io-writer: ${String((e as Error).message ?? e).replace(/\n/g, ' | ')}\n`);
    return 1;
  }
  return 0;
}
