"""Chapter 00's deck data: the talk's history and maps of the field, transcribed, and the quizzes' questions.

Two kinds of text live here, and every record says which it is:

- **the deck's**: transcribed from the talk ("Mechanistic Interpretability: the big ideas, schools of thought, and
  areas people care about and why"), with its slide number;
- **the course's**: one-line paper summaries and glosses the course adds (``summary_by="course"``), kept to facts
  that are well known and stated in the papers themselves; dates the deck does not give (``date_by="course"``); and
  every pairing of a deck item with a chapter of this course.

Anything presented as the deck's words is verbatim (its spelling and typography kept); tests/test_history.py checks
each such string against the deck's text. Where the course shortens or rewords a line, the record says so. Where the
deck's *text* does not say something (for example where a paper sits on its ternary plot, whose picture is not part
of the text), nothing here pretends it does.

The quizzes' questions and options are here; their answers are not. Each answer is written once, in the solution
notebook, and reaches the checks only as digests (``reference.ANSWER_KEYS``). The quizzes ask what the tables do not
print: a work's lineage, a scenario's person, a project's area, a work's class in a taxonomy, a success's claim.
The deck's big areas, with their point scores, are :data:`mechinterp_course.research.AREAS` (the course's one table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
    "00": "ready",
    "01": "ready",
    "02": "ready",
    "03": "ready",
    "04": "ready",
    "05": "ready",
    "06": "ready",
}


def chapter_label(code: str) -> str:
    """``"02 Grokking"``, or ``"05 Attention superposition (planned)"`` for a chapter not written yet."""
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
    """One of the people of slides 4-5, with slide 5's group and role (``note``: the course's remark, if any)."""

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
    Person(
        "Catherine Olsson",
        TRANSFORMER_CIRCUITS,
        "Exp work to produce insights to build the framework from",
        "the deck writes 'Christine Olsson'; the first author of 'In-context Learning and Induction Heads' is "
        "Catherine Olsson",
    ),
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
    """One event of the timeline: its date, a one-line summary and who wrote it, its track, where the deck mentions it
    and which chapters of the course study it (the timeline figure, ``plots.timeline_figure``, reads these)."""

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

    @property
    def chapters_text(self) -> str:
        """The chapters that study the event, labelled (``"01 Circuits, 05 Attention superposition (planned)"``)."""
        return chapters_label(self.chapters)

    @property
    def from_deck(self) -> bool:
        """Whether the one-line summary is the deck's own words (else it is the course's)."""
        return self.summary_by == _DECK


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

TIMELINE: list[Event] = sorted(
    [
        # Slide 6: "The prehistory (biography of the OG)". The deck's own words.
        Event(
            "olah-3d-printing",
            (2010, 1),
            "Chris Olah does 3d printing in highschool",
            _SLIDE_6_TEXT["olah-3d-printing"],
            _DECK,
            "prehistory",
            slides=(6,),
            end=(2011, 1),
            precision="year",
        ),
        Event(
            "thiel-fellowship",
            (2012, 1),
            "Thiel Fellowship",
            _SLIDE_6_TEXT["thiel-fellowship"],
            _DECK,
            "prehistory",
            slides=(6,),
            precision="year",
        ),
        Event(
            "emails-bengio",
            (2013, 1),
            "Cold-emails Yoshua Bengio",
            _SLIDE_6_TEXT["emails-bengio"],
            _DECK,
            "prehistory",
            slides=(6,),
            precision="year",
        ),
        Event(
            "google-brain",
            (2014, 1),
            "Google Brain internship",
            _SLIDE_6_TEXT["google-brain"],
            _DECK,
            "prehistory",
            slides=(6,),
            precision="year",
        ),
        Event(
            "deepdream",
            (2015, 1),
            "DeepDream, generalised",
            _SLIDE_6_TEXT["deepdream"],
            _DECK,
            "prehistory",
            chapters=("00",),
            slides=(5, 6),
            precision="year",
        ),
        Event(
            "distill",
            (2016, 1),
            "Co-founds Distill; Concrete Problems in AI Safety",
            _SLIDE_6_TEXT["distill"],
            _DECK,
            "prehistory",
            slides=(6,),
            precision="year",
        ),
        Event(
            "transformers",
            (2017, 1),
            "Transformers are invented",
            _SLIDE_6_TEXT["transformers"],
            _DECK,
            "prehistory",
            slides=(6,),
            precision="year",
        ),
        Event(
            "lucid-openai",
            (2018, 1),
            "Lucid; joins OpenAI",
            _SLIDE_6_TEXT["lucid-openai"],
            _DECK,
            "prehistory",
            chapters=("00",),
            slides=(6,),
            precision="year",
        ),
        Event(
            "vision-circuits",
            (2019, 1),
            "Nick Cammarata drives the vision circuits work",
            _SLIDE_6_TEXT["vision-circuits"],
            _DECK,
            "prehistory",
            slides=(6,),
            precision="year",
        ),
        Event(
            "anthropic",
            (2021, 1),
            "Distill on hiatus; Chris joins Anthropic",
            _SLIDE_6_TEXT["anthropic"],
            _DECK,
            "prehistory",
            slides=(6,),
            precision="year",
        ),
        # Slide 7: "transformer-circuits".
        Event(
            "circuits-thread",
            (2020, 3),
            "Distill Circuits thread",
            "A thread of Distill articles reverse-engineering InceptionV1: curve detectors, high-low frequency "
            "detectors, equivariance, branch specialisation.",
            _COURSE,
            "transformer-circuits",
            chapters=("00",),
            slides=(6, 7, 9),
            end=(2021, 4),
            deck_text="March 2020 - April 2021 \u2014 Original distill circuits thread",
        ),
        Event(
            "math-framework",
            (2021, 12),
            "A Mathematical Framework for Transformer Circuits",
            "Reads attention-only transformers as sums of paths (QK and OV circuits) and finds induction heads built "
            "by K-composition in two-layer models.",
            _COURSE,
            "transformer-circuits",
            chapters=("01",),
            slides=(7, 9),
            deck_text="Dec 2021 - First transformer-circuits post. Discovery of induction heads.",
        ),
        Event(
            "induction-heads",
            (2022, 3),
            "In-context Learning and Induction Heads",
            "Induction heads form in a sudden phase change early in training, at the same time as in-context "
            "learning improves; six lines of evidence that they drive most in-context learning.",
            _COURSE,
            "transformer-circuits",
            chapters=("01",),
            slides=(7, 9),
            deck_text="March 2022 - Induction heads, developmental study of ICL",
        ),
        Event(
            "solu",
            (2022, 6),
            "Softmax Linear Units",
            "An activation function (SoLU) that makes more MLP neurons interpretable at little cost in performance, "
            "though some features then hide behind the LayerNorm that follows it.",
            _COURSE,
            "transformer-circuits",
            slides=(7,),
            deck_text="June 2022 - Softmax Linear Units",
        ),
        Event(
            "toy-models",
            (2022, 9),
            "Toy Models of Superposition",
            "Small ReLU autoencoders store more sparse features than they have dimensions, in geometric "
            "arrangements (antipodal pairs, pentagons) that change in phase transitions with sparsity.",
            _COURSE,
            "transformer-circuits",
            chapters=("04",),
            slides=(7, 9),
            deck_text="September 2022 - Toy Models of Superposition",
        ),
        # Slide 7 names "Double descent" among the small posts of a one-year gap but gives it no date: the date is the
        # course's.
        Event(
            "double-descent",
            (2023, 1),
            "Superposition, Memorization, and Double Descent",
            "Toy models that memorise store data points, not features, in superposition, and the switch to "
            "generalising features shows up as double descent.",
            _COURSE,
            "transformer-circuits",
            slides=(7,),
            deck_text="(Small posts fill a 1 year gap ~ Double descent, May Circuits updates, July updates)",
            date_by=_COURSE,
        ),
        Event(
            "may-update",
            (2023, 5),
            "Circuits updates, May 2023",
            "May update: Anthropic \u201cconstructs\u201d toy model. OV-incoherence is bad terminology",
            _DECK,
            "transformer-circuits",
            chapters=("05",),
            slides=(7, 60, 61),
        ),
        Event(
            "july-update",
            (2023, 7),
            "Circuits updates, July 2023",
            "July update: previous example is not a real toy model of attn superposition",
            _DECK,
            "transformer-circuits",
            chapters=("05",),
            slides=(7, 61),
        ),
        Event(
            "towards-monosemanticity",
            (2023, 10),
            "Towards Monosemanticity",
            "A sparse autoencoder on a one-layer transformer's 512-neuron MLP turns it into thousands of features, "
            "most of them interpretable.",
            _COURSE,
            "transformer-circuits",
            chapters=("04",),
            slides=(7, 9, 39, 73),
            deck_text="October 2023 - Towards Monosemanticity",
        ),
        # Slides 74-76 write "they made real progress"; slides 77-78, quoted here, "they made progress".
        Event(
            "january-update",
            (2024, 1),
            "Circuits updates, January 2024",
            "Anthropic update: they made progress. Extremely preliminary results",
            _DECK,
            "transformer-circuits",
            chapters=("05",),
            slides=(7, 74, 75, 76, 77, 78),
        ),
        # Slides 55-78: the attention-superposition timeline (the deck's words; "Me" is the talk's author).
        Event(
            "olah-attn-superposition",
            (2023, 2),
            "Attention heads may exhibit superposition",
            "Chris Olah speculates that attention heads can exhibit superposition",
            _DECK,
            "attention-superposition",
            chapters=("05",),
            slides=(55,),
        ),
        # First on slide 62 ("successfully construct the first actual (OV-incoherent) toy model ..."); the shorter
        # wording quoted here is slide 63's.
        Event(
            "ov-incoherent-model",
            (2023, 7),
            "An OV-incoherent toy model",
            "Me, Narmeen, and faul_sname construct an \u201cOV-incoherent\u201d toy model for an alignment jam",
            _DECK,
            "attention-superposition",
            chapters=("05",),
            slides=(62, 63),
        ),
        Event(
            "ov-coherent-model",
            (2023, 8),
            "An OV-coherent toy model",
            "Lauren Greenspan & Keith Wynroe construct an \u201cOV-coherent\u201d toy model",
            _DECK,
            "attention-superposition",
            chapters=("05",),
            slides=(63,),
        ),
        Event(
            "joint-work",
            (2023, 9),
            "Working on it together",
            "We (+Kunvar & Adam Jermyn) all kinda work on it together with limited success.",
            _DECK,
            "attention-superposition",
            chapters=("05",),
            slides=(72,),
        ),
        Event(
            "computation-in-superposition",
            (2024, 1),
            "Toward A Mathematical Framework for Computation in Superposition",
            "Constructions that compute many boolean functions of sparse features (e.g. every pairwise AND) in "
            "superposition in a single layer.",
            _COURSE,
            "attention-superposition",
            chapters=("05",),
            slides=(77, 78),
            deck_text="[Jan 2024] Toward A Mathematical Framework for Computation in Superposition",
        ),
        # Slide 9: the papers on the ternary plot that are not above. The deck dates none of them.
        Event(
            "slt",
            (2009, 1),
            "Singular Learning Theory",
            "Watanabe's Bayesian theory of singular models such as neural networks; developmental interpretability "
            "uses it to locate phase transitions in training.",
            _COURSE,
            "maps",
            slides=(9,),
            precision="year",
            date_by=_COURSE,
        ),
        Event(
            "ioi",
            (2022, 11),
            "Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small",
            "26 attention heads in 7 classes explain how GPT-2 small completes 'When Mary and John went to the "
            "store, John gave a drink to' with 'Mary'.",
            _COURSE,
            "maps",
            chapters=("01", "03", "06"),
            slides=(9, 22, 34, 81),
            deck_text="[Nov 2022, Wang] Interpretability in the Wild: IOI",
        ),
        Event(
            "influence-functions",
            (2023, 8),
            "Studying Large Language Model Generalization with Influence Functions",
            "Scales influence functions to language models of up to 52 billion parameters, tracing outputs to the "
            "training examples that most influenced them.",
            _COURSE,
            "maps",
            chapters=("00",),
            slides=(9, 15),
            date_by=_COURSE,
        ),
        Event(
            "delays-detours",
            (2023, 8),
            "Delays, Detours, and Forks in the Road: Latent State Models of Training Dynamics",
            "Fits hidden Markov models to metrics recorded over many training runs, finding the phases of training "
            "and the detours that slow convergence.",
            _COURSE,
            "maps",
            slides=(9,),
            date_by=_COURSE,
        ),
        Event(
            "sudden-drops",
            (2023, 9),
            "Sudden Drops in the Loss: Syntax Acquisition, Phase Transitions, and Simplicity Bias in MLMs",
            "In masked language models, a sudden drop in the loss coincides with the abrupt emergence of attention "
            "heads that track syntax.",
            _COURSE,
            "maps",
            slides=(9,),
            date_by=_COURSE,
        ),
        Event(
            "representation-engineering",
            (2023, 10),
            "Representation Engineering",
            "Reads and steers high-level concepts such as honesty from population-level representations of language "
            "models: a top-down approach.",
            _COURSE,
            "maps",
            slides=(9,),
            date_by=_COURSE,
        ),
        # The deck's areas (slides 19-44) and its successes (slides 80-81), with the papers the later chapters study.
        Event(
            "curve-circuits",
            (2021, 1),
            "Curve Circuits",
            "Curve-detecting neurons of InceptionV1, resting on more than 50,000 parameters, described in a few "
            "sentences and rebuilt with hand-written weights.",
            _COURSE,
            "papers",
            chapters=("06",),
            slides=(80, 81),
            deck_text="[Jan 2021, Olah] Ability to (blindly) hand write the model weights",
        ),
        Event(
            "grokking",
            (2022, 1),
            "Grokking: Generalization Beyond Overfitting on Small Algorithmic Datasets",
            "Small transformers trained on modular arithmetic generalise long after they have memorised their "
            "training set.",
            _COURSE,
            "papers",
            chapters=("02",),
            date_by=_COURSE,
        ),
        Event(
            "towards-understanding-grokking",
            (2022, 5),
            "Towards Understanding Grokking",
            "An effective theory of representation learning, with a phase diagram of comprehension, grokking, "
            "memorisation and confusion.",
            _COURSE,
            "papers",
            chapters=("02",),
            slides=(30,),
            deck_text="[May 2022] Towards Understanding Grokking",
        ),
        Event(
            "progress-measures",
            (2022, 8),
            "Progress Measures for Grokking via Mechanistic Interpretability",
            "A one-layer transformer adds modulo 113 with Fourier features and trigonometric identities; progress "
            "measures split training into memorisation, circuit formation and clean-up.",
            _COURSE,
            "papers",
            chapters=("02",),
            slides=(30,),
            deck_text="[Aug 2022] Progress Measure for Grokking via Mechanistic Interpretability",
        ),
        Event(
            "sparse-autoencoders-2022",
            (2022, 12),
            "Taking Features out of Superposition with Sparse Autoencoders",
            "An L1-penalised autoencoder recovers known ground-truth features from synthetic data in superposition.",
            _COURSE,
            "papers",
            chapters=("04",),
            date_by=_COURSE,
        ),
        Event(
            "docstring",
            (2023, 2),
            "A circuit for Python docstrings in a 4-layer attention-only transformer",
            "A few attention heads of a small model predict the next argument name in a Python docstring.",
            _COURSE,
            "papers",
            chapters=("01",),
            slides=(22,),
            date_by=_COURSE,
        ),
        Event(
            "sparse-from-noise",
            (2023, 4),
            "Emergence of Sparse Representations from Noise",
            "Adding noise to a network's inputs during training is enough to make its hidden representations sparse.",
            _COURSE,
            "papers",
            chapters=("04",),
            slides=(39,),
            deck_text="[April 2023] Emergence of Sparse Representations from Noise",
        ),
        Event(
            "greater-than",
            (2023, 5),
            "How does GPT-2 compute greater-than?",
            "Attention heads move a start year to the last position and late MLPs raise the logits of the years "
            "after it.",
            _COURSE,
            "papers",
            chapters=("01",),
            slides=(22,),
            date_by=_COURSE,
        ),
        Event(
            "hierarchical-grokking",
            (2023, 5),
            "Grokking of Hierarchical Structure in Vanilla Transformers",
            "Transformers trained far past the point where in-domain accuracy saturates come to generalise "
            "hierarchically ('structural grokking').",
            _COURSE,
            "papers",
            chapters=("02",),
            slides=(30,),
            deck_text="[May 2023] Grokking of Hierarchical Structure in Vanilla Transformers",
        ),
        Event(
            "600-features",
            (2023, 7),
            "(tentatively) Found 600+ Monosemantic Features in a Small LM Using Sparse Autoencoders",
            "Sparse autoencoders on a small language model's activations find hundreds of features that look "
            "monosemantic.",
            _COURSE,
            "papers",
            chapters=("04",),
            slides=(39,),
            deck_text="[July 2023] (tentatively) Found 600+ Monosemantic Features in a Small LM Using Sparse "
            "Autoencoders",
        ),
        Event(
            "hydra-effect",
            (2023, 7),
            "The Hydra Effect: Emergent Self-repair in Language Model Computations",
            "Ablating one attention layer of a language model makes later layers compensate; late MLPs erase the "
            "top prediction.",
            _COURSE,
            "papers",
            chapters=("03",),
            slides=(24, 36),
            date_by=_COURSE,
        ),
        Event(
            "sae-interpretable-features",
            (2023, 9),
            "Sparse Autoencoders Find Highly Interpretable Features in Language Models",
            "Dictionary features learned by sparse autoencoders on a language model's residual stream are more "
            "interpretable than neurons and pinpoint the features behind a behaviour.",
            _COURSE,
            "papers",
            chapters=("04",),
            date_by=_COURSE,
        ),
        Event(
            "whisper",
            (2023, 9),
            "Interpreting OpenAI's Whisper",
            "Interpretability tools, sparse autoencoders among them, applied to a speech-recognition model.",
            _COURSE,
            "papers",
            chapters=("04",),
            slides=(40,),
            deck_text="[Sept 2023] Interpreting OpenAI's Whisper",
        ),
        Event(
            "copy-suppression",
            (2023, 10),
            "Copy Suppression: Comprehensively Understanding an Attention Head",
            "GPT-2 small's head 10.7 lowers the logits of tokens that appear in context and that earlier layers "
            "predict, which explains part of its self-repair.",
            _COURSE,
            "papers",
            chapters=("03",),
            slides=(36,),
            deck_text="[] Comprehensively understanding an attention head",
            date_by=_COURSE,
        ),
        Event(
            "margin-maximization",
            (2023, 11),
            "Feature Emergence via Margin Maximization",
            "Proves that margin maximisation alone forces the Fourier features that networks learn for modular "
            "addition.",
            _COURSE,
            "papers",
            chapters=("02", "06"),
            slides=(30, 80),
            deck_text="[Nov 2023, Morwani] Proof of a learned circuit being optimal (learning-wise)",
        ),
        Event(
            "reddy",
            (2023, 12),
            "The Mechanistic Basis of Data Dependence and Abrupt Learning in an In-context Classification Task",
            "A two-parameter model explains the abrupt emergence of an induction head in a two-layer attention-only "
            "network.",
            _COURSE,
            "papers",
            chapters=("06",),
            slides=(80, 81),
            deck_text="[Dec 2023, Reddy] Provide an analytic form",
        ),
        Event(
            "orion",
            (2023, 12),
            "Look Before You Leap: A Universal Emergent Decomposition of Retrieval Tasks in Language Models (ORION)",
            "Across many retrieval tasks and language models, the request is processed first and the answer "
            "retrieved later, in separate, consistent stages.",
            _COURSE,
            "papers",
            chapters=("01", "06"),
            slides=(19, 22, 81),
            deck_text="[Dec 2023, Variengien] ORION task constellations",
        ),
        Event(
            "self-repair",
            (2024, 2),
            "Explorations of Self-Repair in Language Models",
            "Self-repair is imperfect and noisy; the final LayerNorm's scale and sparse anti-erasure neurons account "
            "for part of it.",
            _COURSE,
            "papers",
            chapters=("03",),
            date_by=_COURSE,
        ),
        Event(
            "mips",
            (2024, 2),
            "Opening the AI Black Box: Program Synthesis via Mechanistic Interpretability",
            "Recurrent networks trained on algorithmic tasks are distilled automatically into Python programs; 32 "
            "of 62 tasks solved.",
            _COURSE,
            "papers",
            chapters=("06",),
            slides=(80,),
            deck_text="[Feb 2024, Tegmark] Synthesizing the program of the learned model",
        ),
    ],
    key=lambda event: event.sort_key,
)

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
    {
        "work": "In-context Learning and Induction Heads",
        "axis": "when in the training process",
        "class": "developmental",
        "slide": 7,
        "deck_text": "March 2022 - Induction heads, developmental study of ICL",
    },
    {
        "work": "Grokking",
        "axis": "schools of thought",
        "class": "hybrid between dev-interp and comprehensive understanding",
        "slide": 16,
        "deck_text": "Grokking: hybrid between dev-interp and comprehensive understanding",
    },
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
    "Head specialization",
    "suppression",
    "world modeling",
    "reasoning",
    "behavioral",
    "safety-relevant",
    "attention superposition",
    "circuits across tokens",
    "factual recall",
    "in-context learning",
    "macro structure",
    "modular circuits",
    "dev-interp",
    "trojan discovery",
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


# --------------------------------------------------------------------------------------------------------------
# What counts as mechanistic understanding (slides 80-84), each paired with the chapter that practises it
# --------------------------------------------------------------------------------------------------------------

#: Slide 82, "What does 'mechanistic' mean?", in the deck's order (its last bullet is an unfinished "d"). ``rung`` and
#: ``detail`` (the sub-bullet, "" where there is none) are the deck's words; ``practised_in`` and ``how`` are the
#: course's pairing, not the deck's.
LADDER: list[dict] = [
    {
        "rung": "Find correlations",
        "detail": "",
        "practised_in": ("00", "01"),
        "how": "top-activating dataset examples and last-layer gradient similarity to training images (this chapter); "
        "attention-pattern head scores (Circuits)",
    },
    {
        "rung": "Find causations and dependencies",
        "detail": "",
        "practised_in": ("01", "03"),
        "how": "zero, mean and resample ablation and activation patching (Circuits); self-repair under ablation "
        "(Backup behaviour)",
    },
    {
        "rung": "Causal understanding",
        "detail": "",
        "practised_in": ("01",),
        "how": "path patching: which edge carries the information, and how (Circuits)",
    },
    {
        "rung": "Sufficient conditions",
        "detail": "Finding a circuit",
        "practised_in": ("01",),
        "how": "keep only the circuit's heads and measure how much behaviour survives (Circuits)",
    },
    {
        "rung": "Necessary conditions",
        "detail": "Could it have been anything else?",
        "practised_in": ("02",),
        "how": "which ingredients grokking needs: change one thing (no weight decay, another data fraction, another "
        "operation) and let the grader re-run it (Grokking, last section)",
    },
]


def ladder_label(rung: Mapping) -> str:
    """``"Sufficient conditions: Finding a circuit"``: a rung with its sub-bullet, as the slide nests them."""
    return f"{rung['rung']}: {rung['detail']}" if rung["detail"] else rung["rung"]


#: Slides 83 ("north stars") and 80 ("examples of the strongest successes"). ``star`` and ``success`` (slide 80's
#: example, where it gives one) are the deck's words; ``practised_in`` and ``how`` are the course's pairing.
NORTH_STARS: list[dict] = [
    {
        "star": "Synthesize the program of a deep neural network",
        "slide": 83,
        "success": "[Feb 2024, Tegmark] Synthesizing the program of the learned model",
        "practised_in": ("02", "06"),
        "how": "the learned modular-addition algorithm written out as a short program of Fourier features (Grokking); "
        "the program read out of the grokked model's weights, run with no model, and measured against the model (What "
        "counts as mechanistic understanding)",
    },
    {
        "star": "Write (by hand) the model weights for a given task, from a MI explanation",
        "slide": 83,
        "success": "[Jan 2021, Olah] Ability to (blindly) hand write the model weights",
        "practised_in": ("05", "06"),
        "how": "toy models of attention superposition constructed by hand before any are trained (Attention "
        "superposition); an induction circuit and modular addition written by hand for any size, with no optimiser "
        "(What counts as mechanistic understanding)",
    },
    {
        "star": "Provide an analytic form",
        "slide": 80,
        "success": "[Dec 2023, Reddy] Provide an analytic form",
        "practised_in": ("02", "06"),
        "how": "the logits as a sum of cosines of the key frequencies (Grokking), and the equal margins that form "
        "predicts (What counts as mechanistic understanding)",
    },
    {
        "star": "Trace the learning dynamics of capability emergence down to the optimizer",
        "slide": 83,
        "success": None,
        "practised_in": ("01", "02", "06"),
        "how": "when induction heads form (Circuits, from the model card's training log); progress measures through "
        "memorisation, circuit formation and clean-up (Grokking); the program forming over the training snapshots "
        "(What counts as mechanistic understanding)",
    },
    {
        "star": "Trace model outputs to the specific training data examples",
        "slide": 83,
        "success": None,
        "practised_in": ("00", "06"),
        "how": "the training digits whose last-layer loss gradient most supports or opposes a test digit's, at the "
        "final checkpoint (TracIn-style gradient similarity; this chapter, section 4); the same for a max-of-K "
        "model (What counts as mechanistic understanding)",
    },
    {
        "star": "Provide a mathematical proof of a learned circuit/subnetwork being optimal",
        "slide": 83,
        "success": "[Nov 2023, Morwani] Proof of a learned circuit being optimal (learning-wise)",
        "practised_in": ("02", "06"),
        "how": "read, not proved: Morwani et al. in Grokking's reading list, beside the chapter's plot of the training "
        "margin over the trajectory (the quantity their argument is about); proofs of a lower bound on a max-of-K "
        "model's accuracy, not of optimality (What counts as mechanistic understanding)",
    },
]

#: Slide 81, "Best mech interp papers spotlight".
SPOTLIGHT: list[str] = [
    "[Jan 2021, Cammarata] Curve Circuits",
    "[Dec 2023, Reddy] Mechanistic Basis",
    "[Nov 2022, Wang] Interpretability in the Wild: IOI",
    "[Dec 2023, Variengien] ORION task constellations",
]


# --------------------------------------------------------------------------------------------------------------
# The quizzes' questions and options (their answers are written once, in the solution notebook, and checked as
# digests). Each asks for what no table of the chapter prints: a scenario's person, a work's lineage, a work's class,
# a project's area, a success's claim.
# --------------------------------------------------------------------------------------------------------------

#: Exercise 1.1, "Who did what": jobs described in the course's words; the student names the person of slide 5 who
#: did each. Two people share "Core infrastructure": their groups tell them apart.
PEOPLE_QUIZ: dict[str, str] = {
    "A": "Built and ran the software that the transformer-circuits team's experiments depended on.",
    "B": "Worked out, together with Chris, the concepts of a framework for reading transformers.",
    "C": "Created the image-generation technique that amplifies whatever a vision network detects, which Chris "
    "later generalised, before Distill existed.",
    "D": "Built and ran the software that the Distill team's experiments depended on.",
    "E": "Led most of the Distill articles that took an image classifier apart, circuit by circuit.",
    "F": "Ran the experiments on small transformers whose results the transformer-circuits framework was then built "
    "from.",
}
#: Who the people quiz's answers may name: everyone of slides 4-5.
PEOPLE_QUIZ_OPTIONS: tuple[str, ...] = tuple(person.name for person in PEOPLE)

#: Exercise 1.2, "What builds on what": events of the timeline under letters, in a fixed scramble.
LINEAGE_QUIZ: dict[str, str] = {
    "A": "toy-models",
    "B": "lucid-openai",
    "C": "transformers",
    "D": "progress-measures",
    "E": "math-framework",
    "F": "margin-maximization",
    "G": "deepdream",
    "H": "towards-monosemanticity",
    "I": "grokking",
    "J": "ioi",
    "K": "induction-heads",
    "L": "computation-in-superposition",
}
#: The letters whose most direct predecessor the student names (another letter of :data:`LINEAGE_QUIZ`).
LINEAGE_QUESTIONS: tuple[str, ...] = ("B", "D", "F", "H", "K", "L")

#: Exercise 2.1, "When in the training process": works of the timeline under letters; the student gives each its
#: class on slide 8's second axis. The deck's text classes none of these (only the induction-heads paper, which is
#: not asked); the classes follow from the course's gloss of the axis and from what each work does.
WHEN_QUIZ: dict[str, str] = {
    "A": "ioi",
    "B": "sudden-drops",
    "C": "solu",
    "D": "towards-monosemanticity",
    "E": "delays-detours",
    "F": "curve-circuits",
}

#: Exercise 2.4, "Where would this project go": research projects in the course's words; the student names the item
#: of slide 17 (:data:`STATUS`) each belongs to, then reads how done the deck says that item is.
PROJECTS_QUIZ: dict[str, str] = {
    "A": "Train a sparse autoencoder on a small language model's MLP activations and test whether its features are "
    "easier to name than the neurons.",
    "B": "Take two circuits that were found separately and work out how a model combines them on a prompt that "
    "needs both.",
    "C": "Work out how one layer computes the AND of two sparse features while both are stored in superposition.",
    "D": "Knock out the heads of a known circuit and measure how much other heads take over their job.",
    "E": "Hand-build a toy model in which several attention heads together implement what no single head can, "
    "because their QK circuits interfere.",
    "F": "Reverse-engineer the algorithm a small transformer uses for modular addition once its test accuracy has "
    "jumped to 100%.",
    "G": "Find the heads and paths a language model uses to complete 'When Mary and John went to the store, John "
    "gave a drink to'.",
    "H": "Compare optimisers (SGD, Adam, AdamW) and learning-rate schedules by which mechanisms each one leads a "
    "model to learn.",
}

#: Exercise 5.1, "The strongest successes": slide 80's four claims, the deck's words, under letters.
SUCCESS_QUIZ: dict[str, str] = {
    "A": "Proof of a learned circuit being optimal (learning-wise)",
    "B": "Synthesizing the program of the learned model",
    "C": "Provide an analytic form",
    "D": "Ability to (blindly) hand write the model weights",
}
#: ... and the four works slide 80 gives as their examples, described by what they did (the course's words), under
#: numbers; the student gives each the letter of the claim it is the example of.
SUCCESS_WORKS: dict[str, str] = {
    "1": "Curve detectors of a vision model, understood well enough to be rebuilt with weights set by hand.",
    "2": "An argument that the Fourier features networks learn for modular addition are exactly what maximising "
    "the margin asks for.",
    "3": "Recurrent networks trained on algorithmic tasks, turned automatically into short Python programs that do "
    "the same job.",
    "4": "A model with two parameters that reproduces when, and how abruptly, an induction head appears in a small "
    "network.",
}
