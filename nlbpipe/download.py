"""Download NLB'21 datasets from DANDI (pinned versions) into ``<NLB_DATA_RAW>/<dandiset>/sub-*/``.

Through the ``dandi`` client's public API (``DandiAPIClient`` -> ``RemoteAsset``). Files already
complete (size and DANDI etag match the asset) are skipped; a download streams into
``<file>.part`` and is renamed only once its size and digest check out, so a final name never
holds a partial file, and an interrupted download resumes from the ``.part`` file.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .datasets import DATASETS, DatasetInfo, UnknownDatasetError
from .errors import NlbpipeError
from .settings import get_settings

logger = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024
DIGEST_TYPE = "dandi-etag"


class DownloadError(NlbpipeError, RuntimeError):
    """DANDI unreachable, an asset missing or corrupt, or a folder of the wrong kind."""


def _dandi_assets(info: DatasetInfo) -> list:
    """The network call: this dataset's assets at its pinned version (``RemoteAsset`` objects)."""
    from dandi.dandiapi import DandiAPIClient

    # dandi logs every failed request with a full traceback; a failure here becomes one
    # DownloadError that says what to do, so its log stays quiet during the call
    dandi_log = logging.getLogger("dandi")
    level = dandi_log.level
    dandi_log.setLevel(logging.CRITICAL)
    try:
        with DandiAPIClient() as client:
            dandiset = client.get_dandiset(info.dandiset, info.version)
            return list(dandiset.get_assets_with_path_prefix(f"sub-{info.subject}/"))
    finally:
        dandi_log.setLevel(level)


def _local_digest(path: Path) -> str:
    from dandi.support.digests import get_digest

    return get_digest(path, DIGEST_TYPE)


def _is_complete(path: Path, asset) -> bool:
    if not path.is_file() or path.stat().st_size != asset.size:
        return False
    return _local_digest(path) == asset.get_raw_digest(DIGEST_TYPE)


def _offline_error(info: DatasetInfo, err: Exception) -> DownloadError:
    return DownloadError(
        f"cannot download {info.name} (DANDI dandiset {info.dandiset}, version {info.version}): "
        f"DANDI is unreachable ({type(err).__name__}: {str(err)[:160]}). If the files were downloaded "
        f"elsewhere, copy or mount them and set NLB_DATA_RAW to the folder that holds "
        f"{info.dandiset}/{info.train_file.split('/')[0]}/ (e.g. export NLB_DATA_RAW=/data/nlb/raw)"
    )


def _refuse_synthetic(folder: Path) -> None:
    from .contracts import SYNTHETIC_MANIFEST as MANIFEST_NAME
    from .synthetic import is_synthetic_nwb

    if (folder.parent.parent / MANIFEST_NAME).is_file():
        raise DownloadError(f"{folder.parent.parent} is a synthetic root ({MANIFEST_NAME}); real "
                            "downloads go under NLB_DATA_RAW, never into the synthetic root")
    if folder.is_dir():
        for nwb in folder.glob("*.nwb"):
            if is_synthetic_nwb(nwb):
                raise DownloadError(f"{folder} holds synthetic stand-ins ({nwb.name}); refusing to mix "
                                    "real downloads with them: point NLB_DATA_RAW elsewhere")


def _progress(total: int, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, file=sys.stderr, leave=True)


def _fetch(asset, final: Path, progress: bool) -> None:
    """Stream ``asset`` into ``final.part`` (resuming), verify, then rename onto ``final``."""
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if offset > asset.size:
        part.unlink()
        offset = 0
    if offset < asset.size:
        chunks = asset.get_download_file_iter(CHUNK)
        with open(part, "ab") as out, _progress(asset.size, offset, final.name, progress) as bar:
            for chunk in chunks(offset):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if size != asset.size or _local_digest(part) != asset.get_raw_digest(DIGEST_TYPE):
        part.unlink(missing_ok=True)
        raise DownloadError(f"downloaded {final.name} does not match DANDI's asset (size {size} vs "
                            f"{asset.size}, or digest); removed it, run the download again")
    os.replace(part, final)


def download(dataset: str, raw_dir: Path | None = None, progress=True) -> list[Path]:
    """Download ``dataset``'s NWB files (pinned DANDI version); returns their local paths."""
    import requests

    if dataset not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    info = DATASETS[dataset]
    raw = Path(raw_dir).expanduser().absolute() if raw_dir is not None else get_settings().data_raw
    wanted = {info.train_file, info.test_file}
    folder = info.train_path(raw).parent
    _refuse_synthetic(folder)
    try:
        assets = [a for a in _dandi_assets(info) if a.path in wanted]
    except (requests.exceptions.RequestException, OSError) as err:
        raise _offline_error(info, err) from err
    found = {a.path for a in assets}
    if found != wanted:
        raise DownloadError(f"DANDI {info.dandiset}/{info.version} lacks {', '.join(sorted(wanted - found))}")
    paths = []
    for asset in sorted(assets, key=lambda a: a.path):
        final = raw / info.dandiset / asset.path
        if _is_complete(final, asset):
            logger.info("%s already complete, skipping", final)
        else:
            try:
                _fetch(asset, final, progress)
            except (requests.exceptions.RequestException, ConnectionError) as err:
                raise _offline_error(info, err) from err
        paths.append(final)
    return paths
