"""The pickle check used on run folders (conftest.pickled_files) finds a pickle of every protocol,
torch.save's zip and pickled object arrays, by their bytes, and passes a clean run."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
from conftest import pickle_kind, pickled_files


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_of_any_protocol_is_found(tmp_path, protocol):
    for i, value in enumerate([{"a": 1}, [1.0, "x"], OrderedDict(a=1), (1, 2), np.arange(3)]):
        path = tmp_path / f"p{protocol}-{i}.bin"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        assert pickle_kind(path) is not None, (protocol, value, path.read_bytes()[:8])


def test_torch_save_and_object_arrays_are_found(tmp_path):
    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.bin")
    assert pickle_kind(tmp_path / "weights.bin").startswith("torch zip")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "mixed.npz", fine=np.arange(3), objects=np.array(["a", None], dtype=object))
    assert pickle_kind(tmp_path / "objects.npy") == "object array"
    assert pickle_kind(tmp_path / "mixed.npz") == "object array (objects.npy)"
    assert set(pickled_files(tmp_path)) == {"weights.bin", "objects.npy", "mixed.npz"}


def test_plain_files_are_not_pickles(tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "a.json").write_text('{"x": [1, 2]}')
    (tmp_path / "b.json").write_text("[1, 2]")
    (tmp_path / "c.yaml").write_text("name: x\n")
    (tmp_path / "d.jsonl").write_text('{"epoch": 1}\n')
    np.savez(tmp_path / "e.npz", a=np.arange(3), b=np.array(["x", "y"]))
    np.save(tmp_path / "f.npy", np.ones((2, 2)))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "g.safetensors"))
    (tmp_path / "h.txt").write_text("(in brackets first) is text, not a pickle.")
    (tmp_path / "i.txt").write_text("c")
    assert pickled_files(tmp_path) == {}


def test_a_trained_run_folder_holds_no_pickle(tmp_path):
    from damoxing.api import train

    run = train({"name": "p", "data": {"source": "builtin:iris"}, "model": {"type": "mlp", "size": "tiny"}, "train": {"epochs": 1},
                 "tracking": {"report": True}}, out=tmp_path / "run", quiet=True)
    names = {p.name for p in run.path.iterdir()}
    assert {"model.safetensors", "splits.npz", "predictions_test.npz", "metrics.json"} <= names
    assert pickled_files(run.path) == {}
    torch_file = run.path.parent / "copy" / "model.pt"
    torch_file.parent.mkdir()
    import torch

    torch.save(torch.nn.Linear(2, 2).state_dict(), torch_file)
    assert pickled_files(torch_file.parent) == {"model.pt": "torch zip (model/data.pkl)"}
