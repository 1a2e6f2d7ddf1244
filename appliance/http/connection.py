"""quart-trio's HTTP connection with the response send shielded.

quart-trio cancels a request's nursery as soon as hypercorn reports the
stream closed, which lands in the middle of hypercorn finishing that very
response: its keep-alive timer is then never armed, so idle connections are
never closed, neither after ``keep_alive_timeout`` nor when the appliance
drains (every shutdown would wait the whole grace period). Shielding only the
send keeps the useful part — a client that disconnects still cancels a
handler that is still working (e.g. a long-polling claim).
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
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout if timeout is not None else float("inf")):
                await self._send_response(send, response)
        nursery.cancel_scope.cancel()
