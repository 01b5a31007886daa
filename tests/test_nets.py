import torch

from dpaudit.nets import image_layout, make_classifier, predict_logits, train_classifier


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
