"""Python's process pools doing what benches/process_compare.rs measures, one scenario per run.

Usage: python3 process_bench.py SCENARIO N WORKERS
  submit   N small jobs through ProcessPoolExecutor.submit (two ints in, one out)
  map      N small jobs through multiprocessing.Pool.map with its default chunksize
  payload  N jobs of one 1 MiB bytes argument through ProcessPoolExecutor.submit
  startup  time until a fresh ProcessPoolExecutor (fork) of WORKERS processes has run one job

Prints one line: the seconds the measured part took. The pool is started (and warmed with one
job) outside the timed part, except for `startup`.
"""

import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def add(a, b):
    return a + b


def add_pair(p):
    return p[0] + p[1]


def byte_len(b):
    return len(b)


def main():
    scenario, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fork = mp.get_context("fork")
    if scenario == "submit":
        with ProcessPoolExecutor(workers, mp_context=fork) as ex:
            ex.submit(add, 1, 2).result()
            t = time.perf_counter()
            fs = [ex.submit(add, i, 1) for i in range(n)]
            total = sum(f.result() for f in fs)
            took = time.perf_counter() - t
        assert total == sum(range(n)) + n
    elif scenario == "map":
        with fork.Pool(workers) as pool:
            pool.map(add_pair, [(1, 2)])
            pairs = [(i, 1) for i in range(n)]
            t = time.perf_counter()
            total = sum(pool.map(add_pair, pairs))
            took = time.perf_counter() - t
        assert total == sum(range(n)) + n
    elif scenario == "payload":
        payload = bytes(1 << 20)
        with ProcessPoolExecutor(workers, mp_context=fork) as ex:
            ex.submit(byte_len, b"").result()
            t = time.perf_counter()
            fs = [ex.submit(byte_len, payload) for _ in range(n)]
            total = sum(f.result() for f in fs)
            took = time.perf_counter() - t
        assert total == n << 20
    elif scenario == "startup":
        t = time.perf_counter()
        ex = ProcessPoolExecutor(workers, mp_context=fork)
        assert ex.submit(add, 1, 2).result() == 3
        took = time.perf_counter() - t
        ex.shutdown()
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(f"{took:.6f}")


if __name__ == "__main__":
    main()
