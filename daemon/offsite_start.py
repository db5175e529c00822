"""``mode = "offsite"`` at daemon start: our role, the package, and its transport.

The roster names the model owner (``role = "model_owner"``). The owner opens its built
package (every hash checked) and serves it; a member fetches it from the owner before
its first round (``federation/offsite/distribution.py``: resumable, checked against the
published ``package_id``, a tampered file refused and fetched again), then trains on it.
Until the package is whole the member only waits and retries; nothing the owner sends
ends the daemon (docs/offsite.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fedswarm.federation.link import PACKAGE_KIND, Link
from fedswarm.federation.modes.offsite import OffsiteRole
from fedswarm.federation.offsite.distribution import PackageServer, fetch_package
from fedswarm.federation.offsite.transport import PackageClient, PackageService
from fedswarm.learning.errors import OffsiteError, TamperedPackageError
from fedswarm.learning.offsite import OffsitePackage, open_package
from fedswarm.p2p.roster import Roster

from .config import Config
from .errors import ConfigError
from .round_runner import RoundTrainer, TrainingInterrupted

log = logging.getLogger("fedswarm.daemon.offsite")

FETCH_RETRY_S = 2.0


class OffsiteStart:
    """Our role in an offsite federation, and the package's server or client."""

    def __init__(self, config: Config, roster: Roster, me: str, link: Link,
                 reject: Callable[[str | None, str, str], None]) -> None:
        assert config.offsite is not None
        owner = roster.model_owner()
        if owner is None:
            raise ConfigError(f"{config.roster_path}: federation.mode = 'offsite' needs a "
                              "member with role = \"model_owner\" in the roster")
        self.config = config
        self.settings = config.offsite
        self.owner = owner
        self.is_owner = owner == me
        self.role = OffsiteRole(owner, self.is_owner,
                                config.offsite_export_dir if self.is_owner else None)
        self._reject = reject
        self.package: OffsitePackage | None = None
        self.client: PackageClient | None = None
        self.service: PackageService | None = None
        self.fetch_state = "verified" if self.is_owner else "waiting"
        """``waiting`` (no answer from the owner yet), ``fetching`` or ``verified``."""
        self.fetched_bytes = 0
        self.package_bytes: int | None = None
        """Bytes of the files the manifest lists (None: no manifest yet)."""
        if self.is_owner:
            try:
                self.package = open_package(config.offsite_package_dir, self.settings.package_id)
            except (OSError, TamperedPackageError) as exc:
                raise ConfigError(f"{config.source}: [offsite] package_dir: {exc}") from None
            self.service = PackageService(link, PackageServer(self.package.path))
        else:
            self.client = PackageClient(link, owner)

    def on_blob(self, sender: str, is_request: bool, payload: bytes) -> str | None:
        """A package request (owner) or answer (member); returns a rejection reason."""
        if is_request:
            if self.service is None:
                return "package request to a member that is not the model owner"
            return self.service.on_request(sender, payload)
        if self.client is None:
            return "package answer to the model owner"
        return self.client.on_answer(sender, payload)

    async def fetch(self, stop: asyncio.Event) -> OffsitePackage:
        """Fetch (or finish) the package from the owner, retrying until whole or stopped."""
        assert self.client is not None
        dest, package_id = self.config.offsite_package_dir, self.settings.package_id
        while not stop.is_set():
            try:
                await fetch_package(self.client.request, dest, package_id,
                                    progress=self._fetch_progress)
                package = await asyncio.to_thread(open_package, dest, package_id)
                self.fetch_state = "verified"
                log.info("offsite package %s… fetched and verified in %s", package_id[:12], dest)
                return package
            except TamperedPackageError as exc:
                log.error("offsite package refused: %s; fetching again", exc)
                self._reject(self.owner, PACKAGE_KIND, str(exc))
            except OffsiteError as exc:
                # every byte is what the configured id pins, so no retry can fix it
                raise ConfigError(f"{self.config.source}: [offsite] package_id: the package "
                                  f"{package_id[:12]}… is not usable: {exc}") from None
            except Exception as exc:  # the owner not up yet: the node raises its own types
                log.warning("offsite package not fetched yet from %s: %s: %s; retrying",
                            self.owner[-8:], type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FETCH_RETRY_S)
        raise TrainingInterrupted()

    def _fetch_progress(self, have: int, total: int) -> None:
        self.fetch_state, self.fetched_bytes, self.package_bytes = "fetching", have, total

    async def build_trainer(self, stop: asyncio.Event) -> RoundTrainer:
        """The owner's ``OwnerTrainer`` or, once the package is here, an ``OffsiteTrainer``."""
        cfg = self.config
        lora = cfg.lora if self.settings.lora else None
        if self.is_owner:
            from fedswarm.learning.offsite.owner import OwnerModel
            from fedswarm.learning.offsite.owner_trainer import OwnerTrainer

            own = self.package
            assert own is not None

            def owner() -> OwnerTrainer:
                return OwnerTrainer(OwnerModel(cfg.path(cfg.model.path), own, lora,
                                               device=cfg.model.device), cfg.data, cfg.train,
                                    cfg.offsite_export_dir)

            return await asyncio.to_thread(owner)
        from fedswarm.learning.offsite.trainer import OffsiteTrainer

        package = self.package = await self.fetch(stop)
        return await asyncio.to_thread(
            lambda: OffsiteTrainer(package, cfg.data, cfg.train, lora=lora,
                                   device=cfg.model.device)
        )
