"""ensure_ray keeps the job's SIGTERM handler: `ray job stop` must end the runs KILLED, not FAILED."""

import subprocess
import sys

from tests.conftest import REPO

# What a submitted job's driver does (pipelines.submit.job_main): SIGTERM as a KeyboardInterrupt,
# then ray.init (through ensure_ray), then SIGTERM arrives, as `ray job stop` sends it.
DRIVER = """
import os, signal, sys, time
from stages.ray_session import ensure_ray
signal.signal(signal.SIGTERM, signal.default_int_handler)
ensure_ray(sys.argv[1])
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


def test_sigterm_after_ray_init_reaches_the_driver_as_a_keyboard_interrupt(ray_cluster):
    address = ray_cluster.get_runtime_context().gcs_address
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, address], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "KeyboardInterrupt" in done.stdout, (done.returncode, done.stderr[-2000:])
