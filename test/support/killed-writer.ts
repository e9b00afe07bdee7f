import { spawn } from 'node:child_process';

/**
 * Runs `body` (ES module code; `await import(...)` what it needs) in a new node
 * process, waits until it has written `ready` to stdout, then kills it with SIGKILL
 * mid-write and waits for it to be gone. Returns its pid (the one its temporaries name).
 */
export async function killWhenReady(body: string, ready: string): Promise<number> {
  const script = `${body}\nprocess.stdout.write(${JSON.stringify(`${ready}\n`)});\nsetInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes(ready) && resolve());
    child.on('exit', (code) => reject(new Error(`writer exited (${code}) before "${ready}"`)));
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  return child.pid!;
}
