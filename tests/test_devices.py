"""Devices and feeding: --device auto, one-line refusals, exact fp32 scope, device-side normalisation, pipelining."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deepsift.cli import main
from deepsift.exceptions import DeviceError
from deepsift.images import normalize_batch
from deepsift.model.backbone import build_code_config, create_backbone
from deepsift.model.devices import Runner, _tf32_switches, exact_fp32, normalize_on_device, resolve_device
from deepsift.model.engine import run_batches


def test_auto_is_cuda_when_present_else_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot be shown here")
@pytest.mark.parametrize("name", ["cuda", "cuda:7"])
def test_a_cuda_device_this_machine_lacks_is_one_line(name):
    with pytest.raises(DeviceError, match=f"device '{name}' is not usable here") as info:
        resolve_device(name)
    assert "\n" not in str(info.value) and info.value.exit_code == 1


def test_cuda_7_on_a_one_gpu_machine_names_the_gpus_it_has(monkeypatch):
    # no GPU here: torch is told it has one (the count is all this check reads)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"'cuda:7' is not usable here \(this machine has 1 CUDA GPU\(s\): "
                                          r"cuda:0\.\.cuda:0\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="not a torch device name"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot be shown here")
def test_embed_on_a_missing_gpu_exits_1_with_one_line(code_model_dir, tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    capsys.readouterr()
    assert main(["embed", str(img), "--model", str(code_model_dir), "--out", str(tmp_path / "e.parquet"),
                 "--device", "cuda:7"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'cuda:7' is not usable here" in err[0]
    assert not (tmp_path / "e.parquet").exists()


def test_exact_fp32_turns_tf32_off_on_cuda_only_and_restores():
    before = [getattr(o, a) for o, a, _ in _tf32_switches()]
    with exact_fp32(torch.device("cuda:0"), "fp32"):
        assert [getattr(o, a) for o, a, _ in _tf32_switches()] == [off for _, _, off in _tf32_switches()]
    assert [getattr(o, a) for o, a, _ in _tf32_switches()] == before
    with exact_fp32(torch.device("cuda:0"), "bf16"):  # bf16 is not promised to match: nothing changes
        assert [getattr(o, a) for o, a, _ in _tf32_switches()] == before
    with pytest.raises(RuntimeError):
        with exact_fp32(torch.device("cuda:0")):
            raise RuntimeError("the forward failed")
    assert [getattr(o, a) for o, a, _ in _tf32_switches()] == before  # restored on errors too


def test_device_side_normalisation_is_the_table_bit_for_bit():
    batch = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    batch[0, 0, :256, 0] = np.arange(224)  # every byte value somewhere
    assert torch.equal(normalize_on_device(torch.from_numpy(batch)), normalize_batch(batch))


class RecordingRunner(Runner):
    """The real CPU runner, writing down the order of launches and collects."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls: list[str] = []
        self.pipelined = True  # as on CUDA: the ordering logic runs here on the CPU

    def launch(self, batch):
        self.calls.append(f"launch {len(batch)}")
        return super().launch(batch)

    def collect(self, token):
        self.calls.append(f"collect {len(token)}")
        return super().collect(token)


def test_the_engine_launches_the_next_batch_before_collecting_the_current_one():
    assert not Runner(None, torch.device("cpu")).pipelined  # on the CPU, rows come out as soon as computed
    net = create_backbone(build_code_config(num_hidden_layers=1), seed=0).eval()
    runner = RecordingRunner(net, torch.device("cpu"))
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(7)]
    sources = arrays[:2] + [b"junk"] + arrays[2:]
    piped = list(run_batches(sources, runner, batch_size=3, workers=1))
    plain = list(run_batches(sources, lambda b: runner.collect_now(b), batch_size=3, workers=1))
    assert runner.calls == ["launch 3", "launch 3", "collect 3", "launch 1", "collect 3", "collect 1"]
    assert [[it.source for it in items] for items, _ in piped] == [[it.source for it in items] for items, _ in plain]
    for (items_a, out_a), (_, out_b) in zip(piped, plain):
        assert np.array_equal(out_a, out_b)
    assert [it.row for it in piped[0][0]] == [0, 1, None, 2] and piped[0][0][2].error.startswith("<bytes 2>: ")
