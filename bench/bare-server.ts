/**
 * The baseline for bench/http.ts: a bare Fastify server whose one route parses a JSON
 * body and sends the same object back (JSON.parse and JSON.stringify, nothing else),
 * so normserve's JSON throughput can be read as a fraction of what Fastify itself does.
 *
 *   PORT=3001 node --import tsx bench/bare-server.ts
 */
import Fastify from 'fastify';

const app = Fastify({ logger: false, bodyLimit: 256 * 1024 * 1024 });
app.post('/echo', async (request) => request.body);
app.get('/health', async () => ({ status: 'ok' }));

const close = () => void app.close().then(() => process.exit(0));
process.once('SIGTERM', close);
process.once('SIGINT', close);
await app.listen({ port: Number(process.env.PORT ?? 3001), host: process.env.HOST ?? '127.0.0.1' });
