/**
 * Crash states of the driver's write-back mode on a sequence the `crash` campaign shrank (seed
 * 85784083, 2026-12-07): a write frees a compressed cluster (its L2 entry rewritten, a barrier, the
 * refcount decrease) and a later snapshot writes its L1 copy into that cluster. Write-back put the L1
 * copy into an earlier epoch than the L2 rewrite, so a crash between them left the old compressed
 * entry pointing at the L1 copy ("compressed cluster cannot be decompressed"). The model now marks
 * the barrier before a refcount decrease as ordering later operations (HostIO `ordersLater`) and the
 * scheduler keeps it (src/disk/writeback.ts rule 4). About 2 s.
 */
import { describe, it } from 'vitest';
import { expectNoViolation, shrunkSpec } from '../support/crash-runs.ts';

/** The shrunk counterexample as fast-check printed it (bigints written as strings ending in n). */
const SPEC = shrunkSpec("{\"cfg\":{\"clusterBits\":16,\"refcountBits\":16,\"compat\":\"0.10\",\"extendedL2\":false,\"compressionType\":\"zlib\",\"preallocation\":\"off\",\"requestedSize\":\"4194304n\",\"size\":\"4194304n\"},\"hot\":[\"0n\"],\"ops\":[{\"op\":\"write\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"seed\":0,\"fill\":false},{\"op\":\"write\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"seed\":0,\"fill\":false},{\"op\":\"zero\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"unmap\":false},{\"op\":\"compress\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"seed\":1,\"mode\":\"runs\"},{\"op\":\"flush\"},{\"op\":\"compress\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"seed\":1,\"mode\":\"runs\"},{\"op\":\"compress\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"seed\":1,\"mode\":\"runs\"},{\"op\":\"write\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"seed\":0,\"fill\":false},{\"op\":\"write\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"seed\":0,\"fill\":false},{\"op\":\"zero\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"unmap\":false},{\"op\":\"snapshot\",\"action\":\"create\",\"name\":\"a\"},{\"op\":\"snapshot\",\"action\":\"create\",\"name\":\"a\"},{\"op\":\"write\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"seed\":0,\"fill\":false},{\"op\":\"compress\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"seed\":1,\"mode\":\"runs\"}],\"more\":[{\"op\":\"snapshot\",\"action\":\"create\",\"name\":\"a\"},{\"op\":\"snapshot\",\"action\":\"create\",\"name\":\"a\"},{\"op\":\"write\",\"at\":{\"base\":\"hot\",\"hot\":0,\"frac\":0,\"within\":\"start\",\"sub\":0,\"anyFrac\":0},\"len\":{\"kind\":\"special\",\"k\":0,\"n\":0},\"seed\":0,\"fill\":false}]}");

describe('write-back crash states', () => {
  it('a freed compressed cluster reused by a snapshot\'s L1 copy: no crash state breaks it', async () => {
    await expectNoViolation(SPEC, ['driver-writeback', 'driver', 'model'], 50);
  });
});
