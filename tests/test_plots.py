"""plots: figures carry the input values and labels, diverging scales are centred, bad shapes raise, and the
circuitsvis wrapper renders offline (the conftest guard fails any connection) with no external script."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from mechinterp_course import plots


def _causal_pattern(n_heads: int, n_pos: int, seed: int = 0) -> torch.Tensor:
    """``[n_heads, n_pos, n_pos]`` rows summing to 1 with nothing above the diagonal."""
    scores = torch.randn(n_heads, n_pos, n_pos, generator=torch.Generator().manual_seed(seed))
    return torch.softmax(scores.masked_fill(torch.ones(n_pos, n_pos).triu(1).bool(), float("-inf")), dim=-1)


# Defaults ------------------------------------------------------------------------------------------------------


def test_import_sets_the_template():
    assert pio.templates.default == plots.TEMPLATE == "plotly_white"


@pytest.mark.parametrize(
    "current, environ, expected",
    [
        ("plotly_mimetype", {}, "plotly_mimetype"),
        ("plotly_mimetype+notebook", {}, "plotly_mimetype"),  # would inline 4.8 MB of plotly.js
        ("plotly_mimetype", {"COLAB_RELEASE_TAG": "release"}, "colab"),
        ("plotly_mimetype+notebook", {"PLOTLY_RENDERER": "notebook"}, "plotly_mimetype+notebook"),  # user's choice
        ("browser", {}, "browser"),
    ],
)
def test_renderer_choice(current, environ, expected):
    assert plots.choose_renderer(current, environ) == expected
    assert "connected" not in plots.choose_renderer(current, environ)


# Inputs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        torch.tensor([[1.0, -2.0]]),
        np.array([[1.0, -2.0]]),
        [[1, -2]],
        torch.tensor([[1.0, -2.0]], requires_grad=True),
        torch.tensor([[1, -2]]),
    ],
)
def test_to_numpy_accepts_tensors_arrays_lists(values):
    array = plots._to_numpy(values)
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, [[1.0, -2.0]])


# Heatmaps -------------------------------------------------------------------------------------------------------


def test_layer_head_heatmap_values_labels_and_hover():
    values = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]])
    fig = plots.layer_head_heatmap(values, title="scores")
    assert isinstance(fig, go.Figure)
    (heatmap,) = fig.data
    np.testing.assert_allclose(heatmap.z, values.numpy())
    assert list(fig.layout.yaxis.ticktext) == ["L0", "L1"]
    assert list(fig.layout.xaxis.ticktext) == ["H0", "H1", "H2"]
    assert heatmap.text[1][2] == "L1H2"
    assert heatmap.hovertemplate.startswith("%{text}: %{z")
    assert fig.layout.title.text == "scores"
    assert fig.layout.yaxis.autorange == "reversed"  # layer 0 at the top


def test_layer_head_heatmap_diverging_scale_is_centred_at_zero():
    fig = plots.layer_head_heatmap(np.array([[0.1, 3.0], [0.2, 0.4]]))  # all positive: still centred at 0
    heatmap = fig.data[0]
    assert heatmap.zmid == 0
    assert heatmap.zmin == -heatmap.zmax == -3.0
    colours = [colour for _, colour in heatmap.colorscale]
    assert colours == [colour for _, colour in go.Heatmap(colorscale="RdBu").colorscale]
    assert plots.layer_head_heatmap(np.zeros((2, 2))).data[0].zmax == 1.0  # an all-zero grid still draws


def test_layer_head_heatmap_annotates_small_grids_only():
    assert plots.layer_head_heatmap(np.ones((16, 16))).data[0].texttemplate
    assert not plots.layer_head_heatmap(np.ones((12, 17))).data[0].texttemplate


def test_layer_head_heatmap_custom_labels():
    fig = plots.layer_head_heatmap(
        np.arange(4.0).reshape(2, 2), row_labels=["L0H0", "L0H1"], col_labels=["L1H0", "L1H1"]
    )
    assert list(fig.layout.yaxis.ticktext) == ["L0H0", "L0H1"]
    assert list(fig.layout.xaxis.ticktext) == ["L1H0", "L1H1"]
    assert fig.data[0].text[0][1] == "L0H0, L1H1"
    with pytest.raises(ValueError, match="3 row labels for 2 values"):
        plots.layer_head_heatmap(np.zeros((2, 2)), row_labels=["a", "b", "c"])


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), ()])
def test_layer_head_heatmap_rejects_wrong_dimensionality(shape):
    message = re.escape(f"layer_head_heatmap expects a 2-D [n_layers, n_heads] grid, got shape {shape}")
    with pytest.raises(ValueError, match=message):
        plots.layer_head_heatmap(torch.zeros(shape))


def test_layer_pos_heatmap():
    values = torch.tensor([[0.0, 1.0, 0.5], [0.2, -0.1, 0.9], [1.0, 1.0, 1.0]])
    labels = ["BOS", "a", "a"]  # repeated tokens must stay separate columns
    fig = plots.layer_pos_heatmap(values, labels, title="patching")
    heatmap = fig.data[0]
    np.testing.assert_allclose(heatmap.z, values.numpy())
    assert list(fig.layout.xaxis.ticktext) == labels
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2]
    assert list(fig.layout.yaxis.ticktext) == ["L0", "L1", "L2"]
    assert heatmap.zmid == 0 and heatmap.zmin == -heatmap.zmax
    assert heatmap.text[1][2] == "L1, position 2 (a)"
    with pytest.raises(ValueError, match="2 position labels for 3 values"):
        plots.layer_pos_heatmap(values, ["BOS", "a"])
    with pytest.raises(ValueError, match=re.escape("layer_pos_heatmap expects a 2-D [n_layers, pos] grid")):
        plots.layer_pos_heatmap(values[0], labels)


# Line, bar, scatter --------------------------------------------------------------------------------------------


def test_line_one_trace_per_series():
    fig = plots.line({"loss": torch.tensor([3.0, 2.0, 1.0]), "baseline": [1, 1, 1]}, title="t", xlabel="x", ylabel="y")
    assert [trace.name for trace in fig.data] == ["loss", "baseline"]
    np.testing.assert_allclose(fig.data[0].y, [3.0, 2.0, 1.0])
    np.testing.assert_allclose(fig.data[1].x, [0, 1, 2])
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("x", "y")
    with pytest.raises(ValueError, match="line expects a 1-D series for 'bad', got shape"):
        plots.line({"bad": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.line([1, 2, 3])


def test_bar_values_labels_and_sign_colours():
    fig = plots.bar(torch.tensor([1.5, -0.5, 0.0]), ["embed", "L0H0", "L0H0"], title="dla")
    (trace,) = fig.data
    np.testing.assert_allclose(trace.y, [1.5, -0.5, 0.0])
    assert list(fig.layout.xaxis.ticktext) == ["embed", "L0H0", "L0H0"]
    assert trace.marker.color[0] != trace.marker.color[1]
    with pytest.raises(ValueError, match="2 labels for 3 values"):
        plots.bar([1, 2, 3], ["a", "b"])
    with pytest.raises(ValueError, match="bar expects a 1-D array of values"):
        plots.bar(np.zeros((2, 2)), ["a", "b"])


def test_scatter_with_labels_and_diagonal():
    x, y = torch.tensor([0.1, 0.9, -0.2]), torch.tensor([0.0, 1.2, -0.1])
    fig = plots.scatter(x, y, labels=["L0H0", "L0H1", "L1H0"], diagonal=True, xlabel="act", ylabel="attr")
    points, diagonal = fig.data
    np.testing.assert_allclose(points.x, x.numpy())
    np.testing.assert_allclose(points.y, y.numpy())
    assert list(points.text) == ["L0H0", "L0H1", "L1H0"]
    assert "%{text}" in points.hovertemplate
    assert diagonal.line.dash == "dash"
    assert list(diagonal.x) == list(diagonal.y) == pytest.approx([-0.2, 1.2])
    assert len(plots.scatter([1, 2], [2, 3]).data) == 1
    with pytest.raises(ValueError, match="x has 3 values but y has 2"):
        plots.scatter([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="scatter expects a 1-D x"):
        plots.scatter(np.zeros((2, 2)), np.zeros((2, 2)))


# Attention ------------------------------------------------------------------------------------------------------


def test_attention_heatmaps_one_subplot_per_head():
    pattern = _causal_pattern(6, 5)
    tokens = ["BOS", "a", "b", "a", "b"]
    fig = plots.attention_heatmaps(tokens, pattern, head_names=[f"L{i // 3}H{i % 3}" for i in range(6)])
    assert len(fig.data) == 6
    for h, trace in enumerate(fig.data):
        np.testing.assert_allclose(trace.z, pattern[h].numpy(), atol=1e-6)
        assert (trace.zmin, trace.zmax) == (0, 1)
    assert list(fig.data[0].x) == ["0 BOS", "1 a", "2 b", "3 a", "4 b"]
    assert [a.text for a in fig.layout.annotations] == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
    assert sum(trace.showscale for trace in fig.data) == 1


@pytest.mark.parametrize("fn", [plots.attention_patterns, plots.attention_heatmaps])
def test_attention_views_check_shapes(fn):
    tokens = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"3-D \[n_heads, q, k\] pattern, got shape \(3, 3\).*pattern\[None\]"):
        fn(tokens, torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"pattern\[0\]"):
        fn(tokens, torch.ones(1, 2, 3, 3))
    with pytest.raises(ValueError, match="there are 2 tokens"):
        fn(tokens[:2], torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="1 head names for 2 values"):
        fn(tokens, torch.ones(2, 3, 3), head_names=["x"])


def test_attention_patterns_renders_offline_with_the_bundle_inlined():
    tokens = ["BOS", "x", "</script><b>", "x"]
    pattern = _causal_pattern(2, 4)
    view = plots.attention_patterns(tokens, pattern, head_names=["L0H0", "L1H3"])
    html = view._repr_html_()
    assert hasattr(view, "show")
    bundle = plots.circuitsvis_bundle_path().read_text(encoding="utf-8").replace("</script>", "")
    assert bundle[:2000] in html and bundle[-2000:] in html  # the whole local bundle is inlined
    assert html.count("</script>") == 1  # the token's "</script>" is escaped, so it cannot end the script early
    assert not re.search(r"<script[^>]*\ssrc=", html)
    assert "unpkg" not in html and not re.search(r"""(import|from)\s*\(?\s*["']https?://""", html)
    props = json.loads(re.search(r"CircuitsVis\.AttentionHeads, (\{.*\})\);", html).group(1).replace("<\\/", "</"))
    assert props["tokens"] == tokens
    assert props["attentionHeadNames"] == ["L0H0", "L1H3"]
    assert props["maskUpperTri"] is True
    np.testing.assert_allclose(props["attention"], pattern.numpy(), atol=5e-4)
    assert f'<div id="{view.element_id}"' in html and f'render("{view.element_id}"' in html
    assert 1.0e6 < plots.html_size(view) < 1.6e6  # the size the docstring documents


def test_attention_patterns_without_inline_js_is_small_and_says_how_to_load():
    pattern = _causal_pattern(8, 61)
    tokens = ["BOS"] + [f"t{i}" for i in range(60)]
    light = plots.attention_patterns(tokens, pattern, inline_js=False)
    html = light._repr_html_()
    assert "window.CircuitsVis" in html and "load_circuitsvis()" in html
    assert plots.html_size(light) < 0.2e6
    assert plots.html_size(plots.attention_heatmaps(tokens, pattern)) < 0.25e6
    assert "window.CircuitsVis = CircuitsVis" in plots.load_circuitsvis()._repr_html_()


def test_circuitsvis_own_render_path_is_never_taken(monkeypatch):
    """circuitsvis's RenderedHTML probes google.com when displayed; make any use of it fail loudly."""
    import circuitsvis.utils.render as render

    def forbidden(*args, **kwargs):
        raise AssertionError("circuitsvis's own render/internet probe was used")

    monkeypatch.setattr(render, "internet_on", forbidden)
    monkeypatch.setattr(render, "render", forbidden)
    monkeypatch.setattr(render, "render_local", forbidden)
    monkeypatch.setattr(render, "render_cdn", forbidden)
    plots.attention_patterns(["a", "b"], _causal_pattern(1, 2))._repr_html_()


def test_ids_are_unique_per_render_and_repeat_across_runs():
    pattern = _causal_pattern(1, 3)
    first = plots.attention_patterns(["a", "b", "c"], pattern)
    second = plots.attention_patterns(["a", "b", "c"], pattern)
    assert first.element_id != second.element_id
    assert first.element_id.rsplit("-", 1)[0] == second.element_id.rsplit("-", 1)[0]  # same data, same hash


def test_attention_patterns_rejects_nan():
    pattern = _causal_pattern(1, 2)
    pattern[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        plots.attention_patterns(["a", "b"], pattern)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_generated_scripts_are_valid_javascript(tmp_path):
    pattern = _causal_pattern(2, 3)
    for name, view in [
        ("inline", plots.attention_patterns(["a", "b", "c"], pattern)),
        ("light", plots.attention_patterns(["a", "b", "c"], pattern, inline_js=False)),
    ]:
        script = re.search(r'<script type="module">\n(.*)\n</script>', view._repr_html_(), re.S).group(1)
        path = tmp_path / f"{name}.mjs"
        path.write_text(script, encoding="utf-8")
        result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


# Chapter 00's figures ---------------------------------------------------------------------------------------------


def _event(title, track, start, end=None, date_note="", from_deck=True, deck_text=""):
    from types import SimpleNamespace

    return SimpleNamespace(
        title=title,
        track=track,
        start=start,
        end=end,
        date_label=f"{start[0]}",
        date_note=date_note,
        summary=f"what {title} did",
        from_deck=from_deck,
        deck_text=deck_text,
        slides=(7,),
        chapters_text="01 Circuits",
    )


def test_timeline_figure_one_marker_trace_per_track_with_spans_and_hovers():
    tracks = {"a": "Track A (slide 6)", "b": "Track B", "empty": "Nothing here"}
    events = [
        _event("first", "a", (2015, 1)),
        _event("span", "a", (2020, 3), end=(2021, 4)),
        _event("later", "b", (2023, 5), date_note="the course's date", from_deck=False, deck_text="Dec 2021"),
    ]
    fig = plots.timeline_figure(events, tracks, title="T")
    markers = [trace for trace in fig.data if trace.mode == "markers+text"]
    assert [trace.name for trace in markers] == ["Track A (slide 6)", "Track B"]  # the empty track has none
    assert len(markers[0].x) == 2 and markers[0].x[1] == "2020-03-15"
    spans = [trace for trace in fig.data if trace.mode == "lines"]
    assert len(spans) == 1 and list(spans[0].x) == ["2020-03-15", "2021-04-15"]
    hover = markers[1].hovertext[0]
    assert "the course's date" in hover and "the course's summary" in hover and "Dec 2021" in hover
    assert "chapters: 01 Circuits" in hover and "(the deck)" in markers[0].hovertext[0]
    assert list(fig.layout.yaxis.ticktext) == ["Track A", "Track B", "Nothing here"]


def test_timeline_figure_draws_the_chapters_timeline():
    from mechinterp_course import history

    fig = plots.timeline_figure(history.TIMELINE, history.TRACKS)
    shown = sum(len(trace.x) for trace in fig.data if trace.mode == "markers+text")
    assert shown == len(history.TIMELINE)


def test_ternary_figure_normalises_weights_and_refuses_bad_ones():
    fig = plots.ternary_figure({"x": (1, 1, 0), "y": [0, 0, 2]}, ["micro", "macro", "dev"])
    trace = fig.data[0]
    np.testing.assert_allclose([trace.a, trace.b, trace.c], [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])
    assert fig.layout.ternary.aaxis.title.text == "micro"
    with pytest.raises(ValueError, match="three corners"):
        plots.ternary_figure({"x": (1, 1, 0)}, ["micro", "macro"])
    with pytest.raises(ValueError, match="non-negative"):
        plots.ternary_figure({"x": (1, -1, 0)}, ["a", "b", "c"])


def test_image_grid_one_panel_per_image_with_titles_and_a_centred_scale():
    images = torch.randn(5, 1, 8, 8)
    fig = plots.image_grid(images, [f"image {i}" for i in range(5)], columns=3)
    assert sorted(a.text for a in fig.layout.annotations) == [f"image {i}" for i in range(5)]
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax == -float(images.abs().max())
    grey = plots.image_grid(images[:, 0].numpy(), symmetric=False)  # [n, H, W] and numpy are fine too
    assert grey.layout.coloraxis.cmin is None
    with pytest.raises(ValueError, match="single-channel"):
        plots.image_grid(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(images, ["only one"])


def test_deck_scores_figure_leaves_out_areas_without_scores():
    scores = {
        "a": {"lhf": 2, "excitement": None},
        "b": {"lhf": None, "excitement": None},
        "c": {"lhf": 7, "excitement": 3},
    }
    fig = plots.deck_scores_figure(scores, {"a": "Area A"})
    assert [trace.name for trace in fig.data] == ["lhf", "excitement"]
    assert list(fig.data[0].x) == ["Area A", "c"] and list(fig.data[1].y) == [None, 3]
    assert list(fig.layout.yaxis.range) == [0, 10]
