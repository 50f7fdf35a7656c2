"""A stand-alone process holding one mqtt destination, for tests that SIGKILL it.

``python -m tests.mqtt.agent_process PORT`` connects to the broker on
127.0.0.1:PORT and stays connected until killed.
"""

from __future__ import annotations

import asyncio
import sys

from agent.destinations.mqtt import MqttDestination
from tests.mqtt.helpers import STORE_ID, config


async def main(port: int) -> None:
    destination = MqttDestination(config(port), store_id=STORE_ID)
    await destination.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
