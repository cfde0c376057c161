"""Where analysis rows go: a table file, memory, an annotated video, an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from affectlab.analyze.inputs import Frame
from affectlab.analyze.pipeline import Sink
from affectlab.analyze.table import AffectTable, empty_frame


class TableSink(Sink):
    """Append rows to a CSV / Parquet / JSON file as they come.

    The writer *commits* whole inputs (a Parquet part; see
    :mod:`affectlab.analyze.writers`): a video when it ends, still images with each chunk
    (an image's rows always come in one chunk).
    """

    def __init__(self, path, columns, writer=None):
        from affectlab.analyze.writers import TableWriter

        self.writer = writer if writer is not None else TableWriter(path, columns)
        self.label = str(path)
        self._kind = None

    def start_input(self, path, kind, fps):
        self._kind = kind

    def write(self, chunk, frames):
        self.writer.write(chunk)
        if self._kind == "image":
            self.writer.commit()

    def end_input(self, path, failure):
        self.writer.commit()

    def close(self):
        self.writer.close()


class CollectSink(Sink):
    """Keep every row in memory, for the table the Python API returns."""

    def __init__(self, columns):
        self.columns = list(columns)
        self.chunks: list[pd.DataFrame] = []

    def write(self, chunk, frames):
        self.chunks.append(chunk)

    def frame(self) -> pd.DataFrame:
        chunks = [c for c in self.chunks if len(c)]
        if not chunks:
            return empty_frame(self.columns)
        return pd.concat(chunks, ignore_index=True)


class OverlaySink(Sink):
    """Write each video input again with its predictions drawn on it.

    With one video input the file is ``path``; with several, ``<stem>_<name><suffix>``
    next to it, ``<name>`` distinct per video (:func:`~affectlab.analyze.naming.unique_output_names`,
    so ``a/clip.mp4`` and ``b/clip.mp4`` do not overwrite each other). Still images are
    not written.
    """

    def __init__(self, path, videos: Sequence[str], expressions=(), aus=(), va=False):
        from affectlab.analyze.naming import unique_output_names

        self.path = Path(path)
        self.videos = [str(v) for v in videos]
        self._names = unique_output_names(self.videos)
        self.labels = dict(expressions=expressions, aus=aus, va=va)
        self.outputs: dict[str, Path] = {}
        self._writer = None
        self._annotator = None
        self._fps = None
        self._current = None
        self._target = None

    def target(self, video: str) -> Path:
        from affectlab.analyze.naming import unique_output_names

        if len(self.videos) <= 1:
            return self.path
        name = self._names.get(str(video))
        if name is None:  # not announced: named after the others, which keep their names
            self.videos.append(str(video))
            name = self._names[str(video)] = unique_output_names(self.videos)[str(video)]
        return self.path.with_name(f"{self.path.stem}_{name}{self.path.suffix or '.mp4'}")

    @property
    def label(self) -> str:
        return f"the annotated video {self._target or self.path}"

    def start_input(self, path, kind, fps):
        self._close_writer()
        self._current = path if kind == "video" else None
        self._fps = fps

    def write(self, chunk: pd.DataFrame, frames: Sequence[Frame]):
        from affectlab.analyze.overlay import Annotator, VideoWriter

        if self._current is None:
            return
        by_frame = {k: g for k, g in chunk.groupby("frame", sort=False)}
        for frame in frames:
            if frame.input != self._current:
                continue
            rows = by_frame.get(frame.index)
            if self._writer is None:
                self._annotator = Annotator(**self.labels)
                h, w = self._annotator.prepare(*frame.image.shape[:2], rows)  # may enlarge and add a panel
                out = self._target = self.target(self._current)
                self._writer = VideoWriter(out, self._fps or 25.0, w, h)
                self.outputs[self._current] = out
            self._writer.write(self._annotator.draw(frame.image, rows))

    def end_input(self, path, failure):
        self._close_writer()

    def _close_writer(self):
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._annotator = None

    def close(self):
        self._close_writer()


class ReportSink(Sink):
    """Write an HTML report per video (and one for all still images) into a folder."""

    def __init__(self, out_dir, expressions=(), aus=(), columns=(), inputs: Sequence[str] = ()):
        from affectlab.analyze.naming import unique_output_names

        self.out_dir = Path(out_dir)
        self._inputs = [str(p) for p in inputs]
        self._names = unique_output_names(self._inputs, reserved=("index", "images"))
        self.label = f"the report in {self.out_dir}"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.expressions, self.aus, self.columns = list(expressions), list(aus), list(columns)
        self._chunks: dict[str, list[pd.DataFrame]] = {}
        self._kind: dict[str, str] = {}
        self._failure: dict[str, str | None] = {}
        self.pages: dict[str, Path] = {}

    def name(self, path: str) -> str:
        """The distinct stem of ``path``'s page (:func:`~affectlab.analyze.naming.unique_output_names`)."""
        from affectlab.analyze.naming import unique_output_names

        if path not in self._names:  # not announced: named after the others, which keep theirs
            self._inputs.append(path)
            taken = set(self._names.values()) | {"index", "images"}
            self._names[path] = unique_output_names(self._inputs, reserved=taken - {None})[path]
        return self._names[path]

    def start_input(self, path, kind, fps):
        self._kind[path] = kind
        self._chunks.setdefault(path, [])

    def write(self, chunk, frames):
        for inp, g in chunk.groupby("input", sort=False):
            self._chunks.setdefault(inp, []).append(g)

    def _table(self, paths) -> AffectTable:
        chunks = [c for p in paths for c in self._chunks.get(p, []) if len(c)]
        df = pd.concat(chunks, ignore_index=True) if chunks else empty_frame(self.columns)
        return AffectTable.from_frame(df, self.expressions, self.aus)

    def end_input(self, path, failure):
        from affectlab.analyze.report import video_report

        self._failure[path] = failure
        if self._kind.get(path) != "video":
            return
        out = self.out_dir / f"{self.name(path)}.html"
        video_report(self._table([path]), path, out, failure)
        self.pages[path] = out
        self._chunks.pop(path, None)  # the rows of a finished video are not needed again

    def close(self):
        from affectlab.analyze.report import images_report, index_page

        images = [p for p, k in self._kind.items() if k == "image"]
        if images:
            out = images_report(self._table(images), self.out_dir / "images.html")
            for p in images:
                self.pages[p] = out
        entries = [(p, self.pages[p].name if p in self.pages else None, self._failure.get(p)) for p in self._kind]
        index_page(self.out_dir, entries)
