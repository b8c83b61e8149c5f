"""A slide that changes or goes away while the workflow runs: the tiles job records what it read
(slidegrad.sources), checks it again before writing its table, and the overview checks the record
before and after it reads the slide.  Each case is one line naming the slide and the file."""

from __future__ import annotations

import os
import shutil

import pytest

from slidegrad import sources
from slidegrad.errors import InputError
from slidegrad.jobs import select_tiles
from slidegrad.layout import Layout
from slidegrad.scripting import run_job
from slidegrad.slide import WSI

from .test_overview import _write, project  # noqa: F401  (fixture)

TILES = {"slide": "s1", "mode": "table", "locations": [(0, 0), (128, 0)], "tile_px": 64, "tile_um": 64,
         "stride_div": 1, "mpp": None, "tiles_per_job": 2, "grid": False}  # fmt: skip


def touch_later(path, seconds: float = 5.0) -> None:
    """Change ``path``'s modification time (as a copy in progress or an edit would)."""
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + int(seconds * 1e9)))


def test_a_stamp_round_trips_and_an_unchanged_file_passes(tmp_path):
    path = tmp_path / "a.tiff"
    path.write_bytes(b"x" * 10)
    stamp = sources.SourceStamp.of(path)
    sources.write_stamp(tmp_path / "source.json", stamp)
    assert sources.read_stamp(tmp_path / "source.json") == stamp
    sources.check_unchanged("a", stamp, "after its tiles were read", "rerun")


@pytest.mark.parametrize("content", ["{not json", "{}", '{"path": "a", "size": "ten", "mtime_ns": 1}'])
def test_no_record_or_a_bad_one_skips_the_check(tmp_path, content):
    assert sources.read_stamp(tmp_path / "absent.json") is None
    (tmp_path / "source.json").write_text(content)
    assert sources.read_stamp(tmp_path / "source.json") is None


def test_a_deleted_or_changed_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "a.tiff"
    path.write_bytes(b"x" * 10)
    stamp = sources.SourceStamp.of(path)
    path.write_bytes(b"y" * 12)
    with pytest.raises(InputError) as err:
        sources.check_unchanged("a", stamp, "after its tiles were read", "delete its tile table and rerun")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"slide 'a': '{path}' changed after its tiles were read (then 10 bytes, modified ")
    assert "now 12 bytes" in line and line.endswith("; delete its tile table and rerun")
    path.unlink()
    with pytest.raises(InputError, match=r"^slide 'a': '.*a\.tiff' was deleted after its tiles were read; restore "
                                         r"it and rerun, or remove the slide from the sample sheet$"):  # fmt: skip
        sources.check_unchanged("a", stamp, "after its tiles were read", "rerun")


def test_the_tiles_job_records_the_slide_it_read(tmp_path, slide_path):
    tile_dir = tmp_path / "tiles" / "s1"
    select_tiles(str(slide_path), str(tmp_path / "tiles" / "s1.csv"), str(tile_dir), TILES)
    stamp = sources.read_stamp(Layout(str(tmp_path)).tile_source("s1"))
    assert stamp == sources.SourceStamp.of(slide_path)
    assert sorted(p.name for p in tile_dir.iterdir()) == ["chunk0000.npz", "source.json"]  # no file per tile


def test_a_slide_changing_under_the_tiles_job_is_one_line_and_no_table(tmp_path, slide_path, monkeypatch, capsys):
    slide = tmp_path / "s1.tiff"
    shutil.copy(slide_path, slide)
    read = WSI.read

    def read_then_change(self, x, y):  # the file changes while the job reads it (a copy still running)
        tile = read(self, x, y)
        touch_later(slide)
        return tile

    monkeypatch.setattr(WSI, "read", read_then_change)
    table = tmp_path / "tiles" / "s1.csv"
    with pytest.raises(SystemExit):
        run_job(select_tiles, source=str(slide), table_path=str(table), tile_dir=str(tmp_path / "tiles/s1"),
                params=TILES)  # fmt: skip
    log = capsys.readouterr().err
    err = log.strip().splitlines()[-1]  # after the job's INFO lines
    assert "Traceback" not in log
    assert err.startswith(f"slidegrad: error: slide 's1': '{slide}' changed while its tiles job read it (then ")
    assert err.endswith("; rerun once it is complete (was it still being copied?)") and "\n" not in err
    assert not table.exists() and not (tmp_path / "tiles/s1/source.json").exists()


@pytest.mark.parametrize("when", ["before", "during"])
def test_the_overview_names_a_slide_changed_since_its_tiles(project, tmp_path, monkeypatch, when):  # noqa: F811
    slide = tmp_path / "s1.tiff"
    shutil.copy(project["slide"], slide)
    layout = Layout(str(project["outdir"]))
    sources.write_stamp(layout.tile_source("s1"), sources.SourceStamp.of(slide))
    if when == "before":
        touch_later(slide)
        since = "after its tiles were read"
    else:
        thumbnail = WSI.thumbnail

        def thumbnail_then_change(self, *args, **kwargs):
            picture = thumbnail(self, *args, **kwargs)
            touch_later(slide)
            return picture

        monkeypatch.setattr(WSI, "thumbnail", thumbnail_then_change)
        since = "while the overview job read it"
    with pytest.raises(InputError) as err:
        _write(project, tmp_path, slide_path=str(slide))
    assert str(err.value).startswith(f"slide 's1': '{slide}' changed {since} (then ")
    assert str(err.value).endswith(f"; delete its tile table '{layout.tile_table('s1')}' and rerun to tile it again")
    assert not (tmp_path / "fig").exists()


def test_the_overview_draws_a_slide_its_record_matches(project, tmp_path):  # noqa: F811
    layout = Layout(str(project["outdir"]))
    sources.write_stamp(layout.tile_source("s1"), sources.SourceStamp.of(project["slide"]))
    args = _write(project, tmp_path)
    assert all(os.path.getsize(p) > 0 for p in args["out_paths"])
