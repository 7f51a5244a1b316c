"""A build run's summary as it goes (`itemsage build-index` prints it), without Spark: each
surface's result, the run's timings and what every manifest records of the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from index_builder.build_release import release_surface
from index_builder.layout import current_build_id
from index_builder.plan import SurfaceFailure, SurfacePlan
from index_builder.surfaces import Surface


class BuildRun:
    """One run over a table version. A surface whose step raises SurfaceFailure is `failed` in
    the summary, with its `reason` and `current_build` (which stays current); the others go on."""

    def __init__(
        self,
        table_uri: str,
        table_version: int,
        catalog: str | None,
        index_root: str,
        started: float,
        progress: Callable[[str], None],
    ):
        self.catalog, self.index_root, self.progress = catalog, index_root, progress
        self.started = self.lapped = started
        self.seconds: dict[str, float] = {}
        self.summary = {
            "table": table_uri,
            "table_version": table_version,
            "index_root": index_root,
            "surfaces": {},
        }

    def attempt(self, surface: Surface, step: Callable[..., object], *args):
        """step(*args), or None when the surface fails (recorded in the summary)."""
        try:
            return step(*args)
        except SurfaceFailure as exc:
            current = current_build_id(self.index_root, surface.name)
            self.progress(
                f"{surface.name}: FAILED: {exc}; nothing published, "
                + (f"build {current} stays current" if current else "no build is current")
            )
            self.summary["surfaces"][surface.name] = {
                **exc.details,
                "status": "failed",
                "reason": str(exc),
                "current_build": current,
            }
            return None

    def each(self, surfaces: Iterable[Surface], step: Callable[..., object], *args) -> list:
        """step(surface, *args) for every surface but those that fail."""
        results = [self.attempt(surface, step, surface, *args) for surface in surfaces]
        return [result for result in results if result is not None]

    def lap(self, name: str) -> None:
        """Record the seconds since the previous lap (or the start) as `name`."""
        now = time.perf_counter()
        self.seconds[name], self.lapped = now - self.lapped, now

    def provenance(self) -> dict:
        """What each manifest records of the run: table version, catalog, timings."""
        return {
            "table_uri": self.summary["table"],
            "table_version": self.summary["table_version"],
            "catalog": self.catalog,
            "seconds": dict(self.seconds),
        }

    def release(
        self,
        plans: Iterable[SurfacePlan],
        entries: Mapping[str, list[dict]],
        refreshes: Iterable[tuple[Surface, Callable[[dict], dict]]] = (),
    ) -> dict:
        """Release every plan's build (its shards' `entries`), and every refreshed build
        (`refreshes`: its surface, and what releases it given the run's provenance), past its
        recall gate; the summary, with the run's total seconds."""
        provenance = self.provenance()
        for plan in plans:
            name = plan.surface.name
            result = self.attempt(
                plan.surface,
                release_surface,
                plan,
                entries.get(name, []),
                self.index_root,
                provenance,
                self.progress,
            )
            if result is not None:
                self.summary["surfaces"][name] = result
        for surface, release in refreshes:
            result = self.attempt(surface, release, provenance)
            if result is not None:
                self.summary["surfaces"][surface.name] = result
        self.summary["seconds"] = time.perf_counter() - self.started
        return self.summary
