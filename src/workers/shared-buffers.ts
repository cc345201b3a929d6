/**
 * Recycled shared memory: safetensors bodies, and the inputs and outputs of
 * requests split across workers.
 *
 * A fresh 25 MB buffer costs thousands of page faults as it is first written
 * (on the event loop, for a body), and it is freed only once every thread that
 * saw it has collected its garbage: workers allocate almost nothing, collect
 * rarely, and so kept gigabytes of spent shared buffers alive under sustained
 * load. Recycled buffers are already mapped and bounded in number.
 *
 * A buffer goes back to the free list only when its request is over and nothing
 * can still read it: the response has been sent and no computation on it was
 * abandoned (an aborted or timed-out worker is torn down asynchronously, so its
 * buffer is left to the garbage collector instead).
 */
const GRANULE = 1 << 20;

export class SharedBuffers {
  private readonly free = new Map<number, SharedArrayBuffer[]>();
  private freeBytes = 0;

  constructor(
    /** most bytes kept on the free list */
    private readonly maxFreeBytes: number,
    /** buffers smaller than this are not worth recycling */
    private readonly minBytes = GRANULE,
  ) {}

  /** A buffer of at least `bytes` (rounded up to a whole MiB when recyclable). */
  take(bytes: number): SharedArrayBuffer {
    if (bytes < this.minBytes) return new SharedArrayBuffer(bytes);
    const size = Math.ceil(bytes / GRANULE) * GRANULE;
    const list = this.free.get(size);
    const found = list?.pop();
    if (found) {
      this.freeBytes -= size;
      return found;
    }
    return new SharedArrayBuffer(size);
  }

  give(buffer: SharedArrayBuffer): void {
    const size = buffer.byteLength;
    if (size < this.minBytes || size % GRANULE !== 0 || this.freeBytes + size > this.maxFreeBytes) return;
    let list = this.free.get(size);
    if (!list) {
      list = [];
      this.free.set(size, list);
    }
    list.push(buffer);
    this.freeBytes += size;
  }

  get bytesFree(): number {
    return this.freeBytes;
  }
}
