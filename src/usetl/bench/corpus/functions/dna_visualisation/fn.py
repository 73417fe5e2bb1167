"""SeBS 504.dna-visualisation: a DNA sequence as a 2-D walk (Gates' method), with numpy."""

import hashlib
import random

import numpy as np

STEPS = {"A": (0, -1), "C": (-1, 0), "G": (1, 0), "T": (0, 1)}


def transform(sequence):
    steps = np.array([STEPS[base] for base in sequence], dtype=np.int64)
    walk = np.cumsum(np.vstack([[0, 0], steps]), axis=0)
    return walk[:, 0], walk[:, 1]


def handler(event, context):
    rng = random.Random(event["seed"])
    sequence = "".join(rng.choice("ACGT") for _ in range(event["length"]))
    with open("/tmp/dna.fasta", "w") as f:
        f.write(">generated\n" + "\n".join(sequence[i:i + 60]
                                           for i in range(0, len(sequence), 60)))
    with open("/tmp/dna.fasta") as f:
        read = "".join(line.strip() for line in f if not line.startswith(">"))
    x, y = transform(read)
    return {"points": int(x.size), "end": [int(x[-1]), int(y[-1])],
            "bounds": [int(x.min()), int(x.max()), int(y.min()), int(y.max())],
            "sha256": hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()}
