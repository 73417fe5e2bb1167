"""ZeroMQ (pyzmq): a PUSH/PULL pipeline over inproc and tcp://127.0.0.1 with worker threads,
REQ/REP, and a poller whose timeout expires."""

import threading

import zmq


def handler(event, context):
    ctx = zmq.Context()
    n = event["messages"]
    results = ctx.socket(zmq.PULL)
    results.bind("inproc://results")
    work = ctx.socket(zmq.PUSH)
    port = work.bind_to_random_port("tcp://127.0.0.1")

    def worker():
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        pull.connect(f"tcp://127.0.0.1:{port}")
        push.connect("inproc://results")
        while (msg := pull.recv()) != b"stop":
            push.send(msg.upper())
        pull.close()
        push.close()

    workers = [threading.Thread(target=worker) for _ in range(3)]
    for t in workers:
        t.start()
    for i in range(n):
        work.send(b"job %d" % i)
    got = sorted(results.recv() for _ in range(n))
    for _ in workers:
        work.send(b"stop")
    for t in workers:
        t.join(30)
    rep = ctx.socket(zmq.REP)
    rport = rep.bind_to_random_port("tcp://127.0.0.1")
    req = ctx.socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{rport}")
    req.send_json({"ask": 1})
    asked = rep.recv_json()
    rep.send_json({"answer": asked["ask"] + 1})
    answer = req.recv_json()
    poller = zmq.Poller()
    poller.register(results, zmq.POLLIN)
    idle = poller.poll(50)
    for s in (results, work, rep, req):
        s.close(linger=0)
    ctx.term()
    return {"count": len(got), "first": got[0].decode(), "answer": answer, "idle": idle}
