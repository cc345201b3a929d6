"""PyTorch CPU timings of the normalizations, at the shapes of bench/cases.ts.

For every op, forward and backward, float32 and float64, prints one JSON line

    {"op": "batch_norm", "pass": "forward", "dtype": "float32", "shape": [32, 64], "ms": 0.012, "reps": 900}

where ms is the median of repeated runs (each case gets a bounded time budget).
The parameters are those of bench/cases.ts: batch_norm and instance_norm in training
mode with batch statistics, layer_norm over shape[1:], group_norm with
min(32, C/2) groups, rms_norm over shape[1:] with eps 1e-6, written out as
x * rsqrt(mean(x^2) + eps) * gamma (PyTorch 1.13 has no F.rms_norm).

forward runs under torch.no_grad() (y and the statistics, no graph). backward times
torch.autograd.grad of y for (x, gamma[, beta]) with dy, on a graph built once
and retained, so the forward pass is not in the backward time; PyTorch's backward
reuses the statistics saved by its forward.

    /usr/bin/python3 bench/torch.py [threads=1] [--time SECONDS] [--filter TEXT]
"""

import argparse
import json
import os
import statistics
import sys
import time

# This file is named torch.py: keep its own folder off the path, or `import torch` finds itself.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SHAPES = [[32, 64], [256, 1024], [32, 64, 56, 56]]
OPS = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def param_shape(op, shape):
    return shape[1:] if op in ("layer_norm", "rms_norm") else [shape[1]]


def make_fn(op, shape):
    """The op as f(x, gamma, beta) -> y, or None when it does not apply to the shape."""
    if op == "batch_norm":
        return lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, momentum=0.1, eps=1e-5)
    if op == "instance_norm":
        if len(shape) < 3:
            return None
        return lambda x, g, b: F.instance_norm(x, None, None, g, b, use_input_stats=True, eps=1e-5)
    if op == "group_norm":
        groups = min(32, shape[1] // 2)
        return lambda x, g, b: F.group_norm(x, groups, g, b, eps=1e-5)
    if op == "layer_norm":
        normalized = shape[1:]
        return lambda x, g, b: F.layer_norm(x, normalized, g, b, eps=1e-5)
    if op == "rms_norm":
        dims = tuple(range(1, len(shape)))
        return lambda x, g, _b: x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + 1e-6) * g
    raise ValueError(op)


def median_ms(fn, budget_s, min_reps=5, max_reps=2000):
    """Median wall time of fn() in ms: a short warm-up, then runs until the budget is spent."""
    warm_end = time.perf_counter() + budget_s / 5
    for i in range(max_reps):
        fn()
        if i >= 2 and time.perf_counter() > warm_end:
            break
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, len(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("threads", nargs="?", type=int, default=1)
    parser.add_argument("--time", type=float, default=0.3, help="seconds of timed runs per case")
    parser.add_argument("--filter", default="", help="only cases whose 'op pass dtype [shape]' contains this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    for shape in SHAPES:
        for dtype_name, dtype in DTYPES.items():
            x = torch.rand(shape, dtype=dtype) * 2 - 1
            dy = torch.rand(shape, dtype=dtype) * 2 - 1
            for op in OPS:
                fn = make_fn(op, shape)
                if fn is None:
                    continue
                p = param_shape(op, shape)
                gamma = 1 + (torch.rand(p, dtype=dtype) * 2 - 1) / 2
                beta = None if op == "rms_norm" else torch.rand(p, dtype=dtype) * 2 - 1
                for pass_name in ("forward", "backward"):
                    name = f"{op} {pass_name} {dtype_name} [{','.join(map(str, shape))}]"
                    if args.filter not in name:
                        continue
                    if pass_name == "forward":

                        def run():
                            with torch.no_grad():
                                fn(x, gamma, beta)

                    else:
                        xs = x.detach().requires_grad_()
                        params = [gamma.detach().requires_grad_()]
                        if beta is not None:
                            params.append(beta.detach().requires_grad_())
                        y = fn(xs, params[0], params[1] if len(params) > 1 else None)
                        inputs = [xs, *params]

                        def run():
                            torch.autograd.grad(y, inputs, dy, retain_graph=True)

                    ms, reps = median_ms(run, args.time)
                    line = {"op": op, "pass": pass_name, "dtype": dtype_name, "shape": shape, "ms": ms, "reps": reps}
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
