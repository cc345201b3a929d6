import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Pass } from '../kernels/registry.js';
import type { KernelResult, KernelTask } from '../kernels/task.js';
import { problemResponse } from '../problem.js';
import { backwardRequest, backwardResponse, forwardRequest, forwardResponse } from '../schemas/ops.js';
import { encodeResponse, type JsonField } from '../tensor/encode.js';
import type { DecodedTensor, DType, TensorForm } from '../tensor/tensor.js';
import { registerSafetensorsParser, sendBinaryResult, wantsSafetensors } from './binary.js';

/** A validated body: its op and dtype, decoded tensors, and scalar parameters. */
type Body = { op: string; dtype: DType; x: DecodedTensor } & Record<string, unknown>;

function isTensor(v: unknown): v is DecodedTensor {
  if (typeof v !== 'object' || v === null) return false;
  const data = (v as DecodedTensor).data;
  return data instanceof Float64Array || data instanceof Float32Array;
}

/** Splits a validated body into the worker's task: tensors (to be moved) and parameters. */
export function toTask(body: Body): KernelTask {
  const tensors: KernelTask['tensors'] = {};
  const params: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    if (key === 'op' || key === 'dtype') continue;
    if (isTensor(value)) tensors[key] = value.data;
    else params[key] = value;
  }
  return { op: body.op, dtype: body.dtype, shape: body.x.shape, tensors, params };
}

export function encodeResult(result: KernelResult, dtype: DType, form: TensorForm): string {
  const fields: Record<string, JsonField> = {};
  for (const [key, t] of Object.entries(result.tensors))
    fields[key] = { kind: 'tensor', shape: t.shape, data: t.data };
  for (const [key, value] of Object.entries(result.scalars)) fields[key] = { kind: 'scalar', value };
  return encodeResponse(fields, dtype, form);
}

const errorResponses = {
  400: problemResponse('Invalid request: the errors name each offending field.'),
  401: problemResponse('Missing or wrong API key (only when API_KEYS is configured).'),
  413: problemResponse('Body larger than BODY_LIMIT.'),
  415: problemResponse('Unsupported content type.'),
  503: problemResponse('Queue full or shutting down; see Retry-After.'),
};

export async function computeRoutes(app: FastifyInstance) {
  const r = app.withTypeProvider<ZodTypeProvider>();

  registerSafetensorsParser(app, app.initialConfig.bodyLimit ?? 1 << 20);

  // The response is JSON text written by the tensor encoder (fastify sends a string as is),
  // or safetensors bytes when the client's Accept asks for them.
  const handle = (pass: Pass) => async (request: FastifyRequest, reply: FastifyReply) => {
    const body = request.body as Body;
    const result = await app.compute.run(pass, toTask(body));
    if (wantsSafetensors(request)) return sendBinaryResult(reply, result);
    return reply.type('application/json').send(encodeResult(result, body.dtype, body.x.form));
  };
  const forward = handle('forward');
  const backward = handle('backward');

  r.post(
    '/forward',
    {
      schema: {
        summary: 'Normalization forward pass',
        description:
          'Normalizes x. Training mode returns y and the batch statistics (and updated running statistics when they were sent); eval mode returns y.',
        tags: ['compute'],
        security: [{ apiKey: [] }],
        body: forwardRequest,
        response: { 200: forwardResponse, ...errorResponses },
      },
    },
    forward,
  );

  r.post(
    '/backward',
    {
      schema: {
        summary: 'Normalization backward pass',
        description:
          'Given dy = dL/dy, returns dx, dgamma and dbeta. In training mode the statistics are recomputed from x unless the saved mean and invstd are sent.',
        tags: ['compute'],
        security: [{ apiKey: [] }],
        body: backwardRequest,
        response: { 200: backwardResponse, ...errorResponses },
      },
    },
    backward,
  );
}
