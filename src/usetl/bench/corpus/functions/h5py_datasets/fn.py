"""HDF5 as scientific ETL stores arrays: a file in /tmp with groups, chunked and
compressed datasets, attributes, a resizable dataset appended to, partial reads by
hyperslab, an SWMR-style reopen for reading, and an in-memory file image."""

import io
import os
import tempfile

import h5py
import numpy as np


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    data = rng.normal(size=(event["rows"], 16)).astype("float32")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "run.h5")
        with h5py.File(path, "w", libver="latest") as f:
            g = f.create_group("sensors/run1")
            g.attrs["unit"] = "volts"
            g.attrs["channels"] = 16
            g.create_dataset("samples", data=data, chunks=(256, 16), compression="gzip",
                             compression_opts=4, shuffle=True)
            log = f.create_dataset("log", shape=(0,), maxshape=(None,), dtype="int64",
                                   chunks=(128,))
            for batch in range(5):
                log.resize(log.shape[0] + 100, axis=0)
                log[-100:] = np.arange(batch * 100, batch * 100 + 100)
            f.create_dataset("names", data=np.array([b"alpha", b"beta"], dtype="S8"))
        with h5py.File(path, "r") as f:
            samples = f["sensors/run1/samples"]
            out["shape"] = list(samples.shape)
            out["chunks"] = list(samples.chunks)
            out["compression"] = samples.compression
            out["slab_equal"] = bool(np.array_equal(samples[100:110, 2:5], data[100:110, 2:5]))
            out["mean"] = round(float(samples[...].mean()), 5)
            out["attrs"] = {k: (v.item() if hasattr(v, "item") else v)
                            for k, v in f["sensors/run1"].attrs.items()}
            out["log"] = [int(f["log"].shape[0]), int(f["log"][-1])]
            out["names"] = [n.decode() for n in f["names"][...]]
            out["tree"] = []
            f.visit(out["tree"].append)
        out["smaller"] = os.path.getsize(path) < data.nbytes
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["x"] = np.arange(10)
    with h5py.File(io.BytesIO(buffer.getvalue()), "r") as f:
        out["in_memory"] = int(f["x"][...].sum())
    return out
