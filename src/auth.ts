import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Unauthorized } from './errors.js';

/** Endpoints that stay open when API keys are configured. */
const OPEN = [/^\/health$/, /^\/ready$/, /^\/openapi\.json$/, /^\/docs(\/.*)?$/];

// Hashing first makes every comparison the same length, so timingSafeEqual leaks nothing, not even key lengths.
const digest = (s: string) => createHash('sha256').update(s).digest();

export function registerApiKeys(app: FastifyInstance, keys: readonly string[]) {
  if (keys.length === 0) return;
  const digests = keys.map(digest);
  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?', 1)[0]!;
    if (OPEN.some((re) => re.test(path))) return;
    const header = request.headers.authorization ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header);
    const given = digest(match?.[1]?.trim() ?? '');
    let ok = false;
    for (const d of digests) ok = timingSafeEqual(d, given) || ok;
    if (!match || !ok) throw new Unauthorized();
  });
}
