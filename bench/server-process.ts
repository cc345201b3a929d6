/**
 * The server processes that bench/http.ts and bench/soak.ts drive: the real service
 * (`node dist/server.js`, as `npm start` runs it) and the bare Fastify baseline
 * (bench/bare-server.ts), each on a free loopback port, plus what /proc tells about them.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
const HOST = '127.0.0.1';

export interface ServerProcess {
  name: string;
  url: string;
  pid: number;
  /** lines the process wrote (warn and above, with LOG_LEVEL=warn), kept for the report */
  logs: string[];
  /** true once the process has exited on its own or by stop() */
  exited(): boolean;
  stop(): Promise<number | null>;
}

const running = new Set<ChildProcess>();
// Never leave a server behind, whatever ends the benchmark.
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** `npm run build`, as `npm start` does: the server process and its workers run dist/. */
export function build(): void {
  console.error('npm run build …');
  const r = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`npm run build failed (${r.status ?? r.signal})`);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(url: string, child: ChildProcess, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${url}: the process exited`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} not ready after ${ms} ms`);
}

async function start(name: string, args: string[], env: NodeJS.ProcessEnv, readyPath: string) {
  const port = await freePort();
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port), HOST },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const logs: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => logs.push(line));
  }
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  exit.then(() => running.delete(child));
  const url = `http://${HOST}:${port}`;
  try {
    await waitFor(`${url}${readyPath}`, child, 20_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${name}: ${(err as Error).message}\n${logs.join('\n')}`);
  }
  const server: ServerProcess = {
    name,
    url,
    pid: child.pid!,
    logs,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    async stop() {
      if (server.exited()) return child.exitCode;
      child.kill('SIGTERM');
      // Graceful shutdown is bounded by the server at 10 s; ours is bounded too.
      const timer = setTimeout(() => child.kill('SIGKILL'), 12_000);
      const code = await exit;
      clearTimeout(timer);
      return code;
    },
  };
  return server;
}

/** The real service; WORKERS as given, else from this process's environment, else the server's default. */
export function startService(workers?: number, env: NodeJS.ProcessEnv = {}): Promise<ServerProcess> {
  const vars: NodeJS.ProcessEnv = { LOG_LEVEL: 'warn', API_KEYS: '', ...env };
  if (workers !== undefined) vars.WORKERS = String(workers);
  const label = workers ?? process.env.WORKERS ?? 'default';
  return start(`normserve (WORKERS=${label})`, ['dist/server.js'], vars, '/ready');
}

/** One Fastify route that parses a JSON body and sends it back: the ceiling for a JSON request. */
export function startBare(): Promise<ServerProcess> {
  return start('bare fastify', ['--import', 'tsx', 'bench/bare-server.ts'], {}, '/health');
}

/** VmRSS and VmHWM (peak RSS) of a process, in bytes. */
export function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Resets the peak RSS to the current RSS (Linux ≥ 4.0); false when the kernel refuses. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export const MB = 1e6;
export const mb = (bytes: number) => `${(bytes / MB).toFixed(1)} MB`;

/** Log lines at error level or worse (pino: level ≥ 50), and lines that are not JSON logs (stderr, warnings). */
export function errorLines(logs: readonly string[]): { errors: string[]; other: string[] } {
  const errors: string[] = [];
  const other: string[] = [];
  for (const line of logs) {
    let level: number | undefined;
    try {
      level = (JSON.parse(line) as { level?: number }).level;
    } catch {
      if (line.trim().length > 0) other.push(line);
      continue;
    }
    if ((level ?? 0) >= 50) errors.push(line);
  }
  return { errors, other };
}
