/**
 * Exit codes of pilotlight (README "Exit codes"):
 *   0  done
 *   1  error (a one-line message says what to do); nothing was committed
 *   2  a recovery drill saw no console output (inconclusive)
 *   3  data integrity: verify found damage, or a chunk read back did not match its id
 *   4  the backup COMMITTED (its snapshot id is in the report) but a later step failed
 *      (EBS shadow push, retention, status record): do not redo the backup, redo the step
 *   5  `run --once`: every job ran, but at least one VM is outside its RPO target
 *   130 interrupted (Ctrl-C / SIGTERM) before the commit: nothing was committed
 */
export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_DRILL_INCONCLUSIVE = 2;
export const EXIT_INTEGRITY = 3;
export const EXIT_COMMITTED_STEP_FAILED = 4;
export const EXIT_RPO_BREACHED = 5;
export const EXIT_INTERRUPTED = 130;
