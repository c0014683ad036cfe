"""Choosing what to prune (prunable_parameters) and the sparsity report's numbers."""

from __future__ import annotations

import pytest
import timm
import torchvision
from torch import nn

import tickets


def names(model: nn.Module, pairs: list[tuple[nn.Module, str]]) -> list[str]:
    by_id = {id(m): n for n, m in model.named_modules()}
    return [f"{by_id[id(m)]}.{name}" for m, name in pairs]


def test_resnet18_keeps_classifier_and_stem_dense_by_default():
    model = torchvision.models.resnet18(num_classes=4)
    chosen = names(model, tickets.prunable_parameters(model))
    assert "fc.weight" not in chosen and "conv1.weight" not in chosen
    assert chosen[0] == "layer1.0.conv1.weight" and len(chosen) == 19  # 20 convs - stem
    assert all("bn" not in n and not n.endswith("bias") for n in chosen)
    everything = names(model, tickets.prunable_parameters(model, keep_dense=()))
    assert everything[0] == "conv1.weight" and everything[-1] == "fc.weight" and len(everything) == 21
    prac = names(model, tickets.prunable_parameters(model, keep_dense=("classifier",), kinds=("conv",)))
    assert prac[0] == "conv1.weight" and "fc.weight" not in prac and len(prac) == 20


def test_timm_models_find_head_and_stem():
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=3, depth=2)
    chosen = names(vit, tickets.prunable_parameters(vit))
    assert "head.weight" not in chosen and "patch_embed.proj.weight" not in chosen
    assert "blocks.0.attn.qkv.weight" in chosen and "blocks.1.mlp.fc2.weight" in chosen
    assert names(vit, tickets.prunable_parameters(vit, kinds=("conv",), keep_dense=())) == ["patch_embed.proj.weight"]
    resnet = timm.create_model("resnet10t", num_classes=3)
    chosen = names(resnet, tickets.prunable_parameters(resnet))
    assert tickets.find_stem(resnet) == ["conv1.0.weight"] and "conv1.0.weight" not in chosen
    assert tickets.find_classifier(resnet) == ["fc.weight"] and "fc.weight" not in chosen


def test_include_and_exclude_globs():
    model = torchvision.models.resnet18(num_classes=4)
    layer1 = names(model, tickets.prunable_parameters(model, include="layer1.*"))
    assert layer1 == [f"layer1.{b}.conv{c}.weight" for b in (0, 1) for c in (1, 2)]
    no_downsample = names(model, tickets.prunable_parameters(model, exclude=["*.downsample.*"]))
    assert len(no_downsample) == 16 and not any("downsample" in n for n in no_downsample)
    by_tensor = names(model, tickets.prunable_parameters(model, include="*.conv2.weight"))
    assert len(by_tensor) == 8


def test_a_shared_tensor_is_listed_once():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    model[1].weight = model[0].weight
    pairs = tickets.prunable_parameters(model, keep_dense=())
    assert names(model, pairs) == ["0.weight", "2.weight"]


def test_sparsity_report_numbers():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 5))
    tickets.magnitude_prune(model[0], "weight", 30)
    tickets.magnitude_prune(model[1], "weight", 0.2)
    report = tickets.sparsity_report(model)
    assert report.rows == (("0.weight", (10, 10), 100, 70), ("1.weight", (5, 10), 50, 40))
    assert (report.total, report.surviving) == (150, 110)
    assert abs(report.global_sparsity - 40 / 150) < 1e-12
    text = str(report).splitlines()
    assert text[0].split() == ["tensor", "shape", "weights", "surviving", "sparsity"]
    assert text[2].split() == ["0.weight", "10x10", "100", "70", "30.00%"]
    assert text[3].split() == ["1.weight", "5x10", "50", "40", "20.00%"]
    assert text[-1].split() == ["global", "150", "110", "26.67%"]
    ticket = tickets.Ticket.from_model(model)
    assert tickets.sparsity_report(ticket) == report
    assert abs(ticket.sparsity - report.global_sparsity) < 1e-12
    assert ticket.layer_sparsity == pytest.approx({"0.weight": 0.3, "1.weight": 0.2})
    assert tickets.sparsity_report(nn.Linear(2, 2)).global_sparsity == 0.0
