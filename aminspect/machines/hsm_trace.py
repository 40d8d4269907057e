"""Trace an HSM tree: every node is a traced machine whose parent is its parent node's machine."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aminspect.machines.hsm import Node, format_path
from aminspect.machines.hsm_tree import Tree
from tracer.core import DEFAULT_BUFFER, Channel, Stats, TraceHandle, dispatcher_for
from tracer.records import Kind, MachineRecord, Schema, StateSpec
from tracer.sinks import Sink

__all__ = ["KIND", "TreeTracer", "trace_tree"]

KIND = "hsm"  # MachineRecord.kind of every node


class TreeTracer:
    """Reports a tree's nodes to a sink: one machine per node, nested like the tree.

    Records: ``init`` when a node starts being traced (its current state; args carry the
    node's transition count; ``restore`` instead for the nodes of a tree loaded from a
    store), one ``event`` per successful transition (named after the transition,
    exiting/entering the node's state when it changed), one ``deleted`` record
    exiting every state when the node (or an ancestor) is deleted, after which the machine is
    disposed. Failed transitions changed nothing and record nothing. Nothing here raises into
    the application: a failing sink shows in ``stats.last_error``.
    """

    def __init__(
        self,
        tree: Tree,
        *,
        sink: Sink | None = None,
        url: str | None = None,
        name: str | None = None,
        parent: TraceHandle | str | None = None,
        tags: Mapping[str, str] | None = None,
        buffer_size: int = DEFAULT_BUFFER,
    ) -> None:
        if url is not None:
            if sink is not None:
                raise ValueError("trace_tree() takes a sink or a url, not both")
            from tracer.ws_sink import sink_for_url

            sink = sink_for_url(url, os.environ.get("AMINSPECT_TOKEN") or None)
        if sink is None:
            from tracer.attach import default_sink

            sink = default_sink()
        self.tree = tree
        self.name = name or tree.id
        self.parent_id = parent.machine_id if isinstance(parent, TraceHandle) else parent
        self.tags = dict(tags or {})
        self.dispatcher = dispatcher_for(sink, buffer_size)
        self._channels: dict[int, Channel] = {}  # id(node) -> channel
        self._schemas: dict[str, Schema] = {}
        self.detached = False
        # A tree read back from a store continues its nodes' histories: their first record
        # is a ``restore`` instead of an ``init``, so the inspector shows the resurrection.
        restoring = tree.stored_count is not None and tree.transition_count > 0
        for node in tree.root.walk():
            self._open(node, restoring)
        tree.root.add_observer(self)

    # -- ids --------------------------------------------------------------------------------
    def machine_id(self, node: Node) -> str:
        """``name`` for the root, ``name/type:id/...`` below it."""
        path = node.path
        return self.name if not path else f"{self.name}/{format_path(path)}"

    @property
    def machine_ids(self) -> list[str]:
        return [c.id for c in self._channels.values()]

    def channel(self, node: Node) -> Channel | None:
        return self._channels.get(id(node))

    def _schema(self, node: Node) -> Schema:
        definition = node.definition
        schema = self._schemas.get(definition.name)
        if schema is None:
            schema = Schema(tuple(StateSpec(s) for s in definition.states))
            self._schemas[definition.name] = schema
        return schema

    def _config(self, node: Node, schema: Schema) -> frozenset[int]:
        state = node.state() if node.definition.states else None
        index = None if state is None else schema.get_index(state)
        return frozenset() if index is None else frozenset({index})

    # -- observer interface (called by the tree; must not raise) ----------------------------
    def on_added(self, node: Node) -> None:
        self._open(node, False)

    def _open(self, node: Node, restoring: bool) -> None:
        if self.detached or id(node) in self._channels:
            return
        schema = self._schema(node)
        parent = node.parent
        parent_channel = None if parent is None else self._channels.get(id(parent))
        parent_id = parent_channel.id if parent_channel is not None else self.parent_id
        tags = {
            **self.tags,
            "hsm.tree": self.tree.id,
            "hsm.type": node.definition.name,
            "hsm.path": format_path(node.path),
        }
        record = MachineRecord(self.machine_id(node), KIND, schema, parent_id, tags=tags)
        channel = Channel(record, self.dispatcher)
        channel.restoring = restoring
        self.dispatcher.add(channel)
        self._channels[id(node)] = channel
        config = self._config(node, schema)
        channel.emit(
            Kind.INIT,
            "init",
            (),
            sorted(config),
            config,
            args={"transition_count": node.transition_count},
            nested=False,
        )

    def on_transition(self, node: Node, name: str, before: str | None) -> None:
        channel = self._channels.get(id(node))
        if channel is None or self.detached:
            return
        schema = self._schema(node)
        after = self._config(node, schema)
        old = channel.active
        exited, entered = (old - after, after - old) if old != after else ((), ())
        channel.emit(
            Kind.EVENT,
            name,
            sorted(exited),
            sorted(entered),
            after,
            args={"transition_count": node.transition_count, "from": before},
            nested=False,
        )

    def on_deleted(self, node: Node) -> None:
        if self.detached:
            return
        for n in node.walk():
            channel = self._channels.pop(id(n), None)
            if channel is None:
                continue
            channel.emit(
                Kind.EVENT,
                "deleted",
                sorted(channel.active),
                (),
                frozenset(),
                args={"transition_count": n.transition_count},
                nested=False,
            )
            self.dispatcher.remove(channel)
            channel.closed = True

    # -- control ----------------------------------------------------------------------------
    @property
    def stats(self) -> Stats:
        return TraceHandle(list(self._channels.values()), self.dispatcher, lambda: None).stats

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until captured records reach the sink."""
        return self.dispatcher.flush(timeout)

    def detach(self) -> None:
        """Stop tracing; the nodes' machines are disposed, the tree is untouched."""
        if self.detached:
            return
        self.detached = True
        self.tree.root.remove_observer(self)
        for channel in self._channels.values():
            self.dispatcher.remove(channel)
            channel.closed = True
        self._channels.clear()

    def __enter__(self) -> TreeTracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def trace_tree(tree: Tree, **kw: Any) -> TreeTracer:
    """Trace every node of ``tree`` (and nodes added later) as nested machines.

    Args:
        tree: the tree to trace.
        kw: ``sink`` or ``url``, ``name`` (the root's machine id, default the tree id),
            ``parent`` (a handle or machine id above the root), ``tags``, ``buffer_size``.

    Returns:
        The TreeTracer (``detach()``, ``flush()``, ``machine_id(node)``).

    Raises:
        ValueError: both ``sink`` and ``url`` given, or a bad url.
    """
    return TreeTracer(tree, **kw)
