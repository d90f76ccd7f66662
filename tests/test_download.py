"""download(): only the DANDI network call is faked; digests, files, renames and errors are real."""

import hashlib
import json

import pytest
import requests
from dandi.support.digests import get_digest

import download_data
from nlbpipe import download as dl
from nlbpipe.datasets import DATASETS, UnknownDatasetError
from nlbpipe.synthetic import write_synthetic

INFO = DATASETS["mc_maze_small"]


class FakeAsset:
    """Stands in for dandi's RemoteAsset: path, size, digest and a resumable byte stream."""

    def __init__(self, path, content: bytes, tmp_path, fail_after=None, digest=None):
        self.path, self.content, self.size = path, content, len(content)
        scratch = tmp_path / ("blob-" + hashlib.md5(path.encode()).hexdigest())
        scratch.write_bytes(content)
        self._digest = digest or get_digest(scratch, "dandi-etag")
        self.fail_after = fail_after
        self.starts = []

    def get_raw_digest(self, digest_type=None):
        assert digest_type in (None, "dandi-etag")
        return self._digest

    def get_download_file_iter(self, chunk_size=8 * 1024 * 1024):
        def iterate(start=0):
            self.starts.append(start)
            sent = 0
            for i in range(start, self.size, 1000):
                if self.fail_after is not None and sent >= self.fail_after:
                    raise requests.exceptions.ConnectionError("connection reset by peer")
                chunk = self.content[i : i + 1000]
                sent += len(chunk)
                yield chunk

        return iterate


@pytest.fixture
def fake_dandi(monkeypatch, tmp_path):
    assets = {
        INFO.train_file: FakeAsset(INFO.train_file, b"train-bytes " * 700, tmp_path),
        INFO.test_file: FakeAsset(INFO.test_file, b"test-bytes " * 300, tmp_path),
        "sub-Jenkins/other.json": FakeAsset("sub-Jenkins/other.json", b"{}", tmp_path),
    }
    calls = []

    def fake_assets(info):
        calls.append((info.dandiset, info.version))
        return list(assets.values())

    monkeypatch.setattr(dl, "_dandi_assets", fake_assets)
    return assets, calls


def test_downloads_into_dandi_layout_at_pinned_version(fake_dandi, nlb_home):
    assets, calls = fake_dandi
    paths = dl.download("mc_maze_small", progress=False)
    assert calls == [("000140", "0.220113.0408")]
    assert sorted(paths) == sorted([INFO.train_path(nlb_home.data_raw), INFO.test_path(nlb_home.data_raw)])
    assert INFO.train_path(nlb_home.data_raw).read_bytes() == assets[INFO.train_file].content
    assert not list(nlb_home.data_raw.rglob("*.part"))
    assert not (nlb_home.data_raw / "000140" / "sub-Jenkins" / "other.json").exists()


def test_complete_files_are_skipped(fake_dandi, tmp_path):
    assets, _ = fake_dandi
    dl.download("mc_maze_small", tmp_path / "raw", progress=False)
    starts = [len(a.starts) for a in assets.values()]
    dl.download("mc_maze_small", tmp_path / "raw", progress=False)
    assert [len(a.starts) for a in assets.values()] == starts


def test_wrong_local_file_is_replaced(fake_dandi, tmp_path):
    assets, _ = fake_dandi
    train = INFO.train_path(tmp_path / "raw")
    train.parent.mkdir(parents=True)
    train.write_bytes(b"x" * assets[INFO.train_file].size)  # right size, wrong content
    dl.download("mc_maze_small", tmp_path / "raw", progress=False)
    assert train.read_bytes() == assets[INFO.train_file].content


def test_interrupted_download_leaves_no_final_file_and_resumes(fake_dandi, tmp_path):
    assets, _ = fake_dandi
    asset = assets[INFO.train_file]
    asset.fail_after = 3000
    with pytest.raises(dl.DownloadError, match="000140"):
        dl.download("mc_maze_small", tmp_path / "raw", progress=False)
    final = INFO.train_path(tmp_path / "raw")
    part = final.with_name(final.name + ".part")
    assert not final.exists() and part.stat().st_size == 3000
    asset.fail_after = None
    dl.download("mc_maze_small", tmp_path / "raw", progress=False)
    assert asset.starts[-1] == 3000  # resumed where it stopped
    assert final.read_bytes() == asset.content and not part.exists()


def test_corrupt_download_is_rejected(fake_dandi, tmp_path):
    assets, _ = fake_dandi
    assets[INFO.test_file]._digest = "0" * 32 + "-1"
    with pytest.raises(dl.DownloadError, match="does not match"):
        dl.download("mc_maze_small", tmp_path / "raw", progress=False)
    final = INFO.test_path(tmp_path / "raw")
    assert not final.exists() and not final.with_name(final.name + ".part").exists()


def test_offline_error_names_dandiset_and_nlb_data_raw(monkeypatch, tmp_path, capsys, nlb_home):
    def offline(info):
        raise requests.exceptions.ConnectionError("Name or service not known")

    monkeypatch.setattr(dl, "_dandi_assets", offline)
    with pytest.raises(dl.DownloadError) as err:
        dl.download("mc_rtt", tmp_path, progress=False)
    assert "000129" in str(err.value) and "NLB_DATA_RAW" in str(err.value)
    assert download_data.main(["mc_rtt", "--no-progress"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and "000129" in stderr and "NLB_DATA_RAW" in stderr
    assert not list(nlb_home.data_raw.rglob("*.nwb"))


def test_refuses_to_mix_with_synthetic(fake_dandi, tmp_path):
    write_synthetic("mc_maze_small", tmp_path / "syn", scale=0.05, targets=False)
    with pytest.raises(dl.DownloadError, match="synthetic"):
        dl.download("mc_maze_small", tmp_path / "syn", progress=False)


def test_unknown_dataset(capsys):
    with pytest.raises(UnknownDatasetError, match="mc_maze_small"):
        dl.download("mc_mazes")
    assert download_data.main(["mc_mazes"]) == 2
    assert "valid" in capsys.readouterr().err


def test_script_writes_synthetic(nlb_home, capsys):
    assert download_data.main(["--synthetic", "area2_bump", "--scale", "0.02", "--seed", "2"]) == 0
    assert DATASETS["area2_bump"].train_path(nlb_home.synthetic_raw).is_file()
    assert (nlb_home.synthetic_raw / "000127" / "sub-Han" / "eval_data_test.h5").is_file()
    out = capsys.readouterr().out  # the check ran after the write: counts, shapes, verdict
    assert "units 49 held-in / 16 held-out" in out and "area2_bump_20 test:" in out and "area2_bump: ok" in out
    assert download_data.main(["--synthetic", "area2_bump", "--scale", "2"]) == 2
    assert "scale" in capsys.readouterr().err
    manifest = json.loads((nlb_home.synthetic_raw / "synthetic_manifest.json").read_text())
    assert manifest["datasets"]["area2_bump"]["realism"] == "realistic"
    # another realism replaces what was built on the files: refused without --force, as another seed is
    assert download_data.main(["--synthetic", "area2_bump", "--scale", "0.02", "--seed", "2", "--easy"]) == 2
    assert "--force" in capsys.readouterr().err
    assert download_data.main(["--synthetic", "area2_bump", "--scale", "0.02", "--seed", "2", "--easy", "--force"]) == 0
    assert "easy" in capsys.readouterr().out
    manifest = json.loads((nlb_home.synthetic_raw / "synthetic_manifest.json").read_text())
    assert manifest["datasets"]["area2_bump"]["realism"] == "easy"
