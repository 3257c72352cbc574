"""Presets configured from timm and transformers source models (docs/source_models.md), no downloads:
randomly initialised timm ResNet-18 / ViT and a small transformers ViT built from a config."""
import pytest
import timm  # both test requirements (.ci/requirements.txt)
import torch
import torch.nn.functional as F
import transformers

from reprogram_ext import presets
from reprogram_ext.presets import describe_source


HF_MEAN, HF_STD = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)


@pytest.fixture(scope="module")
def timm_resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10)


@pytest.fixture(scope="module")
def timm_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=7)


def hf_config(**kwargs):
    return transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=64, num_labels=7, **kwargs)


@pytest.fixture(scope="module")
def hf_vit():
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(hf_config())


def hf_processor(**kwargs):
    return transformers.ViTImageProcessor(image_mean=list(HF_MEAN), image_std=list(HF_STD), **kwargs)


def train_step(rp, x, y):
    rp.train()
    loss = F.cross_entropy(rp(x, y), y)
    loss.backward()
    return loss


def test_timm_resnet_sets_canvas_normalisation_and_classes(timm_resnet):
    recipe = presets.ilm_vp(5, input_size=32, source=timm_resnet)
    prompt, mapping = recipe
    assert prompt.output_size == (224, 224)  # pretrained_cfg input_size (3, 224, 224)
    assert prompt.mean == presets.IMAGENET_MEAN and prompt.std == presets.IMAGENET_STD
    assert mapping.num_source == 10  # what the head outputs, not the checkpoint's 1000
    rp = recipe.reprogrammer(timm_resnet)
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    assert rp(x).shape == (2, 5)
    train_step(rp, x, y)
    assert prompt.delta.grad is not None and prompt.delta.grad.abs().sum() > 0
    assert mapping.counts.sum() == 2


def test_timm_vit_uses_its_own_size_and_mean(timm_vit):
    info = describe_source(timm_vit)
    assert info == presets.SourceInfo((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 7)
    recipe = presets.blm(3, input_size=16, source=timm_vit)
    assert recipe.input_transform.output_size == (32, 32) and recipe.output_mapping.num_source == 7
    rp = recipe.reprogrammer(timm_vit)
    train_step(rp, torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]))
    assert rp.end_epoch() and recipe.output_mapping.weight.shape == (7, 3)


def test_explicit_arguments_win_over_the_source(timm_resnet):
    prompt, mapping = presets.ilm_vp(5, input_size=16, source=timm_resnet, output_size=64, mean=(0.0,), std=(1.0,),
                                     num_source=12)
    assert prompt.output_size == (64, 64) and prompt.mean == (0.0,) and prompt.std == (1.0,)
    assert mapping.num_source == 12
    prompt, _ = presets.bahng(4, source=timm_resnet, prompt_size=8)  # Bahng's canvas is image_size
    assert prompt.image_size == (224, 224)


def test_transformers_vit_with_processor(hf_vit):
    recipe = presets.ilm_vp(3, input_size=16, source=hf_vit, processor=hf_processor())
    prompt, mapping = recipe
    assert prompt.output_size == (32, 32) and prompt.mean == HF_MEAN and prompt.std == HF_STD
    assert mapping.num_source == 7
    rp = recipe.reprogrammer(hf_vit)  # the model returns an ImageClassifierOutput: its .logits are used
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 2])
    assert rp(x).shape == (2, 3)
    train_step(rp, x, y)
    assert prompt.delta.grad.abs().sum() > 0 and mapping.counts.sum() == 2


def test_transformers_without_processor_keeps_the_default_normalisation(hf_vit):
    prompt, mapping = presets.autovp(3, input_size=16, source=hf_vit)
    assert prompt.output_size == (32, 32) and prompt.mean == presets.IMAGENET_MEAN and mapping.num_source == 7
    prompt, _ = presets.ilm_vp(3, input_size=16, source=hf_vit, processor=hf_processor(do_normalize=False))
    assert prompt.mean is None and prompt.std is None  # the processor does not normalise


def test_transformers_backbone_without_head_keeps_num_source():
    torch.manual_seed(0)
    backbone = transformers.ViTModel(hf_config())
    info = describe_source(backbone)
    assert info.image_size == (32, 32) and info.num_classes is None  # config.num_labels is a default, not a head
    assert presets.ilm_vp(3, input_size=16, source=backbone).output_mapping.num_source == 1000


def test_source_errors(timm_resnet):
    with pytest.raises(TypeError, match="source must be a timm or transformers nn.Module"):
        presets.ilm_vp(3, source="resnet18")
    with pytest.raises(TypeError, match="neither a timm model"):
        presets.ilm_vp(3, source=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="processor= is for transformers models"):
        presets.ilm_vp(3, source=timm_resnet, processor=hf_processor())
    with pytest.raises(ValueError, match="processor= needs source="):
        presets.ilm_vp(3, processor=hf_processor())


def test_reprogrammer_refuses_outputs_without_logits():
    from reprogram_ext.nn import LabelMapping, PaddingPrompt, Reprogrammer

    class Tuple(torch.nn.Module):
        def forward(self, x):
            return (x.flatten(1)[:, :4],)

    rp = Reprogrammer(Tuple(), PaddingPrompt(2, 2, channels=1), LabelMapping(4, 2, "identity"))
    with pytest.raises(TypeError, match="expected a tensor of source logits or an output object with a .logits"):
        rp(torch.rand(1, 1, 2, 2))
