"""Two training processes on the CPU (torchrun, gloo over loopback): ranks stay in step, and one DDP step
equals one process computing the two half-batches' losses separately and averaging the gradients.

Run it like the Ray tests, in a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up; python -m pytest tests/test_train_ddp.py'
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from deepsift.train.config import make_config
from deepsift.train.data import build_index, split_holdout
from deepsift.train.loader import StepBatches
from deepsift.train.loop import build_model, lr_at, micro_loss, param_groups
from deepsift.train.metrics import read_log
from trainkit import make_dataset, tiny_config, write_yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(argv: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "deepsift", "-q", "train", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ddp"), 32)


def test_two_ranks_stay_identical_and_one_step_averages_the_half_batches(data, tmp_path):
    shards, reals = data
    keys = tiny_config(steps=1, warmup_steps=0, lr=1e-3, batch_size=4, steps_per_epoch=10)
    common = ["--data", str(shards), "--real", str(reals), "--config", str(write_yaml(tmp_path / "t.yaml", keys))]
    # several steps: the ranks' weights are bit-identical at the end
    _torchrun([*common, "--out", str(tmp_path / "many"), "--steps", "4"], tmp_path)
    end = [e for e in read_log(tmp_path / "many/train_log.jsonl") if e.get("event") == "end"][-1]
    assert end["world"] == 2 and len(end["rank_weight_digests"]) == 2
    assert end["rank_weight_digests"][0] == end["rank_weight_digests"][1]
    # one step against a single process: the averaged gradient of the two half-batches
    _torchrun([*common, "--out", str(tmp_path / "one")], tmp_path)
    cfg = make_config(**keys)
    index = build_index([str(shards)], real=str(reals))
    train_recs, _ = split_holdout(index, cfg.holdout, cfg.seed)
    model = build_model(cfg)
    grads = []
    for rank in (0, 1):
        batch = StepBatches(index.files, train_recs, cfg.batch_size, cfg.seed, rank, 2, cfg.aug_max_ops)[0]
        model.zero_grad()
        micro_loss(model, batch["views"], cfg, 0, rank, 0, torch.device("cpu")).total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    mean = {n: (grads[0][n] + grads[1][n]) / 2 for n in grads[0]}
    ck = load_file(str(tmp_path / "one/checkpoint/optimizer.safetensors"))
    groups = param_groups(model, cfg.weight_decay)
    order = [id(p) for g in groups for p in g["params"]]
    names = {id(p): n for n, p in model.named_parameters()}
    worst = 0.0
    for i, pid in enumerate(order):
        first_moment = ck[f"opt.{i}.exp_avg"]  # = (1 - beta1) * grad after one AdamW step
        worst = max(worst, float((first_moment / 0.1 - mean[names[pid]]).abs().max()))
    assert worst < 1e-5, worst
    # and the weights are those of one AdamW step with that gradient
    for p in model.parameters():
        p.grad = mean[names[id(p)]]
    opt = torch.optim.AdamW(groups, lr=lr_at(0, cfg))
    opt.step()
    saved = load_file(str(tmp_path / "one/checkpoint/model.safetensors"))
    state = model.state_dict()
    assert max(float((saved[k] - state[k]).abs().max()) for k in saved) < 1e-5


def test_global_negatives_train_in_step_and_rank_0_alone_evaluates_the_left_out_generator(data, tmp_path):
    shards, reals = data
    keys = tiny_config(steps=2, batch_size=4, steps_per_epoch=10)
    proc = _torchrun(["--data", str(shards), "--real", str(reals), "--config",
                      str(write_yaml(tmp_path / "t.yaml", keys)), "--out", str(tmp_path / "g"), "--global-negatives",
                      "--leave-out", "up-bilinear"], tmp_path)
    said = proc.stdout.splitlines()
    assert sum("up-bilinear (left out): auroc" in ln for ln in said) == 1, said  # one summary, from rank 0
    assert sum(ln.startswith("report: ") for ln in said) == 1, said
    log = read_log(tmp_path / "g/train_log.jsonl")
    end = [e for e in log if e.get("event") == "end"][-1]
    assert end["rank_weight_digests"][0] == end["rank_weight_digests"][1]
    assert log[0]["config"]["global_negatives"] is True
    losses = [e["loss"] for e in log if "loss" in e]
    # chance level: 2 log(1 + 8) = 4.39 with both ranks' 4 negatives, 2 log(1 + 4) = 3.22 with this rank's only
    assert len(losses) == 2 and all(4.0 < v < 8.0 for v in losses), losses
