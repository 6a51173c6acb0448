import os
import socket

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def pytest_configure(config):
    """Kernels started by the tests (nbmake, the browser tests' JupyterLab) run ``kernel_startup/`` first:
    a fresh ``IPYTHONDIR`` whose default profile holds the network guard, inherited through the environment."""
    import shutil
    import tempfile
    from pathlib import Path

    ipython_dir = Path(tempfile.mkdtemp(prefix="bytecourse-ipython-"))
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    for f in (Path(__file__).parent / "kernel_startup").glob("*.py"):
        shutil.copy(f, startup / f.name)
    os.environ["IPYTHONDIR"] = str(ipython_dir)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing in the course may touch the network at run time: any connection attempt beyond loopback (the
    browser tests' own JupyterLab server) fails the test."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host in LOOPBACK or self.family == socket.AF_UNIX:
            return real_connect(self, address)
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
