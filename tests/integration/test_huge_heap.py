"""UsfConfig.huge_heap: a clone maps the RAM its template's memory file has no data in as
anonymous memory on transparent huge pages, so a large fresh allocation takes one first touch
per 2 MiB; rollback, function templates and snapshots keep their exact bytes."""

from pathlib import Path

import pytest
from test_hyperfork import out

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
# Keeps x allocated after the request.
KEEP = "\nimport builtins\nbuiltins.kept = x"
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


def first_touches(template: Template, code: str) -> int:
    with template.fork() as clone:
        result = clone.run_code(code)
        assert out(result) == f"{PAGES}\n"
        return result.first_touches


def test_a_large_fresh_allocation_takes_a_first_touch_per_huge_page(huge, plain):
    """The request's other pages take a few hundred first touches either way."""
    assert first_touches(plain, TOUCH) >= PAGES
    assert first_touches(huge, TOUCH) < 1024


def test_rollback_zeroes_what_a_request_left_in_place_and_fills_no_hole(huge):
    """Memory still allocated when the request ends is zeroed by the rollback, its huge pages
    kept: the next request's allocation there takes none of its 32 first touches again."""
    frozen = huge.memory_bytes()
    with huge.fork() as clone:
        assert out(clone.run_code(TOUCH + KEEP)) == f"{PAGES}\n"
        clone.rollback()
        zeros = clone.run_code(ZEROS + KEEP)
        assert out(zeros) == "True\n" and zeros.first_touches < 32
        clone.rollback()
    assert huge.memory_bytes() <= frozen + (1 << 20)  # its holes were not filled


def test_memory_a_request_frees_gives_its_huge_pages_back(huge):
    with huge.fork() as clone:
        before = clone.memory_bytes()
        assert out(clone.run_code(TOUCH)) == f"{PAGES}\n"  # x is freed as the request ends
        clone.rollback()
        assert clone.memory_bytes() < before + (8 << 20)
        assert out(clone.run_code(ZEROS)) == "True\n"


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
