"""IPython startup file for every kernel the tests start (nbmake's, and the browser tests' JupyterLab): the same
network guard as ``tests/conftest.py``'s fixture, so a notebook that tries to reach the network fails too.

``tests/conftest.py`` copies this file into a temporary ``IPYTHONDIR`` and points the environment at it, and
kernels inherit the environment. Only loopback and Unix sockets are allowed (the kernel's own channels)."""

import socket as _socket

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_real_connect = _socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family == _socket.AF_UNIX or (isinstance(host, str) and host in _LOOPBACK):
        return _real_connect(self, address)
    raise PermissionError(f"network access attempted from a notebook kernel: {address} (ByteCourse runs offline)")


_guarded_connect.bytecourse_guard = True
_socket.socket.connect = _guarded_connect
