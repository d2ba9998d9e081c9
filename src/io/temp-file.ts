/**
 * Temporary files beside their target: commands that create or replace a file write a temporary
 * one in the same directory and rename it into place, so the target is never seen half-written and
 * the rename stays on one file system.
 */
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/** A fresh temporary file name in the directory of `target` (hidden, naming the process). */
export function tempPathBeside(target: string): string {
  return join(dirname(target), `.${basename(target)}.qcow2-ref-${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
}
