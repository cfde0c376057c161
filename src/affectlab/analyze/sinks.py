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
    """Write the HTML report (:mod:`affectlab.analyze.report`) into a folder: a page per
    video when it ends, the images page and the index when the run ends.

    Parameters
    ----------
    inputs : sequence of str
        Every input of the run, for distinct page names.
    run : mapping, optional
        What the pages say about the run (model, detector, settings, table, ...).
    annotated : callable, optional
        ``annotated(input) -> path or None``: the input's annotated video.
    """

    def __init__(self, out_dir, expressions=(), aus=(), columns=(), inputs: Sequence[str] = (), run=None,
                 annotated=None):
        from affectlab.analyze.naming import unique_output_names

        self.out_dir = Path(out_dir)
        self._inputs = [str(p) for p in inputs]
        self._names = unique_output_names(self._inputs, reserved=("index", "images"))
        self.label = f"the report in {self.out_dir}"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.expressions, self.aus, self.columns = list(expressions), list(aus), list(columns)
        self.run = dict(run or {})
        self._annotated = annotated
        self._chunks: dict[str, list[pd.DataFrame]] = {}
        self._kind: dict[str, str] = {}
        self._failure: dict[str, str | None] = {}
        self._summary: dict[str, dict] = {}
        self._thumbs: dict[str, str] = {}
        self._thumb_has_face: dict[str, bool] = {}
        self.pages: dict[str, Path] = {}

    def name(self, path: str) -> str:
        """The distinct stem of ``path``'s page (:func:`~affectlab.analyze.naming.unique_output_names`)."""
        from affectlab.analyze.naming import unique_output_names

        if path not in self._names:  # not announced: named after the others, which keep theirs
            self._inputs.append(path)
            taken = set(self._names.values()) | {"index", "images"}
            self._names[path] = unique_output_names(self._inputs, reserved=taken)[path]
        return self._names[path]

    def start_input(self, path, kind, fps):
        self._kind[path] = kind
        self._chunks.setdefault(path, [])

    def write(self, chunk, frames):
        for inp, g in chunk.groupby("input", sort=False):
            self._chunks.setdefault(inp, []).append(g)
        if frames:
            self._thumbnails(chunk, frames)

    def _thumbnails(self, chunk, frames) -> None:
        """The first frame of each input with a face (else its first frame), as a small JPEG."""
        by_key = None
        for frame in frames:
            p = frame.input
            if self._thumb_has_face.get(p):
                continue
            if by_key is None:
                by_key = {k: g for k, g in chunk.groupby(["input", "frame"], sort=False)}
            rows = by_key.get((p, frame.index))
            has_face = rows is not None and bool((rows["face"] >= 0).any())
            if p in self._thumbs and not has_face:
                continue
            self._thumbs[p] = self._thumb(p, frame.image, rows)
            self._thumb_has_face[p] = has_face

    def _thumb(self, path: str, image, rows) -> str:
        from affectlab.analyze.report import write_thumbnail

        name = f"thumbs/{self.name(path)}.jpg"
        write_thumbnail(image, rows, self.out_dir / name)
        return name

    def _thumb_from_file(self, path: str, rows) -> None:
        """A thumbnail for an input whose frames were not seen (rows kept by ``--resume``)."""
        from affectlab.analyze.inputs import MediaError, iter_frames

        face_rows = rows[rows["face"] >= 0] if rows is not None and len(rows) else None
        want = int(face_rows["frame"].iloc[0]) if face_rows is not None and len(face_rows) else 0
        if want > 250:
            want = 0  # a face only late in a long video: its first frame, rather than decoding up to it
        try:
            for frame in iter_frames(path):
                if frame.index >= want:
                    self._thumbs[path] = self._thumb(path, frame.image, rows[rows["frame"] == frame.index]
                                                     if rows is not None else None)
                    break
        except (MediaError, OSError, ValueError):
            pass  # the file moved or is unreadable: no thumbnail, the rest of the report stands

    def _table(self, paths) -> AffectTable:
        chunks = [c for p in paths for c in self._chunks.get(p, []) if len(c)]
        df = pd.concat(chunks, ignore_index=True) if chunks else empty_frame(self.columns)
        return AffectTable.from_frame(df, self.expressions, self.aus)

    def _annotated_for(self, path: str):
        if self._annotated is None:
            return None
        out = self._annotated(path)
        return str(out) if out else None

    def end_input(self, path, failure):
        from affectlab.analyze.report import input_summary, video_report

        self._failure[path] = failure
        if self._kind.get(path, "image") != "video":
            return  # images: their rows may still be in the model's batch; handled on close
        table = self._table([path])
        if path not in self._thumbs and len(table):
            self._thumb_from_file(path, table)
        self._summary[path] = input_summary(table, "video", self.expressions)
        out = self.out_dir / f"{self.name(path)}.html"
        from affectlab.analyze.report import display_names

        video_report(table, path, out, failure, thumb=self._thumbs.get(path), run=self.run,
                     annotated=self._annotated_for(path), title=display_names(self._inputs).get(path))
        self.pages[path] = out
        self._chunks.pop(path, None)  # the rows of a finished video are not needed again

    def close(self):
        from affectlab.analyze.report import images_report, index_page, input_summaries

        images = [p for p, k in self._kind.items() if k == "image"]
        if images:
            table = self._table(images)
            missing = [p for p in images if p not in self._thumbs and not self._failure.get(p)]
            if missing:  # rows kept by --resume: their frames were not seen
                groups = {k: g for k, g in table.groupby("input", sort=False)} if len(table) else {}
                for p in missing:
                    self._thumb_from_file(p, groups.get(p))
            summaries = input_summaries(table, "image", self.expressions, images)
            out = images_report(table, self.out_dir / "images.html", names={p: self.name(p) for p in images},
                                thumbs=self._thumbs, failures=self._failure, order=images, run=self.run,
                                summaries=summaries)
            for p in images:
                self.pages[p] = out
            self._summary.update(summaries)
        entries = []
        given = {p: i for i, p in enumerate(self._inputs)}
        for p, kind in sorted(self._kind.items(), key=lambda kv: given.get(kv[0], len(given))):  # as the user gave them
            page = None
            if p in self.pages:
                page = self.pages[p].name + (f"#{self.name(p)}" if kind == "image" else "")
            entries.append({"input": p, "page": page, "thumb": self._thumbs.get(p),
                            "summary": self._summary.get(p) or {"kind": kind},
                            "failure": self._failure.get(p), "annotated": self._annotated_for(p)})
        index_page(self.out_dir, entries, run=self.run)
