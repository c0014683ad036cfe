"""The model zoo: every torchvision classification builder and a broad sample of timm families.

One place for the list of models, the input each one gets and the check every one must pass;
``tests/test_zoo.py`` runs the check (``pytest -m zoo``), ``python -m benchmarks.zoo_table``
writes ``docs/models.md`` from the list (and from a results file of a zoo run).

The check (:func:`check_model`), on a randomly initialised model with a 7-class head:

1. ``tickets.find_classifier`` / ``find_stem`` name the right tensors: the classifier is every
   weight with 7 output rows (aux heads of Inception/GoogLeNet aside), the stem is the first
   convolution or linear layer to run plus every one that receives the input tensor itself
   (found by forward hooks).
2. One global round of magnitude pruning at 50% over ``tickets.prunable_parameters`` (stem
   and classifier dense): the number of surviving weights is exact.
3. Two optimizer steps (AdamW; plain SGD above 50M parameters, to hold no optimizer state;
   gradients clipped, the batches are tiny), no forward between the last step and the check:
   every ``<name>_orig`` gets a gradient, zero at its pruned entries, and the pruned entries
   of ``<name>_orig`` stay zero.
4. In eval mode the model's output equals that of an *unpruned* copy of the architecture
   loaded with ``tickets.snapshot`` (``orig * mask``): the forward that really runs uses the
   masked current weights of every pruned tensor, functionally read weights included.
5. ``Ticket.from_model`` / ``save`` / ``load`` / ``apply`` onto an unpruned model with other
   weights gives the same output; ``prune.remove`` on every tensor leaves the same output.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

import tickets

NUM_CLASSES = 7  # an unusual count: the classifier is every weight with 7 output rows
AMOUNT = 0.5
STEPS = 2
BIG = 50_000_000  # parameters above which the optimizer keeps no state (memory)

__all__ = ["ZooModel", "TORCHVISION", "TIMM", "ALL", "FAST", "check_model", "NUM_CLASSES"]


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo.

    Attributes:
        source: ``"torchvision"`` or ``"timm"``.
        name: the builder / ``timm.create_model`` name.
        family: the family, for the table.
        size: input height = width (the smallest the architecture sensibly takes).
        kwargs: extra builder arguments (``img_size=``, ``image_size=``, ...).
        note: what, if anything, is special about the model for the library.
        extra_stem: stem weights that see a transformed input (not the input tensor itself).
    """

    source: str
    name: str
    family: str
    size: int = 32
    kwargs: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    extra_stem: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{'tv' if self.source == 'torchvision' else 'timm'}-{self.name}"

    def build(self) -> nn.Module:
        if self.source == "torchvision":
            import torchvision

            builder = torchvision.models.get_model_builder(self.name)
            return builder(weights=None, num_classes=NUM_CLASSES, **self.kwargs)
        import timm

        return timm.create_model(self.name, pretrained=False, num_classes=NUM_CLASSES, **self.kwargs)


def _tv(name: str, family: str, size: int = 32, note: str = "", **kwargs: Any) -> ZooModel:
    return ZooModel("torchvision", name, family, size, kwargs, note)


def _timm(name: str, family: str, size: int = 32, note: str = "", extra_stem: tuple[str, ...] = (),
          **kwargs: Any) -> ZooModel:
    return ZooModel("timm", name, family, size, kwargs, note, extra_stem)


_TV_FAMILY = {
    "alexnet": "AlexNet", "convnext": "ConvNeXt", "densenet": "DenseNet",
    "efficientnet_v2": "EfficientNetV2", "efficientnet": "EfficientNet", "googlenet": "GoogLeNet",
    "inception": "Inception v3", "maxvit": "MaxViT", "mnasnet": "MNASNet",
    "mobilenet_v2": "MobileNetV2", "mobilenet_v3": "MobileNetV3", "regnet_x": "RegNetX",
    "regnet_y": "RegNetY", "resnext": "ResNeXt", "resnet": "ResNet", "shufflenet": "ShuffleNetV2",
    "squeezenet": "SqueezeNet", "swin_v2": "Swin V2", "swin": "Swin", "vgg": "VGG",
    "vit": "ViT", "wide_resnet": "Wide ResNet",
}

_MHA = ("nn.MultiheadAttention reads out_proj.weight functionally and owns in_proj_weight: "
        "both masked by the root guard")
_SWIN = "attention reads qkv/proj weights functionally (F.linear): masked by the root guard"
_TV_NOTES = {
    "squeezenet": "the classifier is a 1x1 convolution (classifier.1)",
    "inception_v3": "train mode returns (logits, aux logits); AuxLogits.fc stays prunable; 299 px (the aux head needs it)",
    "googlenet": "train mode returns (logits, aux2, aux1); aux1.fc2/aux2.fc2 stay prunable",
    "vit": _MHA,
    "swin": _SWIN,
    "maxvit": "classifier is classifier.5; needs its 224 px input (partition size 7)",
}

_TV_KWARGS: dict[str, dict[str, Any]] = {
    "vit_b_16": {"image_size": 32}, "vit_b_32": {"image_size": 32},
    "vit_l_16": {"image_size": 32}, "vit_l_32": {"image_size": 32},
    "vit_h_14": {"image_size": 28},
    "inception_v3": {"init_weights": True, "aux_logits": True},
    "googlenet": {"init_weights": True, "aux_logits": True},
}
_TV_SIZE = {"alexnet": 64, "inception_v3": 299, "maxvit_t": 224, "vit_h_14": 28}


def _torchvision_models() -> list[ZooModel]:
    import torchvision

    out = []
    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        family = next((f for p, f in _TV_FAMILY.items() if name.startswith(p)), name)
        note = next((n for p, n in _TV_NOTES.items() if name.startswith(p)), "")
        out.append(_tv(name, family, _TV_SIZE.get(name, 32), note, **_TV_KWARGS.get(name, {})))
    return out


_TIMM_ATTN = "attention with q_bias/v_bias calls F.linear(x, self.qkv.weight): masked by the root guard"

TIMM: list[ZooModel] = [
    _timm("resnet10t", "ResNet"),
    _timm("resnext26ts", "ResNeXt"),
    _timm("regnetx_002", "RegNet"),
    _timm("densenet121", "DenseNet"),
    _timm("efficientnet_b0", "EfficientNet"),
    _timm("mobilenetv3_small_050", "MobileNetV3"),
    _timm("mobilenetv4_conv_small_035", "MobileNetV4"),
    _timm("convnext_atto", "ConvNeXt"),
    _timm("vit_tiny_patch16_224", "ViT", img_size=32),
    _timm("deit_tiny_distilled_patch16_224", "DeiT", note="two heads (head, head_dist): both dense",
          img_size=32),
    _timm("swin_tiny_patch4_window7_224", "Swin", 64, img_size=64, window_size=2),
    _timm("beit_base_patch16_224", "BEiT", note=_TIMM_ATTN, img_size=32),
    _timm("eva02_tiny_patch14_224", "EVA-02", 28, note=_TIMM_ATTN, img_size=28),
    _timm("mixer_s32_224", "MLP-Mixer", img_size=32),
    _timm("coatnet_nano_cc_224", "CoAtNet", 64, img_size=64),
    _timm("levit_128s", "LeViT", 64, note="Linear/Conv with fused BN (ConvNorm, LinearNorm)", img_size=64),
    _timm("levit_conv_128s", "LeViT (conv)", 64, img_size=64),
    _timm("maxvit_pico_rw_256", "MaxViT", 64, img_size=64),
    _timm("poolformer_s12", "PoolFormer"),
    _timm("poolformerv2_s12", "PoolFormerV2"),
    _timm("cait_xxs24_224", "CaiT", img_size=32),
    _timm("xcit_nano_12_p16_224", "XCiT", img_size=32),
    _timm("efficientformer_l1", "EfficientFormer", 224, note="attention biases fixed at 224 px"),
    _timm("efficientformerv2_s0", "EfficientFormerV2", 64, img_size=64),
    _timm("fastvit_t8", "FastViT", 64),
    _timm("edgenext_xx_small", "EdgeNeXt", 64),
    _timm("ghostnet_050", "GhostNet"),
    _timm("ghostnetv2_100", "GhostNetV2", 64),
    _timm("rexnet_100", "ReXNet"),
    _timm("nf_regnet_b0", "NF-RegNet", note="ScaledStdConv2d: the masked weight is standardised in forward"),
    _timm("nf_resnet26", "NF-ResNet", note="ScaledStdConv2d: the masked weight is standardised in forward"),
    _timm("resnetv2_50x1_bit", "ResNetV2 (BiT)", note="StdConv2d: the masked weight is standardised in forward"),
    _timm("pit_ti_224", "PiT", 64, img_size=64),
    _timm("twins_pcpvt_small", "Twins-PCPVT", 64, img_size=64),
    _timm("twins_svt_small", "Twins-SVT", 64, img_size=64),
    _timm("crossvit_tiny_240", "CrossViT", 240, extra_stem=("patch_embed.1.proj.weight",),
          note="two stems (one per branch; the second sees the input resized): both dense"),
    _timm("volo_d1_224", "VOLO", 64, img_size=64),
    _timm("mobilevit_xxs", "MobileViT", 64),
    _timm("mobilevitv2_050", "MobileViTV2", 64),
    _timm("convit_tiny", "ConViT", img_size=32),
    _timm("tiny_vit_5m_224", "TinyViT", 224),
    _timm("efficientvit_m0", "EfficientViT (MSRA)", 64, img_size=64),
    _timm("efficientvit_b0", "EfficientViT (MIT)", 64),
    _timm("hiera_tiny_224", "Hiera", 224),
    _timm("gcvit_xxtiny", "GCViT", 224),
    _timm("davit_tiny", "DaViT", 64),
    _timm("focalnet_tiny_srf", "FocalNet", 64),
    _timm("pvt_v2_b0", "PVTv2", 64),
    _timm("repvit_m0_9", "RepViT", 64),
    _timm("inception_next_tiny", "InceptionNeXt", 64),
    _timm("dla46_c", "DLA", 64),
    _timm("hrnet_w18_small", "HRNet", 64),
    _timm("cs3darknet_focus_s", "CSPDarkNet", 64),
    _timm("dpn68", "DPN", 64),
    _timm("ese_vovnet19b_slim", "VoVNet", 64),
    _timm("gernet_s", "GENet (ByobNet)", 64),
    _timm("repvgg_a0", "RepVGG", 64),
    _timm("mobileone_s0", "MobileOne", 64),
    _timm("res2net50_14w_8s", "Res2Net", 64),
    _timm("legacy_seresnet18", "SE-ResNet (legacy)", 64),
    _timm("xception41", "Xception", 64),
    _timm("nest_tiny", "NesT", 64, img_size=64),
    _timm("tnt_s_patch16_224", "TNT", 64, note="the stem sees the input through nn.Unfold", img_size=64),
    _timm("visformer_tiny", "Visformer", 64, img_size=64),
    _timm("mvitv2_tiny", "MViTv2", 64, img_size=64),
    _timm("vit_relpos_small_patch16_224", "ViT (rel pos)", img_size=32),
    _timm("deit3_small_patch16_224", "DeiT III", img_size=32),
    _timm("sequencer2d_s", "Sequencer (LSTM)", 64,
          note="LSTM weights are neither conv nor linear: left dense by default"),
    _timm("convmixer_768_32", "ConvMixer", 32),
    _timm("tresnet_m", "TResNet", 64, note="the stem sees the input through space-to-depth"),
    _timm("hgnetv2_b0", "HGNetV2", 64),
    _timm("lcnet_035", "LCNet"),
    _timm("tinynet_e", "TinyNet"),
    _timm("starnet_s050", "StarNet"),
    _timm("fasternet_t0", "FasterNet", 64),
    _timm("rdnet_tiny", "RDNet", 64),
    _timm("nextvit_small", "Next-ViT", 64),
    _timm("mambaout_femto", "MambaOut", 64),
    _timm("shvit_s1", "SHViT", 64),
    _timm("vitamin_small_224", "ViTamin", 64, img_size=64),
    _timm("flexivit_small", "FlexiViT", img_size=32),
    _timm("swinv2_cr_tiny_224", "Swin V2 (CR)", 64, img_size=64, window_size=2),
    _timm("swinv2_tiny_window8_256", "Swin V2", 64, img_size=64, window_size=2),
    _timm("samvit_base_patch16_224", "SAM ViT", 64, img_size=64),
]

TORCHVISION: list[ZooModel] = _torchvision_models()
ALL: list[ZooModel] = TORCHVISION + TIMM

# The default (unmarked) subset: functional weight access in torchvision (Swin: F.linear on
# qkv.weight), a convolutional classifier, a timm attention model with
# q_bias/v_bias (F.linear on the qkv weight) and a distilled model with two heads.
FAST_IDS = ("tv-swin_t", "tv-squeezenet1_1", "timm-eva02_tiny_patch14_224",
            "timm-deit_tiny_distilled_patch16_224")
FAST: list[ZooModel] = [m for m in ALL if m.id in FAST_IDS]


# ---------------------------------------------------------------------------------- the check


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _outputs(o)]
    return []


def _prunable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every conv/linear weight by qualified name (the unpruned view)."""
    found = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if module._parameters.get("weight") is not None:
                found[f"{module_name}.weight" if module_name else "weight"] = module.weight
    return found


def expected_classifier(model: nn.Module) -> set[str]:
    """Every conv/linear weight with NUM_CLASSES output rows, aux heads aside."""
    return {q for q, w in _prunable(model).items()
            if w.shape[0] == NUM_CLASSES and "aux" not in q.lower()}


def expected_stem(model: nn.Module, x: torch.Tensor) -> set[str]:
    """The first conv/linear layer to run, and every one whose input is the input tensor itself.

    (The first to run covers stems behind a padding, an unfold or a space-to-depth.)
    """
    seen: set[str] = set()
    order: list[str] = []
    handles = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            def hook(m: nn.Module, args: Any, q: str = module_name) -> None:
                order.append(f"{q}.weight")
                if args and args[0] is x:
                    seen.add(f"{q}.weight")
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen | set(order[:1])


def _fill_other_weights(model: nn.Module) -> None:
    """Overwrite every parameter and float buffer: an unpruned model with other weights."""
    with torch.no_grad():
        for t in model.state_dict(keep_vars=True).values():  # persistent state only
            if isinstance(t, nn.Parameter):
                t.mul_(-0.5).add_(0.01)
            elif t.is_floating_point():
                t.add_(0.5)  # running variances stay positive


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> float:
    assert len(a) == len(b), f"{what}: {len(a)} outputs vs {len(b)}"
    worst = 0.0
    for x, y in zip(a, b):
        assert x.shape == y.shape, f"{what}: shapes {tuple(x.shape)} vs {tuple(y.shape)}"
        assert torch.isfinite(x).all(), f"{what}: non-finite output"
        diff = float((x - y).abs().max()) if x.numel() else 0.0
        scale = float(y.abs().max()) if y.numel() else 0.0
        worst = max(worst, diff)
        assert diff <= 1e-5 + 1e-5 * scale, f"{what}: outputs differ by {diff:.3g} (scale {scale:.3g})"
    return worst


def _forward(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.detach().clone() for t in _outputs(model(x))]


def check_model(spec: ZooModel, tmp_dir: str | os.PathLike[str],
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the zoo check on ``spec`` (raises AssertionError on failure); returns facts."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = spec.build()
    x = torch.randn(2, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(1))
    facts: dict[str, Any] = {"id": spec.id, "params": sum(p.numel() for p in model.parameters())}

    # 1. keep_dense finds the classifier and the stem
    model.eval()
    want_stem = expected_stem(model, x) | set(spec.extra_stem)
    want_classifier = expected_classifier(model)
    got_classifier = set(tickets.find_classifier(model))
    got_stem = set(tickets.find_stem(model))
    assert got_classifier == want_classifier, f"find_classifier: {sorted(got_classifier)} != {sorted(want_classifier)}"
    assert want_stem, "no conv/linear layer runs (the check cannot find the stem)"
    assert got_stem == want_stem, f"find_stem: {sorted(got_stem)} != {sorted(want_stem)}"
    facts["classifier"], facts["stem"] = sorted(got_classifier), sorted(got_stem)

    # 2. one global round at 50%: exact count
    params = tickets.prunable_parameters(model)
    names = {id(m): n for n, m in model.named_modules()}
    chosen = {f"{names[id(m)]}.{n}".lstrip(".") for m, n in params}
    assert not chosen & (got_classifier | got_stem), "keep_dense tensors were chosen for pruning"
    total = sum(m._parameters[n].numel() for m, n in params)
    tickets.global_magnitude_prune(params, amount=AMOUNT)
    pruned = tickets.pruned_parameters(model)
    assert {q for q, _, _ in pruned} == chosen
    surviving = sum(int(m._buffers[n + "_mask"].sum()) for _, m, n in pruned)
    assert total - surviving == round(AMOUNT * total), f"{total - surviving} pruned of {total}"
    facts["pruned_tensors"], facts["weights"] = len(pruned), total

    # 3. a few optimizer steps: gradients reach <name>_orig, masked
    model.train()
    if facts["params"] > BIG:  # no optimizer state: a copy of a 600M-parameter model is 2.4 GiB
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)
    else:  # every weight moves by ~lr, whatever the (random-init, tiny-batch) gradient scale
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    target = torch.arange(x.shape[0]) % NUM_CLASSES
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        outs = [o for o in _outputs(model(x)) if o.dim() == 2 and o.shape[-1] == NUM_CLASSES]
        assert outs, "the model returned no logits"
        loss = sum(nn.functional.cross_entropy(o.float(), target) for o in outs)
        loss.backward()
        no_grad = [q for q, m, n in pruned if m._parameters[n + "_orig"].grad is None]
        assert not no_grad, f"no gradient reaches {no_grad[:3]} ({len(no_grad)} tensors)"
        if step == STEPS - 1:  # (one step is enough: the check reads every weight, slow on big models)
            for q, m, n in pruned:
                grad, mask = m._parameters[n + "_orig"].grad, m._buffers[n + "_mask"]
                assert not grad.masked_fill(mask, 0).any(), f"{q}: gradient at pruned entries (mask not in the graph)"
        if step == 0:
            dead = [q for q, m, n in pruned if not m._parameters[n + "_orig"].grad.any()]
            facts["zero_grad_tensors"] = len(dead)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # tiny batches: BN gradients explode
        opt.step()
    del opt
    model.zero_grad(set_to_none=True)
    for q, m, n in pruned:
        orig = m._parameters[n + "_orig"].detach()
        assert not orig.masked_fill(m._buffers[n + "_mask"], 0).any(), f"{q}: pruned entries moved"

    # 4. the forward that runs uses orig * mask of the current weights
    model.eval()
    out = _forward(model, x)  # the first forward after the steps: nothing cached may be stale
    for q, m, n in pruned:
        w = getattr(m, n)
        orig, mask = m._parameters[n + "_orig"], m._buffers[n + "_mask"]
        assert torch.equal(w, orig * mask), f"{q}: module.{n} is not orig * mask after the forward"
    # (memory: at most about three copies of the weights alive at once, for 600M-parameter models)
    state = tickets.snapshot(model)
    path = Path(tmp_dir) / f"{spec.id}.ticket"
    ticket = tickets.Ticket.from_model(model, rewind_state=state)
    ticket.save(path)
    del ticket

    # 5b. prune.remove leaves the same outputs
    for _, m, n in pruned:
        prune.remove(m, n)
    assert not prune.is_pruned(model)
    _assert_same(_forward(model, x), out, "after prune.remove")
    del model, pruned, params
    gc.collect()

    # 4 (continued). an unpruned copy of the architecture loaded with the snapshot
    torch.manual_seed(1)
    reference = spec.build()
    reference.load_state_dict(state)
    del state
    reference.eval()
    facts["max_diff"] = _assert_same(_forward(reference, x), out, "unpruned copy with orig*mask")

    # 5. Ticket save / load / apply onto an unpruned model with other weights
    _fill_other_weights(reference)
    loaded = tickets.Ticket.load(path)
    path.unlink()
    loaded.apply(reference)
    del loaded
    reference.eval()
    _assert_same(_forward(reference, x), out, "Ticket.apply onto a fresh model")
    del reference
    gc.collect()
    facts["seconds"] = round(time.perf_counter() - t0, 2)
    if log:
        log(f"{spec.id}: ok in {facts['seconds']} s")
    return facts


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.zoo [ID_OR_GLOB ...]``: run the check, one line per model."""
    import argparse
    import fnmatch
    import json
    import tempfile
    import traceback

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("models", nargs="*", help="ids or globs (tv-resnet18, 'timm-*'); default all")
    parser.add_argument("--results", help="append one JSON line per model to this file")
    args = parser.parse_args(argv)
    chosen = [m for m in ALL if not args.models or any(fnmatch.fnmatch(m.id, p) for p in args.models)]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for spec in chosen:
            t0 = time.perf_counter()
            try:
                facts = check_model(spec, tmp)
                facts["status"] = "pass"
                print(f"PASS {spec.id:45s} {facts['seconds']:7.2f} s  {facts['params'] / 1e6:7.1f} M",
                      flush=True)
            except Exception as e:  # report and go on
                failed += 1
                facts = {"id": spec.id, "status": "fail", "error": f"{type(e).__name__}: {e}"[:500],
                         "seconds": round(time.perf_counter() - t0, 2)}
                print(f"FAIL {spec.id:45s} {facts['seconds']:7.2f} s  {facts['error'][:300]}", flush=True)
                if os.environ.get("ZOO_TRACEBACK"):
                    traceback.print_exc()
            if args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps(facts) + "\n")
            gc.collect()
    print(f"{len(chosen) - failed}/{len(chosen)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
