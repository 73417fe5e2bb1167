"""watchdog observing a directory as ingestion handlers watch a drop folder: an Observer
thread over inotify reporting files created, modified, moved and deleted, in a directory
and a subdirectory, directories' own events left out."""

import os
import tempfile
import threading

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer


class Collector(FileSystemEventHandler):
    def __init__(self, root):
        super().__init__()
        self.root, self.events, self.cond = root, [], threading.Condition()

    def on_any_event(self, event):
        if event.is_directory or event.event_type in ("opened", "closed", "closed_no_write"):
            return
        dest = getattr(event, "dest_path", "") or ""
        with self.cond:
            self.events.append((event.event_type, os.path.relpath(event.src_path, self.root),
                                os.path.relpath(dest, self.root) if dest else ""))
            self.cond.notify_all()

    def wait_for(self, event_type, path):
        with self.cond:
            return self.cond.wait_for(lambda: any(e[0] == event_type and path in e[1:]
                                                  for e in self.events), timeout=30)


def handler(event, context):
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "sub"))
        collector = Collector(d)
        observer = Observer()
        observer.schedule(collector, d, recursive=True)
        observer.start()
        try:
            steps = []
            with open(os.path.join(d, "orders.csv"), "w") as f:
                f.write("id\n")
            steps.append(collector.wait_for("created", "orders.csv"))
            with open(os.path.join(d, "orders.csv"), "a") as f:
                f.write("1\n")
            steps.append(collector.wait_for("modified", "orders.csv"))
            with open(os.path.join(d, "notes.txt"), "w") as f:
                f.write("ignored")
            os.rename(os.path.join(d, "orders.csv"), os.path.join(d, "sub", "orders.csv"))
            steps.append(collector.wait_for("moved", "sub/orders.csv"))
            os.remove(os.path.join(d, "sub", "orders.csv"))
            steps.append(collector.wait_for("deleted", "sub/orders.csv"))
        finally:
            observer.stop()
            observer.join(30)
        kinds = sorted({e[0] for e in collector.events})
        txt = any("notes.txt" in e[1] for e in collector.events)
    return {"steps": steps, "kinds": kinds, "txt_seen": txt,
            "observer": type(observer).__name__}
