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


def test_two_devices_share_every_batch_and_keep_the_rows_in_order():
    from deepsift.model.devices import MultiRunner

    net = create_backbone(build_code_config(num_hidden_layers=1), seed=0).eval()
    single, multi = Runner(net, torch.device("cpu")), MultiRunner(net, [torch.device("cpu"), torch.device("cpu")])
    assert multi.runners[0].net is net and multi.runners[1].net is not net  # each device its own copy
    rng = np.random.default_rng(2)
    for n in (1, 2, 5, 8):
        batch = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
        assert len(multi.launch(batch)) == min(n, 2)
        np.testing.assert_allclose(multi(batch), single(batch), atol=1e-5, rtol=0)


def test_embed_with_devices_cpu_cpu_equals_one_device_row_for_row(code_model_dir, labelled_folders, tmp_path):
    from deepsift.model.embeddings import read_embeddings

    folder = str(labelled_folders["real"])
    base = ["embed", folder, "--model", str(code_model_dir), "--batch-size", "5", "--workers", "1"]
    assert main([*base, "--out", str(tmp_path / "one.parquet"), "--device", "cpu"]) == 0
    assert main([*base, "--out", str(tmp_path / "two.parquet"), "--devices", "cpu,cpu"]) == 0
    src1, emb1, _ = read_embeddings(tmp_path / "one.parquet")
    src2, emb2, _ = read_embeddings(tmp_path / "two.parquet")
    assert src1 == src2 and len(src1) > 5
    np.testing.assert_allclose(emb2, emb1, atol=1e-5, rtol=0)


def test_devices_option_errors(code_model_dir, tmp_path, capsys):
    args = ["embed", str(code_model_dir / "config.json"), "--model", str(code_model_dir),
            "--out", str(tmp_path / "e.parquet")]
    assert main([*args, "--devices", "gpu0,gpu1"]) == 2  # not device names: bad usage
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert main([*args, "--devices", "cpu,cuda:7"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "device 'cuda:7' is not usable here" in err[0]
