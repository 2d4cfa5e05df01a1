"""FSDP2 (``torch.distributed.fsdp.fully_shard``) on CPU processes with gloo: a tiny Llama sharded over the
processes against an unsharded copy on the same global batch (launched by tests/train/test_processes.py:
``torchrun --nproc_per_node 2 tests/train/fsdp2_cpu.py``). Prints one JSON line from rank 0."""

from __future__ import annotations

import copy
import json

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import LlamaConfig, LlamaForCausalLM


def main(steps: int = 4) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=512, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    ref = copy.deepcopy(model)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    local = sum(p.to_local().numel() for p in model.parameters() if isinstance(p, DTensor))
    full = sum(p.numel() for p in ref.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    ropt = torch.optim.AdamW(ref.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    per = 8 // world
    diffs = []
    for _ in range(steps):
        batch = torch.randint(0, 512, (8, 32), generator=g)
        mine = batch[rank * per:(rank + 1) * per]
        loss = model(input_ids=mine, labels=mine).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        mean /= world
        rl = ref(input_ids=batch, labels=batch).loss
        rl.backward()
        ropt.step()
        ropt.zero_grad()
        diffs.append(abs(mean.item() - rl.item()))
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        rsd = ref.state_dict()
        print(json.dumps({"world": world, "sharded_fraction": local / full, "max_loss_diff": max(diffs),
                          "max_param_diff": max((sd[k] - rsd[k]).abs().max().item() for k in sd),
                          "dtensor_params": sum(isinstance(p, DTensor) for p in model.parameters())}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
