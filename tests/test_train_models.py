from dataclasses import replace

import pytest
import torch

from brisc.kinds import KINDS, MODEL_KINDS
from brisc.train.models import (ARCHITECTURES, HFViTClassifier, StackedAutoencoder, ViTConfig, VisionTransformer,
                                build_model, preset_config)
from brisc.train.models.sae import SAEConfig
from brisc.train.models.vit import load_hf_vit_state


def _hf_config(**kw):
    from transformers import ViTConfig as HFConfig

    return HFConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                    image_size=224, patch_size=16, **{"num_labels": 4, **kw})


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["vit", "sae"])
def test_forward_shapes_and_finite(kind, x):
    m = build_model(kind, preset_config(kind, "tiny")).eval()
    out = m(x, output_attentions=True)
    assert out.logits.shape == (2, 4) and torch.isfinite(out.logits).all()
    if kind == "vit":
        assert len(out.attentions) == m.config.depth
        a = out.attentions[0]
        assert a.shape == (2, m.config.heads, 197, 197)
        assert torch.allclose(a.sum(-1), torch.ones(()), atol=1e-5)
    else:
        assert out.attentions is None


def test_hf_vit_from_local_dir_gets_a_4_class_head(tmp_path, x):
    from transformers import ViTForImageClassification

    ViTForImageClassification(_hf_config(num_labels=10)).save_pretrained(tmp_path / "hf")
    m = HFViTClassifier.from_pretrained(str(tmp_path / "hf")).eval()
    assert m.config._attn_implementation == "eager"
    out = m(x, output_attentions=True)
    assert out.logits.shape == (2, 4) and torch.isfinite(out.logits).all()
    assert len(out.attentions) == 3 and out.attentions[0].shape == (2, 3, 197, 197)
    assert m.config.id2label[2] == "no_tumor"


def test_homemade_vit_matches_transformers_vit(x):
    """Same weights -> same logits and attention weights as transformers' ViTForImageClassification."""
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    hf = ViTForImageClassification._from_config(_hf_config(), attn_implementation="eager").eval()
    ours = VisionTransformer(ViTConfig(dim=48, depth=3, heads=3, mlp_ratio=2.0, norm_eps=1e-12, drop_path=0.0)).eval()
    load_hf_vit_state(ours, hf.state_dict())
    with torch.no_grad():
        ref = hf(pixel_values=x, output_attentions=True)
        out = ours(x, output_attentions=True)
    assert (out.logits - ref.logits).abs().max() <= 1e-5
    for a, b in zip(out.attentions, ref.attentions):
        assert (a - b).abs().max() <= 1e-5
    assert ref.logits.abs().max() > 1e-3  # not a vacuous comparison of zeros


def test_conv_stem_makes_the_same_tokens_and_refuses_what_it_cannot_build(x):
    from dataclasses import replace

    m = VisionTransformer(replace(preset_config("vit", "tiny"), stem="conv")).eval()
    assert m.patch_embed(x).shape == VisionTransformer(preset_config("vit", "tiny")).patch_embed(x).shape
    assert m(x, output_attentions=True).attentions[0].shape[-1] == 197
    with pytest.raises(ValueError, match="needs patch_size 16"):
        VisionTransformer(replace(preset_config("vit", "tiny"), stem="conv", patch_size=32))
    with pytest.raises(ValueError, match="unknown stem 'cnn'"):
        VisionTransformer(replace(preset_config("vit", "tiny"), stem="cnn"))
    with pytest.raises(RuntimeError, match="stem='conv'"):
        load_hf_vit_state(m, {})


def test_distillation_token_has_its_own_head_and_the_logits_are_the_heads_mean(x):
    from dataclasses import replace

    from brisc.train.distill import distillation_loss

    torch.manual_seed(0)
    m = VisionTransformer(replace(preset_config("vit", "tiny"), distill_token=True, registers=1)).eval()
    out = m(x, output_attentions=True)
    cls, dist = out.head_logits
    assert not torch.allclose(cls, dist) and torch.allclose(out.logits, (cls + dist) / 2)
    assert out.attentions[0].shape[-1] == 1 + 1 + 1 + 196 and m.num_prefix_tokens == 3
    assert VisionTransformer(preset_config("vit", "tiny"))(x).head_logits is None
    y, teacher = torch.tensor([0, 1]), torch.tensor([[0.0, 0.0, 3.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(distillation_loss((cls, dist), y, teacher),
                          0.5 * ce(cls, y) + 0.5 * ce(dist, torch.tensor([2, 0])))
    # The soft form: tau^2 x KL(teacher || student) at temperature tau, nothing when the [DIST] head is the teacher.
    assert torch.allclose(distillation_loss((cls, dist), y, dist.detach(), tau=3.0), 0.5 * ce(cls, y))
    pt, ps = torch.softmax(teacher / 2, 1), torch.softmax(dist / 2, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    assert torch.allclose(distillation_loss((cls, dist), y, teacher, tau=2.0), 0.5 * ce(cls, y) + 0.5 * 4 * kl, atol=1e-6)


def test_fused_and_explicit_attention_give_the_same_logits(x):
    torch.manual_seed(0)
    m = VisionTransformer(ViTConfig(dim=64, depth=2, heads=4, drop_path=0.0)).eval()
    with torch.no_grad():
        fused = m(x).logits
        m.set_fused_attn(False)
        explicit = m(x).logits
        with_weights = m(x, output_attentions=True).logits
    assert (fused - explicit).abs().max() <= 1e-5
    assert torch.equal(explicit, with_weights)


def test_head_major_and_prefix_only_last_keep_logits_and_cls_rows(x):
    torch.manual_seed(0)
    m = VisionTransformer(ViTConfig(dim=64, depth=2, heads=4, drop_path=0.0, registers=2, distill_token=True)).eval()
    m.set_fused_attn(False)
    with torch.no_grad():
        ref = m(x, output_attentions=True)
        m.set_head_major(True)
        lean = m(x, output_attentions=True, prefix_only_last=True)
    p = m.num_prefix_tokens
    assert lean.attentions[-1].shape[-2:] == (p, p + 196)  # [CLS], [DIST] and the registers still attend
    assert (lean.logits - ref.logits).abs().max() <= 1e-5
    for a, b in zip(lean.attentions, ref.attentions, strict=True):
        assert (a[:, :, :p] - b[:, :, :p]).abs().max() <= 1e-6


def test_standardized_sae_ignores_brightness_and_contrast_and_exports(tmp_path):
    import onnxruntime as ort

    from brisc.export.onnx import export_onnx
    from brisc.export.wrapper import ExportWrapper

    torch.manual_seed(0)
    m = StackedAutoencoder(SAEConfig(hidden=(64, 16), dropout=0.0, standardize=True)).eval()
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        v = m.view(x)
        assert v.mean(1).abs().max() < 1e-5 and (v.std(1) - 1).abs().max() < 1e-3
        assert (m(x * 0.6 + 0.1).logits - m(x).logits).abs().max() < 1e-3  # a darker, flatter scan: same answer
    w = ExportWrapper(m)
    path = tmp_path / "sae.onnx"
    export_onnx(w, path, images=x.numpy(), opset=18, metadata={})
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        ref = [t.numpy() for t in w(x)]
    for name, g, r in zip(w.names, got, ref, strict=True):
        assert abs(g - r).max() <= 1e-5, name


def test_sae_layerwise_pretraining_lowers_reconstruction_loss(x):
    torch.manual_seed(0)
    m = StackedAutoencoder(SAEConfig(hidden=(64, 16)))
    batch = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    for layer in range(2):
        opt = torch.optim.Adam([*m.encoders[layer].parameters(), *m.decoders[layer].parameters()], lr=1e-3)
        torch.manual_seed(2)
        first = m.pretrain_loss(batch, layer).item()
        for _ in range(60):
            loss = m.pretrain_loss(batch, layer)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.manual_seed(2)
        assert m.pretrain_loss(batch, layer).item() < 0.7 * first


def test_sae_saliency_equals_autograd_gradient_times_input(x):
    torch.manual_seed(0)
    m = StackedAutoencoder(SAEConfig(hidden=(64, 16), dropout=0.0)).eval()
    v = m.view(x).detach().requires_grad_(True)
    logits = m.head(m.encode(v))
    logits[torch.arange(2), logits.argmax(-1)].sum().backward()
    ref = (v.grad * v).abs().reshape(2, 1, 56, 56)
    ref = torch.nn.functional.avg_pool2d(ref, 4).flatten(1)
    ref = (ref - ref.min(1, keepdim=True).values) / (ref.max(1, keepdim=True).values - ref.min(1, keepdim=True).values)
    with torch.no_grad():
        sal = m.saliency(x, m(x).logits)
    assert sal.shape == (2, 14, 14)
    assert torch.allclose(sal.flatten(1), ref, atol=1e-5)


def test_overrides_parse_by_declared_type_and_leave_the_preset_alone():
    from brisc.train.config import TRAIN_PRESETS
    from brisc.train.models import preset_config
    from brisc.train.overrides import apply_overrides, parse_item

    vit, train = preset_config("vit", "cpu"), TRAIN_PRESETS["cpu"]["vit"]
    before = (vit.depth, train.augment.rotation)
    items = [parse_item(i) for i in ("vit.depth=8", "vit.drop_path=0", "vit.augment.rotation=7.5",
                                     "vit.augment.scale=0.8, 1.2", "vit.bf16=false", "sae.hidden=512,64")]
    m, t = apply_overrides("vit", vit, train, items)
    assert (m.depth, m.drop_path, m.dim) == (8, 0.0, vit.dim)
    assert (t.augment.rotation, t.augment.scale, t.bf16, t.lr) == (7.5, (0.8, 1.2), False, train.lr)
    assert isinstance(m.depth, int) and isinstance(t.augment.rotation, float)
    assert (preset_config("vit", "cpu").depth, TRAIN_PRESETS["cpu"]["vit"].augment.rotation) == before != (8, 7.5)
    s, _ = apply_overrides("sae", preset_config("sae", "cpu"), TRAIN_PRESETS["cpu"]["sae"], items)
    assert s.hidden == (512, 64)  # tuple[int, ...]: any length
    m2, _ = apply_overrides("vit", vit, train, [parse_item("vit.depth=8"), parse_item("vit.depth=3")])
    assert m2.depth == 3  # in order: a later item wins (experiments/vit_sweep.sh relies on it)
    assert apply_overrides("hf_vit", None, TRAIN_PRESETS["cpu"]["hf_vit"], [parse_item("hf_vit.lr=1e-5")])[1].lr == 1e-5


def test_hf_vit_recipe_follows_where_its_checkpoint_was_pretrained(tmp_path):
    """A brisc-pretrain encoder trains with the preset's recipe (guided, lr 1e-3); a checkpoint pretrained elsewhere
    (a hub id, or a downloaded directory without pretrain.json) is fine-tuned gently; explicit flags still win."""
    from brisc.train.cli import RunOptions, recipes
    from brisc.train.config import HF_PRETRAINED_ELSEWHERE, TRAIN_PRESETS

    mae = tmp_path / "mae"
    mae.mkdir()
    (mae / "pretrain.json").write_text("{}")
    downloaded = tmp_path / "vit-base"
    downloaded.mkdir()

    def hf_recipe(hf_model, **kw):
        opts = RunOptions(data=tmp_path, out=tmp_path / "run", models=("hf_vit",), hf_model=str(hf_model),
                          **{"preset": "cpu", **kw})  # run_training picks cpu or gpu by the device; here, cpu
        return replace(recipes(opts, "cpu")["hf_vit"][1], bf16=TRAIN_PRESETS[opts.preset]["hf_vit"].bf16)  # per CPU

    assert hf_recipe(mae) == TRAIN_PRESETS["cpu"]["hf_vit"] and hf_recipe(mae).guide_weight > 0
    for elsewhere in ("google/vit-base-patch16-224-in21k", downloaded):
        cfg = hf_recipe(elsewhere)
        assert {k: getattr(cfg, k) for k in HF_PRETRAINED_ELSEWHERE["cpu"]} == HF_PRETRAINED_ELSEWHERE["cpu"]
        assert cfg.lr < TRAIN_PRESETS["cpu"]["hf_vit"].lr / 10
    assert hf_recipe(downloaded, lr=3e-4).lr == 3e-4
    assert hf_recipe(downloaded, overrides=("hf_vit.epochs=7",)).epochs == 7
    assert hf_recipe(downloaded, preset="tiny") == TRAIN_PRESETS["tiny"]["hf_vit"]  # the tests' random checkpoints


def test_bf16_autocast_only_where_the_cpu_has_bf16(monkeypatch):
    """Emulated bf16 (AVX2, or AVX-512 without BF16) is several times slower than fp32: presets fall back to fp32."""
    from brisc import hardware

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    on, why = hardware.choose_bf16(None, True, "cpu")
    assert not on and "emulated" in why
    on, why = hardware.choose_bf16(True, True, "cpu")  # asked for explicitly: honoured, with the warning
    assert on and "emulated" in why
    assert hardware.choose_bf16(None, True, "cuda")[0] and not hardware.choose_bf16(None, False, "cpu")[0]
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert hardware.choose_bf16(None, True, "cpu")[0] and not hardware.choose_bf16(False, True, "cpu")[0]
    assert "avx512_bf16" in hardware.describe()


def test_one_registry_of_model_kinds():
    """brisc.kinds (names, display names, maps) and the builders list the same kinds, in the same order."""
    assert tuple(ARCHITECTURES) == MODEL_KINDS == tuple(KINDS)
    for kind in MODEL_KINDS:
        assert KINDS[kind].attention == (kind != "sae")
        assert (ARCHITECTURES[kind].presets is None) == (kind == "hf_vit")  # the HF ViT brings its architecture
