"""Chapter 00's checks: what the notebook's test cells call (``check.total_variation(total_variation)``).

Every function check runs known answers and properties first, because those say *what* is wrong (a constant image
has no total variation; one Adam step moves each pixel by about ``lr``, uphill; a unit that reads one pixel is
spread over exactly the jitter's shifts; a tie goes to the lower index; a gradient dotted with itself is never
negative), then compares with the reference (:mod:`.reference`, generated from the solution notebook) on fresh
random CNNs and inputs, naming entries by what they are (an image, a pixel, a rank, a test and a training example,
an area). Quizzes say how many answers are wrong, never which; their keys are digests
(``reference.ANSWER_KEYS``). The machinery is :mod:`mechinterp_course.checking`.

Everything a check hands to the student's function can travel to a graded kernel: tensors, numbers, dicts, the
chapter's :class:`~.digits.DigitsCNN` and its :class:`~.digits.UnitActivation` / :class:`~.digits.Pixel` units
(classes of a non-hidden module), never a lambda.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import research
from ..checking import as_tensor, call, check, compare, fail, is_hidden, trials, unchanged, wrong_answers
from . import TIE_TOLERANCE, WHEN_OPTIONS, reference, scored_areas
from .deck import (
    EVENTS,
    LINEAGE_QUESTIONS,
    LINEAGE_QUIZ,
    PEOPLE,
    PEOPLE_QUIZ,
    PEOPLE_QUIZ_OPTIONS,
    PROJECTS_QUIZ,
    STATUS,
    SUCCESS_QUIZ,
    SUCCESS_WORKS,
    TERNARY_PAPERS,
    WHEN_QUIZ,
)
from .digits import DigitsCNN, Pixel, UnitActivation

#: Index names for a batch of images ``[batch, C, H, W]``: "image 2, channel 0, row 3, col 5".
IMAGE_INDEX = ["image ", "channel ", "row ", "col "]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block on one CPU thread: the chapter's CNNs are so small that thread start-up costs more than the
    work (several times more on a busy 2-core machine), and the grader runs these checks for every notebook."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------------
# Quizzes
# --------------------------------------------------------------------------------------------------------------


def _key_name(value: Any) -> str:
    return str(value).strip().upper()


def _answers(answers: Any, questions: Mapping[str, str], shape: str) -> dict[str, Any]:
    """The student's answers ``{question: value}`` with the question keys normalised (``"a"`` is ``"A"``, ``1`` is
    ``"1"``); fails on a non-dict, missing or unexpected keys, and answers still ``None``."""
    if not isinstance(answers, Mapping):
        fail(f"give a dict {shape}, got {type(answers).__name__}.")
    given = {_key_name(key): value for key, value in answers.items()}
    missing = [key for key in questions if key not in given]
    extra = [key for key in given if key not in questions]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(map(repr, extra))}"] if extra else []
        )
        fail(f"use exactly the keys {', '.join(questions)} ({'; '.join(parts)}).")
    unfilled = [key for key in questions if given[key] is None]
    if unfilled:
        fail(
            f"{len(unfilled)} answer{'s' * (len(unfilled) > 1)} {_are(len(unfilled))} still None "
            f"({', '.join(unfilled)}): fill them in."
        )
    return {key: given[key] for key in questions}


def _option_name(value: Any) -> str:
    return " ".join(str(value).replace("_", " ").split()).casefold()


def _options(
    given: Mapping[str, Any], options: Sequence[str], what: str, normalise: Callable[[Any], str] = _option_name
) -> dict[str, str]:
    """``given`` with every answer replaced by the option it names (case and spacing do not matter); fails on an
    answer that is not an option, naming the question and listing the options."""
    allowed = {normalise(option): option for option in options}
    chosen = {}
    for key, value in given.items():
        if not isinstance(value, str) or normalise(value) not in allowed:
            fail(f"{what} {key}: {value!r} is not one of the options ({', '.join(map(repr, options))}).")
        chosen[key] = allowed[normalise(value)]
    return chosen


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


def _count_wrong(variable: str, chosen: Mapping[str, str]) -> int:
    return len(wrong_answers(variable, dict(chosen), reference.ANSWER_KEYS[variable]))


@check("people", functions=0)
def people(answers: Any) -> str:
    """``answers``: job letter of ``PEOPLE_QUIZ`` -> the name of the person of slide 5 who did that job."""
    given = _answers(answers, PEOPLE_QUIZ, "job letter -> person, e.g. {'A': 'Chris Olah', ...}")
    chosen = _options(given, PEOPLE_QUIZ_OPTIONS, "job")
    roleless = sorted({name for name in chosen.values() if next(p for p in PEOPLE if p.name == name).role is None})
    if roleless:
        fail(
            f"you name {', '.join(roleless)}, to whom slide 5 gives no role; every job here is one of the roles the "
            f"slide does give. Read the roles again, with the group each person is in."
        )
    twice = sorted({name for name in chosen.values() if list(chosen.values()).count(name) > 1})
    if twice:
        fail(
            f"you give {', '.join(twice)} more than one job; here every job is a different person's (two people "
            f"share 'Core infrastructure', in different groups)."
        )
    wrong = _count_wrong("people", chosen)
    if wrong:
        fail(
            f"{wrong} of {len(PEOPLE_QUIZ)} jobs {_are(wrong)} matched to the wrong person. Match each job to a "
            f"role of slide 5 first, then to the group (Distill or transformer-circuits) the job was done in."
        )
    return f"all {len(PEOPLE_QUIZ)} jobs matched to the person slide 5 gives that role"


@check("builds_on", functions=0)
def builds_on(answers: Any) -> str:
    """``answers``: each letter of ``LINEAGE_QUESTIONS`` -> the letter of the earlier work it builds on most
    directly (a letter of ``LINEAGE_QUIZ``)."""
    questions = {letter: LINEAGE_QUIZ[letter] for letter in LINEAGE_QUESTIONS}
    given = _answers(answers, questions, "work letter -> letter of the work it builds on, e.g. {'B': 'A', ...}")
    chosen = _options(given, list(LINEAGE_QUIZ), "work", normalise=_key_name)
    itself = [work for work, earlier in chosen.items() if work == earlier]
    if itself:
        fail(f"{', '.join(itself)} cannot build on itself.")
    later = [
        work
        for work, earlier in chosen.items()
        if EVENTS[LINEAGE_QUIZ[earlier]].start >= EVENTS[LINEAGE_QUIZ[work]].start
    ]
    if later:
        fail(
            f"{len(later)} of your answers ({', '.join(later)}) name{'s' * (len(later) == 1)} a work that is not "
            f"earlier than the work built on it; a work can only build on an earlier one (the timeline has the "
            f"dates)."
        )
    wrong = _count_wrong("builds_on", chosen)
    if wrong:
        fail(
            f"{wrong} of {len(questions)} works {_are(wrong)} linked to the wrong predecessor. For each, ask which "
            f"earlier work made the tool it uses or posed the problem it answers (the timeline's summaries say what "
            f"each did)."
        )
    return f"all {len(questions)} works linked to the earlier work they build on"


@check("when_in_training", functions=0)
def when_in_training(answers: Any) -> str:
    """``answers``: work letter of ``WHEN_QUIZ`` -> its class on slide 8's "when in the training process" axis."""
    given = _answers(answers, WHEN_QUIZ, f"work letter -> one of {', '.join(map(repr, WHEN_OPTIONS))}")
    chosen = _options(given, WHEN_OPTIONS, "work", normalise=lambda v: _option_name(v).replace(" ", "-"))
    wrong = _count_wrong("when_in_training", chosen)
    if wrong:
        fail(
            f"{wrong} of {len(WHEN_QUIZ)} works {'has' if wrong == 1 else 'have'} the wrong class. Ask of each "
            f"work: does it choose how a model is built or trained so that it is easier to read, study how "
            f"something forms during training, or analyse a model that is already trained?"
        )
    return f"all {len(WHEN_QUIZ)} works placed on slide 8's second axis"


@check("placement", functions=0)
def placement(corners: Any, placement: Any) -> str:
    """The student's own placement of slide 9's works (the deck's text gives no positions, so there is no key):
    three distinct corner labels, and for every work three non-negative weights with a positive sum."""
    if not (
        isinstance(corners, (list, tuple))
        and len(corners) == 3
        and all(isinstance(c, str) and c.strip() for c in corners)
    ):
        fail("corners should be three non-empty strings.")
    if len({c.strip().casefold() for c in corners}) != 3:
        fail("the three corners should be different.")
    if not isinstance(placement, Mapping):
        fail(f"placement should be a dict {{work: (a, b, c)}}, got {type(placement).__name__}.")
    missing = [work for work in TERNARY_PAPERS if work not in placement]
    extra = [work for work in placement if work not in TERNARY_PAPERS]
    if missing or extra:
        fail(
            f"placement needs exactly the {len(TERNARY_PAPERS)} works of slide 9 as keys ({len(missing)} missing, "
            f"e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})."
        )
    points = []
    for work, weights in placement.items():
        try:
            values = [float(w) for w in weights]
        except (TypeError, ValueError):
            fail(f"the placement of {work[:40]!r} should be three numbers.")
        if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
            fail(f"the placement of {work[:40]!r} should be three non-negative numbers with a positive sum.")
        points.append(tuple(round(v / sum(values), 2) for v in values))
    if len(set(points)) == 1:
        fail(f"all {len(points)} works sit at the same position: place each where you think it belongs.")
    if len(set(points)) < 4:
        fail(f"only {len(set(points))} distinct positions for {len(points)} works: spread them out where they differ.")
    return f"{len(points)} works placed at {len(set(points))} distinct positions (graded by hand from here)"


@check("projects", functions=0)
def projects(answers: Any) -> str:
    """``answers``: project letter of ``PROJECTS_QUIZ`` -> the item of slide 17 (a key of ``STATUS``) it belongs
    to."""
    given = _answers(answers, PROJECTS_QUIZ, "project letter -> an item of slide 17, e.g. {'A': 'Circuits', ...}")
    chosen = _options(given, list(STATUS), "project")
    wrong = _count_wrong("projects", chosen)
    if wrong:
        fail(
            f"{wrong} of {len(PROJECTS_QUIZ)} projects {_are(wrong)} under the wrong item. The deck's one-line "
            f"summaries of the areas (the table above) tell the two kinds of composition apart; ask of each project "
            f"what it would explain."
        )
    return f"all {len(PROJECTS_QUIZ)} projects under their item of slide 17"


@check("successes", functions=0)
def successes(answers: Any) -> str:
    """``answers``: work number of ``SUCCESS_WORKS`` -> the letter of slide 80's claim it is the example of."""
    given = _answers(answers, SUCCESS_WORKS, "work number -> claim letter, e.g. {'1': 'A', ...}")
    chosen = _options(given, list(SUCCESS_QUIZ), "work", normalise=_key_name)
    twice = sorted({claim for claim in chosen.values() if list(chosen.values()).count(claim) > 1})
    if twice:
        fail(f"you give claim {', '.join(twice)} to more than one work; slide 80 gives one example per claim.")
    wrong = _count_wrong("successes", chosen)
    if wrong:
        fail(
            f"{wrong} of {len(SUCCESS_WORKS)} works {_are(wrong)} matched to the wrong claim. Ask what each work "
            f"produced: a program, weights, a formula or a proof."
        )
    return f"all {len(SUCCESS_WORKS)} works matched to the claim slide 80 gives them"


# --------------------------------------------------------------------------------------------------------------
# Feature visualisation
# --------------------------------------------------------------------------------------------------------------


def random_cnn(channels: tuple[int, int], hidden: int, image_size: int, seed: int, n_classes: int = 10) -> DigitsCNN:
    """A random CNN with He-initialised weights and small random biases (so that units are alive and gradients are
    informative), frozen like the notebook's trained CNN, in eval mode."""
    model = DigitsCNN(channels, hidden, n_classes, image_size, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * math.sqrt(2.0 / param[0].numel()))
            param.requires_grad_(False)
    return model


def _tv_case(kind: str) -> tuple[Tensor, str]:
    """A hand-made image whose total variation is known, and what it is (for the message)."""
    if kind == "rows":  # changes only from one row to the next
        x = torch.arange(4.0)[:, None].expand(4, 5).reshape(1, 1, 4, 5).clone()
        return x, "an image whose rows are constant (it changes only between vertical neighbours)"
    if kind == "cols":
        x = torch.arange(5.0)[None, :].expand(4, 5).reshape(1, 1, 4, 5).clone()
        return x, "an image whose columns are constant (it changes only between horizontal neighbours)"
    if kind == "spike":
        x = torch.zeros(1, 1, 3, 3)
        x[0, 0, 1, 1] = 2.0
        return x, "a 3x3 image that is 0 except for a 2 in the middle (four neighbour pairs differ by 2)"
    x = torch.zeros(1, 2, 3, 3)
    x[0, 1, 1, 1] = 2.0
    return x, "a 2-channel 3x3 image that is 0 except for a 2 in the middle of the second channel (sum channels too)"


@check("total_variation")
def total_variation(fn: Callable) -> str:
    """``fn(x [batch, C, H, W]) -> [batch]``: the summed squared differences between neighbouring pixels."""
    constant = torch.full((2, 1, 6, 6), 0.7)
    compare(
        call(fn, constant.clone()),
        torch.zeros(2),
        "the total variation",
        context="of two constant images (no neighbours differ, so 0 for each; one value per image)",
        index=["image "],
    )
    for kind in ("rows", "cols", "spike", "channels"):
        x, what = _tv_case(kind)
        value, expected = as_tensor(call(fn, x.clone()), "the total variation"), reference.total_variation(x)
        if tuple(value.shape) == (1,):  # one image: say its value
            value, expected = value[0], expected[0]
        compare(value, expected, "the total variation", context=f"of {what}", index=["image "])
    shapes = [(2, 1, 8, 8), (3, 2, 5, 7), (1, 3, 4, 4)]
    for trial, shape in zip(trials(len(shapes)), shapes):
        if is_hidden():
            shape = (trial.randint(1, 4), trial.randint(1, 3), trial.randint(2, 9), trial.randint(2, 9))
        x = torch.randn(*shape, generator=trial.generator)
        before = x.clone()
        actual = call(fn, x)
        unchanged(before, x, "x")
        compare(
            actual,
            reference.total_variation(x),
            "the total variation",
            context=f"(random x of shape {shape})",
            index=["image "],
        )
        compare(
            call(fn, x + 3.0),
            reference.total_variation(x),
            "the total variation of x + 3",
            context="(adding a constant to every pixel changes no difference between neighbours)",
            index=["image "],
        )
    return "constant, striped and single-pixel images; 3 random shapes; unchanged by adding a constant"


def same_norm_random(images: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``[n, batch, C, H, W]`` random images with the same L2 norm as each of ``images``."""
    noise = torch.randn(n, *images.shape, generator=generator)
    norms = images.flatten(1).norm(dim=1)
    return noise / noise.flatten(2).norm(dim=2)[..., None, None, None] * norms[None, :, None, None, None]


def _visualise_once(fn: Callable, activation_fn: Callable, x0: Tensor, settings: dict) -> Tensor:
    """Call the student's ``visualise`` and check what any answer must satisfy: ``x0`` untouched, a finite tensor
    of ``x0``'s shape."""
    before = x0.clone()
    result = call(fn, activation_fn, x0, **settings)
    unchanged(before, x0, "x0")
    if not isinstance(result, Tensor):
        fail(f"return a tensor, got {type(result).__name__}.")
    if tuple(result.shape) != tuple(x0.shape):
        fail(f"the result has shape {tuple(result.shape)}; it should have x0's shape {tuple(x0.shape)}.")
    if not torch.isfinite(result).all():
        fail(f"the result contains non-finite values (settings {settings}).")
    return result.detach()


def _diagnose_first_step(moved: Tensor, expected: Tensor, lr: float) -> None:
    """Say what a wrong first step did: nothing, downhill, or a step that is not Adam's (Adam's first step moves
    every pixel whose gradient is not zero by about ``lr``, whatever the gradient's size)."""
    if torch.allclose(moved, expected, atol=1e-4):
        return
    if not moved.abs().gt(1e-8).any():
        fail(
            "after one step the images have not changed: step the optimiser on the copy of x0 that requires grad, "
            "and return that copy."
        )
    if torch.allclose(moved, -expected, atol=1e-4):
        fail(
            "after one step the pixels moved by lr *down* the gradient, lowering the unit: Adam minimises, so "
            "minimise the negative of the objective."
        )
    active = expected.abs() > lr / 2
    size = float(moved[active].abs().mean()) if active.any() else 0.0
    if abs(size - lr) > lr / 2:
        fail(
            f"after one step the pixels moved by {size:.3g} on average, where Adam's first step moves each pixel by "
            f"about lr={lr:g} whatever the size of its gradient: use torch.optim.Adam([x], lr=lr)."
        )


@check("visualise")
def visualise(fn: Callable) -> str:
    """``fn(activation_fn, x0, steps, lr, l2, tv, jitter, seed) -> [batch, C, H, W]``: activation maximisation."""
    with _one_thread():
        return _check_visualise(fn)


def _check_visualise(fn: Callable) -> str:
    [first] = trials(1)
    generator = first.generator
    model = random_cnn((6, 8), 16, 8, seed=first.seed % 100_000)
    unit = UnitActivation(model, "logits", torch.tensor([1, 4, 7]))
    x0 = 0.1 * torch.randn(3, 1, 8, 8, generator=generator)
    plain = dict(lr=0.1, l2=0.0, tv=0.0, jitter=0, seed=0)

    # 1. Known answers: no steps leave x0 as it is; one and two Adam steps go uphill by about lr per pixel.
    compare(
        _visualise_once(fn, unit, x0, dict(plain, steps=0)),
        x0,
        "the result",
        context="with steps=0 (it should be a copy of x0)",
        index=IMAGE_INDEX,
    )
    for steps, why in [
        (1, "one Adam step moves each pixel by about lr, in the direction that raises the unit"),
        (2, "each step uses that step's gradient alone"),
    ]:
        expected = reference.visualise(unit, x0, **dict(plain, steps=steps))
        actual = _visualise_once(fn, unit, x0, dict(plain, steps=steps))
        if steps == 1:
            _diagnose_first_step(actual - x0, expected - x0, plain["lr"])
        compare(
            actual,
            expected,
            "the images",
            atol=1e-4,
            index=IMAGE_INDEX,
            context=f"after {steps} step{'s' * (steps > 1)} with lr={plain['lr']}, no penalties and no jitter ({why})",
        )

    # 2. Ascent, far above random images of the same size.
    plain["steps"] = 40
    result = _visualise_once(fn, unit, x0, plain)
    with torch.no_grad():
        start, reached = unit(x0), unit(result)
        randoms = torch.stack([unit(r) for r in same_norm_random(result, 128, generator)])
    if not (reached > start).all():
        fail(
            "the optimised images lower the target activation: the Adam step must *increase* the objective "
            "(minimise its negative)."
        )
    if not (reached > randoms.max(0).values).all():
        fail(
            "the optimised images do not reach a higher activation than random images of the same norm: the "
            "optimisation is not following the gradient of the target unit."
        )

    # 3. Each penalty shrinks what it penalises.
    for name, settings, measure, label in [
        ("l2", dict(plain, l2=0.5), lambda x: x.flatten(1).norm(dim=1), "the images' L2 norm"),
        (
            "tv",
            dict(plain, tv=2.0),
            lambda x: reference.total_variation(x) / x.flatten(1).pow(2).sum(1),
            "the images' total variation (relative to their squared norm)",
        ),
    ]:
        penalised = _visualise_once(fn, unit, x0, settings)
        if not (measure(penalised) < 0.5 * measure(result)).all():
            fail(
                f"with {name}={settings[name]} {label} should be much smaller than with {name}=0; it is not (check "
                f"the sign and the weight of the {name} penalty)."
            )

    # 4. Jitter, on a unit that reads one pixel: it must spread over every shift in [-jitter, jitter], no further.
    size, centre, shift = 11, 5, 2
    pixel = Pixel(centre, centre)
    blank = torch.zeros(1, 1, size, size)
    still = _visualise_once(fn, pixel, blank, dict(steps=60, lr=0.1, l2=0.05, tv=0.0, jitter=0, seed=3))
    mass = still[0, 0].pow(2)
    if mass.sum() <= 0 or mass[centre, centre] < 0.99 * mass.sum():
        fail("with jitter=0 a unit that reads one pixel should change only that pixel.")
    moved = _visualise_once(fn, pixel, blank, dict(steps=100, lr=0.1, l2=0.05, tv=0.0, jitter=shift, seed=3))
    mass = moved[0, 0].pow(2)
    window = mass[centre - shift : centre + shift + 1, centre - shift : centre + shift + 1]
    if mass.sum() <= 0 or window.sum() < (1 - 1e-6) * mass.sum():
        fail(
            f"with jitter={shift} a one-pixel unit should only change pixels at most {shift} away from it (draw the "
            f"shifts from [-jitter, jitter] and roll the image the unit sees)."
        )
    edges = [window[0].sum(), window[-1].sum(), window[:, 0].sum(), window[:, -1].sum()]
    if mass[centre, centre] > 0.5 * mass.sum() or min(edges) <= 0:
        fail(
            f"with jitter={shift} a one-pixel unit should be spread over every shift from -{shift} to {shift} in "
            f"both directions (the unit must see the rolled image; torch.randint's upper bound is exclusive)."
        )

    # 5. The reference, on fresh random CNNs, units and settings.
    cases = [
        (((4, 6), 12, 6), "logits", 3, dict(steps=30, lr=0.1, l2=0.05, tv=0.1, jitter=1, seed=11)),
        (((8, 16), 32, 8), "conv2", 4, dict(steps=30, lr=0.05, l2=0.01, tv=0.02, jitter=2, seed=12)),
        (((3, 5), 10, 10), "fc", 2, dict(steps=30, lr=0.1, l2=0.02, tv=0.0, jitter=1, seed=13)),
    ]
    for trial, ((channels, hidden, image_size), layer, batch, settings) in zip(trials(len(cases)), cases):
        model = random_cnn(channels, hidden, image_size, seed=trial.seed % 100_000)
        n_units = {"logits": 10, "fc": hidden, "conv2": channels[1]}[layer]
        units = UnitActivation(model, layer, torch.randint(0, n_units, (batch,), generator=trial.generator))
        x0 = 0.1 * torch.randn(batch, 1, image_size, image_size, generator=trial.generator)
        settings = dict(settings, seed=trial.randint(0, 1000)) if is_hidden() else settings
        expected = reference.visualise(units, x0, **settings)
        actual = _visualise_once(fn, units, x0, settings)
        compare(
            actual,
            expected,
            "the optimised images",
            atol=1e-3,
            rtol=1e-3,
            index=IMAGE_INDEX,
            context=f"(a random CNN, units in {layer!r}, images {tuple(x0.shape)}, {settings})",
        )
    return (
        "steps 0-2 exact; ascends far above random inputs; L2, TV and jitter behave as specified; matches the "
        "reference on 3 random CNNs"
    )


#: The known case of the top-examples check: a one-pixel unit on images whose pixel values are these.
TOP_KNOWN_VALUES = (3.0, 1.0, 3.0, 2.0, 0.0, 2.0)
TOP_KNOWN_K = 3


def _check_top_once(fn: Callable, activation_fn: Callable, images: Tensor, k: int, label: str) -> None:
    with torch.no_grad():
        activations = activation_fn(images)
    result = call(fn, activation_fn, images.clone(), k)
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        fail(f"return a pair (values, indices), got {type(result).__name__} ({label}).")
    values, indices = result
    if not (isinstance(values, Tensor) and isinstance(indices, Tensor)):
        fail(f"values and indices should both be tensors ({label}).")
    values, indices = values.detach(), indices.detach()
    if tuple(indices.shape) != (k,) or tuple(values.shape) != (k,):
        fail(
            f"values and indices should both have shape ({k},); got {tuple(values.shape)} and "
            f"{tuple(indices.shape)} ({label})."
        )
    if indices.is_floating_point() or indices.min() < 0 or indices.max() >= len(images):
        fail(f"indices should be integer positions in images, from 0 to {len(images) - 1} ({label}).")
    indices = indices.long()
    compare(
        values,
        activations[indices],
        "the values",
        index=["rank "],
        context=f"(they must be the activations of the images you return, in the same order; {label})",
    )
    if (values[1:] > values[:-1] + 1e-6).any():
        fail(f"the values are not in descending order: the largest activation comes first ({label}).")
    outside = torch.ones(len(images), dtype=torch.bool)
    outside[indices] = False
    if outside.any() and activations[outside].max() > values[-1] + 1e-6:
        better = int(torch.nonzero(outside & (activations > values[-1] + 1e-6))[0])
        fail(f"image {better}, which you left out, activates the unit more than one you returned ({label}).")
    expected_values, expected_indices = reference.top_activating_examples(activation_fn, images, k)
    if not torch.equal(indices, expected_indices):
        fail(
            f"{int((indices != expected_indices).sum())} of {k} ranks hold another image than they should: equal "
            f"activations go to the lower index first ({label})."
        )
    compare(values, expected_values, "the values", index=["rank "], context=f"({label})")


@check("top_activating_examples")
def top_activating_examples(fn: Callable) -> str:
    """``fn(activation_fn, images, k) -> (values [k], indices [k])``: largest first, ties to the lower index."""
    known = torch.zeros(len(TOP_KNOWN_VALUES), 1, 2, 2)
    known[:, 0, 0, 0] = torch.tensor(TOP_KNOWN_VALUES)
    _check_top_once(
        fn,
        Pixel(0, 0),
        known,
        TOP_KNOWN_K,
        f"a unit whose values on {len(TOP_KNOWN_VALUES)} images "
        f"are {', '.join(f'{v:g}' for v in TOP_KNOWN_VALUES)}, k={TOP_KNOWN_K}",
    )
    cases = [(((4, 6), 12, 6), "logits", 60, 5), (((6, 8), 16, 8), "conv2", 200, 10), (((3, 5), 10, 10), "fc", 37, 1)]
    with _one_thread():
        for trial, ((channels, hidden, size), layer, n, k) in zip(trials(len(cases) + 1), cases):
            model = random_cnn(channels, hidden, size, seed=trial.seed % 100_000)
            n_units = {"logits": 10, "fc": hidden, "conv2": channels[1]}[layer]
            unit = trial.randint(0, n_units - 1)
            images = torch.randn(n, 1, size, size, generator=trial.generator)
            _check_top_once(
                fn,
                UnitActivation(model, layer, unit),
                images,
                k,
                f"a random CNN, unit {unit} of {layer!r}, {n} images, k={k}",
            )
        # A ReLU unit that fires on 3 images only: with k=8, five images tie at 0 and the lower indices must win.
        [*_, trial] = trials(len(cases) + 1)
        model = random_cnn((4, 6), 12, 8, seed=trial.seed % 100_000)
        images = torch.randn(80, 1, 8, 8, generator=trial.generator)
        with torch.no_grad():
            pre = F.linear(
                F.max_pool2d(model.run_with_cache(images)[1]["conv2"], 2).flatten(1), model.fc.weight, model.fc.bias
            )[:, 0]
            model.fc.bias[0] -= pre.sort(descending=True).values[3]
        _check_top_once(
            fn,
            UnitActivation(model, "fc", 0),
            images,
            8,
            "a ReLU neuron that fires on 3 of 80 images, k=8, so 5 of the chosen tie at 0",
        )
    return "a known case with ties; 3 random CNNs and units; a ReLU neuron whose zeros tie"


# --------------------------------------------------------------------------------------------------------------
# Training-data attribution
# --------------------------------------------------------------------------------------------------------------


def _summed_loss_gradient(model: DigitsCNN, x: Tensor, y: Tensor) -> Tensor:
    """The gradient of the *summed* cross-entropy loss over ``(x, y)`` with respect to ``model.out``'s weight and
    bias (weight flattened row by row, then bias), by autograd on copies of the parameters: an independent check of
    what the student computes example by example, without touching the frozen model."""
    weight = model.out.weight.detach().clone().requires_grad_(True)
    bias = model.out.bias.detach().clone().requires_grad_(True)
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    with torch.enable_grad():
        loss = F.cross_entropy(F.linear(cache["fc"], weight, bias), y, reduction="sum")
        grad_weight, grad_bias = torch.autograd.grad(loss, [weight, bias])
    return torch.cat([grad_weight.flatten(), grad_bias])


def _scores_once(
    fn: Callable, model: DigitsCNN, test_x: Tensor, test_y: Tensor, train_x: Tensor, train_y: Tensor, label: str
) -> Tensor:
    """Call ``fn`` and check what any answer must satisfy: inputs and model untouched, a finite float tensor of shape
    ``[n_test, n_train]``."""
    inputs = {"test_x": test_x, "test_y": test_y, "train_x": train_x, "train_y": train_y}
    before = {name: tensor.clone() for name, tensor in inputs.items()}
    params = [p.detach().clone() for p in model.parameters()]
    result = call(fn, model, test_x, test_y, train_x, train_y)
    for name, tensor in inputs.items():
        unchanged(before[name], tensor, name)
    if not all(torch.equal(old, new.detach()) for old, new in zip(params, model.parameters())):
        fail("your function changed the model's parameters; attribution must only read them.")
    if not isinstance(result, Tensor):
        fail(f"return a torch.Tensor, got {type(result).__name__}.")
    result = result.detach()
    expected_shape = (len(test_x), len(train_x))
    if tuple(result.shape) != expected_shape:
        fail(
            f"the scores have shape {tuple(result.shape)}; they should be [n_test, n_train] = "
            f"{list(expected_shape)} ({label})."
        )
    if not result.is_floating_point():
        fail(f"the scores have dtype {result.dtype}; a floating-point tensor is expected.")
    if not torch.isfinite(result).all():
        fail(f"the scores contain non-finite values ({label}).")
    return result.double()


def _attribution_case(trial, channels, hidden, image_size, n_classes, n_test, n_train):
    model = random_cnn(channels, hidden, image_size, seed=trial.seed % 100_000, n_classes=n_classes)
    generator = trial.generator
    test_x = torch.randn(n_test, 1, image_size, image_size, generator=generator)
    test_y = torch.randint(0, n_classes, (n_test,), generator=generator)
    train_x = torch.randn(n_train, 1, image_size, image_size, generator=generator)
    train_y = torch.randint(0, n_classes, (n_train,), generator=generator)
    return model, test_x, test_y, train_x, train_y


@check("tracin_scores")
def tracin_scores(fn: Callable) -> str:
    """``fn(model, test_x, test_y, train_x, train_y) -> [n_test, n_train]``: dot products of per-example loss
    gradients with respect to the final layer's weight and bias.

    Properties first, against autograd: a score is linear in each gradient, so row ``i`` sums to test ``i``'s
    gradient dotted with the gradient of the *summed* training loss, and column ``j`` to the summed test loss's
    gradient dotted with training example ``j``'s; swapping the sets transposes the scores; an example's score with
    itself (a squared norm) is never negative; permuting the training set permutes the columns. Then the reference
    on fresh random CNNs of several sizes and class counts."""
    with _one_thread():
        return _check_tracin(fn)


def _check_tracin(fn: Callable) -> str:
    cases = [
        ((6, 8), 16, 8, 10, 4, 30),
        ((4, 6), 12, 6, 10, 5, 40),
        ((8, 16), 32, 8, 10, 3, 70),
        ((3, 5), 10, 10, 4, 7, 25),
    ]
    draws = list(trials(len(cases)))
    model, test_x, test_y, train_x, train_y = _attribution_case(draws[0], *cases[0])
    label = "a random CNN, 4 test and 30 training images"
    scores = _scores_once(fn, model, test_x, test_y, train_x, train_y, label)
    train_total = _summed_loss_gradient(model, train_x, train_y).double()
    test_total = _summed_loss_gradient(model, test_x, test_y).double()
    scale = float(scores.abs().max()) or 1.0
    row_sums = torch.stack(
        [
            _summed_loss_gradient(model, test_x[i : i + 1], test_y[i : i + 1]).double() @ train_total
            for i in range(len(test_x))
        ]
    )
    compare(
        scores.sum(1),
        row_sums,
        "the sums of your rows",
        atol=1e-5 * scale,
        index=["test example "],
        context="(each should be test example i's own loss gradient dotted with the gradient of the summed "
        "training loss: use each example's own loss and label, and the final layer's weight *and* bias)",
    )
    column_sums = torch.stack(
        [
            test_total @ _summed_loss_gradient(model, train_x[j : j + 1], train_y[j : j + 1]).double()
            for j in range(len(train_x))
        ]
    )
    compare(
        scores.sum(0),
        column_sums,
        "the sums of your columns",
        atol=1e-5 * scale,
        index=["training example "],
        context="(each should be the gradient of the summed test loss dotted with training example j's own "
        "loss gradient)",
    )

    swapped = _scores_once(fn, model, train_x, train_y, test_x, test_y, "test and training sets swapped")
    compare(
        swapped.T,
        scores,
        "the scores with the two sets swapped, transposed",
        atol=1e-5 * scale,
        index=["test example ", "training example "],
        context="(a dot product of two gradients is symmetric)",
    )
    own = _scores_once(fn, model, test_x, test_y, test_x, test_y, "the test set scored against itself")
    if (own.diagonal() < -1e-6 * scale).any():
        negative = int(torch.nonzero(own.diagonal() < -1e-6 * scale)[0])
        fail(
            f"test example {negative}'s score with itself is negative: it is a gradient's squared norm, so both "
            f"gradients must be of the loss (not one of the loss and one of its negative)."
        )
    permutation = torch.randperm(len(train_x), generator=draws[0].generator)
    permuted = _scores_once(
        fn, model, test_x, test_y, train_x[permutation], train_y[permutation], "the training set permuted"
    )
    compare(
        permuted,
        scores[:, permutation],
        "the scores of a permuted training set",
        atol=1e-5 * scale,
        index=["test example ", "training example "],
        context="(column j must depend on training example j alone)",
    )

    for trial, case in zip(draws[1:], cases[1:]):
        channels, hidden, image_size, n_classes, n_test, n_train = case
        if is_hidden():
            n_test, n_train = trial.randint(2, 8), trial.randint(10, 60)
        model, *inputs = _attribution_case(trial, channels, hidden, image_size, n_classes, n_test, n_train)
        label = (
            f"a random CNN with hidden size {hidden} and {n_classes} classes, {n_test} test and {n_train} "
            f"training images of {image_size}x{image_size}"
        )
        actual = _scores_once(fn, model, *inputs, label)
        test_x, test_y, train_x, train_y = inputs
        expected = reference.tracin_scores(
            copy.deepcopy(model).double(), test_x.double(), test_y, train_x.double(), train_y
        )
        compare(
            actual,
            expected,
            "the scores",
            atol=1e-5 * (float(expected.abs().max()) or 1.0),
            index=["test example ", "training example "],
            context=f"({label})",
        )
    return (
        "row and column sums match autograd, symmetric, non-negative self-scores, permutation-equivariant, and "
        "equal to the reference on 3 random CNNs"
    )


# --------------------------------------------------------------------------------------------------------------
# Point scores and research directions
# --------------------------------------------------------------------------------------------------------------


@check("my_scores", functions=0)
def my_scores(scores: Any) -> str:
    """The student's point scores for several areas, ``{area: {score key: 0..10}}``: at least the areas the deck
    scores, every area one of ``research.AREAS``'s short names. There is no right answer."""
    if not isinstance(scores, Mapping):
        fail(f"my_scores should be a dict {{area: scores}}, got {type(scores).__name__}.")
    unknown = [area for area in scores if area not in research.AREAS]
    if unknown:
        fail(f"unknown area name(s) {unknown}: use the course's short names, which are {', '.join(research.AREAS)}.")
    missing = [area for area in scored_areas() if area not in scores]
    if missing:
        fail(f"score at least the areas the deck scores: missing {missing}.")
    for area, area_scores in scores.items():
        try:
            research.validate_scores(area_scores)
        except (ValueError, TypeError) as error:
            fail(f"{area!r}: {error}")
    return f"{len(scores)} areas, three scores between 0 and 10 each"


KEYS = research.SCORE_KEYS


def _row(low_hanging_fruit: float | None, excitement: float | None, difficulty: float | None) -> dict:
    return {"low_hanging_fruit": low_hanging_fruit, "excitement": excitement, "difficulty": difficulty}


def _pick_once(fn: Callable, mine: dict, deck: dict, weight: float, label: str) -> tuple[str, dict]:
    """Call the student's ``pick_area``; check the form of ``(best, values)``, that the tables are untouched, and
    the values against the reference (one entry per area, named by the area). Returns the student's answer."""
    before = copy.deepcopy((mine, deck))
    result = call(fn, mine, deck, weight)
    if (mine, deck) != before:
        fail("your function modified the score tables it was given; work on copies.")
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[1], Mapping)):
        fail(f"return a pair (best_area, values) with values a dict {{area: value}} ({label}).")
    best, values = result
    missing = [area for area in mine if area not in values]
    extra = [area for area in values if area not in mine]
    if missing or extra:
        fail(
            f"values should have one entry per area you scored ({label}): missing {missing}, unexpected {extra}"
            f"{' (areas only the deck scores are left out)' if any(area in deck for area in extra) else ''}."
        )
    try:
        actual = torch.tensor([float(values[area]) for area in mine], dtype=torch.float64)
    except (TypeError, ValueError):
        fail(f"values should be numbers ({label}).")
    _, expected = reference.pick_area(mine, deck, weight)
    expected = torch.tensor([expected[area] for area in mine], dtype=torch.float64)
    if len(mine) == 1:
        compare(actual[0], expected[0], f"the value of {next(iter(mine))!r}", context=f"({label})")
    compare(actual, expected, "the areas' values", index=[list(mine)], context=f"({label})")
    if best not in mine:
        fail(f"the pick {best!r} is not one of the areas you scored ({label}).")
    return best, values


@check("pick_area")
def pick_area(fn: Callable) -> str:
    """``fn(my_scores, deck_scores, weight_mine) -> (best_area, {area: value})``: combined scores, the value, the
    argmax and its two tie rules."""
    # 1. Known answers, one rule at a time.
    mine = {"grokking": _row(6, 4, 3)}
    _pick_once(
        fn,
        mine,
        {},
        0.5,
        "one area the deck does not score: its value is yours alone, low-hanging fruit + excitement - difficulty",
    )
    _pick_once(
        fn,
        mine,
        {"grokking": _row(2, 8, 5)},
        0.5,
        "one area, both scores given: each key is the weighted mean of yours and the deck's",
    )
    for weight, whose in [(1.0, "yours alone"), (0.0, "the deck's alone")]:
        _pick_once(fn, mine, {"grokking": _row(2, 8, 5)}, weight, f"weight_mine={weight:g}: {whose}")
    _pick_once(
        fn, mine, {"grokking": _row(2, None, 5)}, 0.5, "the deck gives no excitement (None): that key is yours alone"
    )
    _pick_once(
        fn,
        {"saes": _row(3, 3, 3), "backup": _row(5, 5, 1)},
        {"circuits": _row(2, 2, 4), "saes": _row(9, 9, 9)},
        0.5,
        "the deck also scores an area you did not (ignore it) and not one you did",
    )
    best, _ = _pick_once(fn, {"grokking": _row(6, 2, 3), "saes": _row(3, 5, 3)}, {}, 0.5, "two areas tied on value")
    if best != "saes":
        fail(
            f"two areas tie on value (5 each) and 'saes' has the larger excitement, but you pick {best!r}: a tie "
            f"(values within {TIE_TOLERANCE:g}) goes to the larger combined excitement."
        )
    tied = {"modularity": _row(4, 4, 2), "backup": _row(4, 4, 2), "circuits": _row(1, 1, 9)}
    best, _ = _pick_once(fn, tied, {}, 0.5, "two areas tied on value and excitement")
    if best != "modularity":
        fail(
            f"'modularity' and 'backup' tie on value and on excitement, but you pick {best!r}: then the area listed "
            f"first in my_scores wins."
        )
    # 2. Fresh random tables of several sizes and weights.
    pool = list(research.AREAS) + ["probing", "steering"]
    sizes = [(2, 0.5), (4, 0.25), (7, 1.0), (5, 0.0), (6, 0.75)]
    for trial, (n_areas, weight) in zip(trials(len(sizes)), sizes):
        if is_hidden():
            n_areas, weight = trial.randint(1, len(pool)), trial.randint(0, 4) / 4
        generator = trial.generator
        names = [pool[i] for i in torch.randperm(len(pool), generator=generator)[:n_areas].tolist()]

        def draw(trial=trial) -> int:  # a score, from the trial's generator
            return trial.randint(research.MIN_SCORE, research.MAX_SCORE)

        mine = {name: _row(draw(), draw(), draw()) for name in names}
        deck = {}
        for name in names + ["unscored-by-you"]:
            if float(torch.rand(1, generator=generator)) < 0.25:
                continue  # an area the deck does not score
            deck[name] = {key: (None if float(torch.rand(1, generator=generator)) < 0.2 else draw()) for key in KEYS}
        label = f"{n_areas} random areas, weight_mine={weight:g}"
        best, values = _pick_once(fn, mine, deck, weight, label)
        expected_best, _ = reference.pick_area(mine, deck, weight)
        if best != expected_best:
            top = max(float(v) for v in values.values())
            why = (
                "it does not have the largest value"
                if float(values[best]) < top - TIE_TOLERANCE
                else "the tie rules decide between areas with equal values"
            )
            fail(f"your pick {best!r} is not the best area ({label}): {why}.")
    return f"each rule on its own, both tie rules, and {len(sizes)} random score tables"
