"""Suspension and signals in the service: tokens are minted here (with the store's
current key, cached), the store verifies and applies; rotation is single-flight and
audited. Nothing here knows about HTTP. See spec/suspension.md."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from appliance.core import conditions as cond
from appliance.core import suspension as sp
from appliance.core import tokens
from appliance.core.errors import (
    ExecutionNotFound,
    FlowFabricError,
    RotationBusy,
    RotationTimeout,
    StaleKid,
    WaitpointNotFound,
)
from appliance.core.handle import Fence
from appliance.core.ids import fresh_uuids
from appliance.core.outcomes import Outcome

if TYPE_CHECKING:
    from .facade import Service

log = logging.getLogger("flowfabric.waitpoints")
#: The longest a rotation may take before the caller is told 504 (it may still finish).
ROTATION_TIMEOUT_S = 120.0


class Suspensions:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.backend = service.backend
        self.config = service.config
        self._keys: tokens.Keystore | None = None
        self._seeded = False
        self._seeding = trio.Lock()
        self._rotating = trio.Lock()

    # -- the signing key ----------------------------------------------------------------------
    async def start(self) -> None:
        """Install the signing key on first start (or check the configured one)."""
        await self.keys()

    async def keys(self) -> tokens.Keystore:
        if self._keys is None:
            async with self._seeding:
                if self._keys is None:
                    status, keys = await self.backend.seed_waitpoint_keys(
                        self.config.hmac_kid, self.config.hmac_secret)
                    if self._seeded:  # a re-read after a rotation: nothing to report
                        status = "kept"
                    self._seeded = True
                    if status == "installed":
                        log.info("waitpoint signing key %s installed%s", keys.current,
                                 "" if self.config.hmac_secret else
                                 " (generated; set FF_WAITPOINT_HMAC_SECRET to choose it)")
                    elif status == "differs":
                        log.warning(
                            "FF_WAITPOINT_HMAC_SECRET/_KID differ from the key the store "
                            "holds (kid %s); the stored key is used. To change it, POST "
                            "/v1/admin/rotate-waitpoint-secret", keys.current)
                    self._keys = keys
        assert self._keys is not None
        return self._keys

    async def _minted(self, execution_id: str, attempt: Any) -> Any:
        """Run ``attempt(keys)``; a key rotated by another appliance is re-read once."""
        keys = await self.keys()
        try:
            return await attempt(keys)
        except StaleKid:
            self._keys = keys = await self.backend.waitpoint_keys(execution_id)
            return await attempt(keys)

    def _mint(self, keys: tokens.Keystore, execution_id: str, waitpoint_id: str,
              key: str) -> str:
        assert keys.current is not None
        return tokens.mint(keys.current, keys.secrets[keys.current], execution_id,
                           waitpoint_id, key)

    # -- the worker side ----------------------------------------------------------------------
    async def create_waitpoint(self, execution_id: str, fence: Fence, key: str,
                               expires_at: int | None) -> sp.Waitpoint:
        [waitpoint_id] = fresh_uuids(1)

        async def attempt(keys: tokens.Keystore) -> sp.Waitpoint:
            args = sp.WaitpointArgs(fence, waitpoint_id, key,
                                    self._mint(keys, execution_id, waitpoint_id, key),
                                    keys.current or "", expires_at)
            return await self.backend.create_waitpoint(execution_id, args)

        return await self._minted(execution_id, attempt)

    async def suspend(self, execution_id: str, fence: Fence, condition: cond.Tree,
                      keys_to_bind: list[str], **options: Any) -> sp.SuspendResult:
        if keys_to_bind:
            ids = fresh_uuids(len(keys_to_bind) + 1)
        else:  # one fresh waitpoint, keyed by its own id (as the original's default)
            ids = fresh_uuids(2)
            keys_to_bind = [f"wpk:{ids[1]}"]

        async def attempt(keys: tokens.Keystore) -> sp.SuspendResult:
            fresh = tuple((key, wid, self._mint(keys, execution_id, wid, key))
                          for key, wid in zip(keys_to_bind, ids[1:], strict=True))
            args = sp.SuspendArgs(fence, ids[0], condition, tuple(keys_to_bind), fresh,
                                  keys.current or "", **options)
            return await self.backend.suspend(execution_id, args)

        return await self._minted(execution_id, attempt)

    async def wait_children(self, execution_id: str, fence: Fence) -> Outcome:
        return await self.backend.wait_children(execution_id, fence)

    async def resume_signals(self, execution_id: str) -> list[sp.Signal]:
        return await self.backend.resume_signals(execution_id)

    # -- signals ------------------------------------------------------------------------------
    async def deliver(self, execution_id: str, args: sp.SignalArgs) -> sp.SignalAnswer:
        await self.keys()  # a store's first signal may come before any suspend
        answer, woken = await self.backend.deliver_signal(execution_id, args)
        self.service.wake(woken)
        return answer

    async def approve(self, execution_id: str, waitpoint_id: str, **fields: Any
                      ) -> sp.SignalAnswer:
        """The operator path: the stored token is used (the caller has none)."""
        wp = await self.backend.get_waitpoint(execution_id, waitpoint_id)
        if wp is None:
            raise WaitpointNotFound.of(execution_id=execution_id, waitpoint_id=waitpoint_id)
        name = fields.pop("signal_name")
        suffix = fields.pop("idempotency_suffix")
        [signal_id] = fresh_uuids(1)
        args = sp.SignalArgs(waitpoint_id, signal_id, name, "approval", "operator", "",
                             "execution", wp.token,
                             idempotency_key=f"approval:{name}:{suffix}", **fields)
        return await self.deliver(execution_id, args)

    # -- reads ------------------------------------------------------------------------------------
    async def pending_waitpoints(self, execution_id: str) -> list[dict[str, Any]]:
        found = await self.backend.list_waitpoints(execution_id)
        if found is None:
            raise ExecutionNotFound.of(execution_id=execution_id)
        ex, waitpoints = found
        s = sp.load_suspension(ex)
        out = []
        for w in waitpoints:
            kid, fp = tokens.fingerprint(w.token)
            names = (cond.signal_names(s["condition"], w.waitpoint_key)
                     if s is not None and s.get("suspension_id") == w.suspension_id
                     and w.suspension_id else [])
            entry: dict[str, Any] = {
                "waitpoint_id": w.waitpoint_id, "waitpoint_key": w.waitpoint_key,
                "state": w.state, "required_signal_names": names, "created_at": w.created_at,
                "execution_id": w.execution_id, "attempt_index": w.attempt_index,
                "token_kid": kid, "token_fingerprint": fp, "signal_count": w.signal_count}
            for name in ("activated_at", "expires_at", "suspension_id"):
                if getattr(w, name) is not None:
                    entry[name] = getattr(w, name)
            out.append(entry)
        return out

    async def token(self, execution_id: str, waitpoint_id: str) -> str:
        wp = await self.backend.get_waitpoint(execution_id, waitpoint_id)
        if wp is None or wp.state == "closed":
            raise WaitpointNotFound.of(execution_id=execution_id, waitpoint_id=waitpoint_id)
        return wp.token

    # -- rotation -----------------------------------------------------------------------------------
    async def rotate(self, kid: str, secret_hex: str) -> dict[str, Any]:
        """Rotate every keystore to ``kid``; one at a time (a second concurrent call is
        refused), bounded by ``ROTATION_TIMEOUT_S``."""
        if self._rotating.locked():
            raise RotationBusy("too many concurrent admin_rotate calls (server max: 1); retry "
                               "with backoff")
        async with self._rotating:
            with trio.move_on_after(ROTATION_TIMEOUT_S) as scope:
                results = await self.backend.rotate_waitpoint_secret(
                    kid, secret_hex, self.config.hmac_grace_ms)
            if scope.cancelled_caught:
                log.error("waitpoint_hmac_rotation_timeout_http_504 new_kid=%s", kid)
                raise RotationTimeout(f"rotation exceeded {ROTATION_TIMEOUT_S:.0f}s "
                                      f"server-side timeout; retry is safe (rotating to the "
                                      f"same kid and secret again is a no-op)")
        self._keys = None  # re-read (this appliance mints with the new kid from now on)
        ok = [(p, r) for p, r in results if isinstance(r, tokens.Rotation)]
        failed = [(p, r) for p, r in results if isinstance(r, FlowFabricError)]
        for p, r in ok:
            log.info("waitpoint_hmac_rotated partition=%s outcome=%s new_kid=%s "
                     "previous_kid=%s gc_count=%s", p, r.kind, r.new_kid, r.previous_kid,
                     r.gc_count)
        for p, exc in failed:
            log.warning("waitpoint_hmac_rotation_failed partition=%s kind=%s: %s", p,
                        exc.kind, exc)
        log.info("waitpoint_hmac_rotation_complete new_kid=%s rotated=%d failed=%d", kid,
                 len(ok), len(failed))
        if not ok:
            raise failed[0][1] if failed else FlowFabricError("no keystore to rotate")
        return {"rotated": len(ok), "failed": [p for p, _ in failed], "new_kid": kid,
                "partitions": [
                    {"partition": p, "outcome": r.kind, "previous_kid": r.previous_kid,
                     "gc_count": r.gc_count} if isinstance(r, tokens.Rotation)
                    else {"partition": p, "error": r.kind, "message": r.message}
                    for p, r in results]}
