"""``fedswarm demo``: a real federation of local daemons with the bundled tiny model."""
