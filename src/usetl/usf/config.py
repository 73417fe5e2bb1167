"""What a USF is made with: its configuration, and the error a USF raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from usetl.errors import UsetlError
from usetl.vm.layout import HUGE_PAGE, PD_COUNT
from usetl.vm.machine import RegionSpec


class UsfError(UsetlError):
    """The USF could not start, or is no longer usable."""


@dataclass
class UsfConfig:
    mem_mib: int = 256
    tmpfs_mib: int = 64
    output_limit: int = 16 << 20
    start_timeout: float = 60.0
    trace: bool = False
    vdso: bool = True  # clock_gettime in the guest without an exit (needs an invariant TSC)
    host_region_mib: int = 256  # downloads and the event (a memfd: unused space costs nothing)
    guest_region_mib: int = 64  # files the function writes
    # The function's packed code and module-store entries, imported from memory (a memfd:
    # only what the archives hold costs memory).
    modules_region_mib: int = 512
    allow: Sequence[str] = ()  # URL prefixes the function may GET and POST
    allow_private: bool = False  # let allowed names resolve to private/loopback addresses
    etl_timeout: float = 30.0  # seconds each network wait of an ETL request may take
    ca_certs: str = ""  # PEM certificates the guest's TLS trusts besides the image's CA bundle
    # Let the host's KSM merge identical pages of the template's process and its clones'
    # (their monitors' heaps, the guest RAM they copied): idle clones then share what their
    # requests wrote back to the same bytes. The operator's choice (README: "Idle clones").
    merge_pages: bool = False
    # Map the RAM a template's memory file has no data in (its free memory, whole 2 MiB
    # spans) in each clone as anonymous memory on transparent huge pages: a clone's large
    # fresh allocation then takes one first touch per 2 MiB, not per 4 KiB (64 MiB written:
    # 336 first touches, not 16,544), but a store anywhere in such a span costs 2 MiB of
    # host memory where it cost 4 KiB. The operator's choice (README: "Huge pages").
    huge_heap: bool = False

    def regions(self) -> list[RegionSpec]:
        """The ETL and module regions, right above guest RAM: the guest region first, so that
        it and RAM make one memslot, and the two read-only regions another (vm.memslots)."""
        host, guest = self.host_region_mib << 20, self.guest_region_mib << 20
        modules = self.modules_region_mib << 20
        for size, name in ((host, "host"), (guest, "guest"), (modules, "modules")):
            if size <= 0 or size % HUGE_PAGE:
                raise UsfError(f"the {name} region must be a positive even number of MiB")
        ram = self.mem_mib << 20
        if ram + guest + host + modules > (PD_COUNT << 30) - HUGE_PAGE:
            raise UsfError("guest memory and the ETL and module regions are too large "
                           f"together (at most {((PD_COUNT << 30) - HUGE_PAGE) >> 20} MiB)")
        return [
            RegionSpec("guest", ram, guest, guest_writable=True),
            RegionSpec("host", ram + guest, host, guest_writable=False),
            RegionSpec("modules", ram + guest + host, modules, guest_writable=False),
        ]
