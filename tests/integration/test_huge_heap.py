"""UsfConfig.huge_heap: a clone maps the RAM its template's memory file has no data in as
anonymous memory on transparent huge pages, so a large fresh allocation takes one first touch
per 2 MiB; rollback, function templates and snapshots keep their exact bytes."""

from pathlib import Path

import pytest

from usetl.hyperfork import Template
from usetl.usf import UsfConfig

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(
        "[never]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text(),
        reason="the host gives no transparent huge pages"),
]

# Writes a byte in each 4 KiB page of 64 MiB of fresh memory (16,384 pages, 32 huge pages).
TOUCH = "x = bytearray(64 << 20)\nx[::4096] = b'\\xff' * (16 << 10)\nprint(x.count(0xff))"
ZEROS = "x = bytearray(64 << 20)\nprint(x.count(0) == len(x))"
PAGES = 16 << 10


@pytest.fixture(scope="module")
def huge(image_path):
    t = Template.start(image_path, config=UsfConfig(huge_heap=True))
    yield t
    t.close()


@pytest.fixture(scope="module")
def plain(image_path):
    t = Template.start(image_path)
    yield t
    t.close()


def out(result):
    assert result.error is None, result.error
    return result.stdout


def first_touches(template: Template, code: str) -> int:
    with template.fork() as clone:
        result = clone.run_code(code)
        assert out(result) == f"{PAGES}\n"
        return result.first_touches


def test_a_large_fresh_allocation_takes_a_first_touch_per_huge_page(huge, plain):
    """The request's other pages take a few hundred first touches either way."""
    assert first_touches(plain, TOUCH) >= PAGES
    assert first_touches(huge, TOUCH) < 1024


def test_rollback_leaves_zeros_keeps_the_pages_and_the_template_file(huge):
    frozen = huge.memory_bytes()
    with huge.fork() as clone:
        assert out(clone.run_code(TOUCH)) == f"{PAGES}\n"
        clone.rollback()
        assert out(clone.run_code(ZEROS)) == "True\n"
        clone.rollback()
        again = clone.run_code(TOUCH)
        assert out(again) == f"{PAGES}\n" and again.first_touches == 0
    assert huge.memory_bytes() <= frozen + (1 << 20)  # its holes were not filled


def test_a_function_template_keeps_what_its_load_wrote_in_huge_pages(huge):
    code = "import builtins; builtins.KEPT = bytearray(b'\\x07') * (8 << 20)"
    load = {"kind": "exec", "code": code}
    fn = huge.load_function(load)
    try:
        with fn.fork() as clone:
            assert out(clone.run_code("print(KEPT.count(7))")) == f"{8 << 20}\n"
            assert clone.run_code(TOUCH).first_touches < 1024
    finally:
        fn.close()


def test_a_snapshot_of_a_huge_heap_template_loads_with_it(huge, tmp_path):
    huge.save(tmp_path / "snap")
    loaded = Template.load(tmp_path / "snap")
    try:
        assert loaded.memory_digests() == huge.memory_digests()
        assert first_touches(loaded, TOUCH) < 1024
    finally:
        loaded.close()
