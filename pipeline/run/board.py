"""Per model, for one run: the route its edits take now, and whether it stopped.

A route the gateway cannot serve for a model (relay convert_request_failed, 501
api_not_implemented, 404 on the path, or a 200 in another route's shape) switches
that model to its fallback route, once per run, with one log line and one line
in the summary. A model without a fallback, or one the gateway refuses as a
whole (relay 400 model_price_error), stops: its remaining tasks fail with the
reason and are not sent, while the other models go on.

Plain state, shared by the scheduler's workers on one event loop; no I/O but the
log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.config.routes import Routing
from pipeline.errors import RequestError, StatusError
from pipeline.gateway.classify import Verdict, classify
from pipeline.views.logs import event

if TYPE_CHECKING:
    from pipeline.gateway.client import Answer


class ModelStopped(Exception):
    """This task's model stopped during the run: the task is not sent (again)."""

    def __init__(self, model: str, reason: str):
        super().__init__(f"not sent: {model} stopped for this run: {reason}")
        self.model, self.reason = model, reason


@dataclass
class Board:
    routing: Routing = field(default_factory=Routing)
    routes: dict[str, str] = field(default_factory=dict)  # model -> route after a switch
    stopped: dict[str, str] = field(default_factory=dict)  # model -> why
    notes: list[str] = field(default_factory=list)  # one line per switch or stop

    def route(self, model: str, configured: str) -> str:
        return self.routes.get(model, configured)

    def check(self, model: str) -> None:
        if model in self.stopped:
            raise ModelStopped(model, self.stopped[model])

    def switch(self, model: str, failed_route: str, reason: str) -> bool:
        """Move `model` off `failed_route` to its fallback; True when there is a route to
        try now (also when another worker already switched it)."""
        current = self.routes.get(model, self.routing.route(model))
        if current != failed_route:
            return model not in self.stopped
        fallback = self.routing.plan(model).fallback
        if fallback is None or fallback == failed_route:
            return False
        self.routes[model] = fallback
        line = (f"{model}: route {failed_route} cannot serve it ({reason}); "
                f"switched to {fallback} for the rest of the run")
        self.notes.append(line)
        event(logging.WARNING, "route switched", model=model, route=failed_route,
              fallback=fallback, reason=reason)
        return True

    async def send(self, model: str, configured: str,
                   attempt: Callable[[str], Awaitable[Answer]]) -> Answer:
        """`attempt` on the model's route now; when the gateway says that route cannot
        serve the model and it has a fallback, at once again on the fallback (asking the
        same route again would only fail, or pay, the same way)."""
        while True:
            route = self.route(model, configured)
            try:
                answer = await attempt(route)
            except RequestError as exc:
                if classify(exc) is not Verdict.ROUTE or not self.switch(model, route,
                                                                        _why(exc)):
                    raise
                continue
            if answer.misrouted:  # kept, but the next tasks go by the fallback
                self.switch(model, route, "a 200 in another route's shape")
            return answer

    def stop(self, model: str, reason: str) -> None:
        if model in self.stopped:
            return
        self.stopped[model] = reason
        self.notes.append(f"{model}: stopped, its other tasks not sent: {reason}")
        event(logging.ERROR, "model stopped", model=model, reason=reason)


def _why(exc: RequestError) -> str:
    if isinstance(exc, StatusError):
        return exc.code or exc.type or f"http_{exc.status}"
    return exc.kind
