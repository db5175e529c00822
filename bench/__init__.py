"""fedswarm.bench"""
