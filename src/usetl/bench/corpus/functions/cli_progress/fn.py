"""Console libraries inside a handler: tqdm progress bars on stderr, a rich table recorded,
and a click command run with its CliRunner."""

import io

import click
from click.testing import CliRunner
from rich.console import Console
from rich.table import Table
from tqdm import tqdm


@click.command()
@click.option("--count", default=1, type=int)
@click.argument("name")
def greet(count, name):
    for _ in range(count):
        click.echo(f"hello {name}")


def handler(event, context):
    total = 0
    for i in tqdm(range(event["steps"]), desc="steps", mininterval=0):
        total += i
    bar = io.StringIO()
    for _ in tqdm(range(10), file=bar, ncols=60):
        pass
    console = Console(record=True, width=60, force_terminal=False)
    table = Table(title="Results")
    table.add_column("name")
    table.add_column("value", justify="right")
    for name in ("a", "b"):
        table.add_row(name, str(ord(name)))
    console.print(table)
    text = console.export_text()
    result = CliRunner().invoke(greet, ["--count", "2", "corpus"])
    return {"total": total, "bar_done": "10/10" in bar.getvalue(),
            "table_lines": len(text.splitlines()), "click": result.output.splitlines(),
            "exit": result.exit_code}
