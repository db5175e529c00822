"""fedswarm.webui"""
