"""SeBS 311.compression: a directory of files packed with shutil.make_archive."""

import os
import random
import shutil
import zipfile


def handler(event, context):
    rng = random.Random(event["seed"])
    root = "/tmp/compression-src"
    shutil.rmtree(root, ignore_errors=True)
    for d in range(event["dirs"]):
        os.makedirs(os.path.join(root, f"d{d}"))
        for i in range(event["files"]):
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(2000))
            with open(os.path.join(root, f"d{d}", f"f{i}.txt"), "w") as f:
                f.write(words)
    archive = shutil.make_archive("/tmp/compression-out", "zip", root_dir=root)
    size = os.path.getsize(archive)
    with zipfile.ZipFile(archive) as z:
        members = sorted((i.filename, i.file_size, i.CRC) for i in z.infolist())
        bad = z.testzip()
    shutil.rmtree(root)
    os.remove(archive)
    return {"members": members, "smaller": size < sum(m[1] for m in members), "bad": bad}
