"""multiprocessing's synchronisation between processes, as parallel ETL stages use it: a
duplex Pipe, an Event released by the parent, a Barrier of workers, a Lock guarding a
shared Value, an Array filled by children, a JoinableQueue drained by workers with
sentinels, a Condition, and a Manager's dict and list."""

import multiprocessing as mp


def ping(conn):
    while (msg := conn.recv()) != "stop":
        conn.send(msg * 2)
    conn.close()


def gated(event, barrier, lock, counter, array, i):
    event.wait(30)
    barrier.wait(30)
    for _ in range(100):
        with lock:
            counter.value += 1
    array[i] = i * i


def drain(queue, results):
    while (item := queue.get()) is not None:
        results.put(item * 10)
        queue.task_done()
    queue.task_done()


def notify(cond, flag):
    with cond:
        flag.value = 1
        cond.notify_all()


def fill(shared, log, i):
    shared[f"worker-{i}"] = i * 3
    log.append(i)


def handler(event, context):
    out = {}
    n = event["workers"]
    parent, child = mp.Pipe()
    p = mp.Process(target=ping, args=(child,))
    p.start()
    replies = []
    for x in (1, "ab", [3]):
        parent.send(x)
        replies.append(parent.recv())
    parent.send("stop")
    p.join(30)
    out["pipe"] = replies
    event_, barrier, lock = mp.Event(), mp.Barrier(n), mp.Lock()
    counter, array = mp.Value("i", 0), mp.Array("i", n)
    procs = [mp.Process(target=gated, args=(event_, barrier, lock, counter, array, i))
             for i in range(n)]
    for p in procs:
        p.start()
    event_.set()
    for p in procs:
        p.join(30)
    out["counter"], out["array"] = counter.value, list(array)
    out["exitcodes"] = [p.exitcode for p in procs]
    queue, results = mp.JoinableQueue(), mp.Queue()
    workers = [mp.Process(target=drain, args=(queue, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(event["items"]):
        queue.put(i)
    for _ in workers:
        queue.put(None)
    queue.join()
    out["drained"] = sorted(results.get(timeout=30) for _ in range(event["items"]))[-3:]
    for w in workers:
        w.join(30)
    cond, flag = mp.Condition(), mp.Value("b", 0)
    with cond:
        mp.Process(target=notify, args=(cond, flag)).start()
        out["condition"] = cond.wait_for(lambda: flag.value == 1, timeout=30)
    with mp.Manager() as manager:
        shared, log = manager.dict(), manager.list()
        procs = [mp.Process(target=fill, args=(shared, log, i)) for i in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        out["manager"] = [dict(sorted(shared.items())), sorted(log)]
    out["active_children"] = len(mp.active_children())
    return out
