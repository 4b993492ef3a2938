"""Grad-CAM on a model trained where the answer is known: a coloured square on black, its colour the class."""

import numpy as np
import pytest

from conftest import run_cli as run, train_run as train

SIZE = 16
SQUARE = 4
CONFIG = """\
name: squares
seed: 1
data: {{source: npz, path: {path}, color_mode: rgb}}
model:
  input_shape: [16, 16, 3]
  layers:
    - Conv2D: {{filters: 8, kernel_size: 3, activation: relu, padding: same}}
    - Conv2D: {{filters: 8, kernel_size: 3, activation: relu, padding: same}}
    - GlobalAveragePooling2D: {{}}
    - Dense: {{units: 2, activation: softmax}}
compile: {{optimizer: {{name: adam, learning_rate: 0.02}}}}
train: {{epochs: 8, batch_size: 16, validation_split: 0.1}}
"""


def squares(count, seed):
    """Black images with one 4x4 square, red (class 0) or green (class 1), somewhere; and each square's corner."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, count).astype(np.int32)
    corners = rng.integers(0, SIZE - SQUARE + 1, (count, 2))
    for image, label, (row, col) in zip(images, labels, corners):
        image[row:row + SQUARE, col:col + SQUARE, label] = 255
    return images, labels, corners


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradcam")
    x, y, _ = squares(160, seed=0)
    x_test, y_test, _ = squares(20, seed=1)
    np.savez(root / "squares.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test, class_names=np.array(["red", "green"]))
    return train(root, CONFIG.format(path=root / "squares.npz"))


def model_of(run_dir):
    from cnnlab.rundir.trained import load_trained_run

    return load_trained_run(run_dir)


def test_the_heatmap_peaks_on_the_square(run_dir):
    from cnnlab.data.preprocessing import preprocess_images, preprocessing_from_record
    from cnnlab.inspect.gradcam import grad_cam

    run = model_of(run_dir)
    images, labels, corners = squares(12, seed=2)
    inputs = np.asarray(preprocess_images(images, preprocessing_from_record(run.preprocessing)))
    for model_input, label, (row, col) in zip(inputs, labels, corners):
        cam = grad_cam(run.model, model_input)
        assert cam.heatmap.shape == (SIZE, SIZE)
        assert cam.heatmap.min() >= 0 and cam.heatmap.max() == pytest.approx(1)
        assert cam.class_index == label, "the model should have learned the colours"
        peak_row, peak_col = np.unravel_index(cam.heatmap.argmax(), cam.heatmap.shape)
        # within the square or one pixel beside it (the 3x3 kernels see one pixel past its edge)
        assert row - 1 <= peak_row <= row + SQUARE and col - 1 <= peak_col <= col + SQUARE, (cam.heatmap.round(2), row, col)


def test_one_batch_gives_each_image_its_own_map(run_dir):
    from cnnlab.data.preprocessing import preprocess_images, preprocessing_from_record
    from cnnlab.inspect.gradcam import grad_cam, grad_cams

    run = model_of(run_dir)
    images, _, _ = squares(4, seed=3)
    inputs = np.asarray(preprocess_images(images, preprocessing_from_record(run.preprocessing)))
    batch = grad_cams(run.model, inputs)
    for model_input, cam in zip(inputs, batch):
        np.testing.assert_allclose(cam.heatmap, grad_cam(run.model, model_input).heatmap, atol=1e-5)


def test_a_map_for_the_other_class_is_another_map(run_dir):
    from cnnlab.data.preprocessing import preprocess_images, preprocessing_from_record
    from cnnlab.inspect.gradcam import grad_cam

    run = model_of(run_dir)
    images, labels, _ = squares(1, seed=4)
    model_input = np.asarray(preprocess_images(images, preprocessing_from_record(run.preprocessing)))[0]
    other = grad_cam(run.model, model_input, class_index=1 - int(labels[0]))
    assert other.class_index == 1 - labels[0] and other.probability < 0.5
    assert not np.allclose(other.heatmap, grad_cam(run.model, model_input).heatmap)


def test_visualize_draws_the_grad_cam_of_its_image(run_dir, tmp_path):
    from PIL import Image

    images, labels, _ = squares(1, seed=5)
    Image.fromarray(images[0]).save(tmp_path / "square.png")
    result = run("visualize", run_dir, tmp_path / "square.png")
    assert result.exit_code == 0, result.output
    name = ("red", "green")[labels[0]]
    assert f"Grad-CAM: conv2d_1, for the predicted class {name} (" in result.output
    with Image.open(run_dir / "visualize" / "grad_cam_conv2d_1.png") as figure:
        assert figure.format == "PNG" and figure.size[0] >= 600


def test_grad_cam_of_a_layer_without_image_output_is_one_line(run_dir):
    from cnnlab.errors import ConfigError
    from cnnlab.inspect.gradcam import grad_cam

    run = model_of(run_dir)
    with pytest.raises(ConfigError, match="Layers with one: conv2d, conv2d_1$"):
        grad_cam(run.model, np.zeros((SIZE, SIZE, 3), dtype=np.float32), layer_name="dense")


def test_evaluate_overlays_grad_cam_on_the_worst_mistakes(run_dir):
    result = run("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "eval" / "test_misclassified.png").is_file()
