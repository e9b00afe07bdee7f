import cliProgress from 'cli-progress';
import { ProgressSink } from '../engine/backup.js';

/** A progress bar on stderr when it is a terminal (bytes, rate, ETA); nothing otherwise. */
export function terminalProgress(label: string, enabled = process.stderr.isTTY === true): ProgressSink | undefined {
  if (!enabled) return undefined;
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done}/{all} | {rate} | ETA {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 50,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let done = 0;
  let total = 0;
  const mib = (n: number) => `${(n / 1048576).toFixed(0)} MiB`;
  const payload = () => ({
    done: mib(done),
    all: mib(total),
    rate: `${(done / 1048576 / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(0)} MiB/s`,
  });
  return {
    start(t) {
      total = t;
      bar.start(Math.max(1, t), 0, payload());
    },
    advance(n) {
      done += n;
      bar.update(done, payload());
    },
    stop() {
      bar.stop();
    },
  };
}
