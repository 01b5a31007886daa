import pytest
import torch

from dpaudit.nets import image_layout, make_classifier, native_bf16, predict_logits, resolve_precision, train_classifier


def test_predictions_in_channels_last_equal_the_default_layout():
    torch.manual_seed(0)
    model, x = make_classifier((3, 16, 16), 4).eval(), torch.rand(50, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(predict_logits(model, x, batch_size=16), expected, atol=1e-5, rtol=1e-4)
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_nested_block_keeps_the_outer_layout_and_the_weights_return_to_default_after():
    model = make_classifier((3, 16, 16), 4)
    weight = model.conv[0].weight
    with image_layout(model, images=True) as outer:
        with image_layout(model, images=True) as inner:
            assert outer is inner is torch.channels_last
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert weight.is_contiguous()


def test_training_with_validation_is_deterministic_and_leaves_default_layout():
    x, y = torch.rand(120, 3, 16, 16), torch.arange(120) % 4
    models = [make_classifier((3, 16, 16), 4) for _ in range(2)]
    for model in models:
        model.load_state_dict(models[0].state_dict())
    logs = [train_classifier(m, x[:100], y[:100], epochs=2, seed=3, batch_size=32, val=(x[100:], y[100:])) for m in models]
    assert logs[0] == logs[1]
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b) and a.is_contiguous()


def test_a_per_epoch_measurement_sees_every_epoch_and_changes_nothing():
    x, y = torch.rand(120, 3, 16, 16), torch.arange(120) % 4
    models = [make_classifier((3, 16, 16), 4) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    seen = []
    measure = lambda model, epoch: seen.append((epoch, predict_logits(model, x[100:]).argmax(1)))  # noqa: E731
    logs = [train_classifier(m, x[:100], y[:100], epochs=3, seed=3, batch_size=32, val=(x[100:], y[100:]), on_epoch=f)
            for m, f in zip(models, (measure, None))]
    assert [epoch for epoch, _ in seen] == [0, 1, 2] and logs[0] == logs[1]
    # The last epoch's predictions agree with its validation accuracy as logged.
    assert float((seen[-1][1] == y[100:]).float().mean()) == pytest.approx(logs[0].val_accuracy[-1])
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b)


def test_bfloat16_training_runs_the_layers_in_bfloat16_and_keeps_float32_weights():
    x, y = torch.rand(64, 1, 16, 16), torch.arange(64) % 4
    model = make_classifier((1, 16, 16), 4)
    seen = []
    hook = model.conv[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    train_classifier(model, x, y, epochs=1, seed=0, batch_size=32, precision="bfloat16")
    hook.remove()
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    seen.clear()
    model.conv[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    train_classifier(model, x, y, epochs=1, seed=0, batch_size=32)
    assert seen == [torch.float32, torch.float32]


def test_precision_auto_is_bfloat16_exactly_where_the_cpu_computes_it_natively(monkeypatch):
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
        assert native_bf16("cpu") is native
        assert resolve_precision("auto", "cpu") == ("bfloat16" if native else "float32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16")
