"""fedswarm.learning"""
