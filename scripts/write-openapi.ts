/**
 * Writes openapi/openapi.json from the routes' zod schemas (`npm run openapi`).
 * A test fails when the committed document differs from what this generates.
 */
import { writeFile } from 'node:fs/promises';
import { buildApp } from '../src/app.js';
import { testConfig } from '../src/config.js';

export async function generateOpenapi(): Promise<string> {
  const app = await buildApp(testConfig());
  await app.ready();
  const doc = `${JSON.stringify(app.swagger(), null, 2)}\n`;
  await app.close();
  return doc;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const target = new URL('../openapi/openapi.json', import.meta.url);
  await writeFile(target, await generateOpenapi());
  console.log(`wrote ${target.pathname}`);
}
