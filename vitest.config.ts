import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Tests that start worker pools or server processes share 2 cores; keep them from starving each other.
    maxWorkers: 2,
  },
});
