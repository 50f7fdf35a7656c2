"""Kassabro for a chain: the side that receives every shop's records.

Each shop's agent publishes over MQTT (its ``mqtt`` destination) to a NATS
cluster's MQTT gateway; a JetStream stream keeps the records on three nodes;
``kassabro-fleet consume`` workers write them into PostgreSQL once each; the
fleet view shows every shop's state. docs/fleet.md has the architecture.
"""
