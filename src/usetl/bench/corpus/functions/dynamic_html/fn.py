"""SeBS 110.dynamic-html: a page rendered by Jinja2 from a template beside the code."""

import hashlib
import os
import random
from datetime import datetime

from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = os.path.dirname(os.path.realpath(__file__))
env = Environment(loader=FileSystemLoader(os.path.join(HERE, "templates")),
                  autoescape=select_autoescape())


def handler(event, context):
    rng = random.Random(event["seed"])
    numbers = [rng.randint(0, 1_000_000) for _ in range(event["random_len"])]
    html = env.get_template("template.html").render(
        username=event["username"], cur_time=datetime(2024, 5, 1, 12, 0).isoformat(),
        random_numbers=numbers)
    return {"sha256": hashlib.sha256(html.encode()).hexdigest(), "bytes": len(html),
            "escaped": "&lt;" in html}
