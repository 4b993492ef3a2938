"""`cnnlab visualize` on tiny digits runs trained once for this module: a grayscale CNN, an RGB CNN, an MLP."""

import os
import shutil
from html.parser import HTMLParser

import matplotlib.pyplot
import numpy as np
import pytest
from PIL import Image

from cnnlab.tracking import plots
from cnnlab.inspect import visualize
from cnnlab.config.experiment import load_config
from cnnlab.data.sources import load_dataset
from cnnlab.data.preprocessing import preprocess_images, preprocessing_for
from conftest import assert_one_line_error, run_cli as run, train_run as train

TWO_CONVS = """\
name: twoconv
seed: 7
data:
  source: digits
  test_split: 0.2
model:
  input_shape: [8, 8, 1]
  layers:
    - Conv2D: {filters: 4, kernel_size: 3, activation: relu, padding: same}
    - Conv2D: {filters: 6, kernel_size: 3, padding: same}
    - ReLU
    - MaxPooling2D: {pool_size: 2}
    - Flatten
    - Dense: {units: 10, activation: softmax}
train:
  epochs: 1
  batch_size: 64
  validation_split: 0.2
"""
RGB = TWO_CONVS.replace("name: twoconv", "name: rgb").replace("source: digits", "source: digits\n  color_mode: rgb") \
    .replace("[8, 8, 1]", "[8, 8, 3]")
MLP = """\
name: mlp
data: {source: digits}
model:
  input_shape: [8, 8, 1]
  layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
train: {epochs: 1, batch_size: 64}
"""
LAYERS = ["conv2d", "conv2d_1", "re_lu", "max_pooling2d"]
HAS_DIAGRAM = visualize.diagram_unavailable() is None


def first_test_image(run_dir):
    config = load_config(run_dir / "config.yaml")
    return load_dataset(config.data, config.train.validation_split, config.seed).x_test[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A grayscale run with two convolutions, and a PNG of its first test image."""
    root = tmp_path_factory.mktemp("trained")
    run_dir = train(root, TWO_CONVS)
    png = root / "digit.png"
    Image.fromarray(first_test_image(run_dir)[..., 0]).save(png)
    return run_dir, png


@pytest.fixture(scope="module")
def drawn(trained):
    """`cnnlab visualize RUN digit.png --html` once: (run folder, PNG, printed output)."""
    run_dir, png = trained
    result = run("visualize", run_dir, png, "--html")
    assert result.exit_code == 0, result.output
    return run_dir, png, result.output


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run without pictures, that a test may draw into."""
    copy = shutil.copytree(trained[0], tmp_path / trained[0].name)
    shutil.rmtree(copy / "visualize", ignore_errors=True)
    return copy


def pictures(folder):
    return sorted(path.name for path in folder.glob("*.png"))


# ---------------------------------------------------------------- what is written


def test_writes_one_filter_grid_per_conv2d_and_feature_maps_per_conv_activation_and_pooling_layer(drawn):
    run_dir, _, _ = drawn
    expected = ["filters_conv2d.png", "filters_conv2d_1.png"] + [f"feature_maps_{name}.png" for name in LAYERS] + ["grad_cam_max_pooling2d.png"]
    if HAS_DIAGRAM:
        expected.append("architecture.png")
    assert pictures(run_dir / "visualize") == sorted(expected)
    assert (run_dir / "visualize" / "index.html").is_file()


def test_output_names_the_run_image_layers_and_files(drawn):
    run_dir, png, output = drawn
    lines = output.splitlines()
    assert lines[:4] == [f"Run: {run_dir}", f"Image: {png}", "Filters: conv2d, conv2d_1", f"Feature maps: {', '.join(LAYERS)}"]
    architecture = "architecture.png" if HAS_DIAGRAM else "architecture.txt"
    written = ["filters_conv2d.png", "filters_conv2d_1.png"] + [f"feature_maps_{name}.png" for name in LAYERS] + \
        ["grad_cam_max_pooling2d.png", architecture, "index.html"]
    assert lines[-1] == f"Wrote {run_dir / 'visualize'}/: {', '.join(written)}"


def test_pngs_are_valid_images_of_sensible_size_and_not_blank(drawn):
    run_dir, _, _ = drawn
    for path in (run_dir / "visualize").glob("*.png"):
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 300 <= image.size[0] <= 2000 and 200 <= image.size[1] <= 2000, (path.name, image.size)
            assert np.asarray(image.convert("L"), dtype=np.float64).var() > 0, path.name


def test_html_refers_only_to_files_that_exist_and_shows_every_picture(drawn):
    run_dir, _, _ = drawn
    folder = run_dir / "visualize"

    class Links(HTMLParser):
        found = []

        def handle_starttag(self, tag, attrs):
            self.found += [value for key, value in attrs if key in ("src", "href")]

    links = Links()
    links.feed((folder / "index.html").read_text(encoding="utf-8"))
    assert links.found and all((folder / link).resolve().is_file() for link in links.found), links.found
    assert set(pictures(folder)) <= set(links.found)
    assert {"../loss.png", "../accuracy.png"} <= set(links.found)
    assert all("://" not in link and not link.startswith("/") for link in links.found)  # works offline, wherever the run is moved


def test_html_shows_the_run_metrics(drawn):
    run_dir, _, _ = drawn
    page = (run_dir / "visualize" / "index.html").read_text(encoding="utf-8")
    assert "<th>test accuracy</th>" in page and "<th>best val_loss</th>" in page


# ---------------------------------------------------------------- what the pictures hold


def test_filter_grid_has_one_tile_per_filter(run_copy, trained):
    import keras

    run_dir, png = run_copy, trained[1]
    model = keras.models.load_model(run_dir / "best.keras")
    result = visualize.visualize_run(run_dir, png, layer="conv2d_1")
    assert list(result.filters) == ["conv2d_1"]
    tiles = result.filters["conv2d_1"]
    assert tiles.shape == (model.get_layer("conv2d_1").filters, 3, 3) == (6, 3, 3)
    fig = plots.plot_filter_grid(tiles, "t")
    mosaic = fig.axes[0].get_images()[0].get_array()
    matplotlib.pyplot.close(fig)
    assert int(np.sum(~np.ma.getmaskarray(mosaic) & ~np.isnan(np.ma.getdata(mosaic)))) == 6 * 9  # 6 tiles of 3x3 drawn


def test_first_layer_tiles_are_its_kernels_and_deeper_ones_the_mean_over_input_channels(run_copy, trained):
    import keras

    run_dir, png = run_copy, trained[1]
    model = keras.models.load_model(run_dir / "best.keras")
    result = visualize.visualize_run(run_dir, png)
    first, second = (model.get_layer(name).get_weights()[0] for name in ("conv2d", "conv2d_1"))
    np.testing.assert_array_equal(result.filters["conv2d"], np.moveaxis(first[:, :, 0, :], -1, 0))
    np.testing.assert_allclose(result.filters["conv2d_1"], np.moveaxis(second.mean(axis=2), -1, 0), rtol=1e-6)


def test_feature_maps_equal_an_intermediate_keras_model_on_the_same_preprocessed_image(run_copy, trained):
    import keras

    run_dir, png = run_copy, trained[1]
    model = keras.models.load_model(run_dir / "best.keras")
    config = load_config(run_dir / "config.yaml")
    pixels = np.asarray(Image.open(png))[np.newaxis, ..., np.newaxis]
    inputs = preprocess_images(pixels, preprocessing_for(config.data))
    result = visualize.visualize_run(run_dir, png)
    np.testing.assert_array_equal(result.model_input, np.asarray(inputs)[0])
    assert list(result.feature_maps) == LAYERS
    for name in LAYERS:
        expected = keras.Model(model.input, model.get_layer(name).output)(inputs)
        np.testing.assert_allclose(result.feature_maps[name], np.asarray(expected)[0], rtol=1e-5, atol=1e-6)


def test_max_maps_shows_only_the_first_channels(run_copy, trained, monkeypatch):
    shown = {}
    draw = plots.plot_feature_maps

    def record(image, maps, **kwargs):
        shown[kwargs["title"].split()[0]] = (maps, kwargs["total"])
        return draw(image, maps, **kwargs)

    monkeypatch.setattr(plots, "plot_feature_maps", record)
    result = visualize.visualize_run(run_copy, trained[1], layer="conv2d_1", max_maps=2)
    maps, total = shown["conv2d_1"]
    assert total == 6
    np.testing.assert_array_equal(maps, result.feature_maps["conv2d_1"][..., :2])


def test_without_an_image_the_first_held_out_sample_is_drawn(run_copy):
    result = run("visualize", run_copy, "--layer", "conv2d")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("Image: the first sample of digits: ")
    assert result.output.splitlines()[1].endswith(": test split, class 9")
    assert pictures(run_copy / "visualize") == sorted(["feature_maps_conv2d.png", "filters_conv2d.png", "grad_cam_conv2d.png"]
                                                      + (["architecture.png"] if HAS_DIAGRAM else []))


def test_sample_is_the_first_test_image(run_copy):
    result = visualize.visualize_run(run_copy, layer="max_pooling2d")
    np.testing.assert_array_equal(result.sample.pixels, first_test_image(run_copy))
    assert list(result.filters) == [] and list(result.feature_maps) == ["max_pooling2d"]


# ---------------------------------------------------------------- the layer diagram


def test_architecture_txt_when_pydot_or_graphviz_is_missing(run_copy, monkeypatch):
    monkeypatch.setattr(visualize, "diagram_unavailable", lambda: "pydot is not installed")
    result = run("visualize", run_copy, "--layer", "conv2d")
    assert result.exit_code == 0, result.output
    note = ("Note: no architecture.png (pydot is not installed); wrote architecture.txt instead; "
            "for the picture: pip install 'cnnlab[diagram]' (pydot) and apt-get install graphviz")
    assert note in result.output.splitlines()
    text = (run_copy / "visualize" / "architecture.txt").read_text(encoding="utf-8").splitlines()
    assert text[0] == "twoconv: 7 layers, 1,232 parameters"
    assert text[2].split() == ["layer", "type", "output", "shape", "parameters", "input", "from"]
    assert text[4].split() == ["conv2d", "Conv2D", "(None,", "8,", "8,", "4)", "40", "image"]
    assert text[-1] == note[len("Note: "):]


# CI installs both (.ci/run), so there the test runs, and fails without them rather than skip
@pytest.mark.skipif(not HAS_DIAGRAM and not os.environ.get("CI"),
                    reason="needs pydot and Graphviz's dot (pip install 'cnnlab[diagram]', apt-get install graphviz)")
def test_architecture_png_with_pydot_and_graphviz(run_copy):
    result = visualize.visualize_run(run_copy, layer="conv2d")
    path = run_copy / "visualize" / "architecture.png"
    assert path in result.written and not (run_copy / "visualize" / "architecture.txt").exists()
    with Image.open(path) as image:
        assert image.format == "PNG" and np.asarray(image.convert("L"), dtype=np.float64).var() > 0


# ---------------------------------------------------------------- other models


def test_rgb_run_draws_its_first_layer_in_colour(tmp_path):
    run_dir = train(tmp_path, RGB)
    result = visualize.visualize_run(run_dir)
    assert result.filters["conv2d"].shape == (4, 3, 3, 3)  # one colour tile per filter
    assert result.filters["conv2d_1"].shape == (6, 3, 3)
    assert result.model_input.shape == (8, 8, 3)
    with Image.open(run_dir / "visualize" / "filters_conv2d.png") as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 0  # colours, not only greys


def test_model_without_convolutions_says_there_are_no_filters_and_still_draws_the_rest(tmp_path):
    run_dir = train(tmp_path, MLP)
    result = run("visualize", run_dir, "--html")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Note: no Conv2D layers in this model: nothing to draw for filters" in lines
    assert any(line.startswith("Note: no layer with image-shaped output") for line in lines)
    written = sorted(path.name for path in (run_dir / "visualize").iterdir())
    assert written == sorted([("architecture.png" if HAS_DIAGRAM else "architecture.txt"), "index.html"])


# ---------------------------------------------------------------- bad input


def test_unknown_layer_lists_the_layers_with_pictures(trained):
    result = run("visualize", trained[0], "--layer", "conv2d_2")
    assert_one_line_error(result, "--layer: no layer named 'conv2d_2' in this model. Did you mean conv2d_1? "
                                  "Layers with pictures: conv2d, conv2d_1, re_lu, max_pooling2d", exact=True)


def test_layer_with_nothing_to_draw_is_refused(trained):
    result = run("visualize", trained[0], "--layer", "dense")
    assert_one_line_error(result, "--layer: dense (Dense, output (None, 10)) has no filters or feature maps to draw. "
                                  "Layers with pictures: conv2d, conv2d_1, re_lu, max_pooling2d", exact=True)


def test_image_that_cannot_be_read_is_one_line_and_nothing_is_written(run_copy, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    result = run("visualize", run_copy, notes)
    assert_one_line_error(result, f"{notes}: not a PNG, JPEG, BMP or GIF image", exact=True)
    assert not (run_copy / "visualize").exists()


def test_missing_image_and_folder_are_refused(trained, tmp_path):
    assert_one_line_error(run("visualize", trained[0], tmp_path / "missing.png"), f"{tmp_path / 'missing.png'}: not found", exact=True)
    assert_one_line_error(run("visualize", trained[0], tmp_path), f"{tmp_path}: is a folder; give one image file (PNG, JPEG, BMP or GIF)", exact=True)


def test_folder_that_is_not_a_run_is_refused(tmp_path):
    result = run("visualize", tmp_path)
    assert_one_line_error(result, f"{tmp_path}: not a run folder (no config.yaml, status or best.keras); "
                                  "expected a folder made by cnnlab train", exact=True)


# ---------------------------------------------------------------- the grid layout


@pytest.mark.parametrize("count, columns", [(1, 1), (4, 4), (6, 6), (10, 5), (32, 8), (64, 16), (512, 32)])
def test_grid_columns(count, columns):
    assert plots.grid_columns(count) == columns


def test_tile_mosaic_places_tile_i_at_row_i_div_columns():
    tiles = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), dtype=np.float32)
    mosaic = plots.tile_mosaic(tiles, cols=3)
    assert mosaic.shape == (5, 8)
    assert mosaic[3, 3] == 4 and mosaic[0, 6] == 2 and np.isnan(mosaic[2, 0]) and np.isnan(mosaic[3, 6])
