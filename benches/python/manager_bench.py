"""Python's cross-process queues doing what benches/manager_compare.rs measures.

Usage: python3 manager_bench.py QUEUE ITEM N
  QUEUE  manager  multiprocessing.Manager().Queue()
         mp       multiprocessing.Queue()
  ITEM   small    the int i
         64k      64 KiB of bytes
  N      items

One producer process puts N items, one consumer process gets N items (both forked and waiting
before the clock starts). Prints one line: the seconds from the start signal until both ended.
"""

import multiprocessing as mp
import sys
import time


def producer(q, start, n, item):
    start.wait()
    if item == "small":
        for i in range(n):
            q.put(i)
    else:
        payload = bytes(64 << 10)
        for _ in range(n):
            q.put(payload)


def consumer(q, start, n, item, done):
    start.wait()
    total = 0
    for _ in range(n):
        v = q.get()
        total += v if item == "small" else len(v)
    done.put(total)


def main():
    kind, item, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = mp.get_context("fork")
    manager = ctx.Manager() if kind == "manager" else None
    q = manager.Queue() if manager else ctx.Queue()
    start, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=producer, args=(q, start, n, item)),
        ctx.Process(target=consumer, args=(q, start, n, item, done)),
    ]
    for p in procs:
        p.start()
    time.sleep(0.2)  # let both reach the start line (outside the measured part)
    t = time.perf_counter()
    start.set()
    total = done.get()
    for p in procs:
        p.join()
    took = time.perf_counter() - t
    expected = n * (n - 1) // 2 if item == "small" else n << 16
    assert total == expected, (total, expected)
    if manager:
        manager.shutdown()
    print(took)


if __name__ == "__main__":
    main()
