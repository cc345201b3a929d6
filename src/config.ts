import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { DEFAULT_THRESHOLDS, type Thresholds } from './workers/dispatch.js';

/**
 * The service's configuration, read from the environment once, at start.
 * Nothing else in the code reads `process.env`.
 */
const int = (min: number) => z.coerce.number().int().min(min);

const schema = z.object({
  PORT: int(0).max(65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  WORKERS: int(1).default(availableParallelism()),
  BODY_LIMIT: int(1).default(256 * 1024 * 1024),
  MAX_ELEMENTS: int(1).default(64 * 1024 * 1024),
  MAX_QUEUE: int(0).default(64),
  TASK_TIMEOUT_MS: int(1).default(60_000),
  REQUEST_TIMEOUT_MS: int(1).default(120_000),
  MAX_EVENT_LOOP_DELAY_MS: int(0).default(1000),
  MAX_HEAP_USED_BYTES: int(0).default(0),
  MAX_RSS_BYTES: int(0).default(0),
  SHUTDOWN_TIMEOUT_MS: int(1).default(10_000),
  INLINE_MAX: int(0).default(DEFAULT_THRESHOLDS.inlineMax),
  SPLIT_MIN: int(1).default(DEFAULT_THRESHOLDS.splitMin),
  API_KEYS: z
    .string()
    .default('')
    .transform((s) =>
      s
        .split(',')
        .map((k) => k.trim())
        .filter((k) => k.length > 0),
    ),
});

export type Config = Readonly<{
  port: number;
  host: string;
  logLevel: z.output<typeof schema>['LOG_LEVEL'];
  workers: number;
  bodyLimit: number;
  /** the most elements one tensor may have (413 naming the tensor) */
  maxElements: number;
  maxQueue: number;
  /** a computation still running after this is abandoned (its worker replaced) and answered 504 */
  taskTimeoutMs: number;
  /** the whole request must have arrived by then (slow clients) */
  requestTimeoutMs: number;
  /** load shedding (503) by event-loop delay and memory; 0 turns a check off */
  pressure: Readonly<{ maxEventLoopDelayMs: number; maxHeapUsedBytes: number; maxRssBytes: number }>;
  shutdownTimeoutMs: number;
  /** requests of at most this many elements run on the event loop; of at least splitMin, across all workers */
  thresholds: Readonly<Thresholds>;
  apiKeys: readonly string[];
  /** test-only fault injection in the workers; never set from the environment */
  testHooks: boolean;
}>;

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = schema
    .refine((e) => env.API_KEYS === undefined || env.API_KEYS.trim() === '' || e.API_KEYS.length > 0, {
      path: ['API_KEYS'],
      message: 'lists no key (only commas or spaces); unset it to run without keys',
    })
    .safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  return Object.freeze({
    port: e.PORT,
    host: e.HOST,
    logLevel: e.LOG_LEVEL,
    workers: e.WORKERS,
    bodyLimit: e.BODY_LIMIT,
    maxElements: e.MAX_ELEMENTS,
    maxQueue: e.MAX_QUEUE,
    taskTimeoutMs: e.TASK_TIMEOUT_MS,
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    pressure: Object.freeze({
      maxEventLoopDelayMs: e.MAX_EVENT_LOOP_DELAY_MS,
      maxHeapUsedBytes: e.MAX_HEAP_USED_BYTES,
      maxRssBytes: e.MAX_RSS_BYTES,
    }),
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    thresholds: Object.freeze({ inlineMax: e.INLINE_MAX, splitMin: e.SPLIT_MIN }),
    apiKeys: Object.freeze(e.API_KEYS),
    testHooks: false,
  });
}

/** A configuration error: the process prints its message (no stack) and exits 1. */
export class ConfigError extends Error {}

/** Defaults for tests and tools: the environment's shape without reading it. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return Object.freeze({ ...loadConfig({}), logLevel: 'silent', workers: 1, ...overrides });
}
