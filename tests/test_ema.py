import pytest
import torch

from brisc.train.config import TrainConfig
from brisc.train.ema import WeightAverage
from brisc.train.engine import ResumeError, check_same_recipe, current_recipe
from brisc.train.models import build_model, preset_config


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_the_average_moves_toward_the_weights_by_the_warmed_up_decay_and_copies_integer_buffers():
    net = _net()
    ema = WeightAverage(net, decay=0.9)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net(torch.randn(8, 3))  # moves BatchNorm's running statistics and its batch counter
    ema.update(net)
    keep = min(0.9, 2 / 11)  # first update: the warm-up decay (1 + 1) / (10 + 1)
    assert torch.allclose(ema.model[0].weight, keep * start + (1 - keep) * net[0].weight)
    assert torch.allclose(ema.model[1].running_mean, (1 - keep) * net[1].running_mean)
    assert int(ema.model[1].num_batches_tracked) == 1
    for _ in range(300):
        ema.update(net)
    assert torch.allclose(ema.model[0].weight, net[0].weight, atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_the_average_resumes_exactly_from_its_state():
    net = _net()
    a = WeightAverage(net, decay=0.99)
    for _ in range(5):
        with torch.no_grad():
            net[0].weight.mul_(0.9)
        a.update(net)
    b = WeightAverage(_net(), decay=0.99)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        net[0].weight.add_(0.5)
    a.update(net)
    b.update(net)
    assert b.updates == 6 and torch.equal(a.model[0].weight, b.model[0].weight)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="EMA decay must be in"):
        WeightAverage(_net(), decay)


def test_a_run_recorded_before_a_field_existed_resumes_under_its_default():
    vit = build_model("vit", preset_config("vit", "tiny"))
    now = current_recipe(vit, TrainConfig())
    older = {k: v for k, v in now.items() if k != "train.ema"}
    check_same_recipe(older, now, "run")  # absent reads as the default: off
    with pytest.raises(ResumeError, match="train.ema"):
        check_same_recipe(older, current_recipe(vit, TrainConfig(ema=0.99)), "run")
