"""The command palette's provider: every inspector action, and "select machine" per machine."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from aminspect.tui.app import InspectorApp

__all__ = ["InspectorCommands"]


class InspectorCommands(Provider):
    """Offers every action of the app (the same list the help screen shows) and
    ``Select machine: ID`` for each machine the session has seen."""

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = cast("InspectorApp", self.app)
        out: list[tuple[str, str, Callable[[], object]]] = []
        for title, help_text, action in app.palette_actions():
            out.append((title, help_text, partial(app.run_action, action)))
        for mid in sorted(app.session.machines):
            out.append(
                (f"Select machine: {mid}", "show this machine everywhere", partial(app.choose, mid))
            )
        return out

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
