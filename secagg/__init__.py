"""fedswarm.secagg"""
