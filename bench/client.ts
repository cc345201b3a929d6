/**
 * A plain node:http client for large bodies. autocannon parses responses with a
 * JavaScript HTTP parser, which costs the client about 10 ms a megabyte here (it
 * tripled the latency of a 25 MB request), so bodies of megabytes are sent with
 * node:http over keep-alive connections instead; small ones go through autocannon.
 */
import http from 'node:http';

export interface Request {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface Answer {
  status: number;
  /** response body bytes */
  bytes: number;
  ms: number;
  body: Buffer;
}

export function agent(connections: number): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: connections });
}

/** One request; rejects on a socket error or after timeoutMs. Keeps the body only when asked. */
export function send(
  base: string,
  r: Request,
  via: http.Agent,
  { timeoutMs = 30_000, keepBody = false } = {},
): Promise<Answer> {
  const url = new URL(r.path, base);
  const headers: Record<string, string | number> = { ...r.headers };
  if (r.body !== undefined) headers['content-length'] = Buffer.byteLength(r.body);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: r.method, headers, agent: via, timeout: timeoutMs }, (res) => {
      let bytes = 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (keepBody) chunks.push(c);
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          bytes,
          ms: performance.now() - t0,
          body: Buffer.concat(chunks),
        }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(r.body);
  });
}
