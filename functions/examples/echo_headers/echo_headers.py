"""Nuclio's own echo-headers test function, unchanged: it answers with the request's headers.

Those include the request's ``Content-Length`` (and ``Connection``, ``Transfer-Encoding``, …),
which the server must not send as given: it frames the response itself.
"""


def handler(context, event):
    headers = event.headers
    headers["h1"] = "v1"
    return context.Response(
        body="response body",
        headers=headers,
        content_type="text/plain",
        status_code=201,
    )
