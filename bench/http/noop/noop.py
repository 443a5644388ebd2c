async def handler(context, event):
    return "ok"


def sync_handler(context, event):
    return "ok"
