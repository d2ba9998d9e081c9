/**
 * Vitest setup for every test file: fast-check runs from a fixed seed so `npm test` (and CI) is
 * reproducible. QCOW2_FC_SEED=<number> picks another seed; QCOW2_FC_SEED=random lets fast-check
 * choose one per property (it is printed with every failure, with the path to replay it).
 */
import fc from 'fast-check';

const seed = process.env['QCOW2_FC_SEED'] ?? '20261121';
if (seed !== 'random') fc.configureGlobal({ seed: Number(seed) });

// Node's faster inflate for the model's codecs, as the Node entry and the CLI install it.
import '../../src/io/node-compression.ts';
