"""One USF: a VM running the image's CPython on the libos, with its agent.

    usf = start_usf(image, UsfConfig(mem_mib=256))   # builder.py: CPython waits for work
    result = usf.run_code("print('hi')")             # running.py: one request to the agent
"""

from .builder import boot_usf, shared_clock, start_usf
from .config import UsfConfig, UsfError
from .running import AgentReply, ProgramResult, Startup, Usf

__all__ = ["AgentReply", "ProgramResult", "Startup", "Usf", "UsfConfig", "UsfError",
           "boot_usf", "shared_clock", "start_usf"]
