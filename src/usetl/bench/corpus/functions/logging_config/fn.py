"""logging configured with dictConfig as services ship it: a WatchedFileHandler that
reopens its file after logrotate moves it, a TimedRotatingFileHandler rolled over, a
MemoryHandler buffering until an error, a SocketHandler sending pickled records to a
threaded TCP receiver (the logging cookbook's), and a DatagramHandler to a UDP receiver."""

import logging
import logging.config
import logging.handlers
import os
import pickle
import socket
import socketserver
import struct
import tempfile
import threading

RECEIVED = []
ARRIVED = threading.Condition()


class RecordReceiver(socketserver.StreamRequestHandler):
    def handle(self):
        while header := self.rfile.read(4):
            body = self.rfile.read(struct.unpack(">L", header)[0])
            with ARRIVED:
                RECEIVED.append(logging.makeLogRecord(pickle.loads(body)).getMessage())
                ARRIVED.notify_all()


def config(d, udp_port, tcp_port):
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "watched": {"class": "logging.handlers.WatchedFileHandler",
                        "filename": os.path.join(d, "app.log"), "formatter": "plain"},
            "timed": {"class": "logging.handlers.TimedRotatingFileHandler",
                      "filename": os.path.join(d, "timed.log"), "when": "midnight",
                      "backupCount": 2, "formatter": "plain"},
            "target": {"class": "logging.FileHandler", "filename": os.path.join(d, "errors.log"),
                       "formatter": "plain"},
            "memory": {"class": "logging.handlers.MemoryHandler", "capacity": 100,
                       "flushLevel": logging.ERROR, "target": "target"},
            "tcp": {"class": "logging.handlers.SocketHandler", "host": "127.0.0.1",
                    "port": tcp_port},
            "udp": {"class": "logging.handlers.DatagramHandler", "host": "127.0.0.1",
                    "port": udp_port}},
        "loggers": {"etl": {"level": "DEBUG",
                            "handlers": ["watched", "timed", "memory", "tcp", "udp"]}},
    }


def handler(event, context):
    tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), RecordReceiver)
    tcp.daemon_threads = True
    serving = threading.Thread(target=tcp.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    with tempfile.TemporaryDirectory() as d:
        logging.config.dictConfig(config(d, udp.getsockname()[1], tcp.server_address[1]))
        log = logging.getLogger("etl")
        for i in range(event["lines"]):
            log.info("record %d", i)
        os.rename(os.path.join(d, "app.log"), os.path.join(d, "app.log.1"))
        log.warning("after the move")
        timed = next(h for h in log.handlers if isinstance(
            h, logging.handlers.TimedRotatingFileHandler))
        timed.doRollover()
        log.error("flushes the buffer")
        datagram = udp.recv(65536)
        for h in log.handlers:
            h.flush()
        logging.shutdown()
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
        files = sorted(n if not n.startswith("timed.log.") else "timed.log.<date>"
                       for n in os.listdir(d))
        with open(os.path.join(d, "app.log")) as f:
            reopened = f.read().splitlines()
        with open(os.path.join(d, "errors.log")) as f:
            buffered = len(f.read().splitlines())
    with ARRIVED:
        ARRIVED.wait_for(lambda: len(RECEIVED) >= event["lines"] + 2, timeout=30)
    tcp.shutdown()
    tcp.server_close()
    serving.join(30)
    udp.close()
    first = logging.makeLogRecord(pickle.loads(datagram[4:])).getMessage()
    return {"files": files, "reopened": reopened, "buffered": buffered,
            "tcp_received": RECEIVED[-1] if RECEIVED else None, "tcp_count": len(RECEIVED),
            "udp_first": first}
