"""aminspect's tracer: attach to a state machine and ship every mutation.

Importing this package imports only the standard library, msgpack and websockets.
"""

from tracer._version import __version__
from tracer.adapters.manual import ManualMachine
from tracer.attach import UnsupportedMachine, attach, attach_from_env, default_sink
from tracer.core import Stats, TraceHandle
from tracer.machine_time import MachineTime, TimeRecord, time_records
from tracer.records import (
    Kind,
    MachineRecord,
    Schema,
    StateSpec,
    TransitionRecord,
    TransitionSpec,
    transition_id,
)
from tracer.sinks import MemorySink, Sink
from tracer.ws_sink import WebSocketSink

__all__ = [
    "Kind",
    "MachineRecord",
    "MachineTime",
    "ManualMachine",
    "MemorySink",
    "Schema",
    "Sink",
    "StateSpec",
    "Stats",
    "TimeRecord",
    "TraceHandle",
    "TransitionRecord",
    "TransitionSpec",
    "UnsupportedMachine",
    "WebSocketSink",
    "__version__",
    "attach",
    "attach_from_env",
    "default_sink",
    "time_records",
    "transition_id",
]
