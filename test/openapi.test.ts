import { readFile } from 'node:fs/promises';
import SwaggerParser from '@apidevtools/swagger-parser';
import { describe, expect, it } from 'vitest';
import { generateOpenapi } from '../scripts/write-openapi.js';
import { useApp } from './helpers.js';

/** The committed OpenAPI document: fresh, valid, documented, and its examples work. */
const committedText = await readFile(new URL('../openapi/openapi.json', import.meta.url), 'utf8');
// biome-ignore lint/suspicious/noExplicitAny: an OpenAPI document is walked freely here.
const committed: any = JSON.parse(committedText);

const t = useApp();
const POSTS = ['/forward', '/backward'];

// biome-ignore lint/suspicious/noExplicitAny: see above.
const jsonBody = (path: string): any => committed.paths[path].post.requestBody.content['application/json'];

// biome-ignore lint/suspicious/noExplicitAny: see above.
type Schema = any;
const resolve = (s: Schema): Schema =>
  typeof s?.$ref === 'string' ? resolve(committed.components.schemas[s.$ref.split('/').pop()]) : s;
/** The object schemas a body may match: the schema itself, or each member of its oneOf/anyOf (one per op). */
const variants = (s: Schema): Schema[] => {
  const r = resolve(s);
  const members = r.oneOf ?? r.anyOf;
  return members ? members.flatMap(variants) : [r];
};

describe('openapi/openapi.json', () => {
  it('is up to date with the routes (run `npm run openapi` when this fails)', async () => {
    const generated = await generateOpenapi();
    expect(
      generated === committedText,
      'openapi/openapi.json is stale: run `npm run openapi` and commit the result',
    ).toBe(true);
  });

  it('is a valid OpenAPI 3 document', async () => {
    await expect(SwaggerParser.validate(structuredClone(committed))).resolves.toBeDefined();
    expect(committed.openapi).toMatch(/^3\./);
  });

  it('documents /forward and /backward as POST with a JSON object body that requires x (and dy)', () => {
    for (const path of POSTS) {
      expect(committed.paths[path]?.post, path).toBeDefined();
      const bodies = variants(jsonBody(path).schema);
      expect(bodies.length).toBeGreaterThan(0);
      for (const body of bodies) {
        expect(body.type, path).toBe('object');
        expect(body.required, path).toContain('x');
        if (path === '/backward') expect(body.required, path).toContain('dy');
      }
    }
    // batch_norm is the default op: its member does not require op.
    const batchNorm = variants(jsonBody('/forward').schema).find(
      (b) => b.properties.op.enum?.[0] === 'batch_norm',
    );
    expect(batchNorm?.required).toEqual(['x']);
  });

  for (const path of POSTS) {
    it(`every request-body property of ${path} has a description`, () => {
      const undocumented: string[] = [];
      for (const body of variants(jsonBody(path).schema)) {
        const properties: Record<string, { description?: string }> = body.properties;
        expect(Object.keys(properties).length).toBeGreaterThan(0);
        for (const [name, p] of Object.entries(properties)) {
          if (typeof p.description !== 'string' || p.description.trim() === '') {
            undocumented.push(`${resolve(properties.op)?.enum?.[0]}.${name}`);
          }
        }
      }
      expect(undocumented, `${path} properties without a description`).toEqual([]);
    });

    it(`the example request bodies of ${path} work as is (200)`, async () => {
      const media = jsonBody(path);
      const examples = [
        media.example,
        media.schema.example,
        ...Object.values(media.examples ?? {}).map((e) => (e as { value: unknown }).value),
      ].filter((e) => e !== undefined);
      expect(examples.length, `${path} has an example request body`).toBeGreaterThan(0);
      for (const example of examples) {
        const r = await t.post(path, example);
        expect(r.status, `${JSON.stringify(example)} → ${r.text}`).toBe(200);
      }
    });
  }

  it('GET /openapi.json serves the same document', async () => {
    const r = await t.get('/openapi.json');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(r.body).toEqual(committed);
  });

  it('GET /docs serves Swagger UI', async () => {
    let r = await t.get('/docs');
    for (let hops = 0; hops < 3 && r.status >= 300 && r.status < 400; hops++) {
      r = await t.get(String(r.headers.location));
    }
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/html/);
    expect(r.text).toMatch(/swagger-ui/i);
  });
});

describe('openapi/openapi.json describes the errors of the SPEC', () => {
  // SPEC: "Every error is application/problem+json (RFC 9457)".
  it('error responses of /forward and /backward are documented as application/problem+json', () => {
    for (const path of POSTS) {
      const responses: Record<string, { content?: Record<string, unknown> }> =
        committed.paths[path].post.responses;
      for (const [status, response] of Object.entries(responses)) {
        if (Number(status) < 400) continue;
        expect(Object.keys(response.content ?? {}), `${path} ${status}`).toContain(
          'application/problem+json',
        );
      }
    }
  });

  // SPEC: "missing or wrong API key, when keys are configured | 401".
  it('/forward and /backward document the 401 of API keys and the bearer security scheme', () => {
    for (const path of POSTS) {
      const op = committed.paths[path].post;
      expect(Object.keys(op.responses), path).toContain('401');
      const security = op.security ?? committed.security ?? [];
      expect(
        security.some((s: Record<string, unknown>) => 'apiKey' in s),
        `${path} security`,
      ).toBe(true);
    }
  });
});
