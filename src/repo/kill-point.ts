/**
 * Crash testing: `PILOTLIGHT_TEST_KILL_AT=<point>` makes the process SIGKILL itself
 * when it reaches that named point, so tests can check what a kill at each step of
 * a multi-step operation leaves (test/e2e/migrate.test.ts). Unset, it does nothing.
 */
export function killPoint(point: string): void {
  if (process.env.PILOTLIGHT_TEST_KILL_AT === point) process.kill(process.pid, 'SIGKILL');
}
