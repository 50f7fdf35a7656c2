"""Kassabro: the till's bridge.

A durable outbox between the Hogia Butikkassa till and the shop's back office
(Hogia Smart, Sharespine, a chain's backend, MQTT and SIE files). Records come
in through ``agent.sources``, are committed to ``agent.outbox`` and leave
through ``agent.destinations`` once each destination has acknowledged them.
"""

__version__ = "0.1.0"
