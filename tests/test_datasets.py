from pathlib import Path

import pytest

from nlbpipe.datasets import BIN_SIZES, DATASETS, UnknownDatasetError, all_keys, dataset_key, resolve


def test_seven_datasets_fourteen_keys():
    assert list(DATASETS) == ["mc_maze", "mc_rtt", "area2_bump", "dmfc_rsg", "mc_maze_large",
                              "mc_maze_medium", "mc_maze_small"]
    keys = all_keys()
    assert len(keys) == 14 == len(set(keys))
    assert "mc_maze_small" in keys and "mc_maze_small_20" in keys
    for key in keys:
        info, bin_ms = resolve(key)
        assert dataset_key(info.name, bin_ms) == key and bin_ms in BIN_SIZES


def test_resolve_bins():
    assert resolve("mc_maze_20") == (DATASETS["mc_maze"], 20)
    assert resolve("mc_maze_small") == (DATASETS["mc_maze_small"], 5)
    assert resolve("mc_maze_small_20") == (DATASETS["mc_maze_small"], 20)


@pytest.mark.parametrize("bad", ["mc_maze_10", "maze", "", "mc_maze_small_5"])
def test_unknown_key_lists_every_valid_key(bad):
    with pytest.raises(UnknownDatasetError) as err:
        resolve(bad)
    assert all(k in str(err.value) for k in all_keys())
    assert isinstance(err.value, ValueError)


def test_dataset_key_rejects_bad_bin():
    with pytest.raises(UnknownDatasetError, match="bin"):
        dataset_key("mc_maze", 10)


def test_dandi_facts():
    maze = DATASETS["mc_maze"]
    assert (maze.dandiset, maze.version, maze.subject) == ("000128", "0.220113.0400", "Jenkins")
    assert maze.train_file == "sub-Jenkins/sub-Jenkins_ses-full_desc-train_behavior+ecephys.nwb"
    assert maze.test_file == "sub-Jenkins/sub-Jenkins_ses-full_desc-test_ecephys.nwb"
    assert DATASETS["dmfc_rsg"].train_file == "sub-Haydn/sub-Haydn_desc-train_ecephys.nwb"
    assert DATASETS["mc_rtt"].train_file == "sub-Indy/sub-Indy_desc-train_behavior+ecephys.nwb"
    assert maze.train_path("/raw") == Path("/raw/000128/sub-Jenkins/sub-Jenkins_ses-full_desc-train_behavior+ecephys.nwb")
    counts = {n: (d.n_heldin, d.n_heldout) for n, d in DATASETS.items()}
    assert counts == {"mc_maze": (137, 45), "mc_rtt": (98, 32), "area2_bump": (49, 16), "dmfc_rsg": (40, 14),
                      "mc_maze_large": (122, 40), "mc_maze_medium": (114, 38), "mc_maze_small": (107, 35)}
    small = DATASETS["mc_maze_small"]
    assert (small.n_train, small.n_val, small.n_test) == (75, 25, 100)
    assert (DATASETS["mc_maze_large"].n_train, DATASETS["mc_maze_large"].n_val) == (375, 125)
    # DANDI asset summaries (issue 9): n_train is the train split alone everywhere
    trials = {n: (d.n_train, d.n_val, d.n_test) for n, d in DATASETS.items()}
    assert trials["mc_rtt"] == (810, 270, 272)
    assert trials["area2_bump"][2] == 98 and trials["dmfc_rsg"][2] == 283
    assert DATASETS["dmfc_rsg"].unconfirmed == ("train", "val")
    assert all(not d.unconfirmed for n, d in DATASETS.items() if n != "dmfc_rsg")
    assert {d.dandiset for d in DATASETS.values()} == {"000127", "000128", "000129", "000130", "000138",
                                                       "000139", "000140"}
