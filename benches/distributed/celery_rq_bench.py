"""Celery and RQ doing what stealpool's distributed bench measures, on one Redis.

Usage: python3 celery_rq_bench.py SYSTEM WORKERS N_SUBMIT N_MAP N_PAYLOAD
  SYSTEM     celery  Celery 5, Redis broker and Redis result backend, a prefork worker of
                     WORKERS processes (pickle serializer, so bytes travel as bytes)
             rq      RQ, WORKERS `rq worker` processes (RQ's default Worker: it forks a
                     work horse per job, which is what RQ users get)
  N_SUBMIT   tiny jobs add(i, i) submitted one by one: celery `delay` then `.get()` of
             every result; rq `enqueue` then fetching every result
  N_MAP      tiny jobs in chunks of CHUNK (env, default 100): celery `add.chunks(...)
             .group()`, rq `enqueue_many` of chunk jobs
  N_PAYLOAD  jobs of one 64 KiB bytes argument returning its length, submitted one by one

The Redis is $REDIS_URL (run.sh starts one). Workers are started and warmed up (one job per
worker process) before any clock starts, and stopped at the end (also on an error). Prints
one line per scenario: `SCENARIO SECONDS JOBS`.
"""

import os
import signal
import subprocess
import sys
import time

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHUNK = int(os.environ.get("CHUNK", "100"))
QUEUE = "bench"
PAYLOAD = bytes(64 << 10)
HERE = os.path.dirname(os.path.abspath(__file__))


def add(a, b):
    return a + b


def add_chunk(pairs):
    return [a + b for a, b in pairs]


def length(b):
    return len(b)


# --- Celery: the app and its tasks (the worker imports this module; `__main__` uses that
# import too, so that each task is registered once) ----------------------------------------------
try:
    if __name__ == "__main__":
        raise ImportError("defined by the imported module")
    from celery import Celery

    app = Celery("celery_rq_bench", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(
        task_serializer="pickle",
        result_serializer="pickle",
        accept_content=["pickle"],
        task_default_queue=QUEUE,
        worker_hijack_root_logger=False,
        result_expires=600,
        broker_connection_retry_on_startup=True,
    )
    celery_add = app.task(name="bench.add")(add)
    celery_length = app.task(name="bench.length")(length)
except ImportError:  # rq only
    app = None


def start(cmd):
    """A worker process in its own process group (stopped with the whole group); its output goes
    to $BENCH_LOG (default: nowhere)."""
    env = dict(os.environ)
    # Celery refuses pickle as root unless told: this runs on loopback with our own payloads.
    env["C_FORCE_ROOT"] = "1"
    log = open(os.environ.get("BENCH_LOG", os.devnull), "ab")
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, start_new_session=True, stdout=log, stderr=log)
    # run.sh kills these groups on exit, should this script die before its `finally`.
    if os.environ.get("BENCH_PIDFILE"):
        with open(os.environ["BENCH_PIDFILE"], "a") as f:
            f.write(f"{proc.pid}\n")
    return proc


def stop(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def timed(name, n, f):
    t = time.perf_counter()
    f()
    print(f"{name} {time.perf_counter() - t:.6f} {n}", flush=True)


def run_celery(workers, n_submit, n_map, n_payload):
    from celery import group

    procs = [
        start(
            [sys.executable, "-m", "celery", "-A", "celery_rq_bench", "worker", "--pool=prefork",
             f"--concurrency={workers}", "-Q", QUEUE, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel=WARNING"]
        )
    ]
    try:
        # Warm-up: every process of the pool has run a job once the whole group has.
        group(celery_add.s(0, 0) for _ in range(4 * workers)).apply_async().get(timeout=120)

        def submit():
            rs = [celery_add.delay(i, i) for i in range(n_submit)]
            assert [r.get(timeout=600) for r in rs] == [2 * i for i in range(n_submit)]

        def chunked():
            pairs = [(i, i) for i in range(n_map)]
            out = celery_add.chunks(pairs, CHUNK).group().apply_async().get(timeout=600)
            assert [x for chunk in out for x in chunk] == [2 * i for i in range(n_map)]

        def payload():
            rs = [celery_length.delay(PAYLOAD) for _ in range(n_payload)]
            assert all(r.get(timeout=600) == len(PAYLOAD) for r in rs)

        timed("submit", n_submit, submit)
        timed("map", n_map, chunked)
        timed("payload", n_payload, payload)
    finally:
        stop(procs)


def rq_wait(jobs, conn):
    """Polls until every job finished; its results, in order."""
    from rq.job import Job, JobStatus

    results = [None] * len(jobs)
    pending = list(range(len(jobs)))
    deadline = time.time() + 600
    while pending:
        assert time.time() < deadline, "rq jobs did not finish in 600 s"
        fetched = Job.fetch_many([jobs[i].id for i in pending], connection=conn)
        still = []
        for i, job in zip(pending, fetched):
            status = job.get_status(refresh=False) if job else None
            if status == JobStatus.FINISHED:
                results[i] = job.return_value()
            elif status == JobStatus.FAILED:
                raise RuntimeError(f"rq job {job.id} failed")
            else:
                still.append(i)
        pending = still
        if pending:
            time.sleep(0.005)
    return results


def run_rq(workers, n_submit, n_map, n_payload):
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(REDIS_URL)
    q = Queue(QUEUE, connection=conn)
    procs = [
        start([sys.executable, "-m", "rq.cli", "worker", "-u", REDIS_URL, "-q", "-n", f"bench-{os.getpid()}-{i}", QUEUE])
        for i in range(workers)
    ]
    try:
        rq_wait([q.enqueue(add, 0, 0) for _ in range(4 * workers)], conn)

        def submit():
            jobs = [q.enqueue(add, i, i) for i in range(n_submit)]
            assert rq_wait(jobs, conn) == [2 * i for i in range(n_submit)]

        def chunked():
            pairs = [(i, i) for i in range(n_map)]
            chunks = [pairs[k : k + CHUNK] for k in range(0, n_map, CHUNK)]
            jobs = q.enqueue_many([Queue.prepare_data(add_chunk, (c,)) for c in chunks])
            out = rq_wait(jobs, conn)
            assert [x for chunk in out for x in chunk] == [2 * i for i in range(n_map)]

        def payload():
            jobs = [q.enqueue(length, PAYLOAD) for _ in range(n_payload)]
            assert all(r == len(PAYLOAD) for r in rq_wait(jobs, conn))

        timed("submit", n_submit, submit)
        timed("map", n_map, chunked)
        timed("payload", n_payload, payload)
    finally:
        stop(procs)


def main():
    # The functions and tasks must come from the module workers import, not from `__main__`.
    sys.path.insert(0, HERE)
    # SIGTERM (from run.sh's trap) unwinds, so the workers are stopped by `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import celery_rq_bench as bench

    system, workers, n_submit, n_map, n_payload = sys.argv[1], *map(int, sys.argv[2:6])
    {"celery": bench.run_celery, "rq": bench.run_rq}[system](workers, n_submit, n_map, n_payload)


if __name__ == "__main__":
    main()
