"""Instant-feedback checks for the "History and landscape" chapter (``from mechinterp_course import history_graders``).

The same contract as :mod:`mechinterp_course.graders`: each ``check_*`` compares the student's answer or function with
the reference (:mod:`mechinterp_course.history`) and either prints a success line or raises
:class:`~mechinterp_course.graders.CheckFailed` with a message that says what is wrong without giving the answer.

Quizzes: every answer key comes from the deck's text (``mechinterp_course.history`` derives each key from its
transcription of the slides). A quiz check needs the whole answer right, so a constant answer cannot pass, and on a
mistake it says how many items of each kind are wrong, never which. The one exception is by design:
:func:`check_area_quiz` asks for thirteen papers' areas *and* one separate answer (the induction-heads paper's class
in Leonard's taxonomy), and reports that single answer as right or wrong on its own, since a count of one would say
so anyway.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import history
from .graders import CheckFailed, _call, _fail, _passed, _require_own_function, _seed, _unchanged, compare  # noqa: F401

__all__ = ["CheckFailed"]


def _normalise_option(value: Any) -> str:
    return str(value).strip().lower().replace("_", "-").replace(" ", "-")


def _check_keys(exercise: str, given: Any, expected_keys: Sequence[str], what: str) -> dict:
    if not isinstance(given, dict):
        _fail(exercise, f"{what} should be a dict, got {type(given).__name__}.")
    missing = [k for k in expected_keys if k not in given]
    extra = [k for k in given if k not in expected_keys]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected keys {extra}"] if extra else [])
        _fail(exercise, f"{what}: {'; '.join(parts)}. Use exactly the keys the question lists.")
    return given


def _check_options(exercise: str, given: dict, options: Sequence[str], what: str, normalise=_normalise_option) -> dict:
    allowed = {normalise(o): o for o in options}
    out = {}
    for key, value in given.items():
        if value is None or normalise(value) not in allowed:
            _fail(exercise, f"{what}: {value!r} (for {key!r}) is not one of the options {list(options)}.")
        out[key] = allowed[normalise(value)]
    return out


def _count_wrong(given: dict, key: dict) -> int:
    return sum(given[k] != v for k, v in key.items())


def check_order_quiz(order: Any) -> None:
    """The letters of ``history.ORDER_QUIZ`` from earliest to latest (slides 6 and 7)."""
    exercise = "order the events"
    letters = list(history.ORDER_QUIZ)
    if not isinstance(order, (list, tuple)):
        _fail(exercise, f"give a list of letters, got {type(order).__name__}.")
    order = [str(letter).strip().upper() for letter in order]
    unknown = sorted(set(order) - set(letters))
    missing = sorted(set(letters) - set(order))
    if unknown or missing or len(order) != len(letters):
        _fail(exercise, f"give each of the {len(letters)} letters exactly once (unknown: {unknown}, missing: "
                        f"{missing}, {len(order)} given).")
    key = history.order_quiz_key()
    misplaced = sum(a != b for a, b in zip(order, key))
    if misplaced:
        rank = {letter: i for i, letter in enumerate(key)}
        inverted = sum(rank[order[i]] > rank[order[j]] for i in range(len(order)) for j in range(i + 1, len(order)))
        n_pairs = len(order) * (len(order) - 1) // 2
        _fail(exercise, f"{misplaced} of {len(order)} events are not in their place ({inverted} of {n_pairs} pairs "
                        f"are in the wrong order). Re-read slides 6 and 7.")
    _passed(exercise, f"all {len(order)} events in the deck's order")


def check_people_quiz(groups: Any, roles: Any) -> None:
    """``groups``: person -> "Distill" or "transformer-circuits"; ``roles``: person -> a letter of ``ROLE_QUIZ`` (slide 5)."""
    exercise = "who did what"
    key_groups, key_roles = history.people_quiz_key()
    groups = _check_options(exercise, _check_keys(exercise, groups, list(key_groups), "groups"),
                            [history.DISTILL, history.TRANSFORMER_CIRCUITS], "groups")
    roles = _check_options(exercise, _check_keys(exercise, roles, list(key_roles), "roles"),
                           list(history.ROLE_QUIZ), "roles", normalise=lambda v: str(v).strip().upper())
    wrong_groups, wrong_roles = _count_wrong(groups, key_groups), _count_wrong(roles, key_roles)
    if wrong_groups or wrong_roles:
        _fail(exercise, f"{wrong_groups} of {len(key_groups)} groups and {wrong_roles} of {len(key_roles)} roles are "
                        f"wrong. Re-read slide 5.")
    _passed(exercise, f"{len(key_groups)} groups and {len(key_roles)} roles match slide 5")


def check_area_quiz(areas: Any, induction_heads_when: Any) -> None:
    """``areas``: letter of ``AREA_QUIZ`` -> an area of ``AREA_QUIZ_OPTIONS``; ``induction_heads_when``: one of
    Leonard's "when in the training process" classes, as slide 7 gives it for the induction-heads paper."""
    exercise = "classify the papers"
    key_areas, key_when = history.area_quiz_key()
    areas = _check_options(exercise, _check_keys(exercise, areas, list(history.AREA_QUIZ), "areas"),
                           history.AREA_QUIZ_OPTIONS, "areas")
    when_options = history.LEONARD_TAXONOMY["when in the training process"]
    when = _check_options(exercise, {"induction_heads_when": induction_heads_when}, when_options,
                          "induction_heads_when")["induction_heads_when"]
    wrong = _count_wrong(areas, key_areas)
    if wrong or when != key_when:
        _fail(exercise, f"{wrong} of {len(key_areas)} papers are in the wrong area, and the induction-heads class is "
                        f"{'wrong' if when != key_when else 'right'}. The deck's 'main work' lists are on slides 22, 30, "
                        f"36, 39-40 and 63; the class is in slide 7's wording.")
    _passed(exercise, f"{len(key_areas)} papers in the deck's areas, and slide 7's class for induction heads")


def check_status_quiz(status: Any) -> None:
    """``status``: each item of slide 17 -> its number of check marks (0 for "__")."""
    exercise = "read the status table"
    status = _check_keys(exercise, status, list(history.STATUS), "status")
    for item, marks in status.items():
        if isinstance(marks, bool) or not isinstance(marks, int) or marks not in history.STATUS_LEGEND:
            _fail(exercise, f"status[{item!r}] should be 3, 2, 1 or 0 (the number of check marks), got {marks!r}.")
    wrong = _count_wrong(status, history.STATUS)
    if wrong:
        _fail(exercise, f"{wrong} of {len(history.STATUS)} items have the wrong number of check marks.")
    _passed(exercise, f"all {len(history.STATUS)} items of slide 17")


def check_success_quiz(answer: Any) -> None:
    """``answer``: each of slide 80's works -> the letter of the claim it is the example of."""
    exercise = "strongest successes"
    key = history.success_quiz_key()
    answer = _check_options(exercise, _check_keys(exercise, answer, list(key), "answer"), list(history.SUCCESS_QUIZ),
                            "answer", normalise=lambda v: str(v).strip().upper())
    wrong = _count_wrong(answer, key)
    if wrong:
        _fail(exercise, f"{wrong} of {len(key)} works are matched to the wrong claim. Re-read slide 80.")
    _passed(exercise, f"all {len(key)} works matched as slide 80 does")


def check_ternary_placement(corners: Any, placement: Any) -> None:
    """The student's own placement of slide 9's papers (the deck's text gives no positions, so there is no key):
    three distinct corner labels, and for every paper three non-negative weights with a positive sum."""
    exercise = "your ternary placement"
    if not (isinstance(corners, (list, tuple)) and len(corners) == 3 and all(isinstance(c, str) and c.strip() for c in corners)):
        _fail(exercise, "corners should be three non-empty strings.")
    if len({c.strip().lower() for c in corners}) != 3:
        _fail(exercise, "the three corners should be different.")
    placement = _check_keys(exercise, placement, list(history.TERNARY_PAPERS), "placement")
    points = []
    for paper, weights in placement.items():
        try:
            values = [float(w) for w in weights]
        except (TypeError, ValueError):
            _fail(exercise, f"the placement of {paper[:40]!r} should be three numbers.")
        if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
            _fail(exercise, f"the placement of {paper[:40]!r} should be three non-negative numbers with a positive sum.")
        points.append(tuple(round(v / sum(values), 2) for v in values))
    if len(set(points)) < 4:
        _fail(exercise, f"only {len(set(points))} distinct positions for {len(points)} papers: spread them out where "
                        f"they differ.")
    _passed(exercise, f"{len(points)} papers placed at {len(set(points))} distinct positions (graded by hand from here)")


# Feature visualisation -----------------------------------------------------------------------------------------


def _random_cnn(channels: tuple[int, int], hidden: int, image_size: int, seed: int,
                n_classes: int = 10) -> "history.DigitsCNN":
    """A random CNN with He-initialised weights and small random biases (so that units are alive and gradients are
    informative), frozen (like the notebook's trained CNN), in eval mode."""
    model = history.DigitsCNN(channels, hidden, n_classes, image_size, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * math.sqrt(2.0 / param[0].numel()))
            param.requires_grad_(False)
    return model


def check_total_variation(fn: Callable) -> None:
    """``fn(x [batch, C, H, W]) -> [batch]``: the sum of squared differences between neighbouring pixels."""
    exercise = "total_variation"
    _require_own_function(exercise, fn, history.total_variation)
    for trial, shape in enumerate([(2, 1, 8, 8), (3, 2, 5, 7), (1, 3, 4, 4)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        x = torch.randn(*shape, generator=generator)
        before = x.clone()
        actual = _call(exercise, fn, x)
        _unchanged(exercise, before, x, "x")
        compare(exercise, actual, history.total_variation(x), "the total variation", context=f"(x of shape {shape})")
        compare(exercise, _call(exercise, fn, x + 3.0), history.total_variation(x), "the total variation of x + 3",
                context="(adding a constant to every pixel must change nothing)")
    compare(exercise, _call(exercise, fn, torch.full((2, 1, 6, 6), 0.7)), torch.zeros(2), "the total variation",
            context="(of constant images)")
    _passed(exercise, "3 random shapes; zero for constant images; unchanged by adding a constant")


def _same_norm_random(reference: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``[n, batch, C, H, W]`` random images with the same L2 norm as each image of ``reference``."""
    noise = torch.randn(n, *reference.shape, generator=generator)
    norms = reference.flatten(1).norm(dim=1)
    return noise / noise.flatten(2).norm(dim=2)[..., None, None, None] * norms[None, :, None, None, None]


def _visualise_once(exercise: str, fn: Callable, activation_fn: Callable, x0: Tensor, settings: dict) -> Tensor:
    before = x0.clone()
    result = _call(exercise, fn, activation_fn, x0, **settings)
    _unchanged(exercise, before, x0, "x0")
    if not isinstance(result, Tensor):
        _fail(exercise, f"return a tensor, got {type(result).__name__}.")
    if tuple(result.shape) != tuple(x0.shape):
        _fail(exercise, f"the result has shape {tuple(result.shape)}; it should have x0's shape {tuple(x0.shape)}.")
    if not torch.isfinite(result).all():
        _fail(exercise, f"the result contains non-finite values (settings {settings}).")
    return result.detach()


def check_visualise(fn: Callable) -> None:
    """``fn(activation_fn, x0, steps, lr, l2, tv, jitter, seed) -> [batch, C, H, W]``: activation maximisation as
    ``history.visualise`` documents it. Properties first (ascent, far above random inputs, each penalty shrinks what it
    penalises, jitter spreads a single-pixel unit over exactly the allowed shifts), then the reference on fresh
    random CNNs of several shapes."""
    exercise = "visualise"
    _require_own_function(exercise, fn, history.visualise)
    generator = torch.Generator().manual_seed(_seed(exercise, 0))

    # 1. Ascent, and far above random inputs of the same size (no penalties, no jitter).
    model = _random_cnn((6, 8), 16, 8, seed=_seed(exercise, 1))
    classes = torch.tensor([1, 4, 7])
    activation_fn = history.unit_activation(model, "logits", classes)
    x0 = 0.1 * torch.randn(3, 1, 8, 8, generator=generator)
    plain = dict(steps=40, lr=0.1, l2=0.0, tv=0.0, jitter=0, seed=0)
    result = _visualise_once(exercise, fn, activation_fn, x0, plain)
    with torch.no_grad():
        start, reached = activation_fn(x0), activation_fn(result)
        randoms = torch.stack([activation_fn(r) for r in _same_norm_random(result, 128, generator)])
    if not (reached > start).all():
        _fail(exercise, "the optimised images lower the target activation: the Adam step must *increase* the "
                        "objective (minimise its negative).")
    if not (reached > randoms.max(0).values).all():
        _fail(exercise, "the optimised images do not reach a higher activation than random images of the same norm: "
                        "the optimisation is not following the gradient of the target unit.")

    # 2. Each penalty shrinks what it penalises.
    for name, settings, measure, label in [
        ("l2", dict(plain, l2=0.5), lambda x: x.flatten(1).norm(dim=1), "the images' L2 norm"),
        ("tv", dict(plain, tv=2.0), lambda x: history.total_variation(x) / x.flatten(1).pow(2).sum(1), "the images' "
         "total variation (relative to their squared norm)"),
    ]:
        penalised = _visualise_once(exercise, fn, activation_fn, x0, settings)
        if not (measure(penalised) < 0.5 * measure(result)).all():
            _fail(exercise, f"with {name}={settings[name]} {label} should be much smaller than with {name}=0; it is not "
                            f"(check the sign and the weight of the {name} penalty, and that the optimiser is Adam).")

    # 3. Jitter, on a unit that reads one pixel: it must spread over every shift in [-jitter, jitter], and no further.
    size, centre, shift = 11, 5, 2
    pixel = lambda x: x[:, 0, centre, centre]  # noqa: E731
    blank = torch.zeros(1, 1, size, size)
    still = _visualise_once(exercise, fn, pixel, blank, dict(steps=60, lr=0.1, l2=0.05, tv=0.0, jitter=0, seed=3))
    mass = still[0, 0].pow(2)
    if mass.sum() <= 0 or mass[centre, centre] < 0.99 * mass.sum():
        _fail(exercise, "with jitter=0 a unit that reads one pixel should change only that pixel.")
    moved = _visualise_once(exercise, fn, pixel, blank, dict(steps=100, lr=0.1, l2=0.05, tv=0.0, jitter=shift, seed=3))
    mass = moved[0, 0].pow(2)
    window = mass[centre - shift:centre + shift + 1, centre - shift:centre + shift + 1]
    if mass.sum() <= 0 or window.sum() < (1 - 1e-6) * mass.sum():
        _fail(exercise, f"with jitter={shift} a one-pixel unit should only change pixels at most {shift} away from it "
                        f"(draw the shifts from [-jitter, jitter] and roll the image, don't pad or wrap further).")
    edges = [window[0].sum(), window[-1].sum(), window[:, 0].sum(), window[:, -1].sum()]
    if mass[centre, centre] > 0.5 * mass.sum() or min(edges) <= 0:
        _fail(exercise, f"with jitter={shift} a one-pixel unit should be spread over every shift from -{shift} to "
                        f"{shift} in both directions (torch.randint's upper bound is exclusive).")

    # 4. The reference, on fresh random CNNs, units and settings.
    trials = [
        (((4, 6), 12, 6), "logits", 3, dict(steps=30, lr=0.1, l2=0.05, tv=0.1, jitter=1, seed=11)),
        (((8, 16), 32, 8), "conv2", 4, dict(steps=30, lr=0.05, l2=0.01, tv=0.02, jitter=2, seed=12)),
        (((3, 5), 10, 10), "fc", 2, dict(steps=30, lr=0.1, l2=0.02, tv=0.0, jitter=1, seed=13)),
    ]
    for trial, ((channels, hidden, image_size), layer, batch, settings) in enumerate(trials):
        trial_generator = torch.Generator().manual_seed(_seed(exercise, 10 + trial))
        model = _random_cnn(channels, hidden, image_size, seed=_seed(exercise, 20 + trial))
        n_units = {"logits": 10, "fc": hidden, "conv2": channels[1]}[layer]
        activation_fn = history.unit_activation(model, layer, torch.randint(0, n_units, (batch,), generator=trial_generator))
        x0 = 0.1 * torch.randn(batch, 1, image_size, image_size, generator=trial_generator)
        expected = history.visualise(activation_fn, x0, **settings)
        actual = _visualise_once(exercise, fn, activation_fn, x0, settings)
        compare(exercise, actual, expected, "the optimised images", atol=1e-3, rtol=1e-3,
                context=f"(a random CNN, unit in {layer!r}, images {tuple(x0.shape)}, {settings})")
    _passed(exercise, "ascends far above random inputs; L2, TV and jitter behave as specified; matches the reference "
                      "on 3 random CNNs")


def check_top_activating_examples(fn: Callable) -> None:
    """``fn(activation_fn, images, k) -> (values [k], indices [k])``: largest first, ties to the lower index."""
    exercise = "top_activating_examples"
    _require_own_function(exercise, fn, history.top_activating_examples)
    cases = []
    for trial, ((channels, hidden, image_size), layer, unit, n, k) in enumerate([
        (((4, 6), 12, 6), "logits", 3, 60, 5),
        (((6, 8), 16, 8), "conv2", 2, 200, 10),
        (((3, 5), 10, 10), "fc", 4, 37, 1),
    ]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        model = _random_cnn(channels, hidden, image_size, seed=_seed(exercise, 10 + trial))
        images = torch.randn(n, 1, image_size, image_size, generator=generator)
        cases.append((history.unit_activation(model, layer, unit), images, k, f"unit {unit} of {layer!r}, {n} images, k={k}"))
    # Ties: cap a unit so that more than k images share the top activation.
    generator = torch.Generator().manual_seed(_seed(exercise, 9))
    model = _random_cnn((4, 6), 12, 8, seed=_seed(exercise, 19))
    images = torch.randn(80, 1, 8, 8, generator=generator)
    logit = history.unit_activation(model, "logits", 0)
    with torch.no_grad():
        cap = float(logit(images).sort(descending=True).values[11])
    cases.append((lambda x: logit(x).clamp(max=cap), images, 6, "a unit where 12 images tie for the top"))

    for activation_fn, images, k, label in cases:
        with torch.no_grad():
            activations = activation_fn(images)
        expected_values, expected_indices = history.top_activating_examples(activation_fn, images, k)
        result = _call(exercise, fn, activation_fn, images.clone(), k)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (values, indices).")
        values, indices = (torch.as_tensor(r).detach() for r in result)
        if tuple(indices.shape) != (k,) or tuple(values.shape) != (k,):
            _fail(exercise, f"values and indices should both have shape ({k},); got {tuple(values.shape)} and "
                            f"{tuple(indices.shape)} ({label}).")
        if indices.is_floating_point() or indices.min() < 0 or indices.max() >= len(images):
            _fail(exercise, f"indices should be integer positions in images ({label}).")
        indices = indices.long()
        compare(exercise, values, activations[indices], "the values", context=f"(they must be the activations of the "
                                                                              f"images you return; {label})")
        if (values[1:] > values[:-1] + 1e-6).any():
            _fail(exercise, f"the values are not in descending order ({label}).")
        outside = torch.ones(len(images), dtype=torch.bool)
        outside[indices] = False
        if outside.any() and activations[outside].max() > values[-1] + 1e-6:
            _fail(exercise, f"an image you left out activates the unit more than one you returned ({label}).")
        if not torch.equal(indices, expected_indices):
            _fail(exercise, f"{int((indices != expected_indices).sum())} of {k} indices differ from the documented "
                            f"order: equal activations go to the lower index first ({label}).")
        compare(exercise, values, expected_values, "the values", context=f"({label})")
    _passed(exercise, "3 random CNNs and units, plus a tie that the lower index must win")


# Training-data attribution ---------------------------------------------------------------------------------------


def _final_layer_gradient(model: "history.DigitsCNN", x: Tensor, y: Tensor) -> Tensor:
    """The gradient of the *summed* cross-entropy loss over ``(x, y)`` with respect to ``model.out``'s weight and
    bias, flattened like ``history.last_layer_gradients``, by autograd on copies of the parameters (so it is an
    independent computation of what the reference does in closed form, and the model stays frozen)."""
    weight = model.out.weight.detach().clone().requires_grad_(True)
    bias = model.out.bias.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        with torch.no_grad():
            _, cache = model.run_with_cache(x)
        logits = torch.nn.functional.linear(cache["fc"], weight, bias)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        grad_weight, grad_bias = torch.autograd.grad(loss, [weight, bias])
    return torch.cat([grad_weight.flatten(), grad_bias])


def _scores_once(exercise: str, fn: Callable, model, test_x, test_y, train_x, train_y, label: str) -> Tensor:
    """Call ``fn`` and check what any answer must satisfy: inputs and model untouched, a finite float tensor of shape
    ``[n_test, n_train]``."""
    before = [t.clone() for t in (test_x, test_y, train_x, train_y)]
    params = [p.detach().clone() for p in model.parameters()]
    result = _call(exercise, fn, model, test_x, test_y, train_x, train_y)
    for name, old, new in zip(("test_x", "test_y", "train_x", "train_y"), before, (test_x, test_y, train_x, train_y)):
        _unchanged(exercise, old, new, name)
    if not all(torch.equal(old, new.detach()) for old, new in zip(params, model.parameters())):
        _fail(exercise, "your function changed the model's parameters; attribution must only read them.")
    if not isinstance(result, Tensor):
        _fail(exercise, f"return a torch.Tensor, got {type(result).__name__}.")
    result = result.detach()
    expected_shape = (len(test_x), len(train_x))
    if tuple(result.shape) != expected_shape:
        _fail(exercise, f"the scores have shape {tuple(result.shape)}; they should be [n_test, n_train] = "
                        f"{list(expected_shape)} ({label}).")
    if not result.is_floating_point():
        _fail(exercise, f"the scores have dtype {result.dtype}; a floating-point tensor is expected.")
    if not torch.isfinite(result).all():
        _fail(exercise, f"the scores contain non-finite values ({label}).")
    return result.double()


def _random_attribution_case(exercise: str, trial: int, channels, hidden, image_size, n_classes, n_test, n_train):
    generator = torch.Generator().manual_seed(_seed(exercise, trial))
    model = _random_cnn(channels, hidden, image_size, seed=_seed(exercise, 100 + trial), n_classes=n_classes)
    draw_x = lambda n: torch.randn(n, 1, image_size, image_size, generator=generator)  # noqa: E731
    draw_y = lambda n: torch.randint(0, n_classes, (n,), generator=generator)  # noqa: E731
    return model, draw_x(n_test), draw_y(n_test), draw_x(n_train), draw_y(n_train)


def check_tracin_scores(fn: Callable) -> None:
    """``fn(model, test_x, test_y, train_x, train_y) -> [n_test, n_train]``, ``score[i, j]`` the dot product of the
    gradients of test example ``i``'s and training example ``j``'s own cross-entropy losses with respect to the final
    layer's weight and bias (``history.tracin_scores``).

    Properties first, against autograd (an independent computation): the score is linear in each gradient, so the sum
    of a row is test ``i``'s gradient dotted with the gradient of the *summed* training loss, and the sum of a column
    is the gradient of the summed test loss dotted with training example ``j``'s; swapping the two sets transposes the
    scores; an example's score with itself is its squared gradient norm (never negative); permuting the training set
    permutes the columns. Then the reference on fresh random CNNs of several shapes and class counts."""
    exercise = "tracin_scores"
    _require_own_function(exercise, fn, history.tracin_scores)

    # 1. Linearity in each gradient, against autograd.
    model, test_x, test_y, train_x, train_y = _random_attribution_case(exercise, 0, (6, 8), 16, 8, 10, 4, 30)
    label = "a random CNN, 4 test and 30 training images"
    scores = _scores_once(exercise, fn, model, test_x, test_y, train_x, train_y, label)
    train_total = _final_layer_gradient(model, train_x, train_y).double()
    test_total = _final_layer_gradient(model, test_x, test_y).double()
    scale = float(scores.abs().max()) or 1.0
    row_sums = torch.stack([_final_layer_gradient(model, test_x[i:i + 1], test_y[i:i + 1]).double() @ train_total
                            for i in range(len(test_x))])
    compare(exercise, scores.sum(1), row_sums, "the sums of your rows", atol=1e-5 * scale,
            context="(each should be test i's own loss gradient dotted with the gradient of the summed training "
                    "loss: use each test example's own loss and label, and the final layer's weight *and* bias)")
    column_sums = torch.stack([test_total @ _final_layer_gradient(model, train_x[j:j + 1], train_y[j:j + 1]).double()
                               for j in range(len(train_x))])
    compare(exercise, scores.sum(0), column_sums, "the sums of your columns", atol=1e-5 * scale,
            context="(each should be the gradient of the summed test loss dotted with training example j's own loss "
                    "gradient)")

    # 2. Symmetry, self-scores and permutations.
    swapped = _scores_once(exercise, fn, model, train_x, train_y, test_x, test_y, "test and training sets swapped")
    compare(exercise, swapped.T, scores, "the scores with the two sets swapped, transposed", atol=1e-5 * scale,
            context="(a dot product of two gradients is symmetric)")
    own = _scores_once(exercise, fn, model, test_x, test_y, test_x, test_y, "the test set scored against itself")
    if (own.diagonal() < -1e-6 * scale).any():
        _fail(exercise, "an example's score with itself is negative: it is a gradient's squared norm, so both "
                        "gradients must be of the loss (not one of the loss and one of its negative).")
    permutation = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(_seed(exercise, 50)))
    permuted = _scores_once(exercise, fn, model, test_x, test_y, train_x[permutation], train_y[permutation],
                            "the training set permuted")
    compare(exercise, permuted, scores[:, permutation], "the scores of a permuted training set", atol=1e-5 * scale,
            context="(column j must depend on training example j alone)")

    # 3. The reference, on fresh random CNNs, class counts and set sizes.
    trials = [((4, 6), 12, 6, 10, 5, 40), ((8, 16), 32, 8, 10, 3, 70), ((3, 5), 10, 10, 4, 7, 25)]
    for trial, (channels, hidden, image_size, n_classes, n_test, n_train) in enumerate(trials, start=1):
        case = _random_attribution_case(exercise, trial, channels, hidden, image_size, n_classes, n_test, n_train)
        label = (f"a random CNN with hidden size {hidden} and {n_classes} classes, {n_test} test and {n_train} "
                 f"training images of {image_size}x{image_size}")
        actual = _scores_once(exercise, fn, *case, label)
        model = case[0]
        expected = history.tracin_scores(copy.deepcopy(model).double(), case[1].double(), case[2], case[3].double(),
                                         case[4])
        compare(exercise, actual, expected, "the scores", atol=1e-5 * (float(expected.abs().max()) or 1.0),
                context=f"({label})")
    _passed(exercise, "row and column sums match autograd, symmetric, non-negative self-scores, permutation-"
                      "equivariant, and equal to the reference on 3 random CNNs")


# Point scores and research directions ------------------------------------------------------------------------


def check_my_area_scores(scores: Any, required: Sequence[str] | None = None) -> None:
    """The student's point scores for several areas: ``{area: {score key: 0..10}}``, covering at least ``required``
    (default: every area the deck scores), every area one of the course's short names (``research.AREAS``)."""
    exercise = "your point scores"
    from . import research

    if required is None:
        required = [area for area, info in research.AREAS.items()
                    if any(value is not None for value in info["scores"].values())]

    if not isinstance(scores, dict):
        _fail(exercise, f"my_scores should be a dict {{area: scores}}, got {type(scores).__name__}.")
    unknown = [area for area in scores if area not in research.AREAS]
    if unknown:
        _fail(exercise, f"unknown area name(s) {unknown}: use the course's short names, which are "
                        f"{', '.join(research.AREAS)}.")
    missing = [area for area in required if area not in scores]
    if missing:
        _fail(exercise, f"score at least the areas the deck scores: missing {missing}.")
    for area, area_scores in scores.items():
        try:
            research.validate_scores(area_scores)
        except (ValueError, TypeError) as error:
            _fail(exercise, f"{area!r}: {error}")
    _passed(exercise, f"{len(scores)} areas, three scores between 0 and 10 each")


def _random_score_tables(exercise: str) -> list[tuple[dict, dict, float, str]]:
    """Fresh random score tables of several sizes, plus tables built to tie."""
    pool = ["circuits", "grokking", "backup", "saes", "feature-composition", "modularity", "training-process",
            "attention-superposition", "probing", "steering"]
    tables = []
    for trial, (n_areas, weight) in enumerate([(2, 0.5), (4, 0.25), (7, 1.0), (5, 0.0), (6, 0.75)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        names = [pool[i] for i in torch.randperm(len(pool), generator=generator)[:n_areas].tolist()]
        draw = lambda: int(torch.randint(0, 11, (1,), generator=generator))  # noqa: E731
        mine = {name: {key: draw() for key in history.SCORE_KEYS} for name in names}
        deck = {}
        for name in names + ["unscored-by-you"]:
            if float(torch.rand(1, generator=generator)) < 0.25:
                continue  # an area the deck does not score
            deck[name] = {key: (None if float(torch.rand(1, generator=generator)) < 0.2 else draw())
                          for key in history.SCORE_KEYS}
        tables.append((mine, deck, weight, f"{n_areas} areas, weight_mine={weight}"))
    # Equal values, different excitement: the more exciting area wins although it is listed second.
    mine = {"grokking": {"low_hanging_fruit": 6, "excitement": 2, "difficulty": 3},
            "saes": {"low_hanging_fruit": 3, "excitement": 5, "difficulty": 3}}
    tables.append((mine, {}, 0.5, "two areas tied on value"))
    # Equal values and excitement: the area listed first wins.
    mine = {"modularity": {"low_hanging_fruit": 4, "excitement": 4, "difficulty": 2},
            "backup": {"low_hanging_fruit": 4, "excitement": 4, "difficulty": 2},
            "circuits": {"low_hanging_fruit": 1, "excitement": 1, "difficulty": 9}}
    deck = {"backup": {"low_hanging_fruit": None, "excitement": None, "difficulty": None}}
    tables.append((mine, deck, 0.5, "two areas tied on value and excitement"))
    return tables


def check_pick_area(fn: Callable) -> None:
    """``fn(my_scores, deck_scores, weight_mine) -> (best_area, {area: value})`` as ``history.pick_area`` documents."""
    exercise = "pick_area"
    _require_own_function(exercise, fn, history.pick_area)
    import copy

    tables = _random_score_tables(exercise)
    wrong_values, wrong_picks = 0, 0
    for mine, deck, weight, label in tables:
        expected_best, expected_values = history.pick_area(mine, deck, weight)
        before = copy.deepcopy((mine, deck))
        result = _call(exercise, fn, mine, deck, weight)
        if (mine, deck) != before:
            _fail(exercise, "your function modified the score tables it was given; work on copies.")
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            _fail(exercise, "return a pair (best_area, values) with values a dict {area: value}.")
        best, values = result
        if set(values) != set(mine):
            _fail(exercise, f"values should have one entry per area you scored ({len(mine)}), got {len(values)} ({label}).")
        if best not in mine:
            _fail(exercise, f"the pick {best!r} is not one of the areas you scored ({label}).")
        try:
            bad = sum(abs(float(values[a]) - v) > 1e-6 for a, v in expected_values.items())
        except (TypeError, ValueError):
            _fail(exercise, f"values should be numbers ({label}).")
        if bad:
            wrong_values += 1
            continue
        if float(values[best]) < max(float(v) for v in values.values()) - 1e-9:
            _fail(exercise, f"your pick does not have the largest value among your own values ({label}).")
        wrong_picks += best != expected_best
    if wrong_values or wrong_picks:
        _fail(exercise, f"on {len(tables)} score tables, {wrong_values} have wrong values and {wrong_picks} a wrong pick "
                        f"(check the weighting, the areas the deck does not score, and the tie rules).")
    _passed(exercise, f"{len(tables)} score tables: values, the argmax, and both tie rules")
