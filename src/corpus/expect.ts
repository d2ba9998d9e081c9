/**
 * The expected outcome of a corpus case, computed through the model: QEMU's open-time validation
 * (src/open/open.ts, a read-only open as `qemu-img convert` and `qemu-io -r` do), `qemu-img check`
 * (src/check/check.ts), and the guest content read back through the model (build.ts). `--verify`
 * then confirms each of these against QEMU itself (verify.ts).
 */
import { checkExitCode, checkImage } from '../check/index.ts';
import type { BackingSource, Image } from '../model/index.ts';
import { isOpenError, openImage, type OpenErrorCode } from '../open/index.ts';
import { guestSha256 } from './build.ts';
import type { CheckExpectation } from './manifest.ts';

/** What the read-only open of a case says. */
export type OpenOutcome =
  | { readonly ok: true; readonly image: Image }
  | { readonly ok: false; readonly code: OpenErrorCode; readonly qemuMessage: string };

/** The files of a case as the model opens them. */
export interface CaseSources {
  readonly image: Uint8Array;
  readonly dataFile?: Uint8Array;
  readonly backing?: BackingSource;
}

/**
 * Opens the case read-only through openImage (QEMU's qcow2_do_open checks in QEMU's order). Returns
 * the image, or the OpenError's code and QEMU message. Other errors (a bug, or a Qcow2FormatError
 * where QEMU has no check) propagate.
 */
export function openCase(src: CaseSources): OpenOutcome {
  try {
    const image = openImage(src.image, {
      ...(src.dataFile !== undefined ? { dataFile: src.dataFile } : {}),
      ...(src.backing !== undefined ? { backing: src.backing } : {}),
    });
    return { ok: true, image };
  } catch (e) {
    if (isOpenError(e)) return { ok: false, code: e.code, qemuMessage: e.qemuMessage };
    throw e;
  }
}

/** The check expectation of `image`: checkImage's exit code and counts. */
export function checkExpectation(image: Image): CheckExpectation<0 | 1 | 2 | 3> {
  const r = checkImage(image);
  return { exitCode: checkExitCode(r), corruptions: r.corruptions, leaks: r.leaks };
}

/** The guest SHA-256 of an opened case. */
export function contentSha256(image: Image): string {
  return guestSha256(image);
}
