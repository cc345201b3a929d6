#!/usr/bin/env python3
"""Batch norm on a [32, 64, 56, 56] float32 batch through normserve, in safetensors.

usage: python3 examples/client.py [URL]     (or NORMSERVE_URL=...; default http://127.0.0.1:3000)
       NORMSERVE_API_KEY=... when the service has API_KEYS set

Needs NumPy and requests only (Debian: apt-get install python3-numpy python3-requests).
safetensors is read and written by the two small functions below, with NumPy alone:

    [8 bytes: header length n, u64 little-endian][n bytes: JSON header][raw little-endian data]

With the `safetensors` package installed, they are one-liners instead:

    from safetensors.numpy import save, load
    body = save({"x": x, "gamma": gamma, "beta": beta}, metadata={"op": "batch_norm", "eps": "1e-5"})
    r = requests.post(url + "/forward", data=body,
                      headers={"content-type": "application/x-safetensors",
                               "accept": "application/x-safetensors"})
    out = load(r.content)            # {"y": ..., "mean": ..., "var": ..., "invstd": ...}

(safetensors.numpy.load returns the tensors only; integer results such as
numBatchesTracked travel in __metadata__, which the load() below returns too.)

The batch goes to POST /forward and POST /backward (training mode, correction 1:
the Bessel-corrected variance), and the answers are checked against the same
formulas computed here with NumPy in float64.
"""
import json
import os
import struct
import sys
import time

import numpy as np
import requests

BASE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("NORMSERVE_URL", "http://127.0.0.1:3000")
BASE = BASE.rstrip("/")
SAFETENSORS = "application/x-safetensors"
DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}


def save(tensors, metadata=None):
    """{name: ndarray} (float32 or float64) and {key: str} -> safetensors bytes."""
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for name, array in tensors.items():
        code = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}[array.dtype]
        data = np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned
    return b"".join([struct.pack("<Q", len(text)), text, *chunks])


def load(body):
    """safetensors bytes -> ({name: ndarray}, {key: str}). The arrays are read-only views on `body`."""
    (n,) = struct.unpack_from("<Q", body, 0)
    header = json.loads(body[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        count = (end - begin) // dtype.itemsize
        data = np.frombuffer(body, dtype=dtype, count=count, offset=8 + n + begin)
        tensors[name] = data.reshape(info["shape"])
    return tensors, metadata


def post(path, tensors, metadata):
    body = save(tensors, metadata)
    headers = {"content-type": SAFETENSORS, "accept": SAFETENSORS}
    if os.environ.get("NORMSERVE_API_KEY"):
        headers["authorization"] = "Bearer " + os.environ["NORMSERVE_API_KEY"]
    start = time.perf_counter()
    r = requests.post(BASE + path, data=body, headers=headers, timeout=120)
    elapsed = time.perf_counter() - start
    if r.status_code != 200:
        sys.exit(f"POST {path}: HTTP {r.status_code}\n{r.text}")
    tensors, metadata = load(r.content)
    up, down = len(body) / 2**20, len(r.content) / 2**20
    print(f"POST {BASE}{path}  {up:.1f} MiB up, {down:.1f} MiB down, {elapsed * 1000:.0f} ms")
    return tensors, metadata


def max_abs_error(name, got, expected):
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    err = float(np.max(np.abs(got.astype(np.float64) - expected)))
    print(f"  {name:<7} {str(got.dtype):<8} {str(list(got.shape)):<18} max abs error {err:.2e}")
    return err


# --- the batch: 32 images, 64 channels of 56 × 56, each channel with its own scale and offset ---
rng = np.random.default_rng(0)
N, C, H, W = 32, 64, 56, 56
scale = rng.uniform(0.5, 4.0, size=(1, C, 1, 1))
shift = rng.uniform(-3.0, 3.0, size=(1, C, 1, 1))
x = (rng.standard_normal((N, C, H, W)) * scale + shift).astype(np.float32)
gamma = rng.uniform(0.5, 1.5, size=C).astype(np.float32)
beta = rng.uniform(-0.5, 0.5, size=C).astype(np.float32)
dy = rng.standard_normal((N, C, H, W)).astype(np.float32)
eps = 1e-5
params = {"op": "batch_norm", "training": "true", "correction": "1", "eps": "1e-5"}  # JSON text

# --- the reference, in float64: var = Σ(x − mean)² / (m − 1), m = N·H·W values per channel ---
start = time.perf_counter()

def per_channel(v):
    """A [C] vector shaped to broadcast over [N, C, H, W]."""
    return np.asarray(v, dtype=np.float64)[None, :, None, None]


x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
m = N * H * W
mean = x64.mean(axis=(0, 2, 3))
var = ((x64 - per_channel(mean)) ** 2).sum(axis=(0, 2, 3)) / (m - 1)
invstd = 1 / np.sqrt(var + eps)
xhat = (x64 - per_channel(mean)) * per_channel(invstd)
y = per_channel(gamma) * xhat + per_channel(beta)
dbeta = dy64.sum(axis=(0, 2, 3))
dgamma = (dy64 * xhat).sum(axis=(0, 2, 3))
dx = per_channel(gamma * invstd) * (dy64 - per_channel(dbeta) / m - xhat * per_channel(dgamma) / (m - 1))
print(f"NumPy float64 reference: {(time.perf_counter() - start) * 1000:.0f} ms")

# --- the service: float32 x, so a float32 computation (statistics accumulated in float64) ---
print(f"x: {list(x.shape)} float32, m = {m} values per channel, correction 1")
fwd, fwd_meta = post("/forward", {"x": x, "gamma": gamma, "beta": beta}, params)
errors = [
    max_abs_error("y", fwd["y"], y),
    max_abs_error("mean", fwd["mean"], mean),
    max_abs_error("var", fwd["var"], var),
    max_abs_error("invstd", fwd["invstd"], invstd),
]
bwd, _ = post("/backward", {"x": x, "dy": dy, "gamma": gamma}, params)
errors += [
    max_abs_error("dx", bwd["dx"], dx),
    max_abs_error("dgamma", bwd["dgamma"], dgamma),
    max_abs_error("dbeta", bwd["dbeta"], dbeta),
]

# The results are float32: y and dx (a few units) are rounded by a few 1e-7; dgamma and dbeta,
# sums over m = 100352 values that come to a few hundred, by a few 1e-5. Relative to each
# tensor's largest value that is float32's half step, 6e-8; 1e-5 would be a real disagreement.
references = [y, mean, var, invstd, dx, dgamma, dbeta]
relative = max(err / max(1.0, float(np.max(np.abs(ref)))) for err, ref in zip(errors, references))
print(f"largest error relative to the reference's magnitude: {relative:.2e}")
if relative > 1e-5:
    sys.exit("FAIL: the service and NumPy disagree")
print("OK")
