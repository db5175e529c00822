"""fedswarm.daemon"""
