/**
 * Internal snapshots against qemu-img: the same sequence of writes (qemu-io) and snapshot create /
 * apply / delete (qemu-img snapshot), each in its own process, gives byte-identical files from the
 * model (with each op as a new session, as separate processes are), the same content, and a clean
 * check. The creation dates are the only input the model cannot know; they are read from QEMU's file.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freshSession, type Image } from '../../src/model/image.ts';
import { loadImage, storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { readSnapshots } from '../../src/model/snapshot.ts';
import { step } from '../../src/model/step.ts';
import { beginTx } from '../../src/model/tx.ts';
import { qemuImgCheck, qemuImgCreate, qemuImgSnapshot, qemuIo } from '../../src/qemu/qemu-img.ts';

type SeqOp = ['w', number, number, number] | ['c' | 'a' | 'd', string];

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-snapshot-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

async function compare(options: Record<string, string>, seq: SeqOp[]): Promise<Image> {
  const theirs = join(dir, `qemu-${n}.qcow2`);
  const ours = join(dir, `ours-${n++}.qcow2`);
  await qemuImgCreate(theirs, 8 << 20, options);
  let img = loadImage(new Uint8Array(readFileSync(theirs)));
  for (const s of seq) {
    if (s[0] === 'w') await qemuIo(theirs, [`write -P ${s[3]} ${s[1]} ${s[2]}`]);
    else await qemuImgSnapshot(theirs, s[0] === 'c' ? 'create' : s[0] === 'a' ? 'apply' : 'delete', s[1]);
  }
  const qemuBytes = new Uint8Array(readFileSync(theirs));
  const dates = readSnapshots(beginTx(loadImage(qemuBytes)));
  const contentAt = new Map<string, Uint8Array>();
  for (const s of seq) {
    let op: Op;
    if (s[0] === 'w') op = { kind: 'write', offset: BigInt(s[1]), data: new Uint8Array(s[2]).fill(s[3]) };
    else if (s[0] === 'c') {
      const q = dates.find((d) => d.name === s[1]);
      op = { kind: 'snapshotCreate', name: s[1], dateSec: q?.dateSec ?? 0, dateNsec: q?.dateNsec ?? 0 };
      contentAt.set(s[1], readGuest(img, 0n, 1 << 20));
    } else if (s[0] === 'a') op = { kind: 'snapshotApply', name: s[1] };
    else op = { kind: 'snapshotDelete', name: s[1] };
    const r = step(img, op);
    if (!r.ok) throw r.error;
    img = { ...r.image, session: freshSession() }; // each op is a new QEMU process
    if (s[0] === 'a') expect(Buffer.from(readGuest(img, 0n, 1 << 20)).equals(Buffer.from(contentAt.get(s[1])!))).toBe(true);
  }
  const ourBytes = storeImage(img);
  writeFileSync(ours, ourBytes);
  expect((await qemuImgCheck(ours)).code).toBe(0);
  execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', ours, theirs]);
  let first = 0;
  while (first < Math.min(ourBytes.length, qemuBytes.length) && ourBytes[first] === qemuBytes[first]) first++;
  expect({ length: ourBytes.length, firstDifference: first }).toEqual({ length: qemuBytes.length, firstDifference: qemuBytes.length });
  return img;
}

describe('snapshots: byte-identical to qemu-img snapshot', () => {
  it('create, then copy-on-write of L2 and data', async () => {
    await compare({ cluster_size: '65536' }, [['w', 0, 4096, 1], ['c', 's1'], ['w', 0, 512, 2], ['w', 65536, 100, 3]]);
  });
  it('two snapshots, apply the first, delete the second', async () => {
    await compare({ cluster_size: '65536' }, [['w', 0, 4096, 1], ['c', 's1'], ['w', 0, 512, 2], ['c', 's2'], ['w', 131072, 5, 4], ['a', 's1'], ['d', 's2']]);
  });
  it('4 KiB clusters, 4-bit refcounts: delete frees and punches', async () => {
    await compare({ cluster_size: '4096', refcount_bits: '4' }, [['w', 0, 20000, 1], ['c', 's1'], ['w', 1000, 9000, 2], ['d', 's1'], ['w', 0, 1, 3]]);
  });
  it('512-byte clusters: apply and delete every snapshot (table removed)', async () => {
    const img = await compare({ cluster_size: '512' }, [['w', 0, 3000, 1], ['c', 'a'], ['c', 'b'], ['w', 100, 3000, 2], ['a', 'a'], ['d', 'a'], ['d', 'b']]);
    expect(img.header.nbSnapshots).toBe(0);
    expect(img.header.snapshotsOffset).toBe(0n);
  });
  it('extended L2: apply restores partial subcluster allocations', async () => {
    await compare({ cluster_size: '65536', extended_l2: 'on' }, [['w', 4096, 2048, 1], ['c', 's1'], ['w', 0, 512, 2], ['a', 's1']]);
  });

  it('refcount_bits=1: creation fails with EINVAL like QEMU (and the new L1 stays allocated)', async () => {
    const img = loadImage(new Uint8Array(readFileSync(await (async () => {
      const p = join(dir, `rc1-${n++}.qcow2`);
      await qemuImgCreate(p, 1 << 20, { refcount_bits: '1' });
      await qemuIo(p, ['write -P 1 0 4096']);
      return p;
    })())));
    const r = step(img, { kind: 'snapshotCreate', name: 's' });
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.error.message).toBe("Could not create snapshot 's': -22 (Invalid argument)");
    expect(r.image.header.nbSnapshots).toBe(0);
  });
});

describe('snapshot refusals in qemu-img\'s words', () => {
  it('apply and delete of a snapshot that does not exist', async () => {
    const path = join(dir, 'missing.qcow2');
    await qemuImgCreate(path, 1 << 20, {});
    const img = loadImage(new Uint8Array(readFileSync(path)));
    for (const [flag, op] of [['-a', { kind: 'snapshotApply', name: 'nope' }], ['-d', { kind: 'snapshotDelete', name: 'nope' }]] as const) {
      let stderr = '';
      try {
        execFileSync('qemu-img', ['snapshot', flag, 'nope', path], { stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        stderr = String((e as { stderr: Buffer }).stderr);
      }
      expect(stderr, `qemu-img snapshot ${flag} must fail`).not.toBe('');
      const r = step(img, op);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(`qemu-img: ${r.error.message}\n`).toBe(stderr);
    }
  });
});
