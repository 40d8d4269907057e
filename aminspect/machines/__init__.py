"""Persistent machines (FSM, HSM tree, event-sourced) that are traced like any other."""

# HSM trees (Temporal-style typed machine trees): the core names live in aminspect.machines.hsm
from aminspect.machines import hsm as hsm
from aminspect.machines.hsm_store import MemoryTreeStore as MemoryTreeStore
from aminspect.machines.hsm_store import SQLiteTreeStore as SQLiteTreeStore
from aminspect.machines.hsm_store import load_tree as load_tree
from aminspect.machines.hsm_store import save_tree as save_tree
from aminspect.machines.hsm_trace import trace_tree as trace_tree
from aminspect.machines.hsm_tree import Tree as Tree

# isort: split
# Event-sourced state (events + snapshots, protoactor-style): see machines.eventsourced
from aminspect.machines.es_store import Provider as Provider
from aminspect.machines.eventsourced import EventSourced as EventSourced
from aminspect.machines.eventsourced import IntervalStrategy as IntervalStrategy
from aminspect.machines.eventsourced import TimeStrategy as TimeStrategy

# isort: split
# Validated SQL-persisted FSM (luno/shift-style): errors and the rest in machines.fsm
from aminspect.machines.fsm import FSM as FSM
from aminspect.machines.fsm import ArcFSM as ArcFSM
from aminspect.machines.fsm import ArcFSMBuilder as ArcFSMBuilder
from aminspect.machines.fsm import FSMBuilder as FSMBuilder
from aminspect.machines.fsm import FSMError as FSMError
from aminspect.machines.fsm_store import SQLiteFSMStore as SQLiteFSMStore
from aminspect.machines.fsm_store import open_fsm_store as open_fsm_store
