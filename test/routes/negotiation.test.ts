import { connect } from 'node:net';
import type { FastifyRequest } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { testConfig } from '../../src/config.js';
import { wantsSafetensors } from '../../src/routes/binary.js';

const accepting = (accept?: string) =>
  ({ headers: accept === undefined ? {} : { accept } }) as FastifyRequest;

describe('Accept: safetensors only when it is preferred to JSON', () => {
  it.each([
    [undefined, false],
    ['application/json', false],
    ['*/*', false],
    ['application/x-safetensors', true],
    ['application/json, application/x-safetensors', true],
    ['application/json;q=1, application/x-safetensors;q=0.1', false],
    ['application/json;q=0.5, application/x-safetensors', true],
    ['application/x-safetensors;q=0', false],
    ['APPLICATION/X-SAFETENSORS', true],
  ])('%j → %s', (accept, expected) => {
    expect(wantsSafetensors(accepting(accept))).toBe(expected);
  });
});

describe('HTTP errors before a request exists are problem details too', () => {
  const app = buildApp(testConfig());
  let port = 0;
  beforeAll(async () => {
    await (await app).listen({ port: 0, host: '127.0.0.1' });
    port = ((await app).server.address() as { port: number }).port;
  });
  afterAll(async () => (await app).close());

  function raw(text: string): Promise<string> {
    return new Promise((resolve, reject) => {
      let got = '';
      const s = connect(port, '127.0.0.1', () => s.write(text));
      s.on('data', (d) => {
        got += d.toString();
      });
      s.on('close', () => resolve(got));
      s.on('error', reject);
      setTimeout(() => s.destroy(), 3000);
    });
  }

  it('a malformed chunk is a 400 application/problem+json, and the connection is closed', async () => {
    const reply = await raw(
      'POST /forward HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZZ\r\n',
    );
    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
    expect(reply).toMatch(/content-type: application\/problem\+json/i);
    const body = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4));
    expect(body).toMatchObject({ status: 400, title: 'Invalid request', errors: [] });
    expect(body.type).toMatch(/^urn:normserve:problem:/);
  });
});
