"""Offsite-tuning between members (docs/offsite.md): the package, the codec, the owner's quorum.

``settings`` is the ``[offsite]`` table (no torch), ``codec`` what a group averages
(adapter-layer deltas from the package), ``distribution`` how members fetch the package
from the owner (hash-checked, resumable, nothing outside the package served) and
``owner_quorum`` how the owner accepts a group's average without taking part in it.
The ``Exchange`` itself is ``federation/modes/offsite.py``.
"""
