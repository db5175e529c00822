"""Everything one round does between members, over a ``Link`` (never ``p2p`` directly).

``round`` (what a member knows of a round), ``link`` (how it reaches the others),
``mailbox`` (what arrived), ``groups/`` (who combines with whom), ``averaging/`` (plain
and secure group averages), ``fedmkt/`` (knowledge exchange), ``catch_up`` (pulling a
neighbour's adapter), ``exchange`` + ``modes/`` (the pluggable federation mode).
"""
