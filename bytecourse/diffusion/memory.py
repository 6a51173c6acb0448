"""Peak bytes held for a backward pass: stored solver states plus the saved tensors of live autograd graphs.

Graph memory is counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor autograd saves for
backward is wrapped in a small holder; a finaliser subtracts its bytes when the graph releases it. Storage
shared by several saved tensors is counted once. The count is exact and hardware-independent (it runs on the
CPU), which makes "flat in n" vs "linear in n" a measurable claim.

Tensors passed as ``exclude`` (the network's parameters) are not counted: autograd saves references to the
weights, but they are in memory whether or not a backward pass happens, so they are not *held for* it.
"""

from __future__ import annotations

import weakref

import torch


class _Held:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Context manager: ``meter.alive_bytes``, ``meter.peak_bytes`` of saved-for-backward storage, plus any
    ``meter.hold(bytes)`` the caller declares (e.g. the adjoint's stored states)."""

    def __init__(self, exclude=()):
        self._excluded = {p.untyped_storage().data_ptr() for p in exclude}
        self.alive_bytes = 0
        self.peak_bytes = 0
        self.declared = 0
        self._refs: dict[int, list[int]] = {}  # storage ptr → [bytes, refcount]

    def hold(self, nbytes: int) -> None:
        self.declared += nbytes
        self._update()

    def release(self, nbytes: int) -> None:
        self.declared -= nbytes

    def _update(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.alive_bytes + self.declared)

    def _pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._excluded:
            return _Held(t)
        if key in self._refs:
            self._refs[key][1] += 1
        else:
            self._refs[key] = [storage.nbytes(), 1]
            self.alive_bytes += storage.nbytes()
            self._update()
        held = _Held(t)
        weakref.finalize(held, self._drop, key)
        return held

    def _drop(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.alive_bytes -= entry[0]
            del self._refs[key]

    @staticmethod
    def _unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    def __enter__(self) -> SavedTensorMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
