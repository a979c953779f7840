"""Section 8 of chapter 01: what circuit studies of big models found, as sourced data for the chapter's table, and
the observations its quiz asks students to attribute to a study (the quiz's key is stored as digests in the
generated reference, never here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CircuitStudy:
    """A study or theme from the deck's circuit-analysis slides and what the course's sources say it found.

    Every ``finding`` comes from the deck (``shared/deck/mechinterp-deck.txt``) or ``published-results.md``;
    ``secondary`` marks what that file takes from reimplementations or summaries rather than the paper itself.
    """

    key: str
    name: str
    finding: str
    source: str
    secondary: bool = False


#: Section 8's table: what the course's sources say each study or theme found.
CIRCUIT_STUDIES: tuple[CircuitStudy, ...] = (
    CircuitStudy(
        "ioi",
        "indirect object identification (IOI; Wang et al. 2022)",
        "in GPT-2 small, a circuit of heads with 87% faithfulness; the model's mean logit difference is 3.56 and it "
        "prefers the indirect object to the subject 99.3% of the time",
        "deck slides 19, 22 and 81; published-results.md",
    ),
    CircuitStudy(
        "head-specialisation",
        "head specialisation",
        "heads that each do one nameable job: name movers, negative name movers and S-inhibition heads in IOI; "
        "previous-token and induction heads in this chapter",
        "deck slide 24 (a key discovery); published-results.md for the IOI classes",
    ),
    CircuitStudy(
        "backup",
        "backup behaviour",
        "knocking out all of IOI's name-mover heads costs only about 5% of the logit difference: other heads take over",
        "deck slides 24 and 35 (discovered in the IOI paper); published-results.md",
    ),
    CircuitStudy(
        "hydra",
        "hydra effect (McGrath et al. 2023)",
        "ablating one attention layer makes another layer compensate, even in a model trained without dropout",
        "deck slides 24 and 36; published-results.md",
    ),
    CircuitStudy(
        "orion",
        "ORION (Variengien, Dec 2023)",
        "a constellation of tasks studied together: question answering, type-hint understanding, factual recall, "
        "variable binding, translation and induction",
        "deck slides 19, 22 and 81 (the deck lists the tasks; the course's sources give no further result)",
    ),
    CircuitStudy(
        "induction-heads",
        "induction heads (Olsson et al. 2022)",
        "heads that attend to the token after an earlier copy of the current token (prefix matching) and raise "
        "that token's logit (copying)",
        "published-results.md",
    ),
    CircuitStudy(
        "smallest-induction",
        "the smallest known induction setup",
        "a 2-layer attention-only model of 52k parameters learns repeated tokens on a CPU in 1,800 steps (loss from "
        "4.85 to about 0.09); a 1-layer attention-only model cannot",
        "published-results.md (secondary)",
        secondary=True,
    ),
)

#: Circuit analyses the deck lists on "big models" (slides 22-27) for which the course's sources record no result.
LISTED_WITHOUT_RESULT = ("pronoun selection", "greater than", "docstring", "time", "arithmetic", "multiple choice QA")

#: The quiz: observations a researcher might make, each an instance of one study's finding above (the student
#: names the study's ``key``). Written from the same sources as the table but about other prompts and other
#: measurements, and without the table's wording: matching a phrase is not enough, the finding has to be recognised.
STUDY_SCENARIOS: dict[str, str] = {
    "A": "In a large model's name-copying circuit you knock out the heads that carry the name to the output. The "
    "answer barely suffers: heads that had contributed little before now do the carrying.",
    "B": "You zero the output of one attention layer of a model whose training used no dropout at all, and "
    "measure what each later layer writes: one of them now writes far more of the answer than before.",
    "C": "Going through a model's heads one by one, you can give most of them a one-line job description: 'looks "
    "at the word before', 'looks at an earlier copy of this word', 'looks where that copy continued'.",
    "D": "On 'When Mary and John went to the store, John gave a drink to', GPT-2 small with all but a few dozen "
    "heads ablated still does most of what the whole model does in preferring 'Mary' over 'John'.",
    "E": "Rather than one behaviour, a single study takes a whole collection of tasks (answering questions, "
    "recalling facts, binding variables, translating, ...) and analyses them side by side.",
    "F": "In a text where 'Harry Potter' appeared earlier, at the next 'Harry' one head's attention jumps to the "
    "earlier 'Potter', and the model's logit for 'Potter' goes up.",
    "G": "On a laptop CPU, a model with two layers of attention and nothing else learns within a couple of "
    "thousand steps to predict the second half of random repeated sequences; the same recipe with one "
    "layer never gets there.",
}
