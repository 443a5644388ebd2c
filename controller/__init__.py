"""tickrun.controller"""
