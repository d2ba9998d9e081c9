import { defineConfig } from 'vitest/config';

// Tests by what they need: test/unit (nothing but Node; `npm run test:unit`), test/regressions
// (replayed counterexamples), test/qemu (qemu-img, qemu-io and the other tools installed by
// scripts/setup.sh). `npm test` runs all three.
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/regressions/**/*.test.ts', 'test/qemu/**/*.test.ts'],
    setupFiles: ['test/support/fc-setup.ts'],
    // Hang detectors only: no test asserts on time; each bound is far above a busy machine's time.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
