"""The partner's loop: fetch, verify and open, hand to the handler, then acknowledge.

An item is acknowledged only after the handler returned. If the handler raises, or a record
fails verification (``DeliveryRejected``), nothing more of the batch is handled, the source
goes back to the acknowledged position, and the exception reaches the caller: the item comes
again next time. Delivery is at least once; de-duplicate by ``Delivery.delivery_id``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from nacl.public import PrivateKey

from services.sdk.delivery import Delivery, open_record
from services.sdk.source import RawItem, Source

Handler = Callable[[Delivery], Awaitable[None] | None]


class PartnerClient:
    def __init__(
        self,
        partner_id: str,
        private_key: PrivateKey,
        *,
        relay_key: str,
        source: Source,
        acknowledge: bool = True,
    ) -> None:
        """``relay_key``: the relay's public key (base64), given to you by Accord's operators.
        ``acknowledge=False`` only looks (as ``accord tail`` does by default)."""
        self.partner_id = partner_id
        self._key = private_key
        self._relay_key = relay_key
        self.source = source
        self._acknowledge = acknowledge

    def open(self, item: RawItem) -> Delivery:
        """Verify and open one record; ``DeliveryRejected`` if it is not the relay's, for us."""
        return open_record(
            item.record,
            delivery_id=item.delivery_id,
            partner_id=self.partner_id,
            partner_key=self._key,
            relay_key=self._relay_key,
        )

    async def poll(self, handler: Handler, *, wait_s: float = 5.0, limit: int | None = None) -> int:
        """Handle one batch (at most ``limit`` items of it); returns how many were handled."""
        items = await self.source.fetch(wait_s=wait_s)
        todo = items if limit is None else items[:limit]
        for item in todo:
            try:
                result = handler(self.open(item))
                if inspect.isawaitable(result):
                    await result
            except BaseException:
                await self.source.reset()
                raise
            if self._acknowledge:
                await self.source.ack(item)
        if len(todo) < len(items):
            await self.source.reset()  # the rest was not handled: it comes again
        return len(todo)

    async def run(
        self,
        handler: Handler,
        *,
        stop: asyncio.Event | None = None,
        wait_s: float = 10.0,
        max_deliveries: int | None = None,
    ) -> int:
        """Handle deliveries until ``stop`` is set (or ``max_deliveries`` were handled)."""
        handled = 0
        while not (stop and stop.is_set()):
            left = None if max_deliveries is None else max_deliveries - handled
            if left is not None and left <= 0:
                break
            handled += await self.poll(handler, wait_s=wait_s, limit=left)
        return handled

    async def close(self) -> None:
        await self.source.close()

    async def __aenter__(self) -> PartnerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
