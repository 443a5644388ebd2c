"""tickrun.hub"""
