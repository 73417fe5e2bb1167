"""The corpus's fast subset (bench/corpus: real serverless functions, `make corpus` for all):
each deployed with its requirements and run in a USF and in a host process, which must
return the same value."""

import pytest

from usetl.bench.corpus import CORPUS
from usetl.bench.corpus.run import run_one, services
from usetl.image.modstore import ModuleStore

pytestmark = pytest.mark.kvm

QUICK = [f for f in CORPUS if f.quick]


@pytest.fixture(scope="module")
def urls():
    with services(set().union(*(f.needs() for f in QUICK))) as running:
        yield running


@pytest.mark.parametrize("fn", QUICK, ids=lambda f: f.name)
def test_a_corpus_function_returns_in_a_usf_what_it_returns_on_the_host(image, urls, fn):
    outcome = run_one(image, fn, ModuleStore(), urls)
    assert outcome.passed, outcome.detail
