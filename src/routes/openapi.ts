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
    { name: 'operations', description: 'Liveness, readiness and metrics' },
  ],
  components: {
    schemas: tensorComponents,
    securitySchemes: {
      apiKey: { type: 'http', scheme: 'bearer', description: 'Needed when API_KEYS is set.' },
    },
  },
};

type Doc = { paths?: Record<string, Record<string, OperationDoc>> };
type OperationDoc = {
  requestBody?: { content?: Record<string, unknown> };
  responses?: Record<string, { content?: Record<string, unknown> }>;
};

const binaryBody = {
  schema: {
    type: 'string',
    format: 'binary',
    description:
      "safetensors: tensors named as the JSON fields (x, gamma, beta, dy, runningMean, …), dtype F32 or F64 (the computation uses x's); the scalar fields (op, eps, correction, training, momentum, numBatchesTracked, numGroups, normalizedShape) as JSON text in __metadata__.",
  },
};

const binaryResponse = {
  schema: {
    type: 'string',
    format: 'binary',
    description:
      "safetensors with the response's tensors (dtype of the computation); integer results such as numBatchesTracked in __metadata__. Sent when Accept asks for application/x-safetensors.",
  },
};

/**
 * The routes' zod schemas describe the JSON body; the same endpoints also take and
 * give safetensors, which this adds to the document as `format: binary` content.
 */
export function addBinaryContent({ openapiObject }: { openapiObject: Partial<Doc> }) {
  for (const path of ['/forward', '/backward']) {
    const op = openapiObject.paths?.[path]?.post;
    if (!op) continue;
    if (op.requestBody?.content) op.requestBody.content['application/x-safetensors'] = binaryBody;
    const ok = op.responses?.['200'];
    if (ok?.content) ok.content['application/x-safetensors'] = binaryResponse;
  }
  return openapiObject;
}
