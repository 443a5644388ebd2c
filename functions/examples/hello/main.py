"""The smallest tickrun function: a Nuclio handler, unchanged."""

import os


def init_context(context):
    context.user_data.greeting = os.environ.get("GREETING", "Hello")
    context.logger.info_with("hello initialised", greeting=context.user_data.greeting)


def handler(context, event):
    name = event.fields.get("name") or "world"
    if isinstance(event.body, dict):
        name = event.body.get("name", name)
    return {"message": f"{context.user_data.greeting}, {name}!", "worker": context.worker_id}
