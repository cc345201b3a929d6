/**
 * Recycled shared memory for safetensors bodies. A fresh 25 MB buffer costs the
 * event loop thousands of page faults as the body is copied in, and its release
 * waits for a garbage collection; a recycled one is already mapped.
 *
 * A buffer goes back to the free list only when its request is over and nothing
 * can still read it: the response has been sent and no computation on it was
 * abandoned (an aborted or timed-out worker is torn down asynchronously, so its
 * buffer is left to the garbage collector instead).
 */
const GRANULE = 1 << 20;

export class BodyBuffers {
  private readonly free = new Map<number, SharedArrayBuffer[]>();
  private freeBytes = 0;

  constructor(
    /** most bytes kept on the free list */
    private readonly maxFreeBytes: number,
    /** bodies smaller than this are not worth recycling */
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
