"""Simulated Hogia API, Sharespine, a generic HTTP receiver and a till, for the demo and the tests.

Each simulator module has ``create_app(...) -> Starlette``; serve one on a free
loopback port with ``async with serve(app) as base_url`` (in the running event
loop) or ``ServerThread(app).start()`` (from a thread of its own). Their fault
knobs are described in ``agent.simulators.faults``.
"""

from agent.simulators._server import ServerThread, serve

__all__ = ["ServerThread", "serve"]
