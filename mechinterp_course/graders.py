"""Instant-feedback checks, used both in a student's notebook and in nbgrader's autograded test cells.

Every ``check_*`` function runs the student's code and the reference implementation (``mechinterp_course.circuits``
and friends) on several *fresh* inputs of several shapes, checks properties that any correct answer has, and either
prints a short success line or raises :class:`CheckFailed` (an ``AssertionError``, so nbgrader marks the test cell
failed) with a message that says what is wrong -- shape, dtype, which values are off and by how much -- without
printing the expected answer.

Why these inputs: a hard-coded output fails because shapes and values change from one input to the next; a function
that ignores its input fails because the reference's output changes with it. Inputs come from seeds fixed per check
(not the seeds the notebook shows), so grading a notebook twice gives the same result.

Calling the library is not an answer (:func:`_require_own_function`). A check refuses at once any function defined in
the course library (the reference itself, or a ``functools.partial`` of a library function). It also refuses, when it
would otherwise pass, a function whose code calls the reference by its name (``circuits.ablate_head(...)``,
``from mechinterp_course.circuits import ablate_head``, ``getattr(circuits, "ablate_head")``), directly or through
the student's own helper functions, or through a global or default argument bound to the reference under another
name; a wrong one is told what is wrong with its output, like any answer. Other library helpers stay allowed
(exercises use e.g. ``grokking.fourier_basis``). This stops the one-line wrapper, not a determined attempt to disguise
the call (a name built at run time, a reference or a wrapper captured in a closure, which is how the tests wrap the
reference to stand for a student's answer): an instructor reading the notebook sees those.
"""

from __future__ import annotations

import builtins
import dis
import functools
import hashlib
import math
import sys
import sysconfig
import types
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import circuits, models, tasks

#: Default tolerances: float32 arithmetic in a different order differs by ~1e-6 relative.
ATOL = 1e-4
RTOL = 1e-4
#: Seeds per check; several inputs make a lucky pass vanishingly unlikely.
N_TRIALS = 3


class CheckFailed(AssertionError):
    """Raised when a student's answer is wrong; the message is the feedback the student sees."""


# --------------------------------------------------------------------------------------------------------------
# The machinery every check shares
# --------------------------------------------------------------------------------------------------------------


def _seed(check_name: str, trial: int) -> int:
    """A seed fixed per check and trial (stable across runs, different from any seed the notebook uses)."""
    digest = hashlib.sha256(f"{check_name}/{trial}".encode()).hexdigest()
    return int(digest[:8], 16)


def _fail(exercise: str, message: str) -> None:
    raise CheckFailed(f"{exercise}: {message}")


#: exercise -> why the function being checked is refused, raised by :func:`_passed` (see :func:`_require_own_function`).
_PENDING_REFUSALS: dict[str, str] = {}


def _passed(exercise: str, what: str) -> None:
    """Print the success line, unless the function turned out to be a wrapper around the reference."""
    refusal = _PENDING_REFUSALS.pop(exercise, None)
    if refusal is not None:
        _fail(exercise, refusal)
    print(f"\u2705 {exercise}: correct ({what}).")


def _is_library(module_name: str | None) -> bool:
    return module_name == "mechinterp_course" or (module_name or "").startswith("mechinterp_course.")


def _unwrap_partials(fn: Any) -> list[Any]:
    """``fn`` and, for a ``functools.partial`` or a bound method, the function it stands for (recursively)."""
    targets = [fn]
    while True:
        inner = getattr(fn, "func", None) if isinstance(fn, functools.partial) else getattr(fn, "__func__", None)
        if inner is None or inner is fn:
            return targets
        targets.append(inner)
        fn = inner


def _code_objects(code: types.CodeType):
    """``code`` and every code object nested in it (inner functions, lambdas, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


#: Opcodes that use a name as an attribute or an imported name (``x.NAME``, ``from m import NAME``).
_ATTRIBUTE_OPS = {"LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM", "IMPORT_NAME"}
_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME"}


def _calls_reference(fn: Callable, reference: Callable) -> bool:
    """Whether ``fn`` (or a helper of the same namespace it calls by name) reaches ``reference``: by naming it (as an
    attribute, an imported name or a string) while its globals, closure or imports reach the library module that
    defines it (or a package above it), or through a global (or a default argument) bound to the reference itself."""
    name = getattr(reference, "__name__", None)
    home = getattr(reference, "__module__", None)
    if not name or not home:
        return False
    home_and_parents = {".".join(home.split(".")[: i + 1]) for i in range(home.count(".") + 1)}

    def reaches_home(value: Any) -> bool:
        return value is reference or (isinstance(value, types.ModuleType) and value.__name__ in home_and_parents)

    seen: set[int] = set()

    def visit(func: types.FunctionType) -> bool:
        if id(func) in seen:
            return False
        seen.add(id(func))
        namespace = func.__globals__
        instructions = [ins for code in _code_objects(func.__code__) for ins in dis.get_instructions(code)]
        global_names = {ins.argval for ins in instructions if ins.opname in _GLOBAL_OPS}
        closure = [cell.cell_contents for cell in func.__closure__ or () if _cell_is_set(cell)]
        defaults = list(func.__defaults__ or ()) + list((func.__kwdefaults__ or {}).values())
        if any(namespace.get(n) is reference for n in global_names) or any(v is reference for v in defaults):
            return True
        reachable = (any(reaches_home(namespace.get(n)) for n in global_names) or any(map(reaches_home, closure))
                     or any(ins.opname == "IMPORT_NAME" and ins.argval in home_and_parents for ins in instructions))
        named = any(ins.argval == name for ins in instructions
                    if ins.opname in _ATTRIBUTE_OPS or (ins.opname == "LOAD_CONST" and isinstance(ins.argval, str)))
        if reachable and named:
            return True
        # The student's own helpers: functions of the same namespace that it calls by their global name. (A function
        # captured in a closure is not followed: that is how test harnesses wrap a reference, and in a notebook it
        # takes a deliberate factory.)
        helpers = [namespace.get(n) for n in global_names]
        return any(visit(h) for h in helpers if isinstance(h, types.FunctionType) and h.__globals__ is namespace)

    return any(visit(f) for f in _unwrap_partials(fn) if isinstance(f, types.FunctionType))


def _cell_is_set(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell: the variable is not assigned yet
        return False
    return True


_THIRD_PARTY_ROOTS = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")})


def _is_third_party(func: types.FunctionType) -> bool:
    """A function of the standard library or an installed package (not the student's, not the course's)."""
    if func.__module__ in (None, "__main__") or _is_library(func.__module__):
        return False
    path = getattr(sys.modules.get(func.__module__), "__file__", None) or ""
    return bool(path) and (path.startswith(_THIRD_PARTY_ROOTS) or "site-packages" in path)


def _require_own_function(exercise: str, fn: Any, reference: Callable | None = None) -> None:
    """Refuse what is not the student's own work: a non-function or a function defined in the course library (or a
    ``functools.partial`` of one), at once; a function that calls ``reference`` by its name (see the module
    docstring) when the check would otherwise pass. Until then such a function is checked like any other, so that a
    wrong one hears what is wrong with its output; a right one is refused by :func:`_passed` instead of praised."""
    _PENDING_REFUSALS.pop(exercise, None)
    if not callable(fn):
        _fail(exercise, f"expected a function, got {type(fn).__name__}. Pass the function itself, without calling it.")
    for target in _unwrap_partials(fn):
        if (reference is not None and target is reference) or _is_library(getattr(target, "__module__", "") or ""):
            _fail(exercise, "this is the course library's reference implementation; write your own function.")
    if reference is not None and _calls_reference(fn, reference):
        _PENDING_REFUSALS[exercise] = (f"your function calls the course library's `{reference.__name__}`, the answer "
                                       f"to this exercise; write the computation yourself (other library helpers are "
                                       f"fine).")


def _raises(exercise: str, fn: Callable, error: type[BaseException], *args) -> bool:
    """Call the student's function where it should raise ``error``: True if it did. Any other exception is reported
    like a crash (through :func:`_call`), ``NotImplementedError`` as "not implemented yet"."""

    def attempt() -> bool:
        try:
            fn(*args)
        except error:
            return True
        return False

    return _call(exercise, attempt)


def _call(exercise: str, fn: Callable, *args, **kwargs) -> Any:
    """Call the student's function; turn ``NotImplementedError`` and crashes into readable feedback."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        _fail(exercise, "not implemented yet (the function still raises NotImplementedError).")
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug: report it, as the notebook would
        _fail(exercise, f"your function raised {type(error).__name__}: {error}")


def _describe_index(index: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def compare(exercise: str, actual: Any, expected: Tensor, what: str = "output",
            atol: float = ATOL, rtol: float = RTOL, context: str = "") -> None:
    """Compare a student's tensor with the reference; on a mismatch, say how without giving the answer."""
    where = f" {context}" if context else ""
    if isinstance(actual, (int, float)) and expected.ndim == 0:
        actual = torch.tensor(float(actual))
    if not isinstance(actual, Tensor):
        _fail(exercise, f"{what}{where} should be a torch.Tensor, got {type(actual).__name__}.")
    if actual.requires_grad:
        actual = actual.detach()
    if tuple(actual.shape) != tuple(expected.shape):
        _fail(exercise, f"{what}{where} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.")
    if expected.is_floating_point() and not actual.is_floating_point():
        _fail(exercise, f"{what}{where} has dtype {actual.dtype}; a floating-point tensor is expected.")
    actual_f, expected_f = actual.double().cpu(), expected.double().cpu()
    if torch.isnan(actual_f).any() and not torch.isnan(expected_f).any():
        _fail(exercise, f"{what}{where} contains {int(torch.isnan(actual_f).sum())} NaN value(s).")
    close = torch.isclose(actual_f, expected_f, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        error = (actual_f - expected_f).abs().nan_to_num(nan=math.inf)
        worst = torch.nonzero(error == error.max())[0].tolist()
        n_bad, n = int((~close).sum()), close.numel()
        _fail(exercise, f"{n_bad} of {n} values of {what}{where} are wrong; the largest error is "
                        f"{float(error.max()):.3g} at index {_describe_index(worst)}.")


def _unchanged(exercise: str, before: Tensor, after: Tensor, name: str) -> None:
    if not torch.equal(before, after):
        _fail(exercise, f"your function modified its input `{name}` in place; work on a copy (e.g. `.clone()`).")


def _causal_pattern(batch: int, n_heads: int, seq: int, generator: torch.Generator) -> Tensor:
    """A random but valid attention pattern ``[batch, n_heads, q, k]``: causal, rows summing to one."""
    scores = torch.randn(batch, n_heads, seq, seq, generator=generator) * 3
    mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, -math.inf).softmax(-1)


@functools.lru_cache(maxsize=4)
def _zoo_state(name: str) -> tuple[dict, dict]:
    model, card = models.load(name)
    return {k: v.clone() for k, v in model.state_dict().items()}, card


def fresh_model(name: str = "induction-2l"):
    """A pristine copy of a zoo model, so that a student's hooks or weight edits can't change what is graded."""
    state, card = _zoo_state(name)
    model = models.make_model(card["config"], seed=card["seed"])
    model.load_state_dict(state)
    model.reset_hooks()
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# Chapter 1, "Circuits"
# --------------------------------------------------------------------------------------------------------------


def check_get_attention_pattern(fn: Callable) -> None:
    """``fn(model, tokens, layer) -> [batch, n_heads, q, k]``: read a pattern out of ``run_with_cache``."""
    exercise = "get_attention_pattern"
    _require_own_function(exercise, fn)
    model = fresh_model()
    for trial, (batch, half_len, layer) in enumerate([(3, 7, 0), (2, 12, 1), (1, 20, 1)]):
        tokens = tasks.repeated_tokens(batch, half_len, model.cfg.d_vocab, seed=_seed(exercise, trial))
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        expected = cache[f"blocks.{layer}.attn.hook_pattern"]
        actual = _call(exercise, fn, model, tokens.clone(), layer)
        compare(exercise, actual, expected, "the pattern", context=f"(layer {layer}, {batch} x {tokens.shape[1]} tokens)")
    _passed(exercise, "3 inputs, both layers")


def _check_score(exercise: str, fn: Callable, reference: Callable, needs_half_len: bool, offset_of: Callable) -> None:
    _require_own_function(exercise, fn, reference)
    shapes = [(2, 4, 11), (3, 2, 17), (1, 8, 9)]
    for trial, (batch, n_heads, half_len) in enumerate(shapes):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        seq = 1 + 2 * half_len
        pattern = _causal_pattern(batch, n_heads, seq, generator)
        args = (half_len,) if needs_half_len else ()
        expected = reference(pattern, *args)
        before = pattern.clone()
        actual = _call(exercise, fn, pattern, *args)
        _unchanged(exercise, before, pattern, "pattern")
        compare(exercise, actual, expected, "the scores", context=f"(pattern of shape {tuple(pattern.shape)})")
    # Property: a head that does exactly this job scores 1, one that never does scores 0.
    half_len, seq = 6, 13
    offset = offset_of(half_len)
    perfect = torch.zeros(1, 2, seq, seq)
    for q in range(seq):
        k = q - offset if q - offset >= 0 else q
        perfect[0, 0, q, k] = 1.0
        perfect[0, 1, q, 0] = 1.0 if q - offset != 0 else 0.0
        if q - offset == 0:
            perfect[0, 1, q, q] = 1.0
    actual = _call(exercise, fn, perfect, *((half_len,) if needs_half_len else ()))
    compare(exercise, actual, torch.tensor([1.0, 0.0]), "the scores",
            context="(on a head that always attends to the right token, and one that never does)")
    _passed(exercise, "3 random patterns of different shapes, plus a perfect and a useless head")


def check_previous_token_scores(fn: Callable) -> None:
    """``fn(pattern [batch, n_heads, q, k]) -> [n_heads]``."""
    _check_score("previous_token_scores", fn, circuits.previous_token_scores, False, lambda half_len: 1)


def check_duplicate_token_scores(fn: Callable) -> None:
    """``fn(pattern, half_len) -> [n_heads]``."""
    _check_score("duplicate_token_scores", fn, circuits.duplicate_token_scores, True, lambda half_len: half_len)


def check_induction_scores(fn: Callable) -> None:
    """``fn(pattern, half_len) -> [n_heads]``."""
    _check_score("induction_scores", fn, circuits.induction_scores, True, lambda half_len: half_len - 1)


def check_circuit_heads(previous_token_heads: Any, induction_heads: Any) -> None:
    """The heads the student identified, as lists of ``(layer, head)``, against the thresholded scores."""
    exercise = "identify the induction circuit"
    model = fresh_model()
    half_len = 30
    tokens = tasks.repeated_tokens(64, half_len, model.cfg.d_vocab, seed=_seed(exercise, 0))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n_layers = model.cfg.n_layers
    expected = {
        "previous_token_heads": circuits.all_head_scores(cache, n_layers, circuits.previous_token_scores),
        "induction_heads": circuits.all_head_scores(cache, n_layers, circuits.induction_scores, half_len=half_len),
    }
    for name, given in [("previous_token_heads", previous_token_heads), ("induction_heads", induction_heads)]:
        try:
            given_set = {(int(layer), int(head)) for layer, head in given}
        except (TypeError, ValueError):
            _fail(exercise, f"{name} should be a list of (layer, head) pairs, got {given!r}.")
        truth = {tuple(map(int, lh)) for lh in torch.nonzero(expected[name] > circuits.INDUCTION_THRESHOLD).tolist()}
        missing, extra = truth - given_set, given_set - truth
        if missing or extra:
            _fail(exercise, f"{name}: {len(missing)} head(s) above the {circuits.INDUCTION_THRESHOLD} threshold are "
                            f"missing and {len(extra)} listed head(s) are below it.")
    _passed(exercise, "both lists match the heads whose scores exceed the threshold")


def check_head_dla(fn: Callable) -> None:
    """``fn(z [batch, n_heads, d_head], W_O [n_heads, d_head, d_model], direction [batch, d_model]) -> [batch, n_heads]``."""
    exercise = "head_direct_logit_attribution"
    _require_own_function(exercise, fn, circuits.head_direct_logit_attribution)
    for trial, (batch, n_heads, d_head, d_model) in enumerate([(2, 4, 16, 64), (5, 3, 8, 24), (1, 6, 4, 10)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        z = torch.randn(batch, n_heads, d_head, generator=generator)
        W_O = torch.randn(n_heads, d_head, d_model, generator=generator)
        direction = torch.randn(batch, d_model, generator=generator)
        expected = circuits.head_direct_logit_attribution(z, W_O, direction)
        actual = _call(exercise, fn, z.clone(), W_O.clone(), direction.clone())
        compare(exercise, actual, expected, "the attributions", context=f"(z of shape {tuple(z.shape)})", atol=1e-3)
        # Property: the heads' attributions add up to the attention layer's total output along the direction.
        total = ((torch.einsum("bhd,hdm->bm", z, W_O)) * direction).sum(-1)
        compare(exercise, actual.detach().sum(-1), total, "the sum over heads", atol=1e-3)
    _passed(exercise, "3 random shapes; the heads' attributions add up to the layer's output")


def check_logit_diff_decomposition(fn: Callable) -> None:
    """``fn(model, cache, answer, wrong) -> (terms [n_components], labels)``, summing to the true logit difference."""
    exercise = "decompose the logit difference"
    _require_own_function(exercise, fn, circuits.logit_diff_decomposition)
    model = fresh_model()
    for trial, (batch, half_len) in enumerate([(16, 10), (8, 15)]):
        pair = tasks.patching_pair(batch, half_len, model.cfg.d_vocab, seed=_seed(exercise, trial))
        with torch.no_grad():
            logits, cache = model.run_with_cache(pair.clean)
        expected, labels = circuits.logit_diff_decomposition(model, cache, pair.answer, pair.wrong)
        result = _call(exercise, fn, model, cache, pair.answer, pair.wrong)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(exercise, "return a pair (terms, labels).")
        terms, given_labels = result
        if list(given_labels) != labels:
            _fail(exercise, f"the labels should be {labels}, in that order; got {list(given_labels)}.")
        compare(exercise, terms, expected.detach(), "the terms", atol=1e-3)
        true_diff = circuits.logit_diff(logits, pair.answer, pair.wrong)
        compare(exercise, torch.as_tensor(terms).detach().sum(), true_diff.detach(), "the sum of the terms",
                context="(it must equal the model's logit difference)", atol=1e-3)
    _passed(exercise, "2 fresh prompt batches; the terms sum to the true logit difference")


#: Method names ``ablate_head`` must refuse: a misspelling, a capitalised name, and a method the exercise doesn't have.
UNKNOWN_ABLATION_METHODS = ("resampel", "Zero", "median")


def check_ablate_head(fn: Callable) -> None:
    """``fn(z, head, method, reference=None, resample_index=None) -> z'`` for zero, mean and resample ablation."""
    exercise = "ablate_head"
    _require_own_function(exercise, fn, circuits.ablate_head)
    for trial, (batch, pos, n_heads, d_head) in enumerate([(4, 7, 4, 16), (3, 5, 2, 8)]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        z = torch.randn(batch, pos, n_heads, d_head, generator=generator)
        reference = torch.randn(6, pos + 2, n_heads, d_head, generator=generator)
        index = torch.randint(0, 6, (batch,), generator=generator)
        head = (trial + 1) % n_heads
        for method in ("zero", "mean", "resample"):
            before = z.clone()
            expected = circuits.ablate_head(z, head, method, reference, index)
            actual = _call(exercise, fn, z, head, method, reference.clone(), index.clone())
            _unchanged(exercise, before, z, "z")
            compare(exercise, actual, expected, "the ablated z", context=f"({method} ablation of head {head})")
        for method in UNKNOWN_ABLATION_METHODS:
            if not _raises(exercise, fn, ValueError, z.clone(), head, method, reference.clone(), index.clone()):
                _fail(exercise, f"method={method!r} returned a value; an unknown method should raise a ValueError "
                                f"(so that a typo cannot silently run the wrong ablation).")
    _passed(exercise, "zero, mean and resample ablation on 2 random shapes; inputs left untouched; unknown methods "
                      "refused")


#: (shape of ``value``, how clean and corrupted are given, whether clean < corrupted) per trial: python floats and
#: tensors, scalars and per-example values, both signs of ``clean - corrupted``.
_NORMALISED_METRIC_TRIALS = [((10,), "float", False), ((3, 4), "0-d tensor", True), ((), "float", True),
                             ((6,), "per-example tensor", False)]


def check_normalised_metric(fn: Callable) -> None:
    """``fn(value, clean, corrupted)``: 1 at the clean run's metric, 0 at the corrupted run's, linear in between."""
    exercise = "normalised_metric"
    _require_own_function(exercise, fn, circuits.normalised_metric)
    for trial, (shape, kind, clean_below) in enumerate(_NORMALISED_METRIC_TRIALS):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        values = torch.randn(shape, generator=generator) * 4
        ends_shape = shape if kind == "per-example tensor" else ()
        low = torch.randn(ends_shape, generator=generator) * 3 - 2
        high = low + 1 + 4 * torch.rand(ends_shape, generator=generator)  # at least 1 apart
        clean, corrupted = (low, high) if clean_below else (high, low)
        if kind == "float":
            clean, corrupted = float(clean), float(corrupted)
        context = f"(value of shape {tuple(shape)}, clean and corrupted as {kind}s, clean " \
                  f"{'below' if clean_below else 'above'} corrupted)"
        expected = torch.as_tensor(circuits.normalised_metric(values, clean, corrupted)).float()
        actual = _call(exercise, fn, values.clone(), clean, corrupted)
        compare(exercise, actual, expected, "the normalised values", context=context)
        for end, target in [(clean, 1.0), (corrupted, 0.0)]:
            run_value = torch.as_tensor(end).float().clone()
            actual = _call(exercise, fn, run_value, clean, corrupted)
            label = "clean" if target == 1.0 else "corrupted"
            compare(exercise, actual, torch.full(run_value.shape, target),
                    f"the metric of the {label} run itself", context=context)
    _passed(exercise, f"{len(_NORMALISED_METRIC_TRIALS)} random trials (floats and tensors, either sign); the clean "
                      f"run maps to 1 and the corrupted run to 0")


def _patching_trials(exercise: str, model, corruption: str = "value"):
    for trial, (batch, half_len) in enumerate([(8, 6), (6, 9)]):
        pair = tasks.patching_pair(batch, half_len, model.cfg.d_vocab, corruption=corruption,
                                   seed=_seed(exercise, trial))
        metric = functools.partial(_logit_diff_metric, answer=pair.answer, wrong=pair.wrong)
        yield pair, metric


def _logit_diff_metric(logits: Tensor, answer: Tensor, wrong: Tensor) -> Tensor:
    return circuits.logit_diff(logits, answer, wrong)


def _check_model_function(exercise: str, fn: Callable, reference: Callable, corruption: str = "value",
                          atol: float = 1e-3, extra_args: Sequence = ()) -> None:
    _require_own_function(exercise, fn, reference)
    model = fresh_model()
    for pair, metric in _patching_trials(exercise, model, corruption):
        expected = reference(model, pair.clean, pair.corrupted, *extra_args, metric)
        actual = _call(exercise, fn, model, pair.clean.clone(), pair.corrupted.clone(), *extra_args, metric)
        model.reset_hooks()
        compare(exercise, actual, expected.detach(), "the result", atol=atol,
                context=f"(a fresh clean/corrupted batch of shape {tuple(pair.clean.shape)})")


def check_patch_residual(fn: Callable) -> None:
    """``fn(model, clean, corrupted, metric) -> [n_layers, pos]``."""
    _check_model_function("patch_residual_by_layer_pos", fn, circuits.patch_residual_by_layer_pos)
    _passed("patch_residual_by_layer_pos", "2 fresh clean/corrupted batches of different lengths")


def check_patch_heads(fn: Callable) -> None:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]``."""
    _check_model_function("patch_heads", fn, circuits.patch_heads)
    _passed("patch_heads", "2 fresh clean/corrupted batches")


def check_attribution_patch_heads(fn: Callable) -> None:
    """``fn(model, clean, corrupted, metric) -> [n_layers, n_heads]`` (the gradient estimate)."""
    _check_model_function("attribution_patch_heads", fn, circuits.attribution_patch_heads)
    _passed("attribution_patch_heads", "2 fresh clean/corrupted batches")


#: Sender/receiver pairs that are no path (same layer, or the sender after the receiver): they must raise ValueError.
IMPOSSIBLE_PATHS = [((1, 0), (1, 1)), ((0, 2), (0, 1)), ((1, 2), (0, 3))]


def check_path_patch_key(fn: Callable) -> None:
    """``fn(model, clean, corrupted, sender, receiver, metric) -> scalar``."""
    exercise = "path_patch_key"
    _require_own_function(exercise, fn, circuits.path_patch_key)
    for sender, receiver in [((0, 3), (1, 1)), ((0, 1), (1, 0)), ((0, 0), (1, 2))]:
        _check_model_function(exercise, fn, circuits.path_patch_key, corruption="key", extra_args=(sender, receiver))
    model = fresh_model()
    pair = tasks.patching_pair(4, 6, model.cfg.d_vocab, corruption="key", seed=_seed(exercise, 9))
    metric = functools.partial(_logit_diff_metric, answer=pair.answer, wrong=pair.wrong)
    # Known answers. An impossible path is refused...
    for sender, receiver in IMPOSSIBLE_PATHS:
        if not _raises(exercise, fn, ValueError, model, pair.clean.clone(), pair.corrupted.clone(), sender, receiver,
                       metric):
            _fail(exercise, f"sender {sender} -> receiver {receiver} returned a value; a sender that is not in an "
                            f"earlier layer than the receiver is no path at all and should raise a ValueError.")
        model.reset_hooks()
    # ... and with identical clean and corrupted inputs there is nothing to restore: the corrupted run's metric.
    with torch.no_grad():
        unchanged = metric(model(pair.corrupted))
    actual = _call(exercise, fn, model, pair.corrupted.clone(), pair.corrupted.clone(), (0, 3), (1, 2), metric)
    model.reset_hooks()
    compare(exercise, actual, unchanged, "the result", atol=1e-3,
            context="(with clean = corrupted, where patching any path changes nothing)")
    _passed(exercise, "3 sender/receiver pairs on 2 fresh batches each; impossible paths refused; clean = corrupted "
                      "changes nothing")


def check_composition_score(fn: Callable) -> None:
    """``fn(W_A [..., n, m], W_B [..., m, k]) -> [...]``."""
    exercise = "composition_score"
    _require_own_function(exercise, fn, circuits.composition_score)
    for trial, shape in enumerate([((8, 8), (8, 8)), ((3, 6, 5), (3, 5, 7)), ((2, 1, 4, 4), (1, 3, 4, 4))]):
        generator = torch.Generator().manual_seed(_seed(exercise, trial))
        W_A, W_B = torch.randn(*shape[0], generator=generator), torch.randn(*shape[1], generator=generator)
        expected = circuits.composition_score(W_A, W_B)
        compare(exercise, _call(exercise, fn, W_A.clone(), W_B.clone()), expected, "the scores",
                context=f"(W_A {tuple(W_A.shape)}, W_B {tuple(W_B.shape)})")
        compare(exercise, _call(exercise, fn, 3.0 * W_A, 0.5 * W_B), expected, "the scores of rescaled matrices",
                context="(the score must not depend on the matrices' scale)")
    _passed(exercise, "3 shapes, batched; invariant to rescaling")


# Counterexample hunt ------------------------------------------------------------------------------------------

#: The circuit must lose most of its faithfulness: at most this, against about 0.97 on the standard probe (so more
#: than half of what the circuit explained there is gone). A distribution built from the architecture reaches ~0.3.
COUNTEREXAMPLE_MAX_FAITHFULNESS = 0.5
#: ... while the full model still does well: at least this fraction of the counted predictions right (the reference
#: distribution gives ~0.89, the model's own training distribution ~0.99 on the repeated half).
COUNTEREXAMPLE_MIN_ACCURACY = 0.7
#: Enough counted predictions that the measurement is not noise.
COUNTEREXAMPLE_MIN_PREDICTIONS = 500
#: Faithfulness divides by (loss with every head ablated - the full model's loss) on the counted predictions. Unless
#: the heads matter there by at least this many nats, the ratio is noise over a small denominator, and a low
#: "faithfulness" says nothing about the circuit. The standard probe and the reference distribution give ~5 nats.
COUNTEREXAMPLE_MIN_BASELINE_GAP = 1.0


def induction_circuit(model) -> list[tuple[int, int]]:
    """The chapter's induction circuit: heads above the threshold for induction or previous-token scores."""
    half_len = 30
    tokens = tasks.repeated_tokens(64, half_len, model.cfg.d_vocab, seed=2024)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    n_layers = model.cfg.n_layers
    induction = circuits.all_head_scores(cache, n_layers, circuits.induction_scores, half_len=half_len)
    previous = circuits.all_head_scores(cache, n_layers, circuits.previous_token_scores)
    selected = (induction > circuits.INDUCTION_THRESHOLD) | (previous > circuits.INDUCTION_THRESHOLD)
    return [tuple(lh) for lh in torch.nonzero(selected).tolist()]


# The mask function sees the tokens only ----------------------------------------------------------------------
#
# ``which_predictions(tokens)`` decides which predictions count. If it could run a model it could count exactly the
# predictions where the circuit fails and the model succeeds, whatever the distribution. So the grader calls a copy
# of it (and of every function of the student's it calls) whose globals lack every ``torch.nn.Module`` and every
# module of this library; refuses a closure or default argument that holds a module or a model; and, while the mask
# is computed, makes any model's forward pass raise. (Reading weights through some other route is not policed:
# the instructor sees the code.)


class _ModelRun(RuntimeError):
    """Raised by the forward pre-hook that guards ``which_predictions``."""


def _hidden_from_mask(value: Any) -> bool:
    return isinstance(value, torch.nn.Module) or (isinstance(value, types.ModuleType) and _is_library(value.__name__))


def _tokens_only(exercise: str, fn: Callable, what: str) -> tuple[Callable, dict[str, str]]:
    """A copy of ``fn`` that cannot see models or the course library, and the names hidden from it (name -> type).

    The student's functions it reaches (through its globals, its closure or a ``functools.partial``) are copied the
    same way, so a helper cannot reach the notebook's ``model`` either. Functions of installed packages (torch,
    einops, ...) are used as they are.
    """
    hidden: dict[str, str] = {}
    copies: dict[int, Any] = {}

    def refuse_captured(owner: str, name: str, value: Any, where: str) -> None:
        if isinstance(value, (types.ModuleType, torch.nn.Module)):
            kind = "a model" if isinstance(value, torch.nn.Module) else f"the module `{value.__name__}`"
            _fail(exercise, f"`{owner}` holds {kind} in {where} `{name}`; {what} must compute the mask from the "
                            f"tokens alone, so it may not capture modules or models.")

    def restrict(value: Any) -> Any:
        if isinstance(value, functools.partial):
            for i, arg in enumerate(value.args):
                refuse_captured(what, f"#{i}", arg, "the functools.partial argument")
            for name, arg in value.keywords.items():
                refuse_captured(what, name, arg, "the functools.partial argument")
            return functools.partial(restrict(value.func), *value.args, **value.keywords)
        if isinstance(value, types.FunctionType) and not _is_third_party(value):
            return copy(value)
        return value

    def copy(func: types.FunctionType) -> types.FunctionType:
        if id(func) in copies:
            return copies[id(func)]
        code = func.__code__
        positional_defaults = func.__defaults__ or ()
        first_default = code.co_argcount - len(positional_defaults)
        for name, value in zip(code.co_varnames[first_default:], positional_defaults):
            refuse_captured(func.__name__, name, value, "the default argument")
        for name, value in (func.__kwdefaults__ or {}).items():
            refuse_captured(func.__name__, name, value, "the default argument")
        namespace: dict[str, Any] = {"__builtins__": func.__globals__.get("__builtins__", builtins)}
        new_cells = tuple(types.CellType() for _ in code.co_freevars)
        clone = types.FunctionType(code, namespace, func.__name__, positional_defaults, new_cells or None)
        clone.__kwdefaults__ = func.__kwdefaults__
        copies[id(func)] = clone  # before recursing: a function that calls itself gets its own copy
        for name, cell, new_cell in zip(code.co_freevars, func.__closure__ or (), new_cells):
            if _cell_is_set(cell):
                refuse_captured(func.__name__, name, cell.cell_contents, "its closure variable")
                new_cell.cell_contents = restrict(cell.cell_contents)
        for name in {n for c in _code_objects(code) for n in c.co_names} & func.__globals__.keys():
            value = func.__globals__[name]
            if _hidden_from_mask(value):
                hidden[name] = "a model" if isinstance(value, torch.nn.Module) else "a module of the course library"
            else:
                namespace[name] = restrict(value)
        return clone

    if not isinstance(fn, (types.FunctionType, functools.partial)):
        _fail(exercise, f"{what} should be a plain function (def or lambda), got {type(fn).__name__}.")
    return restrict(fn), hidden


def _call_tokens_only(exercise: str, fn: Callable, tokens: Tensor, what: str = "which_predictions") -> Any:
    """``fn(tokens)`` through :func:`_call`, with no model or course module in reach (see above)."""
    restricted, hidden = _tokens_only(exercise, fn, what)
    ran: list[str] = []

    def refuse_forward(module, args):
        ran.append(type(module).__name__)
        raise _ModelRun(type(module).__name__)

    def attempt():
        handle = torch.nn.modules.module.register_module_forward_pre_hook(refuse_forward)
        try:
            result = restricted(tokens)
        except _ModelRun:
            result = None
        except NameError as error:
            if getattr(error, "name", None) in hidden:
                _fail(exercise, f"{what} uses `{error.name}`, {hidden[error.name]}: the mask must depend on the tokens "
                                f"only, so the grader hides models and the course library from it.")
            raise
        finally:
            handle.remove()
        if ran:
            _fail(exercise, f"{what} ran a model ({ran[0]}): the mask must be computed from the tokens alone, not "
                            f"from what a model does on them.")
        return result

    return _call(exercise, attempt)


def measure_counterexample(make_batch: Callable, which_predictions: Callable, seed: int,
                           batch: int = 128) -> dict[str, float]:
    """Draw ``make_batch(batch, seed)``, let ``which_predictions(tokens)`` (which sees the tokens only) say which
    predictions count, and measure the full model and the circuit there (``circuits.circuit_faithfulness``, plus the
    number of counted predictions)."""
    exercise = "counterexample hunt"
    for name, fn in [("make_batch", make_batch), ("which_predictions", which_predictions)]:
        if not callable(fn):
            _fail(exercise, f"pass your function {name} itself, got {type(fn).__name__}.")
    model = fresh_model()
    tokens = _call(exercise, make_batch, batch, seed)
    if isinstance(tokens, tuple):
        _fail(exercise, "make_batch(batch, seed) returns the tokens alone; which predictions count is decided by "
                        "which_predictions(tokens).")
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32) or tokens.ndim != 2:
        _fail(exercise, "tokens must be an integer tensor of shape [batch, pos].")
    if tokens.shape[0] != batch or not 2 <= tokens.shape[1] <= model.cfg.n_ctx:
        _fail(exercise, f"tokens has shape {tuple(tokens.shape)}; expected [{batch}, pos] with 2 <= pos <= {model.cfg.n_ctx}.")
    if tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab:
        _fail(exercise, f"tokens must lie in [0, {model.cfg.d_vocab - 1}].")
    tokens = tokens.long()
    mask = _call_tokens_only(exercise, which_predictions, tokens.clone())
    expected_shape = (batch, tokens.shape[1] - 1)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != expected_shape:
        got = (f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor)
               else type(mask).__name__)
        _fail(exercise, f"which_predictions must return a boolean tensor of shape [{batch}, {tokens.shape[1] - 1}] "
                        f"(one per prediction), got a {got}.")
    n_counted = int(mask.sum())
    if n_counted < COUNTEREXAMPLE_MIN_PREDICTIONS:
        _fail(exercise, f"the mask counts only {n_counted} predictions; count at least "
                        f"{COUNTEREXAMPLE_MIN_PREDICTIONS} so the measurement is meaningful.")
    reference = circuits.induction_reference_tokens(model.cfg.d_vocab)
    outcome = circuits.circuit_faithfulness(model, tokens, mask, induction_circuit(model), reference)
    return dict(outcome, n_predictions=n_counted)


def check_counterexample(make_batch: Callable, which_predictions: Callable) -> None:
    """``make_batch(batch, seed) -> tokens [batch, pos]`` and ``which_predictions(tokens) -> mask [batch, pos - 1]``:
    a distribution on which the induction circuit explains little of what the full model does well."""
    exercise = "counterexample hunt"
    seeds = [_seed(exercise, 0), _seed(exercise, 1)]
    outcomes = [measure_counterexample(make_batch, which_predictions, seed) for seed in seeds]
    # A generator that ignores its seed is a fixed data set, not a distribution.
    if torch.equal(_call(exercise, make_batch, 8, seeds[0]), _call(exercise, make_batch, 8, seeds[1])):
        _fail(exercise, "make_batch returns the same tokens for different seeds; draw them from the seed.")
    for seed, outcome in zip(seeds, outcomes):
        summary = (f"full-model accuracy {outcome['full_accuracy']:.2f}, circuit faithfulness "
                   f"{outcome['faithfulness']:.2f}, all-heads-ablated loss {outcome['baseline_gap']:.2f} nats above "
                   f"the full model's (seed {seed})")
        if outcome["full_accuracy"] < COUNTEREXAMPLE_MIN_ACCURACY:
            _fail(exercise, f"the full model does not do well here: {summary}; it must reach "
                            f"{COUNTEREXAMPLE_MIN_ACCURACY} accuracy on the counted predictions.")
        if outcome["baseline_gap"] < COUNTEREXAMPLE_MIN_BASELINE_GAP:
            _fail(exercise, f"the heads hardly matter for the counted predictions: {summary}. Faithfulness divides by "
                            f"that gap, so it must be at least {COUNTEREXAMPLE_MIN_BASELINE_GAP} nats for the ratio "
                            f"to mean anything.")
        if outcome["faithfulness"] > COUNTEREXAMPLE_MAX_FAITHFULNESS:
            _fail(exercise, f"the circuit still explains this distribution: {summary}; bring faithfulness to "
                            f"{COUNTEREXAMPLE_MAX_FAITHFULNESS} or below.")
    _passed(exercise, "; ".join(f"accuracy {o['full_accuracy']:.2f}, faithfulness {o['faithfulness']:.2f}"
                                for o in outcomes) + " on 2 fresh samples")


# Section 8: what circuit studies found -----------------------------------------------------------------------


def check_circuit_studies(answers: Any) -> None:
    """``answers``: study -> the letter of its finding (``circuits.circuit_studies_quiz``); all must be right."""
    exercise = "what circuit studies found"
    studies, options = circuits.circuit_studies_quiz()
    if not isinstance(answers, dict):
        _fail(exercise, f"give a dict study -> letter, got {type(answers).__name__}.")
    missing = [s for s in studies if s not in answers]
    extra = [k for k in answers if k not in studies]
    if missing or extra:
        _fail(exercise, f"use exactly the {len(studies)} studies as keys ({len(missing)} missing, {len(extra)} "
                        f"unexpected: {extra}).")
    given = {study: str(answers[study]).strip().upper() if answers[study] is not None else None for study in studies}
    invalid = [study for study, letter in given.items() if letter not in options]
    if invalid:
        _fail(exercise, f"{len(invalid)} answer(s) are not one of the letters {', '.join(options)}: "
                        f"{[answers[s] for s in invalid]}.")
    key = circuits.circuit_studies_key()
    wrong = sum(given[study] != key[study] for study in studies)
    if wrong:
        _fail(exercise, f"{wrong} of {len(studies)} matches are wrong. Re-read section 8's table.")
    _passed(exercise, f"all {len(studies)} studies matched to what they found")


# Measured numbers for the comparison table -------------------------------------------------------------------


ICL_EARLY_POS = 10
ICL_LATE_POS = 50
#: The ``half_len`` values the measurement check uses: positions ICL_LATE_POS + 1 must exist (half_len >= 26) and the
#: sequence must fit the model's 64-token context (half_len <= 31); a function that assumes the notebook's 30 fails.
MEASUREMENT_HALF_LENS = (30, 26, 31)


def reference_measurements(model, tokens: Tensor, half_len: int) -> dict[str, float]:
    """What the chapter's table asks the student to measure on ``tokens = BOS + x + x`` (``x`` of length half_len)."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    losses = circuits.per_token_loss(logits, tokens)
    scores = circuits.all_head_scores(cache, model.cfg.n_layers, circuits.induction_scores, half_len=half_len)
    return {
        "max_induction_score": float(scores.max()),
        "n_induction_heads": int((scores > circuits.INDUCTION_THRESHOLD).sum()),
        # Olsson et al. use loss at token 500 minus loss at token 50; our sequences are at most 64 tokens long, so
        # the course uses a late second-copy position minus an early first-copy position.
        "in_context_learning_score": float(losses[:, ICL_LATE_POS].mean() - losses[:, ICL_EARLY_POS].mean()),
    }


def check_measurements(fn: Callable) -> None:
    """``fn(model, tokens, half_len) -> dict`` with the three numbers of the comparison table."""
    exercise = "measure the course model"
    _require_own_function(exercise, fn, reference_measurements)
    model = fresh_model()
    for trial, (batch, half_len) in enumerate(zip([32, 48, 24], MEASUREMENT_HALF_LENS)):
        tokens = tasks.repeated_tokens(batch, half_len, model.cfg.d_vocab, seed=_seed(exercise, trial))
        expected = reference_measurements(model, tokens, half_len)
        measured = _call(exercise, fn, model, tokens.clone(), half_len)
        if not isinstance(measured, dict):
            _fail(exercise, f"return a dict, got {type(measured).__name__}.")
        for key, value in expected.items():
            if key not in measured or measured[key] is None:
                _fail(exercise, f"missing the measurement {key!r}.")
            compare(exercise, torch.tensor(float(measured[key])), torch.tensor(value), repr(key), atol=1e-3,
                    context=f"(on a fresh batch of {batch} sequences with half_len {half_len})")
    _passed(exercise, f"all three numbers match on {len(MEASUREMENT_HALF_LENS)} fresh batches with half_len "
                      f"{', '.join(map(str, MEASUREMENT_HALF_LENS))}")


def check_my_scores(scores: Any) -> None:
    """The student's own point scores for an area: three integers 0..10."""
    exercise = "your point scores"
    from . import research

    try:
        research.validate_scores(scores)
    except (ValueError, TypeError) as error:
        _fail(exercise, str(error))
    _passed(exercise, "three scores between 0 and 10")


# --------------------------------------------------------------------------------------------------------------
# Notebook plumbing
# --------------------------------------------------------------------------------------------------------------


def yours_or_reference(fn: Callable, reference: Callable, instead: str | None = None) -> Callable:
    """Wrap a student's function for the demo cells that follow an exercise: while the exercise is unfinished (the
    function raises ``NotImplementedError``), the demo runs the reference instead and says so, so a student who is
    stuck can still see the rest of the chapter. ``instead`` says what the fallback is when it is not the reference
    answer (the counterexample hunt falls back to the standard probe: its answer is not given away). The note is
    printed once per wrapper, not once per call (a demo may call it in a loop)."""
    fallback = instead or "the course's reference implementation"
    noted = []

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            if not noted:
                print(f"(`{fn.__name__}` is not written yet: this cell uses {fallback}.)")
                noted.append(True)
            return reference(*args, **kwargs)

    return run
