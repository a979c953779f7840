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
        "deck slides 19, 22 and 81; published-results.md"),
    CircuitStudy(
        "head-specialisation",
        "head specialisation",
        "heads that each do one nameable job: name movers, negative name movers and S-inhibition heads in IOI; "
        "previous-token and induction heads in this chapter",
        "deck slide 24 (a key discovery); published-results.md for the IOI classes"),
    CircuitStudy(
        "backup",
        "backup behaviour",
        "knocking out all of IOI's name-mover heads costs only about 5% of the logit difference: other heads take "
        "over",
        "deck slides 24 and 35 (discovered in the IOI paper); published-results.md"),
    CircuitStudy(
        "hydra",
        "hydra effect (McGrath et al. 2023)",
        "ablating one attention layer makes another layer compensate, even in a model trained without dropout",
        "deck slides 24 and 36; published-results.md"),
    CircuitStudy(
        "orion",
        "ORION (Variengien, Dec 2023)",
        "a constellation of tasks studied together: question answering, type-hint understanding, factual recall, "
        "variable binding, translation and induction",
        "deck slides 19, 22 and 81 (the deck lists the tasks; the course's sources give no further result)"),
    CircuitStudy(
        "induction-heads",
        "induction heads (Olsson et al. 2022)",
        "heads that attend to the token after an earlier copy of the current token (prefix matching) and raise "
        "that token's logit (copying)",
        "published-results.md"),
    CircuitStudy(
        "smallest-induction",
        "the smallest known induction setup",
        "a 2-layer attention-only model of 52k parameters learns repeated tokens on a CPU in 1,800 steps (loss from "
        "4.85 to about 0.09); a 1-layer attention-only model cannot",
        "published-results.md (secondary)", secondary=True),
)

#: Circuit analyses the deck lists on "big models" (slides 22-27) for which the course's sources record no result.
LISTED_WITHOUT_RESULT = ("pronoun selection", "greater than", "docstring", "time", "arithmetic",
                         "multiple choice QA")



#: The quiz: observations a researcher might make, each an instance of one study's finding above (the student
#: names the study's ``key``). Written from the same sources, in other words than the table's.
STUDY_SCENARIOS: dict[str, str] = {
    "A": "You knock out every head that moves the indirect object's name to the output, and the logit difference "
         "falls by only about a twentieth.",
    "B": "You remove a whole attention layer, and a later layer changes its output to make up for it, in a model "
         "that was never trained with dropout.",
    "C": "In a small model one layer-0 head attends to the previous token while every layer-1 head attends to the "
         "token after an earlier copy of the current one: each does one nameable job.",
    "D": "A set of a few dozen heads in GPT-2 small, run on its own, keeps most of the model's preference for the "
         "right name in sentences like 'When Mary and John went to the store, John gave a drink to'.",
    "E": "One study takes question answering, type hints, factual recall, variable binding, translation and "
         "induction together, as a constellation of tasks.",
    "F": "A head looks for an earlier occurrence of the current token, attends to the token that followed it, and "
         "raises that token's logit.",
    "G": "A model with two attention-only layers and about fifty thousand parameters learns to continue repeated "
         "sequences on a laptop in under two thousand steps; a one-layer model never does.",
}
