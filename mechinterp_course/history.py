"""Chapter 0, "History and landscape": the talk's history and maps of the field as data, and the reference
implementations of the chapter's exercises.

Two kinds of text live here, and every record says which it is:

- **the deck's**: transcribed from the talk ("Mechanistic Interpretability: the big ideas, schools of thought, and
  areas people care about and why"), with its slide number; quiz answer keys come only from these;
- **the course's**: one-line paper summaries and glosses the course adds (``summary_by="course"``), kept to facts
  that are well known and stated in the papers themselves; dates the deck does not give (``date_by="course"``); and
  every pairing of a deck item with a chapter of this course.

Anything presented as the deck's words is verbatim (its spelling and typography kept); tests/test_history.py checks
each such string against the deck's text. Where the course shortens or rewords a line, the record says so.

Where the deck's *text* does not say something (for example where a paper sits on its ternary plot, whose picture is
not part of the text), nothing here pretends it does.

The code half is the chapter's lab: the 8x8 digits data set that ships inside scikit-learn (no download), a small
CNN with a ``run_with_cache`` in the style of TransformerLens, activation maximisation with jitter and L2 /
total-variation penalties, top-activating dataset examples, training-data attribution by last-layer gradient
similarity (TracIn-style, at the final checkpoint), and the computation that picks a research area from the
student's point scores and the deck's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import einops
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import research
from .research import SCORE_KEYS

# --------------------------------------------------------------------------------------------------------------
# The course's chapters (the README's table), so that events and north stars can point at the one that studies them
# --------------------------------------------------------------------------------------------------------------

CHAPTERS: dict[str, str] = {
    "00": "History and landscape",
    "01": "Circuits",
    "02": "Grokking",
    "03": "Backup behaviour",
    "04": "Sparse autoencoders and dictionary learning",
    "05": "Attention superposition",
    "06": "What counts as mechanistic understanding",
}
#: Each chapter's status, as the README's chapter table gives it (a test keeps the two in step). Text that depends on
#: which chapters exist is computed from this, so that it cannot go stale.
CHAPTER_STATUS: dict[str, str] = {
    "00": "ready", "01": "ready", "02": "ready", "03": "planned", "04": "planned", "05": "planned", "06": "planned",
}


def chapter_label(code: str) -> str:
    """``"02 Grokking"``, or ``"03 Backup behaviour (planned)"`` for a chapter that is not written yet."""
    planned = " (planned)" if CHAPTER_STATUS[code] != "ready" else ""
    return f"{code} {CHAPTERS[code]}{planned}"


def chapters_label(codes: Sequence[str]) -> str:
    """The labels of ``codes`` joined with commas, or ``"none"``."""
    return ", ".join(chapter_label(code) for code in codes) or "none"

# --------------------------------------------------------------------------------------------------------------
# People (slides 4-5)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    name: str
    group: str | None  # "Distill" or "transformer-circuits", as slide 5 groups them
    role: str | None  # slide 5's words; None where the slide gives only "..."
    note: str = ""


DISTILL, TRANSFORMER_CIRCUITS = "Distill", "transformer-circuits"

#: Slide 4 is titled "Chris Olah"; slide 5 "Other OGs" lists the rest under two headings.
PEOPLE: list[Person] = [
    Person("Chris Olah", None, None, "slide 4; the prehistory of slide 6 is his biography"),
    Person("Alexander Mordvintsev", DISTILL, "DeepDream, precursor to Distill work"),
    Person("Nick Cammarata", DISTILL, "Cofounder of mech interp: led most of Distill circuit work"),
    Person("Ludwig Schubert", DISTILL, "Core infrastructure"),
    Person("Shan Carter", DISTILL, None),
    Person("Gabriel Goh", DISTILL, None),
    Person("Chelsea Voss", DISTILL, None),
    Person("Catherine Olsson", TRANSFORMER_CIRCUITS, "Exp work to produce insights to build the framework from",
           "the deck writes 'Christine Olsson'; the first author of 'In-context Learning and Induction Heads' is "
           "Catherine Olsson"),
    Person("Neel Nanda", TRANSFORMER_CIRCUITS, "Conceptual work to form the framework w/ Chris"),
    Person("Nelson Elhage", TRANSFORMER_CIRCUITS, "Core infrastructure"),
]

# --------------------------------------------------------------------------------------------------------------
# The timeline: slide 6 (prehistory), slide 7 (transformer-circuits), slides 55-78 (attention superposition), the
# papers the deck names on its maps (slides 9-15), in its areas (slides 19-44) and among its successes (slides 80-81),
# and the papers every later chapter studies
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    key: str
    start: tuple[int, int]  # (year, month); month 1 where the deck gives only a year (see ``precision``)
    title: str
    summary: str  # one line
    summary_by: str  # "deck" (the deck's own words) or "course" (the course's summary)
    track: str  # one of TRACKS
    chapters: tuple[str, ...] = ()  # the course chapters that study it
    slides: tuple[int, ...] = ()  # where the deck mentions it (empty: the deck does not)
    end: tuple[int, int] | None = None  # for spans
    precision: str = "month"  # "year" where the deck gives only a year
    deck_text: str = ""  # the deck's words (verbatim) when the summary is the course's
    date_by: str = "deck"  # "deck": the date is on one of ``slides``; "course": the deck gives no date, the course does

    @property
    def date_label(self) -> str:
        def one(date, precision):
            year, month = date
            return str(year) if precision == "year" else f"{MONTHS[month - 1]} {year}"

        label = one(self.start, self.precision)
        return label if self.end is None else f"{label} - {one(self.end, self.precision)}"

    @property
    def date_note(self) -> str:
        """``""`` for a date the deck gives, else a short note that the date is the course's."""
        return "" if self.date_by == _DECK else "the course's date (the deck gives none)"

    @property
    def sort_key(self) -> tuple[int, int]:
        return self.start


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

TRACKS: dict[str, str] = {
    "prehistory": "Prehistory (slide 6)",
    "transformer-circuits": "transformer-circuits (slide 7)",
    "attention-superposition": "Attention superposition (slides 55-78)",
    "maps": "Papers on the deck's maps (slides 9-15)",
    "papers": "Papers the later chapters study",
}

_DECK, _COURSE = "deck", "course"

#: Slide 6, "The prehistory (biography of the OG)", complete and verbatim: ``(year, the deck's words, event key)``.
#: The 2020 line belongs to the Circuits thread, whose event sits in the transformer-circuits track (slide 7 dates it).
SLIDE_6: list[tuple[str, str, str]] = [
    ("2010 & 2011", "Chris Olah does 3d printing in highschool", "olah-3d-printing"),
    ("2012", "Chris gets Thiel Fellowship for 3d printing. AI is a side hobby at this point", "thiel-fellowship"),
    ("2013", "cold emails Yoshua Bengio @ MILA. Gets into deep learning", "emails-bengio"),
    ("2014", "Google Brain internship, explores visualizing neural networks", "google-brain"),
    ("2015", "Hops on Alexander Mordvintsev (AM)\u2019s DeepDream, generalizes it", "deepdream"),
    ("2016", "co-founds Distill. Writes Concrete Problems in AI Safety with Dario Amodei", "distill"),
    ("2017", "Separately, Transformers are invented.", "transformers"),
    ("2018", "Creates Lucid w/ AM & Ludwig. Joins OpenAI. Mechinterp work starts here.", "lucid-openai"),
    ("2019", "Chris -> mentorship role. Nick Cammarata drives Vision Circuits work", "vision-circuits"),
    ("2020", "Circuits thread on Distill", "circuits-thread"),
    ("2021", "Distill indefinite hiatus. Chris joins Anthropic. Starts transformer-circuits", "anthropic"),
]
_SLIDE_6_TEXT = {key: text for _, text, key in SLIDE_6}

TIMELINE: list[Event] = sorted([
    # Slide 6: "The prehistory (biography of the OG)". The deck's own words.
    Event("olah-3d-printing", (2010, 1), "Chris Olah does 3d printing in highschool",
          _SLIDE_6_TEXT["olah-3d-printing"], _DECK, "prehistory", slides=(6,), end=(2011, 1), precision="year"),
    Event("thiel-fellowship", (2012, 1), "Thiel Fellowship", _SLIDE_6_TEXT["thiel-fellowship"], _DECK, "prehistory",
          slides=(6,), precision="year"),
    Event("emails-bengio", (2013, 1), "Cold-emails Yoshua Bengio", _SLIDE_6_TEXT["emails-bengio"], _DECK,
          "prehistory", slides=(6,), precision="year"),
    Event("google-brain", (2014, 1), "Google Brain internship", _SLIDE_6_TEXT["google-brain"], _DECK, "prehistory",
          slides=(6,), precision="year"),
    Event("deepdream", (2015, 1), "DeepDream, generalised", _SLIDE_6_TEXT["deepdream"], _DECK, "prehistory",
          chapters=("00",), slides=(5, 6), precision="year"),
    Event("distill", (2016, 1), "Co-founds Distill; Concrete Problems in AI Safety", _SLIDE_6_TEXT["distill"], _DECK,
          "prehistory", slides=(6,), precision="year"),
    Event("transformers", (2017, 1), "Transformers are invented", _SLIDE_6_TEXT["transformers"], _DECK, "prehistory",
          slides=(6,), precision="year"),
    Event("lucid-openai", (2018, 1), "Lucid; joins OpenAI", _SLIDE_6_TEXT["lucid-openai"], _DECK, "prehistory",
          chapters=("00",), slides=(6,), precision="year"),
    Event("vision-circuits", (2019, 1), "Nick Cammarata drives the vision circuits work",
          _SLIDE_6_TEXT["vision-circuits"], _DECK, "prehistory", slides=(6,), precision="year"),
    Event("anthropic", (2021, 1), "Distill on hiatus; Chris joins Anthropic", _SLIDE_6_TEXT["anthropic"], _DECK,
          "prehistory", slides=(6,), precision="year"),
    # Slide 7: "transformer-circuits".
    Event("circuits-thread", (2020, 3), "Distill Circuits thread",
          "A thread of Distill articles reverse-engineering InceptionV1: curve detectors, high-low frequency "
          "detectors, equivariance, branch specialisation.", _COURSE, "transformer-circuits", chapters=("00",),
          slides=(6, 7, 9), end=(2021, 4),
          deck_text="March 2020 - April 2021 \u2014 Original distill circuits thread"),
    Event("math-framework", (2021, 12), "A Mathematical Framework for Transformer Circuits",
          "Reads attention-only transformers as sums of paths (QK and OV circuits) and finds induction heads built "
          "by K-composition in two-layer models.", _COURSE, "transformer-circuits", chapters=("01",), slides=(7, 9),
          deck_text="Dec 2021 - First transformer-circuits post. Discovery of induction heads."),
    Event("induction-heads", (2022, 3), "In-context Learning and Induction Heads",
          "Induction heads form in a sudden phase change early in training, at the same time as in-context "
          "learning improves; six lines of evidence that they drive most in-context learning.", _COURSE,
          "transformer-circuits", chapters=("01",), slides=(7, 9),
          deck_text="March 2022 - Induction heads, developmental study of ICL"),
    Event("solu", (2022, 6), "Softmax Linear Units",
          "An activation function (SoLU) that makes more MLP neurons interpretable at little cost in performance, "
          "though some features then hide behind the LayerNorm that follows it.", _COURSE, "transformer-circuits",
          slides=(7,), deck_text="June 2022 - Softmax Linear Units"),
    Event("toy-models", (2022, 9), "Toy Models of Superposition",
          "Small ReLU autoencoders store more sparse features than they have dimensions, in geometric "
          "arrangements (antipodal pairs, pentagons) that change in phase transitions with sparsity.", _COURSE,
          "transformer-circuits", chapters=("04",), slides=(7, 9),
          deck_text="September 2022 - Toy Models of Superposition"),
    # Slide 7 names "Double descent" among the small posts of a one-year gap but gives it no date: the date is the
    # course's.
    Event("double-descent", (2023, 1), "Superposition, Memorization, and Double Descent",
          "Toy models that memorise store data points, not features, in superposition, and the switch to "
          "generalising features shows up as double descent.", _COURSE, "transformer-circuits", slides=(7,),
          deck_text="(Small posts fill a 1 year gap ~ Double descent, May Circuits updates, July updates)",
          date_by=_COURSE),
    Event("may-update", (2023, 5), "Circuits updates, May 2023",
          "May update: Anthropic \u201cconstructs\u201d toy model. OV-incoherence is bad terminology", _DECK,
          "transformer-circuits", chapters=("05",), slides=(7, 60, 61)),
    Event("july-update", (2023, 7), "Circuits updates, July 2023",
          "July update: previous example is not a real toy model of attn superposition", _DECK,
          "transformer-circuits", chapters=("05",), slides=(7, 61)),
    Event("towards-monosemanticity", (2023, 10), "Towards Monosemanticity",
          "A sparse autoencoder on a one-layer transformer's 512-neuron MLP turns it into thousands of features, "
          "most of them interpretable.", _COURSE, "transformer-circuits", chapters=("04",), slides=(7, 9, 39, 73),
          deck_text="October 2023 - Towards Monosemanticity"),
    # Slides 74-76 write "they made real progress"; slides 77-78, quoted here, "they made progress".
    Event("january-update", (2024, 1), "Circuits updates, January 2024",
          "Anthropic update: they made progress. Extremely preliminary results", _DECK, "transformer-circuits",
          chapters=("05",), slides=(7, 74, 75, 76, 77, 78)),
    # Slides 55-78: the attention-superposition timeline (the deck's words; "Me" is the talk's author).
    Event("olah-attn-superposition", (2023, 2), "Attention heads may exhibit superposition",
          "Chris Olah speculates that attention heads can exhibit superposition", _DECK, "attention-superposition",
          chapters=("05",), slides=(55,)),
    # First on slide 62 ("successfully construct the first actual (OV-incoherent) toy model ..."); the shorter
    # wording quoted here is slide 63's.
    Event("ov-incoherent-model", (2023, 7), "An OV-incoherent toy model",
          "Me, Narmeen, and faul_sname construct an \u201cOV-incoherent\u201d toy model for an alignment jam", _DECK,
          "attention-superposition", chapters=("05",), slides=(62, 63)),
    Event("ov-coherent-model", (2023, 8), "An OV-coherent toy model",
          "Lauren Greenspan & Keith Wynroe construct an \u201cOV-coherent\u201d toy model", _DECK,
          "attention-superposition", chapters=("05",), slides=(63,)),
    Event("joint-work", (2023, 9), "Working on it together",
          "We (+Kunvar & Adam Jermyn) all kinda work on it together with limited success.", _DECK,
          "attention-superposition", chapters=("05",), slides=(72,)),
    Event("computation-in-superposition", (2024, 1), "Toward A Mathematical Framework for Computation in Superposition",
          "Constructions that compute many boolean functions of sparse features (e.g. every pairwise AND) in "
          "superposition in a single layer.", _COURSE, "attention-superposition", chapters=("05",), slides=(77, 78),
          deck_text="[Jan 2024] Toward A Mathematical Framework for Computation in Superposition"),
    # Slide 9: the papers on the ternary plot that are not above. The deck dates none of them.
    Event("slt", (2009, 1), "Singular Learning Theory",
          "Watanabe's Bayesian theory of singular models such as neural networks; developmental interpretability "
          "uses it to locate phase transitions in training.", _COURSE, "maps", slides=(9,), precision="year",
          date_by=_COURSE),
    Event("ioi", (2022, 11), "Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small",
          "26 attention heads in 7 classes explain how GPT-2 small completes 'When Mary and John went to the "
          "store, John gave a drink to' with 'Mary'.", _COURSE, "maps", chapters=("01", "03", "06"),
          slides=(9, 22, 34, 81), deck_text="[Nov 2022, Wang] Interpretability in the Wild: IOI"),
    Event("influence-functions", (2023, 8), "Studying Large Language Model Generalization with Influence Functions",
          "Scales influence functions to language models of up to 52 billion parameters, tracing outputs to the "
          "training examples that most influenced them.", _COURSE, "maps", chapters=("00",), slides=(9, 15),
          date_by=_COURSE),
    Event("delays-detours", (2023, 8), "Delays, Detours, and Forks in the Road: Latent State Models of Training Dynamics",
          "Fits hidden Markov models to metrics recorded over many training runs, finding the phases of training "
          "and the detours that slow convergence.", _COURSE, "maps", slides=(9,), date_by=_COURSE),
    Event("sudden-drops", (2023, 9), "Sudden Drops in the Loss: Syntax Acquisition, Phase Transitions, and Simplicity Bias in MLMs",
          "In masked language models, a sudden drop in the loss coincides with the abrupt emergence of attention "
          "heads that track syntax.", _COURSE, "maps", slides=(9,), date_by=_COURSE),
    Event("representation-engineering", (2023, 10), "Representation Engineering",
          "Reads and steers high-level concepts such as honesty from population-level representations of language "
          "models: a top-down approach.", _COURSE, "maps", slides=(9,), date_by=_COURSE),
    # The deck's areas (slides 19-44) and its successes (slides 80-81), with the papers the later chapters study.
    Event("curve-circuits", (2021, 1), "Curve Circuits",
          "Curve-detecting neurons of InceptionV1, resting on more than 50,000 parameters, described in a few "
          "sentences and rebuilt with hand-written weights.", _COURSE, "papers", chapters=("06",), slides=(80, 81),
          deck_text="[Jan 2021, Olah] Ability to (blindly) hand write the model weights"),
    Event("grokking", (2022, 1), "Grokking: Generalization Beyond Overfitting on Small Algorithmic Datasets",
          "Small transformers trained on modular arithmetic generalise long after they have memorised their "
          "training set.", _COURSE, "papers", chapters=("02",), date_by=_COURSE),
    Event("towards-understanding-grokking", (2022, 5), "Towards Understanding Grokking",
          "An effective theory of representation learning, with a phase diagram of comprehension, grokking, "
          "memorisation and confusion.", _COURSE, "papers", chapters=("02",), slides=(30,),
          deck_text="[May 2022] Towards Understanding Grokking"),
    Event("progress-measures", (2022, 8), "Progress Measures for Grokking via Mechanistic Interpretability",
          "A one-layer transformer adds modulo 113 with Fourier features and trigonometric identities; progress "
          "measures split training into memorisation, circuit formation and clean-up.", _COURSE, "papers",
          chapters=("02",), slides=(30,),
          deck_text="[Aug 2022] Progress Measure for Grokking via Mechanistic Interpretability"),
    Event("sparse-autoencoders-2022", (2022, 12), "Taking Features out of Superposition with Sparse Autoencoders",
          "An L1-penalised autoencoder recovers known ground-truth features from synthetic data in superposition.",
          _COURSE, "papers", chapters=("04",), date_by=_COURSE),
    Event("docstring", (2023, 2), "A circuit for Python docstrings in a 4-layer attention-only transformer",
          "A few attention heads of a small model predict the next argument name in a Python docstring.", _COURSE,
          "papers", chapters=("01",), slides=(22,), date_by=_COURSE),
    Event("sparse-from-noise", (2023, 4), "Emergence of Sparse Representations from Noise",
          "Adding noise to a network's inputs during training is enough to make its hidden representations sparse.",
          _COURSE, "papers", chapters=("04",), slides=(39,),
          deck_text="[April 2023] Emergence of Sparse Representations from Noise"),
    Event("greater-than", (2023, 5), "How does GPT-2 compute greater-than?",
          "Attention heads move a start year to the last position and late MLPs raise the logits of the years "
          "after it.", _COURSE, "papers", chapters=("01",), slides=(22,), date_by=_COURSE),
    Event("hierarchical-grokking", (2023, 5), "Grokking of Hierarchical Structure in Vanilla Transformers",
          "Transformers trained far past the point where in-domain accuracy saturates come to generalise "
          "hierarchically ('structural grokking').", _COURSE, "papers", chapters=("02",), slides=(30,),
          deck_text="[May 2023] Grokking of Hierarchical Structure in Vanilla Transformers"),
    Event("600-features", (2023, 7), "(tentatively) Found 600+ Monosemantic Features in a Small LM Using Sparse Autoencoders",
          "Sparse autoencoders on a small language model's activations find hundreds of features that look "
          "monosemantic.", _COURSE, "papers", chapters=("04",), slides=(39,),
          deck_text="[July 2023] (tentatively) Found 600+ Monosemantic Features in a Small LM Using Sparse "
                    "Autoencoders"),
    Event("hydra-effect", (2023, 7), "The Hydra Effect: Emergent Self-repair in Language Model Computations",
          "Ablating one attention layer of a language model makes later layers compensate; late MLPs erase the "
          "top prediction.", _COURSE, "papers", chapters=("03",), slides=(24, 36), date_by=_COURSE),
    Event("sae-interpretable-features", (2023, 9), "Sparse Autoencoders Find Highly Interpretable Features in Language Models",
          "Dictionary features learned by sparse autoencoders on a language model's residual stream are more "
          "interpretable than neurons and pinpoint the features behind a behaviour.", _COURSE, "papers",
          chapters=("04",), date_by=_COURSE),
    Event("whisper", (2023, 9), "Interpreting OpenAI's Whisper",
          "Interpretability tools, sparse autoencoders among them, applied to a speech-recognition model.", _COURSE,
          "papers", chapters=("04",), slides=(40,), deck_text="[Sept 2023] Interpreting OpenAI's Whisper"),
    Event("copy-suppression", (2023, 10), "Copy Suppression: Comprehensively Understanding an Attention Head",
          "GPT-2 small's head 10.7 lowers the logits of tokens that appear in context and that earlier layers "
          "predict, which explains part of its self-repair.", _COURSE, "papers", chapters=("03",), slides=(36,),
          deck_text="[] Comprehensively understanding an attention head", date_by=_COURSE),
    Event("margin-maximization", (2023, 11), "Feature Emergence via Margin Maximization",
          "Proves that margin maximisation alone forces the Fourier features that networks learn for modular "
          "addition.", _COURSE, "papers", chapters=("02", "06"), slides=(30, 80),
          deck_text="[Nov 2023, Morwani] Proof of a learned circuit being optimal (learning-wise)"),
    Event("reddy", (2023, 12), "The Mechanistic Basis of Data Dependence and Abrupt Learning in an In-context Classification Task",
          "A two-parameter model explains the abrupt emergence of an induction head in a two-layer attention-only "
          "network.", _COURSE, "papers", chapters=("06",), slides=(80, 81),
          deck_text="[Dec 2023, Reddy] Provide an analytic form"),
    Event("orion", (2023, 12), "Look Before You Leap: A Universal Emergent Decomposition of Retrieval Tasks in Language Models (ORION)",
          "Across many retrieval tasks and language models, the request is processed first and the answer "
          "retrieved later, in separate, consistent stages.", _COURSE, "papers", chapters=("01", "06"),
          slides=(19, 22, 81), deck_text="[Dec 2023, Variengien] ORION task constellations"),
    Event("self-repair", (2024, 2), "Explorations of Self-Repair in Language Models",
          "Self-repair is imperfect and noisy; the final LayerNorm's scale and sparse anti-erasure neurons account "
          "for part of it.", _COURSE, "papers", chapters=("03",), date_by=_COURSE),
    Event("mips", (2024, 2), "Opening the AI Black Box: Program Synthesis via Mechanistic Interpretability",
          "Recurrent networks trained on algorithmic tasks are distilled automatically into Python programs; 32 "
          "of 62 tasks solved.", _COURSE, "papers", chapters=("06",), slides=(80,),
          deck_text="[Feb 2024, Tegmark] Synthesizing the program of the learned model"),
], key=lambda event: event.sort_key)

EVENTS: dict[str, Event] = {event.key: event for event in TIMELINE}

# --------------------------------------------------------------------------------------------------------------
# Maps of the field (slides 8-18)
# --------------------------------------------------------------------------------------------------------------

#: Slide 8, "Leonard's Taxonomy of MechInt": three ways to classify a piece of work.
LEONARD_TAXONOMY: dict[str, tuple[str, ...]] = {
    "Sharkey's fundamental vs applied": ("fundamental", "applied"),
    "when in the training process": ("intrinsic", "developmental", "post-hoc"),
    "scope": ("which model?", "how much of behavior explained?", "which data distribution?"),
}

#: Where the deck's text itself puts a piece of work in a class (nothing else is claimed).
DECK_STATED_CLASSES: list[dict] = [
    {"work": "In-context Learning and Induction Heads", "axis": "when in the training process",
     "class": "developmental", "slide": 7, "deck_text": "March 2022 - Induction heads, developmental study of ICL"},
    {"work": "Grokking", "axis": "schools of thought", "class": "hybrid between dev-interp and comprehensive understanding",
     "slide": 16, "deck_text": "Grokking: hybrid between dev-interp and comprehensive understanding"},
]

#: Slides 9-13: the works on the "Solving MechInterp involves filling out this ternary plot" figure, in the deck's
#: order and words, each with its timeline event. The figure itself (its corners and where each work sits) is a picture
#: that the deck's text does not contain.
TERNARY_PAPERS: dict[str, str] = {
    "Sudden Drops in the Loss: Syntax Acquisition, Phase Transitions, and Simplicity Bias in MLMs": "sudden-drops",
    "Distill Circuits Thread": "circuits-thread",
    "In-Context Learning and Induction Heads": "induction-heads",
    "Studying Large Language Model Generalization with Influence Functions": "influence-functions",
    "Toy Models of Superposition": "toy-models",
    "Mathematical Framework for Transformer Circuits": "math-framework",
    "Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small": "ioi",
    "Towards Monosemanticity: Decomposing Language Models with Sparse Dictionary Learning": "towards-monosemanticity",
    "Representation Engineering": "representation-engineering",
    "Singular Learning Theory": "slt",
    "Delays, Detours, and Forks in the Road: Latent State Models of Training Dynamics": "delays-detours",
}

#: Slide 11: "Micro~Macro: A conflation of:"
MICRO_MACRO: list[str] = [
    "Toy->algorithmic->SLM->SOTA progression",
    "Comprehensiveness of explanation",
    "Distributional coverage",
    "Capability coverage",
    "Conceptual proximity",
]

#: Slides 14 and 15 label two regions of the plot (the text does not say which).
TERNARY_REGIONS: dict[int, str] = {14: "\u201cGrokking literature\u201d", 15: "E.g. influence functions"}

#: Slide 16, the topics listed under "Circuit analysis".
CIRCUIT_ANALYSIS_TOPICS: list[str] = [
    "Head specialization", "suppression", "world modeling", "reasoning", "behavioral", "safety-relevant",
    "attention superposition", "circuits across tokens", "factual recall", "in-context learning", "macro structure",
    "modular circuits", "dev-interp", "trojan discovery",
]

#: Slide 16, "The main schools of thought": ``(school, what the slide says about it)``, both the deck's words ("" where
#: the slide says nothing more; for circuit analysis, the topics it lists under it).
SCHOOLS: list[tuple[str, str]] = [
    ("ELK", "\u201cZero-shot transferability of probes between positions\u201d"),
    ("Circuit analysis", ", ".join(CIRCUIT_ANALYSIS_TOPICS)),
    ("Grokking", "hybrid between dev-interp and comprehensive understanding"),
    ("Use bigger and bigger models", ""),
    ("Inductive biases", ""),
]

#: Slide 17, "Things we want to understand": item -> number of check marks (0 for "__"), in the deck's order.
STATUS: dict[str, int] = {
    "Circuits": 3,
    "Grokking": 3,
    "Backup behavior": 0,
    "SAEs & Dictionary Learning": 2,
    "Feature Composition": 0,
    "Modularity": 0,
    "The training process": 0,
    "Attention Superposition": 3,
}
#: Slide 17 also lists "Other things: dev-interp," with no mark.
STATUS_UNMARKED = "Other things: dev-interp,"
STATUS_LEGEND: dict[int, str] = {3: "extremely done", 2: "mostly done", 1: "needs polishing", 0: "untouched"}

#: The deck's big areas (slides 19-78) under the course's short names, with the slides that cover each.
AREAS: dict[str, dict] = {
    "circuits": {"title": "Circuit analysis", "slides": (19, 27), "chapter": "01"},
    "grokking": {"title": "Grokking", "slides": (28, 33), "chapter": "02"},
    "backup": {"title": "Backup behavior", "slides": (34, 36), "chapter": "03"},
    "saes": {"title": "SAEs & Dictionary learning", "slides": (37, 44), "chapter": "04"},
    "feature-composition": {"title": "Feature composition", "slides": (45, 45), "chapter": None},
    "modularity": {"title": "Modularity", "slides": (46, 46), "chapter": None},
    "training-process": {"title": "The training process", "slides": (47, 47), "chapter": None},
    "attention-superposition": {"title": "Attention superposition", "slides": (48, 78), "chapter": "05"},
}

#: The deck's "main work in this area" lists, as an area for each paper (slides 22, 30, 36, 39-40, 63), each in the
#: deck's words. Papers the deck lists under two areas (IOI: circuits and backup; Towards Monosemanticity: SAEs and
#: attention superposition; computation in superposition: attention superposition and, by name, feature composition)
#: are left out.
AREA_OF_PAPER: dict[str, str] = {
    "Towards Understanding Grokking": "grokking",
    "Progress Measure for Grokking via Mechanistic Interpretability": "grokking",
    "Grokking of Hierarchical Structure in Vanilla Transformers": "grokking",
    "Feature emergence via margin maximization": "grokking",
    "Emergence of Sparse Representations from Noise": "saes",
    "(tentatively) Found 600+ Monosemantic Features in a Small LM Using Sparse Autoencoders": "saes",
    "Interpreting OpenAI's Whisper": "saes",
    "Hydra Effect": "backup",
    "Comprehensively understanding an attention head": "backup",
    "\u201cgreater than\u201d": "circuits",
    "docstring": "circuits",
    "ORION (question answering, type hint understanding, factual recall, variable binding, translation, induction)": "circuits",
    "Lauren Greenspan & Keith Wynroe construct an \u201cOV-coherent\u201d toy model": "attention-superposition",
}

# --------------------------------------------------------------------------------------------------------------
# What counts as mechanistic understanding (slides 80-84), each paired with the chapter that practises it
# --------------------------------------------------------------------------------------------------------------

#: Slide 82, "What does 'mechanistic' mean?", in the deck's order (its last bullet is an unfinished "d"). ``rung`` and
#: ``detail`` (the sub-bullet, "" where there is none) are the deck's words; ``practised_in`` and ``how`` are the
#: course's pairing, not the deck's.
LADDER: list[dict] = [
    {"rung": "Find correlations", "detail": "", "practised_in": ("00", "01"),
     "how": "top-activating dataset examples and last-layer gradient similarity to training images (this chapter); "
            "attention-pattern head scores (Circuits)"},
    {"rung": "Find causations and dependencies", "detail": "", "practised_in": ("01", "03"),
     "how": "zero, mean and resample ablation and activation patching (Circuits); self-repair under ablation "
            "(Backup behaviour)"},
    {"rung": "Causal understanding", "detail": "", "practised_in": ("01",),
     "how": "path patching: which edge carries the information, and how (Circuits)"},
    {"rung": "Sufficient conditions", "detail": "Finding a circuit", "practised_in": ("01",),
     "how": "keep only the circuit's heads and measure how much behaviour survives (Circuits)"},
    {"rung": "Necessary conditions", "detail": "Could it have been anything else?", "practised_in": ("02",),
     "how": "which ingredients grokking needs: change one thing (no weight decay, another data fraction, another "
            "operation) and let the grader re-run it (Grokking, last section)"},
]


def ladder_label(rung: Mapping) -> str:
    """``"Sufficient conditions: Finding a circuit"``: a rung with its sub-bullet, as the slide nests them."""
    return f"{rung['rung']}: {rung['detail']}" if rung["detail"] else rung["rung"]


#: Slides 83 ("north stars") and 80 ("examples of the strongest successes"). ``star`` and ``success`` (slide 80's
#: example, where it gives one) are the deck's words; ``practised_in`` and ``how`` are the course's pairing.
NORTH_STARS: list[dict] = [
    {"star": "Synthesize the program of a deep neural network", "slide": 83,
     "success": "[Feb 2024, Tegmark] Synthesizing the program of the learned model", "practised_in": ("02",),
     "how": "the learned modular-addition algorithm written out as a short program of Fourier features (Grokking)"},
    {"star": "Write (by hand) the model weights for a given task, from a MI explanation", "slide": 83,
     "success": "[Jan 2021, Olah] Ability to (blindly) hand write the model weights", "practised_in": ("05",),
     "how": "toy models of attention superposition constructed by hand before any are trained (Attention "
            "superposition)"},
    {"star": "Provide an analytic form", "slide": 80,
     "success": "[Dec 2023, Reddy] Provide an analytic form", "practised_in": ("02",),
     "how": "the logits as a sum of cosines of the key frequencies (Grokking)"},
    {"star": "Trace the learning dynamics of capability emergence down to the optimizer", "slide": 83,
     "success": None, "practised_in": ("01", "02"),
     "how": "when induction heads form (Circuits, from the model card's training log); progress measures through "
            "memorisation, circuit formation and clean-up (Grokking)"},
    {"star": "Trace model outputs to the specific training data examples", "slide": 83, "success": None,
     "practised_in": ("00",),
     "how": "the training digits whose last-layer loss gradient most supports or opposes a test digit's, at the "
            "final checkpoint (TracIn-style gradient similarity; this chapter, section 4)"},
    {"star": "Provide a mathematical proof of a learned circuit/subnetwork being optimal", "slide": 83,
     "success": "[Nov 2023, Morwani] Proof of a learned circuit being optimal (learning-wise)",
     "practised_in": ("02",),
     "how": "read, not proved: Morwani et al. in Grokking's reading list, beside the chapter's plot of the training "
            "margin over the trajectory (the quantity their argument is about)"},
]

#: Slide 81, "Best mech interp papers spotlight".
SPOTLIGHT: list[str] = [
    "[Jan 2021, Cammarata] Curve Circuits",
    "[Dec 2023, Reddy] Mechanistic Basis",
    "[Nov 2022, Wang] Interpretability in the Wild: IOI",
    "[Dec 2023, Variengien] ORION task constellations",
]

# --------------------------------------------------------------------------------------------------------------
# Quizzes: the questions as the notebook shows them, and their keys (derived from the data above, never typed twice)
# --------------------------------------------------------------------------------------------------------------

#: Quiz "order the events": letters assigned in a fixed scramble (neither alphabetical nor reverse order is right).
ORDER_QUIZ: dict[str, str] = {
    "A": "solu", "B": "google-brain", "C": "transformers", "D": "towards-monosemanticity", "E": "thiel-fellowship",
    "F": "circuits-thread", "G": "lucid-openai", "H": "toy-models", "I": "deepdream", "J": "math-framework",
    "K": "distill",
}


def order_quiz_questions() -> dict[str, str]:
    """``{letter: event description}`` as the notebook prints them (no dates)."""
    return {letter: EVENTS[key].title for letter, key in ORDER_QUIZ.items()}


def order_quiz_key() -> list[str]:
    """The letters of :data:`ORDER_QUIZ` from earliest to latest."""
    return sorted(ORDER_QUIZ, key=lambda letter: EVENTS[ORDER_QUIZ[letter]].sort_key)


#: Quiz "who did what": the distinct roles of slide 5 under letters ("Core infrastructure" belongs to two people).
ROLE_QUIZ: dict[str, str] = {
    "A": "Core infrastructure",
    "B": "Conceptual work to form the framework w/ Chris",
    "C": "DeepDream, precursor to Distill work",
    "D": "Exp work to produce insights to build the framework from",
    "E": "Cofounder of mech interp: led most of Distill circuit work",
}


def people_quiz_key() -> tuple[dict[str, str], dict[str, str]]:
    """``(groups, roles)``: every grouped person's group, and the role letter of everyone slide 5 gives a role."""
    letter_of = {role: letter for letter, role in ROLE_QUIZ.items()}
    groups = {p.name: p.group for p in PEOPLE if p.group is not None}
    roles = {p.name: letter_of[p.role] for p in PEOPLE if p.role is not None}
    return groups, roles


#: Quiz "classify papers": the papers of :data:`AREA_OF_PAPER` under letters, in a fixed scramble.
AREA_QUIZ: dict[str, str] = dict(zip("ABCDEFGHIJKLM", [
    "Hydra Effect",
    "Towards Understanding Grokking",
    "(tentatively) Found 600+ Monosemantic Features in a Small LM Using Sparse Autoencoders",
    "docstring",
    "Grokking of Hierarchical Structure in Vanilla Transformers",
    "Lauren Greenspan & Keith Wynroe construct an \u201cOV-coherent\u201d toy model",
    "Emergence of Sparse Representations from Noise",
    "\u201cgreater than\u201d",
    "Feature emergence via margin maximization",
    "Comprehensively understanding an attention head",
    "Interpreting OpenAI's Whisper",
    "ORION (question answering, type hint understanding, factual recall, variable binding, translation, induction)",
    "Progress Measure for Grokking via Mechanistic Interpretability",
]))
#: The areas a paper can be classified into (those with a "main work" list in the deck).
AREA_QUIZ_OPTIONS: tuple[str, ...] = ("circuits", "grokking", "backup", "saes", "attention-superposition")


def area_quiz_key() -> tuple[dict[str, str], str]:
    """``(areas, induction_heads_when)``: each lettered paper's area, and slide 7's class for the induction-heads paper."""
    induction = next(c for c in DECK_STATED_CLASSES if c["axis"] == "when in the training process")
    return {letter: AREA_OF_PAPER[paper] for letter, paper in AREA_QUIZ.items()}, induction["class"]


#: Quiz "match each success to its north star" (slide 80): the four claims under letters, in a fixed scramble.
SUCCESS_QUIZ: dict[str, str] = {
    "A": "Proof of a learned circuit being optimal (learning-wise)",
    "B": "Synthesizing the program of the learned model",
    "C": "Provide an analytic form",
    "D": "Ability to (blindly) hand write the model weights",
}
SUCCESS_QUIZ_WORK: dict[str, str] = {
    "Tegmark, Feb 2024": "mips", "Olah, Jan 2021": "curve-circuits", "Reddy, Dec 2023": "reddy",
    "Morwani, Nov 2023": "margin-maximization",
}


def success_quiz_key() -> dict[str, str]:
    """``{work: letter}``: the slide-80 claim each work is the example of (read from the events' deck text)."""
    key = {}
    for work, event_key in SUCCESS_QUIZ_WORK.items():
        deck_text = EVENTS[event_key].deck_text
        key[work] = next(letter for letter, claim in SUCCESS_QUIZ.items() if deck_text.endswith(claim))
    return key


# --------------------------------------------------------------------------------------------------------------
# The timeline figure
# --------------------------------------------------------------------------------------------------------------


def _wrap(text: str, width: int = 80) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line])


def timeline_figure(events: Sequence[Event] | None = None, title: str = "Mechanistic interpretability: a timeline"):
    """An interactive plotly timeline: one row per track, one marker per event (spans drawn as bars); hover for the
    date (marked where it is the course's, not the deck's), the one-line summary (marked as the deck's or the
    course's) and the chapters that study it. Click a legend entry to hide a track."""
    import plotly.graph_objects as go

    events = TIMELINE if events is None else list(events)
    figure = go.Figure()
    rows = list(TRACKS)
    colours = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A"]
    for row, (track, label) in enumerate(TRACKS.items()):
        chosen = [e for e in events if e.track == track]
        if not chosen:
            continue
        xs, ys, hover, texts = [], [], [], []
        for i, event in enumerate(chosen):
            chapters = chapters_label(event.chapters)
            source = "the deck" if event.summary_by == _DECK else "the course's summary"
            slides = ", ".join(map(str, event.slides)) or "not in the deck"
            extra = f"<br><i>deck:</i> {_wrap(event.deck_text)}" if event.deck_text else ""
            date = f"{event.date_label} ({event.date_note})" if event.date_note else event.date_label
            hover.append(f"<b>{_wrap(event.title, 70)}</b><br>{date}<br>{_wrap(event.summary)}"
                         f"<br><i>({source})</i>{extra}<br>slides: {slides} \u00b7 chapters: {chapters}")
            xs.append(f"{event.start[0]}-{event.start[1]:02d}-15")
            # spread events of a row over three lanes so that markers in the same month stay apart
            ys.append(row + 0.25 * ((i % 3) - 1))
            texts.append(event.title if len(event.title) < 28 else event.title[:26] + "\u2026")
            if event.end is not None:
                figure.add_trace(go.Scatter(
                    x=[xs[-1], f"{event.end[0]}-{event.end[1]:02d}-15"], y=[ys[-1], ys[-1]], mode="lines",
                    line=dict(width=6, color=colours[row]), hoverinfo="skip", showlegend=False, legendgroup=track))
        figure.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers+text", text=texts, textposition="top center", textfont=dict(size=9),
            marker=dict(size=11, color=colours[row], line=dict(width=1, color="white")), name=label,
            hovertext=hover, hoverinfo="text", legendgroup=track))
    figure.update_layout(
        title=title, height=560, hovermode="closest", template="plotly_white",
        yaxis=dict(tickvals=list(range(len(rows))), ticktext=[TRACKS[r].split(" (")[0] for r in rows],
                   range=[-0.7, len(rows) - 0.3]),
        xaxis=dict(title="date (hover over a marker; drag to zoom, double-click to reset)"),
        legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=50, b=10))
    return figure


def ternary_figure(placement: Mapping[str, Sequence[float]], corners: Sequence[str], title: str | None = None):
    """The student's placement of the ternary plot's papers: ``{paper: (a, b, c)}`` (any non-negative weights,
    normalised here) on a plotly ternary plot whose corners are ``corners``."""
    import plotly.graph_objects as go

    names = list(placement)
    weights = torch.tensor([list(map(float, placement[name])) for name in names])
    weights = weights / weights.sum(-1, keepdim=True)
    short = [name.split(":")[0] if len(name) > 40 else name for name in names]
    figure = go.Figure(go.Scatterternary(
        a=weights[:, 0].tolist(), b=weights[:, 1].tolist(), c=weights[:, 2].tolist(), mode="markers+text",
        text=[s if len(s) < 34 else s[:32] + "\u2026" for s in short], textposition="top center",
        textfont=dict(size=9), hovertext=[_wrap(name, 60) for name in names], hoverinfo="text",
        marker=dict(size=10)))
    figure.update_layout(
        title=title or "Your placement of the deck's papers (the deck's own positions are not in its text)",
        ternary=dict(aaxis=dict(title=corners[0]), baxis=dict(title=corners[1]), caxis=dict(title=corners[2])),
        height=560, template="plotly_white", showlegend=False)
    return figure


def image_grid(images: Tensor, titles: Sequence[str] | None = None, columns: int = 10, title: str = "",
               symmetric: bool = True, height_per_row: int = 120):
    """A grid of single-channel images ``[n, 1, H, W]`` or ``[n, H, W]`` (plotly, one shared colour scale; with
    ``symmetric`` the scale is centred on 0, i.e. on the data set's mean pixel)."""
    import plotly.express as px

    images = images.detach().float().cpu()
    if images.ndim == 4:
        images = images[:, 0]
    bound = float(images.abs().max()) or 1.0
    figure = px.imshow(images.numpy(), facet_col=0, facet_col_wrap=min(columns, len(images)),
                       color_continuous_scale="RdBu_r" if symmetric else "gray_r",
                       zmin=-bound if symmetric else None, zmax=bound if symmetric else None,
                       facet_col_spacing=0.01, facet_row_spacing=0.06)
    for annotation in figure.layout.annotations:
        index = int(annotation.text.split("=")[-1])
        annotation.text = titles[index] if titles is not None else str(index)
        annotation.font.size = 10
    rows = math.ceil(len(images) / min(columns, len(images)))
    figure.update_layout(title=title, height=80 + height_per_row * rows, margin=dict(l=10, r=10, t=50, b=10),
                         coloraxis_showscale=False)
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    return figure


# --------------------------------------------------------------------------------------------------------------
# Feature visualisation: the digits data, a small CNN, activation maximisation, dataset examples
# --------------------------------------------------------------------------------------------------------------


@dataclass
class DigitsData:
    """The 1,797 8x8 images of scikit-learn's ``load_digits`` (bundled inside scikit-learn: no download), scaled to
    [0, 1] and then standardised with the training set's mean and standard deviation, so that 0 is the mean pixel."""

    train_x: Tensor  # [n_train, 1, 8, 8]
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: float
    std: float

    @property
    def all_x(self) -> Tensor:
        return torch.cat([self.train_x, self.test_x])

    @property
    def all_y(self) -> Tensor:
        return torch.cat([self.train_y, self.test_y])


DIGITS_SPLIT_SEED = 0
DIGITS_N_TRAIN = 1400


def load_digits_data(split_seed: int = DIGITS_SPLIT_SEED, n_train: int = DIGITS_N_TRAIN) -> DigitsData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(split_seed))
    train, test = order[:n_train], order[n_train:]
    mean, std = float(images[train].mean()), float(images[train].std())
    scale = lambda x: (x - mean) / std  # noqa: E731
    return DigitsData(scale(images[train]), labels[train], scale(images[test]), labels[test], mean, std)


class DigitsCNN(nn.Module):
    """conv 3x3 (1 -> c1) -> ReLU -> conv 3x3 (c1 -> c2) -> ReLU -> 2x2 max-pool -> linear (-> hidden) -> ReLU ->
    linear (-> n_classes). ``run_with_cache(x)`` returns the logits and the activations by name, like TransformerLens:
    ``"conv1" [batch, c1, H, W]``, ``"conv2" [batch, c2, H, W]`` (after their ReLUs), ``"fc" [batch, hidden]`` (after
    its ReLU) and ``"logits" [batch, n_classes]``."""

    LAYERS = ("conv1", "conv2", "fc", "logits")

    def __init__(self, channels: tuple[int, int] = (8, 16), hidden: int = 32, n_classes: int = 10,
                 image_size: int = 8, seed: int = 0):
        super().__init__()
        self.config = dict(channels=tuple(channels), hidden=hidden, n_classes=n_classes, image_size=image_size)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation that leaves the global generator alone
            torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
            self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
            self.fc = nn.Linear(channels[1] * (image_size // 2) ** 2, hidden)
            self.out = nn.Linear(hidden, n_classes)

    def run_with_cache(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cache = {"conv1": F.relu(self.conv1(x))}
        cache["conv2"] = F.relu(self.conv2(cache["conv1"]))
        cache["fc"] = F.relu(self.fc(F.max_pool2d(cache["conv2"], 2).flatten(1)))
        cache["logits"] = self.out(cache["fc"])
        return cache["logits"], cache

    def forward(self, x: Tensor) -> Tensor:
        return self.run_with_cache(x)[0]


DIGITS_TRAIN = dict(epochs=8, batch=64, lr=3e-3, weight_decay=1e-2, seed=0)


def digits_metrics(model: DigitsCNN, data: DigitsData) -> dict[str, float]:
    with torch.no_grad():
        return {f"{split}_accuracy": float((model(x).argmax(-1) == y).float().mean())
                for split, x, y in [("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)]}


def train_digits_cnn(data: DigitsData | None = None, seed: int = DIGITS_TRAIN["seed"], epochs: int | None = None,
                     progress: bool = False) -> tuple[DigitsCNN, dict]:
    """Train the chapter's CNN (about 180 AdamW steps of 64 images: seconds on a CPU). Deterministic for a seed on a
    given machine. Returns ``(model, info)`` with the accuracies and the loss log."""
    from tqdm.auto import tqdm

    data = load_digits_data() if data is None else data
    spec = dict(DIGITS_TRAIN, seed=seed, epochs=epochs or DIGITS_TRAIN["epochs"])
    model = DigitsCNN(seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    generator = torch.Generator().manual_seed(seed + 1)
    log = []
    for epoch in tqdm(range(spec["epochs"]), desc="digits-cnn", disable=not progress):
        order = torch.randperm(len(data.train_x), generator=generator)
        model.train()
        for start in range(0, len(order), spec["batch"]):
            batch = order[start:start + spec["batch"]]
            loss = F.cross_entropy(model(data.train_x[batch]), data.train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        log.append(dict(epoch=epoch, train_loss=float(loss.detach()), **digits_metrics(model, data)))
    return model.eval(), {"training": spec, "metrics": digits_metrics(model, data), "log": log}


def unit_activation(model: DigitsCNN, layer: str, index: int | Tensor) -> Callable[[Tensor], Tensor]:
    """An ``activation_fn(x) -> [batch]`` for one unit of ``model``: a class logit (``"logits"``), a hidden neuron
    (``"fc"``), or a conv channel's mean over positions (``"conv1"``, ``"conv2"``). ``index`` is one unit for every
    image, or a ``[batch]`` tensor giving each image its own unit (visualise ten classes in one batch)."""
    if layer not in DigitsCNN.LAYERS:
        raise ValueError(f"layer must be one of {DigitsCNN.LAYERS}, got {layer!r}")

    def activation_fn(x: Tensor) -> Tensor:
        _, cache = model.run_with_cache(x)
        act = cache[layer]
        if act.ndim == 4:
            act = act.mean(dim=(-2, -1))
        if isinstance(index, Tensor):
            return act[torch.arange(len(act)), index]
        return act[:, index]

    return activation_fn


def total_variation(x: Tensor) -> Tensor:
    """``x [batch, C, H, W] -> [batch]``: the sum of squared differences between vertically and horizontally
    neighbouring pixels (over channels too). Zero exactly for a constant image; large for a noisy one."""
    vertical = (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum(dim=(-3, -2, -1))
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum(dim=(-3, -2, -1))
    return vertical + horizontal


def visualise(activation_fn: Callable[[Tensor], Tensor], x0: Tensor, steps: int = 100, lr: float = 0.05,
              l2: float = 0.0, tv: float = 0.0, jitter: int = 0, seed: int = 0) -> Tensor:
    """Activation maximisation: gradient ascent on the input, from ``x0 [batch, C, H, W]`` (left unchanged).

    ``generator = torch.Generator().manual_seed(seed)``, ``x`` a copy of ``x0`` that requires grad and
    ``torch.optim.Adam([x], lr=lr)``; then ``steps`` times:

    1. draw the jitter: ``dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()``;
    2. ``objective = activation_fn(torch.roll(x, shifts=(dy, dx), dims=(-2, -1))) - l2 * (x ** 2).sum(dim=(1, 2, 3))
       - tv * total_variation(x)`` (one value per image);
    3. one Adam step that *increases* ``objective.sum()``.

    Returns ``x`` detached, ``[batch, C, H, W]``.
    """
    generator = torch.Generator().manual_seed(seed)
    x = x0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
            shifted = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            objective = activation_fn(shifted) - l2 * x.pow(2).sum(dim=(1, 2, 3)) - tv * total_variation(x)
            optimizer.zero_grad()
            (-objective.sum()).backward()
            optimizer.step()
    return x.detach()


def top_activating_examples(activation_fn: Callable[[Tensor], Tensor], images: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(values [k], indices [k])``: the ``k`` images with the largest activation, largest first; equal activations
    are ordered by their index in ``images`` (lower first)."""
    with torch.no_grad():
        activations = activation_fn(images)
    order = torch.sort(activations, descending=True, stable=True).indices[:k]
    return activations[order], order


# --------------------------------------------------------------------------------------------------------------
# Training-data attribution: last-layer gradient similarity at the final checkpoint (TracIn-style)
# --------------------------------------------------------------------------------------------------------------


def last_layer_gradients(model: DigitsCNN, x: Tensor, y: Tensor) -> Tensor:
    """``x [batch, 1, H, W]``, ``y [batch]`` -> ``[batch, n_classes * hidden + n_classes]``: for each example, the
    gradient of its own cross-entropy loss with respect to the final layer's parameters, ``model.out.weight``
    (``[n_classes, hidden]``, flattened row by row) followed by ``model.out.bias`` (``[n_classes]``).

    Why a closed form and not autograd: with ``logits = W h + b`` (``h`` the ``"fc"`` activations), the gradient of
    ``cross_entropy(logits, y)`` is ``dL/dW = (softmax(logits) - onehot(y)) h^T`` and ``dL/db = softmax(logits) -
    onehot(y)``, so one forward pass gives every example's gradient, with no backward pass per example. The model is
    left untouched."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(x)
        error = logits.softmax(-1) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)  # [batch, n_classes]
        weight = einops.einsum(error, cache["fc"], "batch cls, batch hidden -> batch cls hidden")
        return torch.cat([einops.rearrange(weight, "batch cls hidden -> batch (cls hidden)"), error], dim=-1)


def tracin_scores(model: DigitsCNN, test_x: Tensor, test_y: Tensor, train_x: Tensor, train_y: Tensor) -> Tensor:
    """``[n_test, n_train]``: ``score[i, j] = grad L(test i) . grad L(train j)``, both gradients of one example's
    cross-entropy loss (with its own label) with respect to the final layer's weight and bias, at the model's current
    parameters.

    Why this number: one gradient step of size ``lr`` on training example ``j`` changes test example ``i``'s loss by
    about ``-lr * score[i, j]`` (first order), so a positive score means training on ``j`` pushes the model towards
    ``i``'s label (``j`` *supports* it) and a negative one away from it (``j`` *opposes* it). TracIn sums this over
    checkpoints saved during training; this is its one-checkpoint, last-layer version."""
    return last_layer_gradients(model, test_x, test_y) @ last_layer_gradients(model, train_x, train_y).T


# --------------------------------------------------------------------------------------------------------------
# Choosing an area from point scores
# --------------------------------------------------------------------------------------------------------------

#: Values closer than this count as tied (so that float rounding never decides a pick).
TIE_TOLERANCE = 1e-9


def area_values(my_scores: Mapping[str, Mapping[str, float]], deck_scores: Mapping[str, Mapping[str, float | None]],
                weight_mine: float = 0.5) -> dict[str, dict[str, float]]:
    """For every area in ``my_scores``: the combined score per key (``weight_mine * mine + (1 - weight_mine) *
    deck``, or yours alone where the deck gives none) and ``value = low_hanging_fruit + excitement - difficulty``."""
    table = {}
    for area, mine in my_scores.items():
        deck = deck_scores.get(area) or {}
        combined = {}
        for key in SCORE_KEYS:
            theirs = deck.get(key)
            combined[key] = float(mine[key]) if theirs is None else \
                weight_mine * float(mine[key]) + (1 - weight_mine) * float(theirs)
        combined["value"] = combined["low_hanging_fruit"] + combined["excitement"] - combined["difficulty"]
        table[area] = combined
    return table


def pick_area(my_scores: Mapping[str, Mapping[str, float]], deck_scores: Mapping[str, Mapping[str, float | None]],
              weight_mine: float = 0.5) -> tuple[str, dict[str, float]]:
    """``(best_area, values)``: ``values`` maps every area you scored to its value (see :func:`area_values`); the best
    area has the largest value; ties go to the larger combined excitement, then to the area listed first in
    ``my_scores``."""
    table = area_values(my_scores, deck_scores, weight_mine)
    if not table:
        raise ValueError("score at least one area")
    best = None
    for area, row in table.items():  # first listed wins unless beaten by more than the tolerance
        if best is None:
            best = area
            continue
        top = table[best]
        if row["value"] > top["value"] + TIE_TOLERANCE or (
                abs(row["value"] - top["value"]) <= TIE_TOLERANCE and row["excitement"] > top["excitement"] + TIE_TOLERANCE):
            best = area
    return best, {area: row["value"] for area, row in table.items()}


def deck_scores() -> dict[str, dict[str, int | None]]:
    """The deck's point scores for every area of :data:`AREAS` (``None`` where its text gives none), read from
    ``research.AREAS`` (the single copy of the deck's scores)."""
    out = {}
    for area in AREAS:
        scores = (research.AREAS.get(area) or {}).get("scores") or {}
        out[area] = {key: scores.get(key) for key in SCORE_KEYS}
    return out
