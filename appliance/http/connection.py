"""quart-trio's HTTP connection with the response send shielded.

quart-trio cancels a request's nursery as soon as hypercorn reports the
stream closed, which lands in the middle of hypercorn finishing that very
response: its keep-alive timer is then never armed, so idle connections are
never closed, neither after ``keep_alive_timeout`` nor when the appliance
drains (every shutdown would wait the whole grace period). Shielding only the
send keeps the useful part — a client that disconnects still cancels a
handler that is still working (e.g. a long-polling claim). A streamed response
(Server-Sent Events) names an ``on_disconnect`` callable instead: it is called when
the client goes away, so the stream ends rather than producing for nobody.
"""

from __future__ import annotations

from typing import Any

import trio
from quart.wrappers import Response
from quart_trio.asgi import TrioASGIHTTPConnection


class ShieldedSendConnection(TrioASGIHTTPConnection):
    async def handle_request(self, nursery: trio.Nursery, request: Any,  # type: ignore[override]
                             send: Any) -> None:
        response = await self.app.handle_request(request)
        timeout = (response.timeout if isinstance(response, Response)
                   and response.timeout is not Ellipsis else self.app.config["RESPONSE_TIMEOUT"])
        stop = getattr(response, "on_disconnect", None)
        if stop is not None:
            nursery.start_soon(_when_cancelled, stop)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout if timeout is not None else float("inf")):
                await self._send_response(send, response)
        nursery.cancel_scope.cancel()


async def _when_cancelled(callback: Any) -> None:
    """Call ``callback`` when the request's nursery is cancelled (the client went away)."""
    try:
        await trio.sleep_forever()
    finally:
        callback()
