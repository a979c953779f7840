"""Plotly figures and offline circuitsvis renders for the notebooks.

Every function takes torch tensors, numpy arrays or lists, checks their shape (a ValueError says what was expected),
and returns something with ``.show()``: a plotly ``go.Figure``, or for circuitsvis a :class:`CircuitsVisHTML`.

Plotly defaults, set once on import:

- Template ``plotly_white``, unless the user already picked a template other than plotly's own default.
- Renderer. Plotly 7 already picks well: ``plotly_mimetype`` (the same renderer as ``"jupyterlab"``) in a Jupyter
  kernel, which stores only the figure's JSON in the notebook (a heatmap of 2 x 4 heads: about 8 kB, most of it the
  template) and is drawn by the ``jupyterlab-plotly`` extension that ships with plotly, in JupyterLab, Notebook 7
  and VS Code, offline; and ``colab`` on Colab (plotly.js from a CDN; Colab is online by definition). We correct
  two cases only: the fallback ``plotly_mimetype+notebook`` (chosen in unrecognised IPython front ends) inlines all
  of plotly.js, about 4.8 MB, into the first figure's output, so it becomes ``plotly_mimetype``; and a Colab runtime
  that plotly did not recognise (newer Colab sets ``COLAB_RELEASE_TAG``) gets ``colab``. ``notebook_connected`` is
  never used (it needs the network in JupyterLab). A ``PLOTLY_RENDERER`` environment variable is always respected.

circuitsvis. Its own ``render`` probes the internet on every display (a request to google.com, with a 1 s timeout)
and then chooses between a CDN script (unpkg.com) and the inlined bundle. :func:`attention_patterns` never takes that
path: it reads the bundle shipped inside the circuitsvis package (``circuitsvis/dist/cdn/iife.js``, about 1.3 MB) and
writes the HTML itself, as circuitsvis's ``render_local`` does, so nothing is fetched, in the kernel or in the browser.
(``render_local`` itself is not called: it runs ``yarn`` to rebuild the bundle when it finds a ``react/`` folder
beside ``site-packages``, its test for a development checkout.) The cost is size: each inlined render adds the
bundle (about 1.3 MB) to a saved notebook. With ``inline_js=False`` a render is only the data (the notebook's 8 heads
x 61 tokens: about 0.15 MB) and draws with a bundle loaded once per page by :func:`load_circuitsvis` (JupyterLab and
Notebook; not Colab, where every output is its own page). :func:`attention_heatmaps` is the plotly-only alternative:
the same patterns as plotly heatmaps (about 0.19 MB for that example, numbers stored as binary float32), with no
JavaScript of its own to carry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
#: Diverging scale for signed quantities (patching, attribution, scores): red negative, white 0, blue positive.
DIVERGING_SCALE = "RdBu"
#: Sequential scale for probabilities (attention patterns).
SEQUENTIAL_SCALE = "Blues"
#: Grids up to this many rows and columns get their values written in the cells.
ANNOTATE_MAX_CELLS_PER_SIDE = 16
#: Number format for cell annotations and hovers.
VALUE_FORMAT = ".2f"
HOVER_FORMAT = ".4g"
#: Columns of the subplot grid in attention_heatmaps.
HEATMAP_COLUMNS = 4
#: Token tick labels are written out up to this many positions; beyond, the hover still names every token.
MAX_TOKEN_TICKS = 40
#: Decimals kept for attention weights sent to circuitsvis (as JSON text): a tenth of a percent is invisible in its
#: colour scale, and each decimal dropped saves about 10% of the data's size.
CIRCUITSVIS_DECIMALS = 3

#: The circuitsvis component attention_patterns renders (it takes head names; "AttentionPatterns" is deprecated).
CIRCUITSVIS_COMPONENT = "AttentionHeads"


# --------------------------------------------------------------------------------------------------------------
# Plotly defaults
# --------------------------------------------------------------------------------------------------------------


def _in_colab(environ: Mapping[str, str]) -> bool:
    return "COLAB_RELEASE_TAG" in environ or "COLAB_NOTEBOOK_ID" in environ


def choose_renderer(current: str, environ: Mapping[str, str] | None = None) -> str:
    """The renderer the course uses, given plotly's automatic choice ``current`` (see the module docstring)."""
    environ = os.environ if environ is None else environ
    if environ.get("PLOTLY_RENDERER"):
        return current
    if _in_colab(environ):
        return "colab"
    if current == "plotly_mimetype+notebook":
        return "plotly_mimetype"
    return current


def configure_plotly() -> None:
    """Apply the course's plotly defaults (called on import; safe to call again)."""
    if pio.templates.default in ("plotly", None, ""):
        pio.templates.default = TEMPLATE
    renderer = choose_renderer(pio.renderers.default or "")
    if renderer and renderer != pio.renderers.default:
        pio.renderers.default = renderer


configure_plotly()


# --------------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------------


def _to_numpy(values: Any) -> np.ndarray:
    """A float numpy array from a torch tensor (any device, with or without grad), a numpy array or a nested list."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":
            values = values.float()
        values = values.numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError("expected numbers (a tensor, an array or a nested list of numbers), got mixed objects")
    return array.astype(np.float64) if array.dtype.kind in "biu" else array


def _require_ndim(function: str, array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise ValueError(f"{function} expects a {ndim}-D {what}, got shape {tuple(array.shape)}")


def _require_labels(function: str, labels: Sequence[Any] | None, length: int, what: str) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(label) for label in labels]
    if len(labels) != length:
        raise ValueError(f"{function}: {len(labels)} {what} for {length} values")
    return labels


def _symmetric_range(values: np.ndarray) -> float:
    """The largest absolute finite value (1 for an all-zero or empty grid), so a diverging scale is centred at 0."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _layout(fig: go.Figure, title: str | None, xlabel: str | None = None, ylabel: str | None = None) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel)
    return fig


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


def line(
    series: Mapping[str, Any],
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    x: Any = None,
) -> go.Figure:
    """One line per entry of ``series`` (``{name: 1-D values}``), against position 0, 1, ... (or ``x``)."""
    if not isinstance(series, Mapping) or not series:
        raise ValueError("line expects a non-empty dict {name: 1-D values}")
    fig = go.Figure()
    for name, values in series.items():
        y = _to_numpy(values)
        _require_ndim("line", y, 1, f"series for {name!r}")
        xs = np.arange(len(y)) if x is None else _to_numpy(x)
        if len(xs) != len(y):
            raise ValueError(f"line: x has {len(xs)} values but {name!r} has {len(y)}")
        fig.add_trace(go.Scatter(x=xs, y=y, mode="lines", name=str(name)))
    fig.update_layout(showlegend=len(series) > 1)
    return _layout(fig, title, xlabel, ylabel)


def layer_head_heatmap(
    values: Any,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> go.Figure:
    """A ``[n_layers, n_heads]`` grid as a heatmap: layer 0 at the top, a red-white-blue scale centred at 0, hover
    "L{layer}H{head}: value", and the values written in the cells when the grid is at most 16 x 16.

    ``row_labels`` / ``col_labels`` replace "L0", "L1", ... / "H0", "H1", ... (e.g. a head-by-head grid for path
    patching); the hover then reads "row, column: value"."""
    grid = _to_numpy(values)
    _require_ndim("layer_head_heatmap", grid, 2, "[n_layers, n_heads] grid")
    n_rows, n_cols = grid.shape
    default_labels = row_labels is None and col_labels is None
    rows = _require_labels("layer_head_heatmap", row_labels, n_rows, "row labels") or [f"L{i}" for i in range(n_rows)]
    cols = _require_labels("layer_head_heatmap", col_labels, n_cols, "column labels") or [
        f"H{j}" for j in range(n_cols)
    ]
    names = [[f"{r}{c}" if default_labels else f"{r}, {c}" for c in cols] for r in rows]
    top = _symmetric_range(grid)
    heatmap = go.Heatmap(
        z=grid,
        x=list(range(n_cols)),
        y=list(range(n_rows)),
        text=names,
        colorscale=DIVERGING_SCALE,
        zmid=0.0,
        zmin=-top,
        zmax=top,
        hovertemplate=f"%{{text}}: %{{z:{HOVER_FORMAT}}}<extra></extra>",
    )
    if max(n_rows, n_cols) <= ANNOTATE_MAX_CELLS_PER_SIDE:
        heatmap.texttemplate = f"%{{z:{VALUE_FORMAT}}}"
    fig = go.Figure(heatmap)
    fig.update_xaxes(tickmode="array", tickvals=list(range(n_cols)), ticktext=cols, side="top")
    fig.update_yaxes(tickmode="array", tickvals=list(range(n_rows)), ticktext=rows, autorange="reversed")
    if default_labels:
        xlabel = "head" if xlabel is None else xlabel
        ylabel = "layer" if ylabel is None else ylabel
    fig.update_layout(margin={"t": 110})  # room for the title above the top axis
    return _layout(fig, title, xlabel, ylabel)


def layer_pos_heatmap(
    values: Any,
    labels: Sequence[str],
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    xlabel: str | None = "position",
    ylabel: str | None = "layer",
) -> go.Figure:
    """A ``[n_layers, pos]`` grid (e.g. residual-stream patching) as a heatmap: one row per layer (layer 0 at the
    top, rows "L0", "L1", ... unless ``row_labels``), one column per position labelled by ``labels`` (one per
    position, repeats allowed), a red-white-blue scale centred at 0."""
    grid = _to_numpy(values)
    _require_ndim("layer_pos_heatmap", grid, 2, "[n_layers, pos] grid")
    n_rows, n_pos = grid.shape
    cols = _require_labels("layer_pos_heatmap", labels, n_pos, "position labels")
    rows = _require_labels("layer_pos_heatmap", row_labels, n_rows, "row labels") or [f"L{i}" for i in range(n_rows)]
    hover = [[f"{r}, position {p} ({c})" for p, c in enumerate(cols)] for r in rows]
    top = _symmetric_range(grid)
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(range(n_pos)),
            y=list(range(n_rows)),
            text=hover,
            colorscale=DIVERGING_SCALE,
            zmid=0.0,
            zmin=-top,
            zmax=top,
            hovertemplate=f"%{{text}}: %{{z:{HOVER_FORMAT}}}<extra></extra>",
        )
    )
    fig.update_xaxes(tickmode="array", tickvals=list(range(n_pos)), ticktext=cols, tickangle=-60)
    fig.update_yaxes(tickmode="array", tickvals=list(range(n_rows)), ticktext=rows, autorange="reversed")
    return _layout(fig, title, xlabel, ylabel)


def bar(
    values: Any, labels: Sequence[str], title: str | None = None, xlabel: str | None = None, ylabel: str | None = None
) -> go.Figure:
    """One bar per value, labelled by ``labels`` (repeats allowed); positive bars blue, negative red."""
    heights = _to_numpy(values)
    _require_ndim("bar", heights, 1, "array of values")
    names = _require_labels("bar", labels, len(heights), "labels")
    colours = ["#2166ac" if h >= 0 else "#b2182b" for h in heights]
    fig = go.Figure(
        go.Bar(
            x=list(range(len(heights))),
            y=heights,
            hovertext=names,
            marker_color=colours,
            hovertemplate=f"%{{hovertext}}: %{{y:{HOVER_FORMAT}}}<extra></extra>",
        )
    )
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(heights))), ticktext=names)
    return _layout(fig, title, xlabel, ylabel)


def scatter(
    x: Any,
    y: Any,
    labels: Sequence[str] | None = None,
    diagonal: bool = False,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> go.Figure:
    """Points ``(x[i], y[i])`` with ``labels[i]`` in the hover; ``diagonal=True`` adds a dashed y = x line across the
    range of the data (for comparing two estimates of the same quantity)."""
    xs, ys = _to_numpy(x), _to_numpy(y)
    _require_ndim("scatter", xs, 1, "x")
    _require_ndim("scatter", ys, 1, "y")
    if len(xs) != len(ys):
        raise ValueError(f"scatter: x has {len(xs)} values but y has {len(ys)}")
    names = _require_labels("scatter", labels, len(xs), "labels")
    hover = f"x = %{{x:{HOVER_FORMAT}}}<br>y = %{{y:{HOVER_FORMAT}}}<extra></extra>"
    fig = go.Figure(
        go.Scatter(
            x=xs, y=ys, mode="markers", text=names, name="", hovertemplate=("%{text}<br>" + hover) if names else hover
        )
    )
    if diagonal:
        both = np.concatenate([xs, ys])
        both = both[np.isfinite(both)]
        low, high = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        fig.add_trace(
            go.Scatter(
                x=[low, high],
                y=[low, high],
                mode="lines",
                name="y = x",
                hoverinfo="skip",
                line={"dash": "dash", "color": "grey"},
            )
        )
    fig.update_layout(showlegend=False)
    return _layout(fig, title, xlabel, ylabel)


def _check_pattern(
    function: str, tokens: Sequence[str], pattern: Any, head_names: Sequence[str] | None
) -> tuple[list[str], np.ndarray, list[str]]:
    array = _to_numpy(pattern)
    if array.ndim != 3:
        hint = {2: " (for one head, pass pattern[None])", 4: " (for one sequence of a batch, pass pattern[0])"}
        raise ValueError(
            f"{function} expects a 3-D [n_heads, q, k] pattern, got shape {tuple(array.shape)}"
            f"{hint.get(array.ndim, '')}"
        )
    tokens = [str(token) for token in tokens]
    n_heads, n_q, n_k = array.shape
    if n_q != len(tokens) or n_k != len(tokens):
        raise ValueError(
            f"{function}: the pattern is [n_heads={n_heads}, q={n_q}, k={n_k}] but there are "
            f"{len(tokens)} tokens; q and k must both equal the number of tokens"
        )
    names = _require_labels(function, head_names, n_heads, "head names") or [f"H{h}" for h in range(n_heads)]
    return tokens, array, names


def attention_heatmaps(
    tokens: Sequence[str], pattern: Any, head_names: Sequence[str] | None = None, title: str | None = None
) -> go.Figure:
    """Attention patterns ``[n_heads, q, k]`` as a grid of plotly heatmaps (4 per row): the light, plotly-only
    alternative to :func:`attention_patterns` (no JavaScript bundle; the weights are stored as binary float32, so
    8 heads over 61 tokens add about 0.19 MB to a saved notebook). Rows are destination (query) positions, columns
    source (key) positions; the hover names both tokens."""
    tokens, array, names = _check_pattern("attention_heatmaps", tokens, pattern, head_names)
    n_heads, n_pos = array.shape[0], len(tokens)
    n_cols = min(HEATMAP_COLUMNS, n_heads)
    n_rows = math.ceil(n_heads / n_cols)
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=names,
        horizontal_spacing=0.04,
        vertical_spacing=0.08 if n_rows > 1 else 0.0,
    )
    # Categorical axes named "index token" (unique even when tokens repeat) put the tokens in the hover for the price
    # of one list per axis, instead of a [q, k] text array per head.
    axis = [f"{i} {token}" for i, token in enumerate(tokens)]
    for h in range(n_heads):
        fig.add_trace(
            go.Heatmap(
                z=array[h].astype(np.float32),
                x=axis,
                y=axis,
                colorscale=SEQUENTIAL_SCALE,
                zmin=0.0,
                zmax=1.0,
                showscale=(h == 0),
                name=names[h],
                hovertemplate=f"{names[h]}<br>destination %{{y}}<br>source %{{x}}"
                f"<br>attention %{{z:.3f}}<extra></extra>",
            ),
            row=h // n_cols + 1,
            col=h % n_cols + 1,
        )
    show_ticks = n_pos <= MAX_TOKEN_TICKS
    fig.update_xaxes(showticklabels=show_ticks, tickfont={"size": 8})
    fig.update_yaxes(showticklabels=show_ticks, tickfont={"size": 8}, autorange="reversed")
    fig.update_layout(height=260 * n_rows + 80)
    return _layout(fig, title)


# --------------------------------------------------------------------------------------------------------------
# circuitsvis, offline
# --------------------------------------------------------------------------------------------------------------


def circuitsvis_bundle_path() -> Path:
    """The JavaScript bundle shipped inside the installed circuitsvis package."""
    import circuitsvis

    return Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"


_BUNDLE_CACHE: dict[Path, str] = {}
_RENDER_COUNTER = itertools.count()


def _bundle() -> str:
    path = circuitsvis_bundle_path()
    if path not in _BUNDLE_CACHE:
        if not path.exists():
            raise FileNotFoundError(
                f"circuitsvis's JavaScript bundle is missing ({path}); reinstall circuitsvis, or "
                f"use plots.attention_heatmaps"
            )
        # A literal "</script>" inside the code would end the inline <script> element early (circuitsvis does this too).
        _BUNDLE_CACHE[path] = path.read_text(encoding="utf-8").replace("</script>", "")
    return _BUNDLE_CACHE[path]


def _safe_json(props: Mapping[str, Any]) -> str:
    """Props as compact JSON (arrays as lists, ``None`` dropped, as circuitsvis's ``convert_props`` does) that cannot
    close the surrounding <script> element (tokens may contain "</script>")."""
    plain = {
        key: value.tolist() if isinstance(value, np.ndarray) else value
        for key, value in props.items()
        if value is not None
    }
    text = json.dumps(plain, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


NOT_LOADED_MESSAGE = (
    "circuitsvis's JavaScript is not loaded on this page: run plots.load_circuitsvis() in a cell "
    "above, or pass inline_js=True (needed on Colab, where every output is a separate page)."
)


class CircuitsVisHTML:
    """A circuitsvis visualisation rendered without the network: displays in Jupyter through ``_repr_html_``.

    ``inline_js=True``: the HTML carries circuitsvis's bundle (about 1.3 MB) and works anywhere, Colab included.
    ``inline_js=False``: the HTML carries only the data, and draws with the bundle that :func:`load_circuitsvis`
    put on the page (or says how to get it). Element ids come from a hash of the data and a per-kernel counter, so a
    notebook re-run from the top produces the same HTML."""

    def __init__(self, component: str, props: Mapping[str, Any], inline_js: bool = True):
        self.component = component
        self.props_json = _safe_json(props)
        self.inline_js = inline_js
        digest = hashlib.sha1(f"{component}:{self.props_json}".encode()).hexdigest()[:10]
        self.element_id = f"circuits-vis-{digest}-{next(_RENDER_COUNTER)}"
        self._html: str | None = None

    @property
    def html(self) -> str:
        if self._html is None:
            target = json.dumps(self.element_id)
            if self.inline_js:
                script = (
                    f"{_bundle()}\nwindow.CircuitsVis = CircuitsVis;\n"
                    f"CircuitsVis.render({target}, CircuitsVis.{self.component}, {self.props_json});"
                )
            else:
                script = (
                    f"const cv = window.CircuitsVis;\n"
                    f"if (cv) {{ cv.render({target}, cv.{self.component}, {self.props_json}); }}\n"
                    f"else {{ document.getElementById({target}).textContent = "
                    f"{json.dumps(NOT_LOADED_MESSAGE)}; }}"
                )
            self._html = (
                f'<div id="{self.element_id}" style="margin: 15px 0;"></div>\n'
                f'<script type="module">\n{script}\n</script>'
            )
        return self._html

    def _repr_html_(self) -> str:
        return self.html

    def __html__(self) -> str:
        return self.html

    def show(self) -> None:
        """Display in the notebook (like ``go.Figure.show``)."""
        from IPython.display import display

        display(self)

    def __repr__(self) -> str:
        return (
            f"<CircuitsVisHTML {self.component}, {len(self.html) / 1e6:.2f} MB of HTML, "
            f"{'bundle inlined' if self.inline_js else 'needs load_circuitsvis()'}>"
        )


class _CircuitsVisLoader:
    """The bundle alone, put on the page once so that ``inline_js=False`` renders can draw."""

    def _repr_html_(self) -> str:
        return (
            f'<script type="module">\n{_bundle()}\nwindow.CircuitsVis = CircuitsVis;\n</script>\n'
            f'<div style="color: grey; font-size: small">circuitsvis loaded ({len(_bundle()) / 1e6:.1f} MB, '
            f"from the installed package)</div>"
        )

    def show(self) -> None:
        from IPython.display import display

        display(self)


def load_circuitsvis() -> _CircuitsVisLoader:
    """Display the result once in a notebook (JupyterLab / Notebook 7) so that ``attention_patterns(...,
    inline_js=False)`` renders can draw without carrying the 1.3 MB bundle each. Not for Colab."""
    return _CircuitsVisLoader()


def attention_patterns(
    tokens: Sequence[str],
    pattern: Any,
    head_names: Sequence[str] | None = None,
    inline_js: bool = True,
    mask_upper_tri: bool = True,
) -> CircuitsVisHTML:
    """circuitsvis's interactive attention view for ``pattern`` ``[n_heads, q, k]`` over ``tokens`` (one per
    position), offline: no request to the internet from the kernel or from the browser.

    Renders circuitsvis's ``AttentionHeads`` component (the replacement for the deprecated
    ``circuitsvis.attention.attention_patterns``, and the one that takes head names; default "H0", "H1", ...).
    Weights are rounded to 3 decimals. Size of the HTML for the course's example (8 heads x 61 tokens), measured:
    1.45 MB with ``inline_js=True`` (1.30 MB of it the bundle), 0.15 MB with ``inline_js=False`` (see
    :func:`load_circuitsvis`). For something lighter still, :func:`attention_heatmaps`."""
    tokens, array, names = _check_pattern("attention_patterns", tokens, pattern, head_names)
    if not np.isfinite(array).all():
        raise ValueError("attention_patterns: the pattern contains NaN or infinite values")
    props = {
        "attention": np.round(array.astype(np.float64), CIRCUITSVIS_DECIMALS),
        "tokens": tokens,
        "attentionHeadNames": names,
        "maskUpperTri": bool(mask_upper_tri),
    }
    return CircuitsVisHTML(CIRCUITSVIS_COMPONENT, props, inline_js=inline_js)


def html_size(obj: Any) -> int:
    """Bytes of HTML that displaying ``obj`` adds to a saved notebook (``_repr_html_``, or plotly's JSON)."""
    if isinstance(obj, go.Figure):
        return len(pio.to_json(obj).encode())
    return len(obj._repr_html_().encode())


__all__ = [
    "TEMPLATE",
    "DIVERGING_SCALE",
    "line",
    "layer_head_heatmap",
    "layer_pos_heatmap",
    "bar",
    "scatter",
    "attention_patterns",
    "attention_heatmaps",
    "load_circuitsvis",
    "CircuitsVisHTML",
    "choose_renderer",
    "configure_plotly",
    "html_size",
    "LiveCurves",
]


# --------------------------------------------------------------------------------------------------------------
# Live training curves
# --------------------------------------------------------------------------------------------------------------


class LiveCurves:
    """Train/test accuracy and loss redrawn while a model trains (``training.train(..., callback=live.update)``).

    In a notebook the figure is displayed once and replaced in place every ``redraw_every`` rows (IPython display
    handles: works in JupyterLab, Colab and a headless run); outside a notebook it only collects the rows.
    """

    def __init__(self, title: str = "Training", redraw_every: int = 5):
        self.title, self.redraw_every, self.rows, self.handle = title, redraw_every, [], None

    def figure(self) -> go.Figure:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss (log scale)"))
        steps = [row["step"] for row in self.rows]
        for split, dash in [("train", None), ("test", "dash")]:
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[r[f"{split}_accuracy"] for r in self.rows],
                    name=f"{split} accuracy",
                    line=dict(dash=dash),
                ),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=steps, y=[r[f"{split}_loss"] for r in self.rows], name=f"{split} loss", line=dict(dash=dash)
                ),
                row=1,
                col=2,
            )
        fig.update_yaxes(range=[0, 1.02], row=1, col=1)
        fig.update_yaxes(type="log", row=1, col=2)
        fig.update_xaxes(title_text="step")
        fig.update_layout(title=self.title, height=350)
        return fig

    def update(self, step: int, row: dict) -> None:
        """Record a logged row (``step`` is the training loop's; the row carries it too) and redraw now and then."""
        self.rows.append(row)
        if len(self.rows) % self.redraw_every == 1 or self.redraw_every == 1:
            self.draw()

    def draw(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        # A plotly figure displays itself and ignores display ids, so hand IPython the rendered mime bundle instead.
        fig = self.figure()
        bundle = fig._repr_mimebundle_(include=None, exclude=None) or {
            "application/vnd.plotly.v1+json": json.loads(fig.to_json()),
            "text/plain": self.title,
        }
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


# --------------------------------------------------------------------------------------------------------------
# Chapter 00: the timeline, the ternary plot, image grids and the deck's point scores
# --------------------------------------------------------------------------------------------------------------

#: One colour per track of the timeline, in the order of its tracks.
TIMELINE_COLOURS = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3")
#: Events of a track are spread over this many lanes, so that markers in the same month stay apart.
TIMELINE_LANES = 3
#: Marker labels longer than this are cut with an ellipsis (the hover has the whole title).
TIMELINE_LABEL_CHARS = 28
#: Hover text is wrapped at this many characters per line.
HOVER_WRAP = 80


def _wrap(text: str, width: int = HOVER_WRAP) -> str:
    """``text`` with ``<br>`` line breaks every ``width`` characters or so (at spaces), for plotly hovers."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 2] + "\u2026"


def _mid_month(date: Sequence[int]) -> str:
    year, month = date
    return f"{year}-{month:02d}-15"


def timeline_figure(
    events: Sequence[Any], tracks: Mapping[str, str], title: str = "Mechanistic interpretability: a timeline"
) -> go.Figure:
    """An interactive timeline: one row per track (``tracks``: key -> label), one marker per event, spans drawn as
    bars. Each event needs ``title``, ``track``, ``start`` and ``end`` (``(year, month)``), ``date_label``,
    ``date_note`` (non-empty where the date is the course's), ``summary``, ``from_deck``, ``deck_text``, ``slides``
    and ``chapters_text`` (chapter 00's :class:`~mechinterp_course.history.Event`). The hover gives the date, the
    summary and whose words it is, the deck's words, the slides and the chapters; a legend click hides a track."""
    figure = go.Figure()
    for row, (track, label) in enumerate(tracks.items()):
        chosen = [event for event in events if event.track == track]
        if not chosen:
            continue
        colour = TIMELINE_COLOURS[row % len(TIMELINE_COLOURS)]
        xs, ys, hover, texts = [], [], [], []
        for i, event in enumerate(chosen):
            source = "the deck" if event.from_deck else "the course's summary"
            slides = ", ".join(map(str, event.slides)) or "not in the deck"
            extra = f"<br><i>deck:</i> {_wrap(event.deck_text)}" if event.deck_text else ""
            date = f"{event.date_label} ({event.date_note})" if event.date_note else event.date_label
            hover.append(
                f"<b>{_wrap(event.title, 70)}</b><br>{date}<br>{_wrap(event.summary)}<br><i>({source})</i>"
                f"{extra}<br>slides: {slides} \u00b7 chapters: {event.chapters_text}"
            )
            xs.append(_mid_month(event.start))
            ys.append(row + 0.25 * ((i % TIMELINE_LANES) - 1))
            texts.append(_cut(event.title, TIMELINE_LABEL_CHARS))
            if event.end is not None:
                figure.add_trace(
                    go.Scatter(
                        x=[xs[-1], _mid_month(event.end)],
                        y=[ys[-1], ys[-1]],
                        mode="lines",
                        line=dict(width=6, color=colour),
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=track,
                    )
                )
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers+text",
                text=texts,
                textposition="top center",
                textfont=dict(size=9),
                marker=dict(size=11, color=colour, line=dict(width=1, color="white")),
                name=label,
                hovertext=hover,
                hoverinfo="text",
                legendgroup=track,
            )
        )
    figure.update_layout(
        title=title,
        height=560,
        hovermode="closest",
        yaxis=dict(
            tickvals=list(range(len(tracks))),
            ticktext=[label.split(" (")[0] for label in tracks.values()],
            range=[-0.7, len(tracks) - 0.3],
        ),
        xaxis=dict(title="date (hover over a marker; drag to zoom, double-click to reset)"),
        legend=dict(orientation="h", y=-0.2),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return figure


def ternary_figure(
    placement: Mapping[str, Sequence[float]], corners: Sequence[str], title: str | None = None
) -> go.Figure:
    """Works placed on a ternary plot: ``placement`` maps a work to three non-negative weights, one per corner of
    ``corners`` (normalised here: ``(1, 1, 0)`` is half-way between the first two corners)."""
    if len(corners) != 3:
        raise ValueError(f"ternary_figure expects three corners, got {len(corners)}")
    names = list(placement)
    weights = np.array([[float(w) for w in placement[name]] for name in names], dtype=float).reshape(len(names), 3)
    sums = weights.sum(axis=1, keepdims=True)
    if (weights < 0).any() or (sums <= 0).any():
        raise ValueError("ternary_figure: every work needs three non-negative weights with a positive sum")
    weights = weights / sums
    short = [name.split(":")[0] if len(name) > 40 else name for name in names]
    figure = go.Figure(
        go.Scatterternary(
            a=weights[:, 0],
            b=weights[:, 1],
            c=weights[:, 2],
            mode="markers+text",
            text=[_cut(s, 34) for s in short],
            textposition="top center",
            textfont=dict(size=9),
            hovertext=[_wrap(name, 60) for name in names],
            hoverinfo="text",
            marker=dict(size=10),
        )
    )
    figure.update_layout(
        title=title or "Your placement of the deck's works (the deck's own positions are not in its text)",
        ternary=dict(aaxis=dict(title=corners[0]), baxis=dict(title=corners[1]), caxis=dict(title=corners[2])),
        height=560,
        showlegend=False,
    )
    return figure


def image_grid(
    images: Any,
    titles: Sequence[str] | None = None,
    columns: int = 10,
    title: str = "",
    symmetric: bool = True,
    height_per_row: int = 120,
) -> go.Figure:
    """A grid of single-channel images ``[n, 1, H, W]`` or ``[n, H, W]`` with one shared colour scale; with
    ``symmetric`` the scale is red/blue and centred on 0 (for standardised images: the data's mean pixel), else grey.
    ``titles`` names each image."""
    import plotly.express as px

    array = _to_numpy(images)
    if array.ndim == 4:
        if array.shape[1] != 1:
            raise ValueError(f"image_grid expects single-channel images, got shape {tuple(array.shape)}")
        array = array[:, 0]
    _require_ndim("image_grid", array, 3, "stack of images [n, H, W]")
    labels = _require_labels("image_grid", titles, len(array), "titles")
    columns = min(columns, len(array))
    bound = float(np.abs(array).max()) or 1.0
    figure = px.imshow(
        array,
        facet_col=0,
        facet_col_wrap=columns,
        color_continuous_scale="RdBu_r" if symmetric else "gray_r",
        zmin=-bound if symmetric else None,
        zmax=bound if symmetric else None,
        facet_col_spacing=0.01,
        facet_row_spacing=0.06,
    )
    for annotation in figure.layout.annotations:
        index = int(annotation.text.split("=")[-1])
        annotation.text = labels[index] if labels is not None else str(index)
        annotation.font.size = 10
    rows = math.ceil(len(array) / columns)
    figure.update_layout(
        title=title, height=80 + height_per_row * rows, margin=dict(l=10, r=10, t=50, b=10), coloraxis_showscale=False
    )
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    return figure


def deck_scores_figure(
    scores: Mapping[str, Mapping[str, float | None]],
    titles: Mapping[str, str] | None = None,
    title: str = "The deck's point scores",
    max_score: float = 10,
) -> go.Figure:
    """Grouped bars of point scores: ``scores`` maps an area to ``{score key: value or None}``; areas with no score
    at all are left out (the deck scores only some), a missing score is a gap. ``titles`` names the areas."""
    shown = [area for area, row in scores.items() if any(v is not None for v in row.values())]
    keys = list(dict.fromkeys(key for area in shown for key in scores[area]))
    names = [(titles or {}).get(area, area) for area in shown]
    figure = go.Figure(
        [go.Bar(name=key.replace("_", " "), x=names, y=[scores[area].get(key) for area in shown]) for key in keys]
    )
    figure.update_layout(
        barmode="group", title=title, yaxis=dict(title=f"/{max_score:g}", range=[0, max_score]), height=380
    )
    return figure


__all__ += ["timeline_figure", "ternary_figure", "image_grid", "deck_scores_figure"]
