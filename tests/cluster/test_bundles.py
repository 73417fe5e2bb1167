"""Content-addressed objects in a real JetStream object store: nothing fetched is used
unless its bytes hash to the digest the manifest names."""

import os

import pytest

from usetl.cluster import bundles
from usetl.cluster.bus import Bus
from usetl.cluster.config import ClusterConfig
from usetl.cluster.servers import TemporaryNats


@pytest.fixture(scope="module")
def bus():
    with TemporaryNats() as nats:
        bus = Bus(ClusterConfig(nats.url("worker"), ""), "test-bundles")
        yield bus
        bus.close()


def _code(tmp_path):
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "main.py").write_text("def handler(e, c):\n    return 1\n")
    (code / "pkg" / "util.py").write_text("X = 2\n")
    return code


def test_a_bundle_round_trips_under_its_digest(bus, tmp_path):
    code = _code(tmp_path)
    assert bundles.pack(code) == bundles.pack(code)  # same files, same bytes, same name
    manifest = bus.run(bundles.upload_version(bus, "1/f/1-abcdef12", code, []))
    assert bus.run(bundles.manifest(bus, "1/f/1-abcdef12")) == manifest
    target = bus.run(bundles.materialise(bus, manifest.code, tmp_path / "fetched"))
    assert (target / "pkg" / "util.py").read_text() == "X = 2\n"
    assert sorted(p.name for p in target.iterdir()) == ["main.py", "pkg"]


def test_a_corrupted_object_is_refused_and_nothing_is_unpacked(bus, tmp_path):
    code = _code(tmp_path)
    digest = bus.run(bundles.upload(bus, bundles.pack(code)))
    tampered = bundles.pack(code).replace(b"X = 2", b"X = 3")
    bus.run(bus.objects.put(digest.replace(":", "_"), tampered))  # same name, other bytes
    with pytest.raises(bundles.BundleError, match="failed its digest check"):
        bus.run(bundles.materialise(bus, digest, tmp_path / "fetched"))
    assert not (tmp_path / "fetched").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".fetch-")] == []


def test_an_object_of_more_chunks_than_one_pull_comes_back_whole_and_in_order(bus):
    data = os.urandom((bundles.FETCH_BATCH * 2 + 1) * bundles.CHUNK_BYTES + 12345)
    digest = bus.run(bundles.upload(bus, data))
    assert bus.run(bus.objects.get_info(digest.replace(":", "_"))).chunks == (
        bundles.FETCH_BATCH * 2 + 2)
    assert bus.run(bundles.fetch(bus, digest)) == data


def test_a_missing_manifest_or_object_is_a_clear_error(bus, tmp_path):
    with pytest.raises(bundles.BundleError, match="no manifest for 9/none/1-00000000"):
        bus.run(bundles.manifest(bus, "9/none/1-00000000"))
    with pytest.raises(bundles.BundleError, match="cannot fetch sha256:"):
        bus.run(bundles.fetch(bus, bundles.digest_of(b"never stored")))


def test_a_sparse_file_travels_as_its_data_and_unpacks_sparse(bus, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    with open(snapshot / "ram.mem", "wb") as f:  # 64 MiB with 8 KiB of data in two places
        f.truncate(64 << 20)
        f.seek(4096)
        f.write(b"a" * 4096)
        f.seek(40 << 20)
        f.write(b"b" * 4096)
    packed = bundles.pack(snapshot)
    assert len(packed) < 1 << 20
    digest = bus.run(bundles.upload(bus, packed))
    target = bus.run(bundles.materialise(bus, digest, tmp_path / "fetched"))
    restored = target / "ram.mem"
    assert restored.stat().st_size == 64 << 20
    assert restored.stat().st_blocks * 512 < 1 << 20  # still sparse
    with open(restored, "rb") as f:
        f.seek(40 << 20)
        assert f.read(4096) == b"b" * 4096
        f.seek(4096 - 1)
        assert f.read(2) == b"\0a"
