"""A CPU stand-in for ``pycuda.driver``, shared by the CUDA-kernel and the TensorRT tests.

Device memory is numpy byte blocks at made-up addresses (:class:`DeviceMemory`); every driver
call checks that a CUDA context is current on the calling thread - the rule real pycuda enforces,
often with an error far from the cause - and the driver counts retained and detached primary
contexts so a test can check that every context was released. Stream work (async copies, memsets
and the kernels a test launches through :func:`enqueue`) waits, as on a GPU, until the stream or
an event is synchronised or memory is freed: a missing synchronize reads stale results here too.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np


class DeviceMemory:
    """Made-up device memory: allocations at fake addresses, views by address."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}
        self.next_address = 1 << 20

    def allocate(self, nbytes: int) -> int:
        """Fresh memory holds garbage, as cudaMalloc's does: 0xFF bytes (NaN as floats), so code
        that reads memory it never wrote fails here too."""
        address = self.next_address
        self.blocks[address] = np.full(max(int(nbytes), 1), 0xFF, np.uint8)
        self.next_address += nbytes + 4096
        return address

    def free(self, address: int) -> None:
        del self.blocks[address]

    def view(self, address: int, dtype: Any, count: int) -> np.ndarray:
        nbytes = int(count) * np.dtype(dtype).itemsize
        for start, block in self.blocks.items():
            if start <= address < start + block.size:
                assert address - start + nbytes <= block.size, "access runs past the end of its allocation"
                return block[address - start : address - start + nbytes].view(dtype)
        raise AssertionError(f"address {address:#x} is in no allocation")


def fake_driver(memory: DeviceMemory) -> SimpleNamespace:
    """``pycuda.driver`` over ``memory``: contexts, one fake Orin (sm_87, 3 SMs), allocations,
    pinned host arrays, streams, events and async copies. Callers add what their code also needs
    (modules, kernels)."""
    local = threading.local()
    driver = SimpleNamespace(memory=memory, retained=0, detached=0)
    pending: list[Any] = []  # the stream's queued work, in order

    def enqueue(work: Any) -> None:
        pending.append(work)

    def finish_stream() -> None:
        while pending:
            pending.pop(0)()

    def need_context() -> None:
        assert getattr(local, "stack", []), "CUDA call without a current context on this thread"

    class Error(Exception):
        pass

    class Context:
        def push(self) -> None:
            local.__dict__.setdefault("stack", []).append(self)

        @staticmethod
        def pop() -> None:
            local.stack.pop()

        def detach(self) -> None:
            driver.detached += 1

    class Device:
        @staticmethod
        def count() -> int:
            return 1

        def __init__(self, index: int) -> None:
            self.index = index

        def name(self) -> str:
            return "Fake Orin"

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def retain_primary_context(self) -> Context:
            driver.retained += 1
            return Context()

        def get_attribute(self, attribute: str) -> int:
            assert attribute == "MULTIPROCESSOR_COUNT"
            return 3

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            need_context()
            self.address = memory.allocate(nbytes)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            need_context()
            finish_stream()  # cuMemFree waits for the work that may still use the memory
            memory.free(self.address)

    class Pinned(np.ndarray):  # what pycuda puts behind a pagelocked array's .base
        def free(self) -> None:
            need_context()

    class Stream:
        handle = 0xC0FFEE

        def __init__(self, flags: int = 0) -> None:
            need_context()
            driver.stream_flags = flags

        def synchronize(self) -> None:
            need_context()
            finish_stream()

    class Event:
        def __init__(self) -> None:
            need_context()

        def record(self, stream: Stream) -> None:
            need_context()

        def synchronize(self) -> None:
            need_context()
            finish_stream()  # one stream: the recorded event completes with everything queued

        def time_till(self, other: Event) -> float:
            need_context()
            return 0.25

    def pagelocked_empty(n: int, dtype: Any) -> np.ndarray:
        need_context()
        return Pinned(shape=(n,), dtype=dtype).view(np.ndarray)

    # the host array is read (or written) when the copy runs, not when it is queued: as from
    # pinned memory on a GPU
    def memcpy_htod_async(dest: DeviceAllocation, src: np.ndarray, stream: Stream) -> None:
        need_context()
        address, source = int(dest), src.view(np.uint8)
        enqueue(lambda: memory.view(address, np.uint8, source.nbytes).__setitem__(slice(None), source))

    def memcpy_dtoh_async(dest: np.ndarray, src: DeviceAllocation, stream: Stream) -> None:
        need_context()
        target, address = dest.view(np.uint8), int(src)
        enqueue(lambda: target.__setitem__(slice(None), memory.view(address, np.uint8, target.nbytes)))

    def memset_d8_async(dest: int, value: int, count: int, stream: Stream) -> None:
        need_context()
        address = int(dest)
        enqueue(lambda: memory.view(address, np.uint8, count).__setitem__(slice(None), value))

    driver.__dict__.update(
        need_context=need_context,
        enqueue=enqueue,
        init=lambda: None,
        Error=Error,
        Context=Context,
        Device=Device,
        Stream=Stream,
        Event=Event,
        device_attribute=SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT"),
        mem_alloc=DeviceAllocation,
        pagelocked_empty=pagelocked_empty,
        memcpy_htod_async=memcpy_htod_async,
        memcpy_dtoh_async=memcpy_dtoh_async,
        memset_d8_async=memset_d8_async,
    )
    return driver
