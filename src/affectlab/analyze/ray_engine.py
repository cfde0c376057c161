"""The ``ray`` engine of corpus runs: inputs spread over a Ray cluster.

Each worker is a Ray actor holding one CPU; it loads the model once and analyses one
input at a time with :func:`affectlab.analyze.corpus.analyze_input`, so its tables equal
the local engine's. The driver keeps every worker busy with one input and writes each
index line as soon as the input is back. A worker process that dies (killed, out of
memory) is replaced and its input given to another worker; an input whose worker died
twice is recorded as failed. An input that fails on its own (a truncated video) is
recorded as failed at once: trying it again would fail the same way.

Without ``address`` a local cluster of ``workers`` CPUs is started on this machine and
shut down at the end; with it the run joins that cluster as it is (``ray start --head``
on one node and ``ray start --address HEAD:6379`` on the others, then ``--address auto``
on a node, or ``ray://HEAD:10001`` from elsewhere).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable

from affectlab.errors import ConfigError

MAX_ATTEMPTS = 2
INSTALL_HINT = "--engine ray needs Ray, an optional extra: pip install 'affectlab[cluster]'"


def require_ray():
    """The ``ray`` module, or :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


class CorpusWorker:
    """One model-holding worker (wrapped with ``ray.remote`` by :class:`RayPool`)."""

    def __init__(self, model, device: str, batch_size: int, threads: int):
        import cv2
        import torch

        from affectlab.analyze.api import load_predictor

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        self.predictor = load_predictor(model, device=device, batch_size=batch_size)

    def pid(self) -> int:
        return os.getpid()

    def run(self, job, out: str, settings) -> dict:
        from pathlib import Path

        from affectlab.analyze.corpus import analyze_input

        return analyze_input(job, Path(out), self.predictor, settings)


class RayPool:
    """Workers on a Ray cluster, started before the driver's own set-up so that the
    cluster's start and the workers' model loading overlap it.

    Parameters
    ----------
    settings : AnalyzeSettings
        ``model`` (resolved to a name or path), ``device``, ``batch_size``, ``threads``.
    address : str, optional
        An existing cluster; without it a local cluster of ``workers`` CPUs is started
        (and shut down by :meth:`close`).
    workers : int, optional
        Worker count (default: the cluster's CPUs).
    """

    def __init__(self, settings, *, address: str | None = None, workers: int | None = None):
        ray = require_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a user's run
        self.ray, self.started = ray, False
        if not ray.is_initialized():
            options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            try:
                if address:
                    ray.init(address=address, **options)
                else:
                    ray.init(num_cpus=workers or os.cpu_count() or 1, **options)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
                raise ConfigError(f"cannot start or join {where}: {e}") from None
            self.started = True
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(CorpusWorker)
        self._init_args = (settings.model, settings.device, settings.batch_size, settings.threads or 1)
        self.actors = [self._new_actor() for _ in range(self.workers)]  # loading starts now, asynchronously

    def _new_actor(self):
        return self._actor_class.remote(*self._init_args)

    def run(self, plan, settings, on_entry: Callable[[dict], Any]) -> int:
        """Analyse ``plan.jobs``, calling ``on_entry`` with each index entry; returns the worker count."""
        ray = self.ray
        # a worker holds one CPU: no decode/detect thread beside it (the local engine keeps it)
        settings = replace(settings, detect_ahead=False)
        queue = list(plan.jobs)
        in_flight: dict[Any, tuple[Any, Any]] = {}

        def submit(actor):
            job = queue.pop(0)
            in_flight[actor.run.remote(job, str(plan.out), settings)] = (actor, job)

        for actor in self.actors:
            if queue:
                submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            actor, job = in_flight.pop(ready[0])
            try:
                entry = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None  # an output failure: stop, as the local engine does
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                actor = self._new_actor()  # the dead worker's replacement
                if job.attempt < MAX_ATTEMPTS:
                    queue.insert(0, replace(job, attempt=job.attempt + 1))
                    entry = None
                else:
                    entry = {"input": job.input, "table": job.table, "rows": 0, "frames": 0, "status": "failed",
                             "seconds": 0.0, "attempt": job.attempt,
                             "error": f"its worker died {MAX_ATTEMPTS} times ({type(e).__name__})"}
            if entry is not None:
                on_entry(entry)
            if queue:
                submit(actor)
        return self.workers

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started:
            self.ray.shutdown()
