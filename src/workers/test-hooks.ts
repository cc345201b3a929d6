/**
 * Fault injection for the tests of worker crashes, exhaustion and hangs. The
 * worker honours these only when its pool was created with `testHooks` (from
 * `testConfig`, never from the environment), so in production a request with
 * one of these eps values is an ordinary request.
 */
export const TEST_HOOK_EPS = {
  /** the worker thread exits mid-task */
  crash: 7.77e-300,
  /** the worker's heap grows until it runs out of memory */
  oom: 7.78e-300,
  /** the task never finishes */
  hang: 7.79e-300,
} as const;

export function injectFault(eps: unknown): void {
  if (eps === TEST_HOOK_EPS.crash) process.exit(3);
  if (eps === TEST_HOOK_EPS.oom) {
    const hoard: number[][] = [];
    for (;;) hoard.push(new Array(1 << 20).fill(Math.random()));
  }
  if (eps === TEST_HOOK_EPS.hang) for (;;);
}
