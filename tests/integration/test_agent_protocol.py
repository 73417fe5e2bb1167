"""The agent's protocol seen from the monitor: guest bytes that break it end the USF cleanly."""

import pytest

from usetl.usf import start_usf

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("garbage", [
    "(1 << 40).to_bytes(8, 'little')",  # a length over abi.MAX_MESSAGE
    "(2).to_bytes(8, 'little') + b'[]'",  # JSON, but not an object
    "(3).to_bytes(8, 'little') + b'{{{'",  # not JSON
])
def test_a_reply_that_breaks_the_framing_is_an_agent_error(image, garbage):
    with start_usf(image) as usf:
        r = usf.run_code(f"import os\nos.write(os.open('/dev/usetl', os.O_RDWR), {garbage})")
        assert r.error.type == "AgentError" and r.error.kind == "sandbox"
        assert "agent" in r.error.message
        assert not usf.alive
