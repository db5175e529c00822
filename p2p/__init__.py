"""fedswarm.p2p"""
