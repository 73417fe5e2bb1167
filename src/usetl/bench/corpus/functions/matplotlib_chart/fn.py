"""Charts as report functions draw them: matplotlib's Agg backend, a line plot and a bar
chart with text, saved as PNG to /tmp (the font cache is built under $HOME on first use)."""

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def handler(event, context):
    x = np.linspace(0, 4 * np.pi, event["points"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), dpi=80)
    top.plot(x, np.sin(x), label="sin")
    top.plot(x, np.cos(x), label="cos")
    top.legend()
    top.set_title("Daily load")
    bottom.bar(["mon", "tue", "wed"], [3, 7, 5])
    bottom.set_ylabel("jobs")
    fig.tight_layout()
    fig.savefig("/tmp/chart.png")
    plt.close(fig)
    with open("/tmp/chart.png", "rb") as f:
        head = f.read(8)
    return {"png": head == b"\x89PNG\r\n\x1a\n", "bytes": os.path.getsize("/tmp/chart.png") > 5000,
            "backend": matplotlib.get_backend()}
