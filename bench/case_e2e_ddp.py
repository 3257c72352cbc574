"""End-to-end case on 2 ranks: the ILM-VP training step of ``case_e2e_step`` under DistributedDataParallel.

``e2e_resnet18_ilmvp_ddp2``: the same step (CIFAR-sized images -> padding prompt on a 224x224 canvas
-> frozen ResNet-18 -> frequency label mapping -> cross-entropy -> Adam on the prompt), with the
``Reprogrammer`` wrapped in ``DistributedDataParallel`` on a 2-rank gloo group on 127.0.0.1, CPU.
Each rank feeds its own shard (batch B per rank); the label mapping is fitted on the union of the
ranks' counts (SPEC §8), and every step all-reduces the prompt's gradient and broadcasts the
mapping's buffers from rank 0, as a real DDP run does.

This process is rank 0 and is the one timed. A spawned follower process is rank 1: it builds the
same two variants (fused layers, reference layers) and repeats every call rank 0 makes — the
runner's first calls, timed rounds, memory probes and final output — in the same order and with
the same grad mode, so every collective has its partner. Both ranks run one thread each (two ranks
on a two-core machine); the whole step's time therefore includes waiting for the slower rank and
the all-reduce, and the layers' clock (``LayerClock``, from ``case_e2e_step``) gives their share.
"""
from __future__ import annotations

import datetime
import multiprocessing
import socket

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .case_e2e_step import MODELS, SETTINGS, LayerClock, StepSetting, _reprogrammer
from .case_types import Case, CaseInstance, CaseUnavailable, Impl

WORLD = 2
TIMEOUT_S = 300  # a collective that waits this long means the other rank died: fail, do not hang
VARIANTS = (("fused", "fused", "auto"), ("reference", "eager", "reference"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _join(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))


class _RankStep:
    """One variant's DDP training step on this rank: ``forward()`` -> loss, ``backward(loss)`` -> Adam step."""

    def __init__(self, setting: StepSetting, model_name: str, backend: str, rank: int):
        model = MODELS[model_name](torch.device("cpu"), setting)  # seeded: the same frozen model on both ranks
        shard = torch.Generator().manual_seed(1000 + rank)
        self.x = torch.rand((setting.batch, 3, setting.input_size, setting.input_size), generator=shard)
        self.target = torch.randint(0, setting.num_target, (setting.batch,), generator=shard)
        torch.manual_seed(0)  # the same initial prompt on both ranks
        self.net = _reprogrammer(model, setting, backend, self.x, self.target)  # counts summed over the ranks
        self.ddp = DistributedDataParallel(self.net)
        self.optimizer = torch.optim.Adam(list(self.net.trainable_parameters()), lr=0.01)
        self.clock = LayerClock(self.net.input_transform, self.net.output_mapping, self.net.input_transform.delta)

    def forward(self) -> torch.Tensor:
        self.clock.start()
        return F.cross_entropy(self.ddp(self.x), self.target)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.clock.mark("optimizer0")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.clock.mark("optimizer1")
        self.clock.finish()


def _follow(port: int, setting: StepSetting, model_name: str, commands) -> None:
    """Rank 1: build the variants as rank 0 does, then repeat each (call, variant, grad mode) it is sent."""
    torch.set_num_threads(1)
    _join(1, port)
    try:
        steps = {name: _RankStep(setting, model_name, backend, 1) for name, _, backend in VARIANTS}
        losses = {}
        while True:
            command = commands.recv()
            if command[0] == "stop":
                break
            call, name, grad = command
            with torch.set_grad_enabled(grad):
                if call == "forward":
                    losses[name] = steps[name].forward()
                else:
                    steps[name].backward(losses[name])
    finally:
        dist.destroy_process_group()


class _Ranks:
    """Rank 0 (this process) and the follower process of rank 1, joined in one gloo group."""

    def __init__(self, setting: StepSetting, model_name: str):
        if dist.is_initialized():
            raise CaseUnavailable("a torch.distributed process group is already initialised in this process")
        port = _free_port()
        context = multiprocessing.get_context("spawn")
        self.commands, remote = context.Pipe()
        self.follower = context.Process(target=_follow, args=(port, setting, model_name, remote), daemon=True)
        self.follower.start()
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        _join(0, port)

    def impl(self, name: str, kind: str, step: _RankStep) -> Impl:
        def forward():
            self.commands.send(("forward", name, torch.is_grad_enabled()))
            return step.forward()

        def backward(loss):
            self.commands.send(("backward", name, torch.is_grad_enabled()))
            step.backward(loss)

        return Impl(name, kind, forward, backward, in_step=step.clock.summary)

    def close(self) -> None:
        self.commands.send(("stop",))
        self.follower.join(timeout=TIMEOUT_S)
        if self.follower.is_alive():
            self.follower.kill()
        dist.destroy_process_group()
        torch.set_num_threads(self.threads)


def _build(setting: StepSetting, model_name: str):
    def build(device: torch.device, dtype: torch.dtype) -> CaseInstance:
        if device.type != "cpu" or dtype != torch.float32:
            raise CaseUnavailable("the 2-rank DDP step runs on the CPU (gloo), in float32 only")
        if not dist.is_available():
            raise CaseUnavailable("torch.distributed is not available in this build")
        ranks = _Ranks(setting, model_name)
        try:
            impls = [ranks.impl(name, kind, _RankStep(setting, model_name, backend, 0))
                     for name, kind, backend in VARIANTS]
        except BaseException:
            ranks.close()
            raise
        notes = [f"2 gloo ranks on 127.0.0.1, 1 thread each, B={setting.batch} per rank; rank 0 timed",
                 "layers: DDP(Reprogrammer(PaddingPrompt, LabelMapping('frequency', counts summed over ranks)))"]
        return CaseInstance(impls, notes=notes, close=ranks.close)

    return build


def cases(sizes: str = "default") -> list:
    setting = SETTINGS.get(sizes, SETTINGS["default"])
    params = dict(B=setting.batch, ranks=WORLD, input=f"{setting.input_size}x{setting.input_size}",
                  canvas=f"{setting.canvas}x{setting.canvas}", model="resnet18", targets=setting.num_target)
    return [Case("e2e_step", "e2e_resnet18_ilmvp_ddp2",
                 "one ILM-VP training step under DDP on 2 gloo ranks: padding prompt + frozen ResNet-18 + "
                 "frequency label mapping (counts summed over ranks) + cross-entropy + Adam on the prompt",
                 params, _build(setting, "resnet18"), tier="default", min_reps=30)]
