import type { SwaggerOptions } from '@fastify/swagger';
import { tensorComponents } from '../schemas/tensor.js';

/** The OpenAPI document's header; paths come from the routes' zod schemas. */
export const openapiInfo: NonNullable<Extract<SwaggerOptions, { openapi?: unknown }>['openapi']> = {
  openapi: '3.0.3',
  info: {
    title: 'normserve',
    version: '0.1.0',
    description: [
      'Normalization layers forward and backward over HTTP: a trustworthy reference for checking hand-derived',
      'gradients and testing frameworks.',
      '',
      'Tensors are nested arrays (`[[1, 2], [3, 4]]`) or `{"shape": [2, 2], "data": [1, 2, 3, 4]}`; responses',
      'mirror the form of the request\'s `x`. Non-finite values travel as the strings "NaN", "Infinity", "-Infinity".',
      '',
      'Batch norm: `var = Σ(x − mean)² / (m − correction)`; `correction: 1` (default) is the Bessel-corrected',
      "derivation, `correction: 0` is PyTorch's `F.batch_norm` in training mode.",
      '',
      'Errors are RFC 9457 problem details (`application/problem+json`) whose `errors` name each field.',
    ].join('\n'),
  },
  tags: [
    { name: 'compute', description: 'Forward and backward passes' },
    { name: 'operations', description: 'Liveness and readiness' },
  ],
  components: {
    schemas: tensorComponents,
    securitySchemes: {
      apiKey: { type: 'http', scheme: 'bearer', description: 'Needed when API_KEYS is set.' },
    },
  },
};
