#!/usr/bin/env python3
"""A PLC for the line tests: a real pymodbus (3.16) Modbus TCP server on loopback.

It holds the station's register map (see docs/LINE.md), records every write it receives — at
arrival, inside the server — as one JSON line per write in --log, and plays the PLC's side of the
handshake on request:

  --trigger-hz F   add 1 to the trigger counter F times a second, with acquisition ids 1, 2, 3 ...
                   (--trigger-when-ready: only while the station's ready bit is set, as a PLC
                   would; --trigger-count N: stop after N triggers)
  --auto-ack       when the station presents a result (status bit1), write its result id into the
                   results-ack register, after --ack-delay-ms
  --recipes N@S,...  a job change: once the station is ready, write recipe number N into the
                   recipe-request register (input block +3) S seconds later, for each pair in turn
  --exceptions     answer every write with a Modbus exception (SERVER DEVICE FAILURE)
  --garbage        answer every write with bytes that are not a Modbus response

Log records (times are time.monotonic_ns(): CLOCK_MONOTONIC, the clock of Rust's Instant):
  {"t_ns", "kind": "write", "fc", "address", "values"}   every write request, as it arrives
  {"t_ns", "kind": "trigger", "counter", "acquisition_id"} every trigger the PLC made
  {"t_ns", "kind": "ack", "result_id"}                    every ack the PLC wrote (--auto-ack)
  {"t_ns", "kind": "recipe", "number"}                    every recipe request it wrote (--recipes)
  {"t_ns", "kind": "connect" | "disconnect"}              station connections

With --port 0 a free port is chosen; the bound port is printed as `PORT <n>` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# Function codes that write.
WRITES = {5, 6, 15, 16}


class Plc:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
        self.holding: list[int] | None = None  # the server's own holding-register list, once known
        self.server: ModbusTcpServer | None = None
        self.acked: int | None = None
        self.counter = 0
        self.acquisition = 0
        self.station_ready = False

    def record(self, t_ns: int | None = None, **fields) -> None:
        if self.log is None:
            return
        fields = {"t_ns": time.monotonic_ns() if t_ns is None else t_ns, **fields}
        self.log.write(json.dumps(fields) + "\n")
        self.log.flush()

    async def action(self, fc, start_address, address, count, registers, values):
        """Called by the server for every access, before it touches the registers."""
        if values is None or fc not in WRITES:
            return None
        now = time.monotonic_ns()
        vals = [bool(v) if fc in (5, 15) else int(v) for v in values]
        self.record(now, kind="write", fc=fc, address=address, values=vals)
        if self.args.exceptions:
            return ExcCodes.DEVICE_FAILURE
        if fc in (6, 16):
            self.on_status_write(address, [int(v) for v in values])
        return None

    def on_status_write(self, address: int, values: list[int]) -> None:
        base = self.args.status_register
        if address > base or address + len(values) < base + 4:
            return
        status = values[base - address]
        result_id = values[base - address + 3]
        self.station_ready = bool(status & 0b1)
        if not self.args.auto_ack:
            return
        if status & 0b10 and result_id != 0 and result_id != self.acked:
            self.acked = result_id
            asyncio.get_running_loop().call_later(self.args.ack_delay_ms / 1000.0, self.ack, result_id)

    def ack(self, result_id: int) -> None:
        self.set_input(2, result_id)
        self.record(kind="ack", result_id=result_id)

    def set_input(self, offset: int, value: int) -> None:
        regs = self.holding_registers()
        regs[self.args.input_register + offset] = value & 0xFFFF

    def holding_registers(self) -> list[int]:
        if self.holding is None:
            assert self.server is not None
            runtime = self.server.context.devices[0]
            start, _count, registers, _flags = runtime.block["h"]
            assert start == 0, "holding registers are expected to start at 0"
            self.holding = registers
        return self.holding

    async def triggers(self) -> None:
        period = 1.0 / self.args.trigger_hz
        next_at = time.monotonic() + period
        made = 0
        while self.args.trigger_count <= 0 or made < self.args.trigger_count:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            if self.args.trigger_when_ready and not self.station_ready:
                continue
            made += 1
            self.counter = (self.counter + 1) & 0xFFFF
            self.acquisition = self.acquisition % 0xFFFF + 1
            # Both registers change together: the station reads them in one request.
            self.set_input(1, self.acquisition)
            self.set_input(0, self.counter)
            self.record(kind="trigger", counter=self.counter, acquisition_id=self.acquisition)

    async def recipes(self) -> None:
        while not self.station_ready:
            await asyncio.sleep(0.01)
        ready_at = time.monotonic()
        for pair in self.args.recipes.split(","):
            number, _, after = pair.partition("@")
            await asyncio.sleep(max(0.0, ready_at + float(after) - time.monotonic()))
            self.set_input(3, int(number))
            self.record(kind="recipe", number=int(number))

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        # MBAP header: tid(2) pid(2) len(2) unit(1), then the function code.
        if sending and self.args.garbage and len(data) >= 8 and (data[7] & 0x7F) in WRITES:
            # Right transaction id and length field, then a function code that does not exist and
            # a body that means nothing.
            return data[:4] + bytes([0, 5, data[6], 0x5A, 0xDE, 0xAD, 0xBE])
        return data

    def trace_connect(self, connected: bool) -> None:
        self.record(kind="connect" if connected else "disconnect")


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", help="append one JSON line per write (and trigger, ack, connect) here")
    p.add_argument("--trigger-hz", type=float, default=0.0)
    p.add_argument("--trigger-when-ready", action="store_true")
    p.add_argument("--trigger-count", type=int, default=0)
    p.add_argument("--auto-ack", action="store_true")
    p.add_argument("--ack-delay-ms", type=float, default=0.0)
    p.add_argument("--recipes", default="", help="N@S,...: write recipe N to the request register S s after ready")
    p.add_argument("--exceptions", action="store_true")
    p.add_argument("--garbage", action="store_true")
    p.add_argument("--status-register", type=int, default=0)
    p.add_argument("--input-register", type=int, default=100)
    p.add_argument("--registers", type=int, default=1024, help="holding registers 0..N-1")
    p.add_argument("--coils", type=int, default=64, help="coils 0..N-1")
    args = p.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    plc = Plc(args)
    device = SimDevice(
        id=0,
        simdata=(
            [SimData(0, count=args.coils, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=args.registers, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
        ),
        action=plc.action,
    )
    server = ModbusTcpServer(
        device,
        address=(args.host, args.port),
        trace_packet=plc.trace_packet,
        trace_connect=plc.trace_connect,
    )
    plc.server = server
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = []
    if args.trigger_hz > 0:
        tasks.append(asyncio.create_task(plc.triggers()))
    if args.recipes:
        tasks.append(asyncio.create_task(plc.recipes()))
    await stop.wait()
    for t in tasks:
        t.cancel()
    await server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
