import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20000,
    hookTimeout: 20000,
    // Two cores: files run in parallel, but not more than the machine can carry.
    maxWorkers: 2,
  },
});
