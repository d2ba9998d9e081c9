/**
 * A caller that reuses its write buffer once the write resolved (found 2026-12-07 while removing a
 * copy from the write path): the model's host writes held the caller's bytes themselves, so the
 * driver's write-back mode, which issues them later, wrote whatever the buffer held by then. The
 * driver read back the right bytes (the model's pages were copies) while the file got the wrong
 * ones. The model now copies a guest write's bytes once, and its host writes hold that copy.
 */
import { describe, expect, it } from 'vitest';
import { Qcow2Disk, memoryBackend } from '../../src/index.ts';
import { createImage, step } from '../../src/model/index.ts';

describe('a write buffer reused after the write resolves', () => {
  it('write-back: the file holds what was written, not what the buffer holds later', async () => {
    const backend = memoryBackend();
    const disk = await Qcow2Disk.create(backend, { size: 1n << 26n }, { writeback: true });
    const buf = new Uint8Array(65536 + 512).fill(0xaa);
    await disk.write(4096n, buf);
    buf.fill(0x55);
    await disk.close();
    const reopened = await Qcow2Disk.open(memoryBackend(backend.bytes()));
    const got = await reopened.read(4096n, buf.length);
    expect(got.every((b) => b === 0xaa)).toBe(true);
    await reopened.close();
  });

  it('the model: no host write of a guest write shares the guest buffer', () => {
    const img = createImage({ size: 1n << 26n }).image;
    const data = new Uint8Array(3 * 65536).fill(7);
    const r = step(img, { kind: 'write', offset: 512n, data });
    expect(r.ok).toBe(true);
    const writes = r.io.filter((op) => op.kind === 'write');
    expect(writes.some((op) => op.bytes.length >= 65536)).toBe(true);
    for (const op of writes) expect(op.bytes.buffer).not.toBe(data.buffer);
  });
});
