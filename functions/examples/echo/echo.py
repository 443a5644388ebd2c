"""JSON echo: returns what it was sent, with the request's metadata (an async handler)."""


async def handler(context, event):
    return {
        "body": event.body
        if not isinstance(event.body, bytes)
        else event.body.decode("utf-8", "replace"),
        "method": event.method,
        "path": event.path,
        "query": event.fields,
        "content_type": event.content_type,
        "id": event.id,
        "trigger": {"kind": event.trigger.kind, "name": event.trigger.name},
    }
