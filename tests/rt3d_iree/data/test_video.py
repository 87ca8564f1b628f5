"""UCF101 / HMDB51 loaders on tiny real videos written with PyAV in the official folder layouts.

Each video's top half is its class colour and its bottom half a grey level that encodes the frame
number, so a decoded clip says which video and which frames it came from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av  # noqa: E402  (a hard dependency: CI must run these tests, never skip them)
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rt3d_iree.data import video
from rt3d_iree.errors import Rt3dError

W, H = 40, 32
FRAMES, SIZE = 8, 16
CODEC = "mpeg4"  # what UCF101's own AVIs use (Xvid); bundled in every PyAV wheel
UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
HMDB_ACTIONS = ["cartwheel", "brush_hair", "catch"]  # deliberately unsorted on disk
COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]
LONG, SHORT = 20, 5  # frames per video; one video per data set is SHORT < FRAMES


def grey(i: int) -> int:
    return 20 + 10 * i


def write_video(path: Path, n: int, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(CODEC, rate=25)
        s.width, s.height, s.pix_fmt, s.bit_rate = W, H, "yuv420p", 2_000_000
        for i in range(n):
            a = np.empty((H, W, 3), np.uint8)
            a[: H // 2] = colour
            a[H // 2 :] = grey(i)
            c.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        c.mux(s.encode(None))


def crlf(lines: list[str]) -> bytes:
    """Official split files: CRLF endings, here also a blank line and a trailing blank."""
    return ("\r\n".join(lines[:1] + [""] + lines[1:]) + "\r\n\r\n").encode()


def ucf_name(cls: str, g: int) -> str:
    # UCF101's own quirk: folder HandstandPushups, files v_HandStandPushups_*.
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls
    return f"{cls}/v_{stem}_g{g:02d}_c01.avi"


def make_ucf(root: Path) -> Path:
    """3 classes x 3 groups; split k tests on group k and trains on the other two."""
    for c, cls in enumerate(UCF_CLASSES):
        for g in (1, 2, 3):
            n = SHORT if (c, g) == (0, 3) else LONG
            write_video(root / ucf_name(cls, g), n, COLOURS[c])
    sdir = root / "ucfTrainTestlist"
    sdir.mkdir()
    (sdir / "classInd.txt").write_bytes(crlf([f"{i + 1} {cls}" for i, cls in enumerate(UCF_CLASSES)]))
    for k in (1, 2, 3):
        train = [f"{ucf_name(cls, g)} {c + 1}" for c, cls in enumerate(UCF_CLASSES) for g in (1, 2, 3) if g != k]
        test = [ucf_name(cls, k) for cls in UCF_CLASSES]
        (sdir / f"trainlist0{k}.txt").write_bytes(crlf(train))
        (sdir / f"testlist0{k}.txt").write_bytes(crlf(test))
    return root


def hmdb_name(action: str, v: int) -> str:
    return f"{action}_video_{v}_f_nm_np1_fr_med_{v}.avi"


# split -> video number -> id (1 train, 2 test, 0 unused)
HMDB_IDS = {1: {0: 1, 1: 1, 2: 2, 3: 0}, 2: {0: 2, 1: 1, 2: 1, 3: 0}, 3: {0: 1, 1: 2, 2: 1, 3: 0}}


def make_hmdb(root: Path) -> Path:
    for a, action in enumerate(HMDB_ACTIONS):
        for v in range(4):
            n = SHORT if (a, v) == (0, 1) else LONG
            write_video(root / action / hmdb_name(action, v), n, COLOURS[a])
    sdir = root / "testTrainMulti_7030_splits"
    sdir.mkdir()
    for k, ids in HMDB_IDS.items():
        for action in HMDB_ACTIONS:
            lines = [f"{hmdb_name(action, v)} {ids[v]} " for v in range(4)]  # official trailing space
            (sdir / f"{action}_test_split{k}.txt").write_bytes(crlf(lines))
    return root


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ucf(tmp_path_factory.mktemp("ucf"))


@pytest.fixture(scope="module")
def hmdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hmdb(tmp_path_factory.mktemp("hmdb"))


@pytest.fixture
def ucf_copy(ucf_root: Path, tmp_path: Path) -> Path:
    """A private copy for tests that break the data set."""
    return Path(shutil.copytree(ucf_root, tmp_path / "UCF101"))


@pytest.fixture
def hmdb_copy(hmdb_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(hmdb_root, tmp_path / "HMDB51"))


def to_pixels(clip: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: [3, T, S, S] float -> [T, S, S, 3] in 0..255."""
    mean = torch.tensor(video.MEAN).view(3, 1, 1, 1)
    std = torch.tensor(video.STD).view(3, 1, 1, 1)
    return ((clip * std + mean) * 255).permute(1, 2, 3, 0).numpy()


def frame_numbers(clip: torch.Tensor) -> list[int]:
    """Which source frame each clip frame is, from the grey level of the bottom half."""
    bottom = to_pixels(clip)[:, SIZE * 3 // 4, SIZE // 2, :].mean(-1)
    return [round((float(g) - 20) / 10) for g in bottom]


def clip_colour(clip: torch.Tensor) -> np.ndarray:
    return to_pixels(clip)[:, SIZE // 4, SIZE // 2, :].mean(0)


def names(ds: video.VideoClips) -> list[str]:
    return sorted(p.name for p, _ in ds.samples)


# ----------------------------------------------------------------------------- classes and splits


def test_ucf_classes_and_labels(ucf_root: Path) -> None:
    for train in (True, False):
        ds = video.ucf101(ucf_root, split=1, train=train, frames=FRAMES, size=SIZE)
        assert ds.classes == UCF_CLASSES
        for path, label in ds.samples:
            assert path.parent.name == UCF_CLASSES[label]
            assert isinstance(label, int)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf_split_membership(ucf_root: Path, split: int) -> None:
    train = video.ucf101(ucf_root, split=split, train=True)
    test = video.ucf101(ucf_root, split=split, train=False)
    want_test = sorted(Path(ucf_name(c, split)).name for c in UCF_CLASSES)
    want_train = sorted(Path(ucf_name(c, g)).name for c in UCF_CLASSES for g in (1, 2, 3) if g != split)
    assert names(test) == want_test
    assert names(train) == want_train
    assert len(train) == 6 and len(test) == 3


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb_split_membership(hmdb_root: Path, split: int) -> None:
    train = video.hmdb51(hmdb_root, split=split, train=True)
    test = video.hmdb51(hmdb_root, split=split, train=False)
    assert train.classes == test.classes == sorted(HMDB_ACTIONS)
    ids = HMDB_IDS[split]
    assert names(train) == sorted(hmdb_name(a, v) for a in HMDB_ACTIONS for v in range(4) if ids[v] == 1)
    assert names(test) == sorted(hmdb_name(a, v) for a in HMDB_ACTIONS for v in range(4) if ids[v] == 2)
    for path, label in [*train.samples, *test.samples]:
        assert path.parent.name == train.classes[label]


# ----------------------------------------------------------------------------- clips


def test_clip_shape_dtype_and_colour(ucf_root: Path) -> None:
    ds = video.ucf101(ucf_root, split=1, train=False, frames=FRAMES, size=SIZE)
    for i in range(len(ds)):
        clip, label = ds[i]
        assert clip.shape == (3, FRAMES, SIZE, SIZE) and clip.dtype == torch.float32
        assert isinstance(label, int)
        np.testing.assert_allclose(clip_colour(clip), COLOURS[label], atol=12)


def test_hmdb_colour_matches_label(hmdb_root: Path) -> None:
    ds = video.hmdb51(hmdb_root, split=1, train=True, frames=FRAMES, size=SIZE)
    for i in range(len(ds)):
        clip, label = ds[i]
        assert clip.shape == (3, FRAMES, SIZE, SIZE)
        np.testing.assert_allclose(clip_colour(clip), COLOURS[HMDB_ACTIONS.index(ds.classes[label])], atol=12)


def test_eval_window_is_centred_and_deterministic(ucf_root: Path) -> None:
    ds = video.ucf101(ucf_root, split=1, train=False, frames=FRAMES, size=SIZE)
    start = (LONG - FRAMES) // 2
    clip, _ = ds[1]
    assert frame_numbers(clip) == list(range(start, start + FRAMES))
    ds.set_epoch(5)  # no effect on eval
    torch.manual_seed(123)
    assert torch.equal(ds[1][0], clip)


def test_train_window_depends_on_epoch_and_reproduces(ucf_root: Path) -> None:
    ds = video.ucf101(ucf_root, split=3, train=True, frames=FRAMES, size=SIZE, seed=7)
    again = video.ucf101(ucf_root, split=3, train=True, frames=FRAMES, size=SIZE, seed=7)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        again.set_epoch(epoch)
        clip, _ = ds[0]
        torch.manual_seed(epoch + 100)  # the global RNG must not matter
        assert torch.equal(again[0][0], clip)
        got = frame_numbers(clip)
        assert got == list(range(got[0], got[0] + FRAMES))  # contiguous
        assert 0 <= got[0] <= LONG - FRAMES
        starts.add(got[0])
    assert len(starts) > 1, "train windows should change with the epoch"
    ds.set_epoch(0)
    other_seed = video.ucf101(ucf_root, split=3, train=True, frames=FRAMES, size=SIZE, seed=8)
    assert any(not torch.equal(ds[i][0], other_seed[i][0]) for i in range(len(ds)))


def test_short_video_is_looped(ucf_root: Path) -> None:
    for split, train in ((3, False), (1, True)):  # the short video is group 3
        ds = video.ucf101(ucf_root, split=split, train=train, frames=FRAMES, size=SIZE)
        i = next(i for i, (p, _) in enumerate(ds.samples) if p.name == Path(ucf_name(UCF_CLASSES[0], 3)).name)
        clip, label = ds[i]
        assert clip.shape == (3, FRAMES, SIZE, SIZE) and label == 0
        assert frame_numbers(clip) == [k % SHORT for k in range(FRAMES)]


def test_dataloader_batches(hmdb_root: Path) -> None:
    ds = video.hmdb51(hmdb_root, split=2, train=True, frames=FRAMES, size=SIZE)
    batches = list(DataLoader(ds, batch_size=4, shuffle=False, num_workers=0))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    x, y = batches[0]
    assert x.shape == (4, 3, FRAMES, SIZE, SIZE) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [label for _, label in ds.samples[:4]]


def test_video_clips_from_a_list(ucf_root: Path) -> None:
    path = ucf_root / ucf_name(UCF_CLASSES[2], 1)
    ds = video.VideoClips([(str(path), 2)], frames=4, size=8, classes=UCF_CLASSES)
    clip, label = ds[0]
    assert clip.shape == (3, 4, 8, 8) and label == 2 and len(ds) == 1
    with pytest.raises(IndexError):
        ds[1]


# ----------------------------------------------------------------------------- bad input


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(Rt3dError, match=r"UCF101 folder .*nope does not exist") as e:
        video.ucf101(tmp_path / "nope")
    assert "ucfTrainTestlist" in str(e.value) and "what to do" in str(e.value)
    with pytest.raises(Rt3dError, match=r"HMDB51 folder .*nope does not exist"):
        video.hmdb51(tmp_path / "nope")


@pytest.mark.parametrize("split", [0, 4, "1", True])
def test_bad_split_number(ucf_root: Path, hmdb_root: Path, split: object) -> None:
    with pytest.raises(Rt3dError, match="split must be 1, 2 or 3"):
        video.ucf101(ucf_root, split=split)  # type: ignore[arg-type]
    with pytest.raises(Rt3dError, match="split must be 1, 2 or 3"):
        video.hmdb51(hmdb_root, split=split)  # type: ignore[arg-type]


def test_missing_split_folder(ucf_root: Path, hmdb_root: Path, tmp_path: Path) -> None:
    with pytest.raises(Rt3dError, match=r"UCF101 split folder .*elsewhere does not exist"):
        video.ucf101(ucf_root, split_dir=tmp_path / "elsewhere")
    with pytest.raises(Rt3dError, match=r"HMDB51 split folder .*elsewhere does not exist"):
        video.hmdb51(hmdb_root, split_dir=tmp_path / "elsewhere")
    # split_dir= pointing at a real folder elsewhere works
    moved = Path(shutil.copytree(ucf_root / "ucfTrainTestlist", tmp_path / "lists"))
    assert len(video.ucf101(ucf_root, split_dir=moved)) == 6


@pytest.mark.parametrize("name", ["classInd.txt", "trainlist02.txt"])
def test_missing_ucf_split_file(ucf_copy: Path, name: str) -> None:
    (ucf_copy / "ucfTrainTestlist" / name).unlink()
    with pytest.raises(Rt3dError, match=rf"split file .*ucfTrainTestlist[/\\]{name} does not exist"):
        video.ucf101(ucf_copy, split=2, train=True)


def test_missing_hmdb_split_file(hmdb_copy: Path) -> None:
    (hmdb_copy / "testTrainMulti_7030_splits" / "catch_test_split2.txt").unlink()
    with pytest.raises(Rt3dError, match=r"catch_test_split2\.txt does not exist"):
        video.hmdb51(hmdb_copy, split=2)
    assert len(video.hmdb51(hmdb_copy, split=1)) == 6  # the other splits still load
    for f in (hmdb_copy / "testTrainMulti_7030_splits").glob("*_split3.txt"):
        f.unlink()
    with pytest.raises(Rt3dError, match=r"no <action>_test_split3\.txt files"):
        video.hmdb51(hmdb_copy, split=3)


def test_missing_videos_are_named(ucf_copy: Path) -> None:
    gone = [ucf_name("Basketball", 2), ucf_name("HandstandPushups", 3)]
    for rel in gone:
        (ucf_copy / rel).unlink()
    with pytest.raises(Rt3dError, match=r"2 of 6 UCF101 videos listed in .*trainlist01\.txt are missing") as e:
        video.ucf101(ucf_copy, split=1, train=True)
    for rel in gone:
        assert Path(rel).name in str(e.value)
    assert len(video.ucf101(ucf_copy, split=1, train=False)) == 3  # test list is complete


def test_missing_videos_hint_nested_ucf_folder(ucf_root: Path, tmp_path: Path) -> None:
    """The UCF101 rar extracts to UCF-101/; passing its parent should say so."""
    (tmp_path / "UCF-101").mkdir()
    shutil.copytree(ucf_root / "ucfTrainTestlist", tmp_path / "ucfTrainTestlist")
    with pytest.raises(Rt3dError, match=r"6 of 6 UCF101 videos .*missing(.|\n)*pass that folder as root"):
        video.ucf101(tmp_path)


def test_missing_hmdb_videos(hmdb_copy: Path) -> None:
    shutil.rmtree(hmdb_copy / "catch")
    with pytest.raises(Rt3dError, match=r"2 of 6 HMDB51 videos .*missing.*catch_video_0"):
        video.hmdb51(hmdb_copy, split=1, train=True)


def test_empty_split(ucf_copy: Path, hmdb_copy: Path) -> None:
    (ucf_copy / "ucfTrainTestlist" / "testlist01.txt").write_bytes(b"\r\n\r\n")
    with pytest.raises(Rt3dError, match=r"testlist01\.txt lists no videos"):
        video.ucf101(ucf_copy, split=1, train=False)
    sdir = hmdb_copy / "testTrainMulti_7030_splits"
    for f in sdir.glob("*_split1.txt"):
        f.write_bytes(f.read_bytes().replace(b" 2 ", b" 0 "))
    with pytest.raises(Rt3dError, match=r"HMDB51 split 1 lists no test videos"):
        video.hmdb51(hmdb_copy, split=1, train=False)


def test_malformed_split_lines(ucf_copy: Path, hmdb_copy: Path) -> None:
    (ucf_copy / "ucfTrainTestlist" / "testlist01.txt").write_bytes(b"Unknown/v_Unknown_g01_c01.avi\r\n")
    with pytest.raises(Rt3dError, match=r"class folder 'Unknown' is not in .*classInd\.txt"):
        video.ucf101(ucf_copy, split=1, train=False)
    (ucf_copy / "ucfTrainTestlist" / "trainlist01.txt").write_bytes(b"Basketball/v_Basketball_g02_c01.avi 9\r\n")
    with pytest.raises(Rt3dError, match=r"label 9, outside 1\.\.3"):
        video.ucf101(ucf_copy, split=1, train=True)
    (hmdb_copy / "testTrainMulti_7030_splits" / "catch_test_split1.txt").write_bytes(b"x.avi 7\r\n")
    with pytest.raises(Rt3dError, match=r"catch_test_split1\.txt line 1 is 'x\.avi 7'"):
        video.hmdb51(hmdb_copy, split=1)


def test_corrupt_video_names_file(ucf_copy: Path) -> None:
    bad = ucf_copy / ucf_name("Basketball", 1)
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    ds = video.ucf101(ucf_copy, split=2, train=True, frames=FRAMES, size=SIZE)  # construction does not decode
    i = next(i for i, (p, _) in enumerate(ds.samples) if p == bad)
    with pytest.raises(Rt3dError, match=rf"cannot (open|decode) video .*{bad.name}") as e:
        ds[i]
    assert e.value.__cause__ is None and e.value.__suppress_context__
    ds[(i + 1) % len(ds)]  # the others still load


@pytest.mark.parametrize("kw", [{"frames": 0}, {"size": -1}, {"frames": 2.5}, {"seed": -1}])
def test_bad_clip_arguments(ucf_root: Path, kw: dict[str, object]) -> None:
    with pytest.raises(Rt3dError, match=rf"{next(iter(kw))} must be a"):
        video.ucf101(ucf_root, **kw)  # type: ignore[arg-type]


def test_label_out_of_range(ucf_root: Path) -> None:
    with pytest.raises(Rt3dError, match=r"label 3 .* outside 0\.\.2"):
        video.VideoClips([(ucf_root / ucf_name(UCF_CLASSES[0], 1), 3)], classes=UCF_CLASSES)
