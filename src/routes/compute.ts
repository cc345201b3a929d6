import underPressure from '@fastify/under-pressure';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Config } from '../config.js';
import { Overloaded, TooManyElements } from '../errors.js';
import type { Pass } from '../kernels/registry.js';
import type { KernelResult, KernelTask } from '../kernels/task.js';
import { problem, problemResponse, sendProblem } from '../problem.js';
import { backwardRequest, backwardResponse, forwardRequest, forwardResponse } from '../schemas/ops.js';
import { encodeResponse, type JsonField } from '../tensor/encode.js';
import type { DecodedTensor, DType, TensorForm } from '../tensor/tensor.js';
import { SharedBuffers } from '../workers/shared-buffers.js';
import { registerSafetensorsParser, sendBinaryResult, sharedFor, wantsSafetensors } from './binary.js';

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
  500: problemResponse(
    'The computation failed (a worker crashed or ran out of memory); no internals are shown.',
  ),
  503: problemResponse('Queue full, under pressure or shutting down; see Retry-After.'),
  504: problemResponse('The computation did not finish within TASK_TIMEOUT_MS.'),
};

export interface ComputeRoutesOptions {
  bodyLimit: number;
  maxElements: number;
  pressure: Config['pressure'];
}

/** MAX_ELEMENTS per tensor: a 413 naming the tensor, before any computation. */
function checkElements(body: Body, maxElements: number) {
  for (const [key, value] of Object.entries(body)) {
    if (isTensor(value) && value.data.length > maxElements) {
      const err = new TooManyElements(
        `${key} has ${value.data.length} elements; the limit is ${maxElements}`,
      );
      throw Object.assign(err, { fields: [{ path: key, message: `more than ${maxElements} elements` }] });
    }
  }
}

export async function computeRoutes(app: FastifyInstance, opts: ComputeRoutesOptions) {
  const r = app.withTypeProvider<ZodTypeProvider>();

  // Up to 256 MiB of spent shared memory (bodies, split computations) is kept for reuse.
  const buffers = new SharedBuffers(256 << 20);
  registerSafetensorsParser(app, opts.bodyLimit, buffers);

  // Load shedding for the compute routes only (liveness and readiness keep answering):
  // an event loop lagging or memory past its limit gets a 503 rather than slowing everyone.
  const { maxEventLoopDelayMs, maxHeapUsedBytes, maxRssBytes } = opts.pressure;
  await app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxHeapUsedBytes,
    maxRssBytes,
    pressureHandler: (_request, reply, type) => {
      app.metrics.rejected.inc({ reason: 'under_pressure' });
      reply.header('retry-after', '1');
      sendProblem(
        reply,
        problem(503, `The service is under pressure (${type}); retry shortly.`, [], 'under-pressure'),
      );
    },
  });

  // The response is JSON text written by the tensor encoder (fastify sends a string as is),
  // or safetensors bytes when the client's Accept asks for them.
  const handle = (pass: Pass) => async (request: FastifyRequest, reply: FastifyReply) => {
    const body = request.body as Body;
    checkElements(body, opts.maxElements);
    const task = toTask(body);
    // A client that hangs up cancels its computation (queued, or running in a worker).
    // (The response's 'close' before it has ended means the connection went away; the
    // request's own 'close' fires on every request once its body has been read.)
    const gone = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableEnded) gone.abort();
    };
    reply.raw.once('close', onClose);
    const route = app.compute.route(task);
    const end = app.metrics.taskSeconds.startTimer({ op: body.op, pass, route });
    let result: KernelResult;
    try {
      result = await app.compute.run(pass, task, gone.signal, sharedFor(request, buffers));
      end({ outcome: 'ok' });
    } catch (err) {
      end({ outcome: gone.signal.aborted ? 'cancelled' : err instanceof Overloaded ? 'rejected' : 'failed' });
      // A worker stopped mid-task is torn down asynchronously: keep its memory out of reuse.
      request.abandoned = true;
      throw err;
    } finally {
      reply.raw.removeListener('close', onClose);
    }
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
