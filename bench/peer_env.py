"""Ray Data, the peer ``bench_reader`` compares against, in a virtualenv of its own.

``bench/.venv-ray`` is made on first use from ``bench/ray-requirements.txt`` with the uv that
``make setup`` installed (plain ``pip`` when there is none) and re-made when that file
changes. ``bench/ray_reader.py`` runs inside it; this module only drives it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-ray"
REQUIREMENTS = HERE / "ray-requirements.txt"


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or run here; the message says why."""


def ray_python() -> Path:
    """The Ray virtualenv's interpreter, installing or refreshing it when needed."""
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp, python = VENV / ".dlpipe-deps", VENV / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    home = Path(os.environ.get("DLPIPE_HOME", Path.home() / ".cache" / "dlpipe"))
    uv = next(iter(sorted(home.glob("uv-*/bin/uv"), reverse=True)), None)
    if uv is not None:
        steps = [[str(uv), "venv", "-q", "--allow-existing", "-p", sys.executable, str(VENV)],
                 [str(uv), "pip", "install", "-q", "-p", str(python), "-r", str(REQUIREMENTS)]]
    else:
        steps = [[sys.executable, "-m", "venv", str(VENV)],
                 [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise PeerUnavailable(f"installing Ray into {VENV} failed ({' '.join(argv[:3])} ...): "
                                  f"{done.stderr.strip()[-800:]}")
    stamp.write_text(want)
    return python


def ray_reader_rates(spec: dict[str, Any], keys: tuple[str, str], *, timeout: float = 1800) -> list[float]:
    """Images/s of each timed Ray Data pass over ``spec['paths']`` (see ``ray_reader``)."""
    python = ray_python()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1],
           "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([str(python), str(HERE / "ray_reader.py")], input=json.dumps(spec),
                          capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise PeerUnavailable(f"Ray Data's pass failed (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["rates"]
