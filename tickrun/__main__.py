from tickrun.cli import entrypoint

entrypoint()
