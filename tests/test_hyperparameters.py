import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multilabel_ic import HyperparameterError, Hyperparameters
from multilabel_ic.hyperparameters import LARGE_DEPTHS, RULES, SMALL_DEPTHS

BASE = dict(num_classes=5, num_training_samples=2500)

# The MS-COCO example's hyperparameters, as the AWS notebook sets them.
COCO_EXAMPLE = dict(num_layers=18, use_pretrained_model=1, image_shape="3,224,224", num_classes=5, mini_batch_size=128,
                    resize=256, epochs=5, learning_rate=0.001, num_training_samples=2500, use_weighted_loss=1,
                    augmentation_type="crop_color_transform", precision_dtype="float32", multi_label=1)


def test_defaults_are_the_algorithms():
    hp = Hyperparameters(**BASE)
    assert (hp.num_layers, hp.epochs, hp.mini_batch_size, hp.learning_rate) == (152, 30, 32, 0.1)
    assert (hp.optimizer, hp.momentum, hp.weight_decay, hp.image_shape) == ("sgd", 0.9, 0.0001, "3,224,224")
    assert (hp.beta_1, hp.beta_2, hp.eps, hp.gamma, hp.lr_scheduler_factor) == (0.9, 0.999, 1e-8, 0.9, 0.1)
    assert hp.augmentation_type is None and hp.resize is None and hp.checkpoint_frequency is None
    assert hp.early_stopping is False and hp.early_stopping_min_epochs == 10 and hp.early_stopping_patience == 5


def test_coco_example_wire_format_is_exactly_the_notebooks():
    hp = Hyperparameters(**COCO_EXAMPLE)
    assert hp.to_sagemaker() == {
        "num_layers": "18", "use_pretrained_model": "1", "image_shape": "3,224,224", "num_classes": "5",
        "mini_batch_size": "128", "resize": "256", "epochs": "5", "learning_rate": "0.001",
        "num_training_samples": "2500", "use_weighted_loss": "1", "augmentation_type": "crop_color_transform",
        "precision_dtype": "float32", "multi_label": "1"}


def test_round_trip_through_sagemaker_strings():
    hp = Hyperparameters(**COCO_EXAMPLE, early_stopping=True, lr_scheduler_step="2,4", eps=1e-7)
    wire = hp.to_sagemaker()
    assert wire["early_stopping"] == "True" and wire["eps"] == "1e-07"
    back = Hyperparameters.from_sagemaker(wire)
    assert back == hp and back.to_sagemaker() == wire
    full = hp.to_sagemaker(include_defaults=True)
    assert full["momentum"] == "0.9" and Hyperparameters.from_sagemaker(full) == hp


def test_required_parameters():
    with pytest.raises(HyperparameterError, match="'num_classes' parameter is required") as e:
        Hyperparameters(num_training_samples=10)
    assert e.value.parameter == "num_classes"
    with pytest.raises(HyperparameterError, match="num_training_samples"):
        Hyperparameters(num_classes=2)


def test_unknown_parameter_is_named():
    with pytest.raises(HyperparameterError, match="'num_layer'"):
        Hyperparameters(**BASE, num_layer=18)


def _invalid_values(name):
    rule = RULES[name]
    bad = ["abc", None if not rule.nullable else "abc"] + ([] if rule.kind == "steps" else [[1]])
    if rule.kind in ("int", "float"):
        if rule.low != -math.inf:
            bad.append(rule.low - 1)
            if rule.low_open:
                bad.append(rule.low)
        if rule.high != math.inf:
            bad.append(rule.high + 0.5 if rule.kind == "float" else rule.high + 1)
        if rule.kind == "int":
            bad.append(2.5)
    elif rule.kind == "choice":
        bad += ["nope", 7]
    elif rule.kind == "bool01":
        bad += [2, -1, "yes"]
    elif rule.kind == "boolstr":
        bad += ["yes", 1]
    elif rule.kind == "image_shape":
        bad += ["3,224", "2,224,224", "3,0,224", "3,224,224,1"]
    elif rule.kind == "steps":
        bad += ["3,2", "0,1", "1,1", "a,b", ","]
    return [b for b in bad if b is not None]


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_constraint_rejects_invalid_values_naming_the_parameter(name):
    for value in _invalid_values(name):
        kwargs = dict(BASE)
        kwargs[name] = value
        with pytest.raises(HyperparameterError) as e:
            Hyperparameters(**kwargs)
        assert e.value.parameter == name, (name, value, str(e.value))
        assert repr(name) in str(e.value)


@pytest.mark.parametrize("name", [n for n, r in RULES.items() if r.kind in ("int", "float")])
def test_range_message_shape(name):
    rule = RULES[name]
    value = rule.low - 1 if rule.low != -math.inf else rule.high + 1
    with pytest.raises(HyperparameterError, match=rf"The '{name}' parameter must be an? (int|float) in the range .*"
                                                  rf"Got {value!r} instead\."):
        Hyperparameters(**{**BASE, name: value})


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(min_value=1e-9, max_value=1.0), batch=st.integers(1, 512), epochs=st.integers(1, 100),
       layers=st.sampled_from(LARGE_DEPTHS), opt=st.sampled_from(["sgd", "adam", "rmsprop", "nag"]))
def test_valid_values_round_trip(lr, batch, epochs, layers, opt):
    hp = Hyperparameters(num_classes=3, num_training_samples=1000, learning_rate=lr, mini_batch_size=batch,
                         epochs=epochs, num_layers=layers, optimizer=opt)
    assert Hyperparameters.from_sagemaker(hp.to_sagemaker()) == hp


def test_resize_must_cover_the_crop():
    with pytest.raises(HyperparameterError, match="'resize' parameter \\(200\\) must be at least") as e:
        Hyperparameters(**BASE, resize=200)
    assert e.value.parameter == "resize"
    assert Hyperparameters(**BASE, resize=224).resize == 224


def test_weighted_loss_needs_multi_label():
    with pytest.raises(HyperparameterError, match="use_weighted_loss.*multi_label=1"):
        Hyperparameters(**BASE, use_weighted_loss=1)
    assert Hyperparameters(**BASE, use_weighted_loss=1, multi_label=1).use_weighted_loss == 1


def test_checkpoint_frequency_at_most_epochs():
    with pytest.raises(HyperparameterError, match=r"checkpoint_frequency.*\[1, epochs=5\]"):
        Hyperparameters(**BASE, epochs=5, checkpoint_frequency=6)
    assert Hyperparameters(**BASE, epochs=5, checkpoint_frequency=5).checkpoint_frequency == 5


@pytest.mark.parametrize("layers", SMALL_DEPTHS)
def test_small_depths_only_for_small_images(layers):
    with pytest.raises(HyperparameterError, match="28 px or less"):
        Hyperparameters(**BASE, num_layers=layers)
    assert Hyperparameters(**BASE, num_layers=layers, image_shape="3,28,28").num_layers == layers


def test_large_depths_need_large_images_and_pretrained_needs_large_depth():
    with pytest.raises(HyperparameterError, match="taller than 28 px"):
        Hyperparameters(**BASE, num_layers=18, image_shape="3,28,28")
    with pytest.raises(HyperparameterError, match="use_pretrained_model"):
        Hyperparameters(**BASE, num_layers=20, image_shape="1,28,28", use_pretrained_model=1)


def test_lr_scheduler_step_parsing():
    hp = Hyperparameters(**BASE, lr_scheduler_step=" 10, 20 ")
    assert hp.lr_scheduler_step == "10,20" and hp.lr_steps == [10, 20]


def test_batch_cannot_exceed_samples():
    with pytest.raises(HyperparameterError, match="mini_batch_size.*at least one full batch"):
        Hyperparameters(num_classes=2, num_training_samples=10, mini_batch_size=32)


def test_top_k_at_most_num_classes():
    with pytest.raises(HyperparameterError, match="top_k"):
        Hyperparameters(**BASE, top_k=6)


def test_derived_values_and_replace():
    hp = Hyperparameters(**COCO_EXAMPLE)
    assert (hp.channels, hp.height, hp.width, hp.batches_per_epoch) == (3, 224, 224, 19)
    hp2 = hp.replace(epochs=7)
    assert hp2.epochs == 7 and hp2.to_sagemaker()["epochs"] == "7" and hp.epochs == 5
    with pytest.raises(AttributeError):
        hp.epochs = 3


def test_explicit_keyword_signature_and_dataclasses_replace():
    import dataclasses
    import inspect

    params = inspect.signature(Hyperparameters).parameters
    assert {"num_classes", "epochs", "multi_label", "augmentation_type"} <= set(params)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in params.items() if n not in ("unknown",))
    hp = Hyperparameters(num_classes=5, num_training_samples=100, precision_dtype="float32")
    copy = dataclasses.replace(hp, epochs=3)
    assert copy.epochs == 3 and copy.to_sagemaker() == {**hp.to_sagemaker(), "epochs": "3"}
    assert dataclasses.replace(hp) == hp and dataclasses.replace(hp).to_sagemaker() == hp.to_sagemaker()
    with pytest.raises(HyperparameterError, match="'epochs' parameter must be an int"):
        dataclasses.replace(hp, epochs=0)


def test_steps_per_epoch_has_one_home_and_names_where_mxnet_s_schedule_differs():
    """The epoch's batches floor(N / (hosts x B)) and fit.py's schedule epoch max(int(N / B / hosts), 1) agree for
    every run that has a step; only the schedule's floor of 1 differs (an epoch shorter than one batch)."""
    for n, b, hosts in [(100, 10, 1), (101, 10, 1), (99, 10, 1), (1000, 32, 3), (64, 32, 2), (2500, 7, 4)]:
        if b > n:
            continue
        hp = Hyperparameters(num_classes=2, num_training_samples=n, mini_batch_size=b)
        assert hp.steps_per_epoch(hosts) == n // (hosts * b)
        assert hp.steps_per_epoch(hosts, schedule=True) == max(int(n / b / hosts), 1)
        if n // (hosts * b):
            assert hp.steps_per_epoch(hosts) == hp.steps_per_epoch(hosts, schedule=True)
    hp = Hyperparameters(num_classes=2, num_training_samples=40, mini_batch_size=32)
    assert hp.steps_per_epoch(2) == 0 and hp.steps_per_epoch(2, schedule=True) == 1
    assert hp.batches_per_epoch == hp.steps_per_epoch() == 1


def test_input_shape_and_the_head_are_parsed_once():
    hp = Hyperparameters(num_classes=2, num_training_samples=100, image_shape="1,28,32", multi_label=1,
                         num_layers=20)
    assert hp.input_shape == (hp.channels, hp.height, hp.width) == (1, 28, 32)
    assert hp.is_multi_label and not hp.replace(multi_label=0).is_multi_label
