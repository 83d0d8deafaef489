"""Pair JSONL files (one JSON object per line, BLiMP's layout), and what makes a pair file BLiMP.

A file is BLiMP (Warstadt et al. 2020) only when it looks like one of BLiMP's paradigm files: every row has
BLiMP's keys (``BLIMP_KEYS``), all rows name the same ``UID``, that UID is one of BLiMP's 67 paradigms, and
every sentence is ASCII (BLiMP is English). Only then does the set take BLiMP's citation, license (CC-BY-4.0)
and language (en); any other file with ``sentence_good``/``sentence_bad`` keys (a Chinese or Japanese
BLiMP-style benchmark, BLiMP-style sets of one's own) keeps its provenance unknown unless a sidecar gives it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import StimulusError
from .manifest import read_text
from .pairs import (ACCEPTED_PAIR_COLUMNS, PAIR_PREDICTION, PairColumns, PairInfo, PairRow, file_info,
                    find_columns, pair_row, pair_set)
from .provenance import NO_SIDECAR, Sidecar
from .reading import ReaderOptions, metadata_text, segmentation_of
from .schema import StimulusSet

BLIMP_CITATION = ("Warstadt, A., Parrish, A., Liu, H., Mohananey, A., Peng, W., Wang, S.-F., & Bowman, S. R. "
                  "(2020). BLiMP: The Benchmark of Linguistic Minimal Pairs for English. TACL 8, 377-392.")
BLIMP_PREDICTION = PAIR_PREDICTION
BLIMP_KEYS = ("UID", "field", "linguistics_term", "pairID")
BLIMP_UIDS = frozenset("""
adjunct_island anaphor_gender_agreement anaphor_number_agreement animate_subject_passive animate_subject_trans
causative complex_NP_island coordinate_structure_constraint_complex_left_branch
coordinate_structure_constraint_object_extraction determiner_noun_agreement_1 determiner_noun_agreement_2
determiner_noun_agreement_irregular_1 determiner_noun_agreement_irregular_2 determiner_noun_agreement_with_adj_2
determiner_noun_agreement_with_adj_irregular_1 determiner_noun_agreement_with_adj_irregular_2
determiner_noun_agreement_with_adjective_1 distractor_agreement_relational_noun
distractor_agreement_relative_clause drop_argument ellipsis_n_bar_1 ellipsis_n_bar_2
existential_there_object_raising existential_there_quantifiers_1 existential_there_quantifiers_2
existential_there_subject_raising expletive_it_object_raising inchoative intransitive
irregular_past_participle_adjectives irregular_past_participle_verbs irregular_plural_subject_verb_agreement_1
irregular_plural_subject_verb_agreement_2 left_branch_island_echo_question left_branch_island_simple_question
matrix_question_npi_licensor_present npi_present_1 npi_present_2 only_npi_licensor_present only_npi_scope
passive_1 passive_2 principle_A_c_command principle_A_case_1 principle_A_case_2 principle_A_domain_1
principle_A_domain_2 principle_A_domain_3 principle_A_reconstruction regular_plural_subject_verb_agreement_1
regular_plural_subject_verb_agreement_2 sentential_negation_npi_licensor_present sentential_negation_npi_scope
sentential_subject_island superlative_quantifiers_1 superlative_quantifiers_2 tough_vs_raising_1
tough_vs_raising_2 transitive wh_island wh_questions_object_gap wh_questions_subject_gap
wh_questions_subject_gap_long_distance wh_vs_that_no_gap wh_vs_that_no_gap_long_distance wh_vs_that_with_gap
wh_vs_that_with_gap_long_distance""".split())


def is_blimp(records: Sequence[dict[str, Any]], rows: Sequence[PairRow]) -> bool:
    """Do these rows look like one of BLiMP's own paradigm files (see the module docstring)?"""
    uids = {r.get("UID") for r in records}
    return (len(uids) == 1 and uids.pop() in BLIMP_UIDS and all(k in r for r in records for k in BLIMP_KEYS)
            and all(row.good.isascii() and row.bad.isascii() for row in rows))


def _info(records: Sequence[dict[str, Any]], rows: Sequence[PairRow], path: Path, format_name: str) -> PairInfo:
    if not is_blimp(records, rows):
        return file_info(records, path, format_name)
    first = records[0]
    return PairInfo(first["UID"], "blimp", phenomenon=str(first["linguistics_term"]), citation=BLIMP_CITATION,
                    license="CC-BY-4.0", language="en", metadata={"field": metadata_text(first["field"])})


def records_set(path: Path, records: Sequence[dict[str, Any]], columns: PairColumns, options: ReaderOptions,
                format_name: str) -> StimulusSet:
    """The pair set of a file's records (dicts of column -> value, in file order): items numbered by the
    :mod:`.reading` rule, BLiMP's provenance only for BLiMP itself."""
    source = str(path)
    rows = [pair_row(source, n, rec, columns) for n, rec in enumerate(records, start=1)]
    segmentation = segmentation_of(options, (t for row in rows for t in (row.good, row.bad)))
    return pair_set(path, rows, _info(records, rows, path, format_name), segmentation)


def _json_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StimulusError(f"line {line_no} is not valid JSON: {exc.msg}", file=str(path),
                                item=len(records) + 1, field="json") from None
        if not isinstance(row, dict):
            raise StimulusError(f"line {line_no} is a JSON {type(row).__name__}, not an object", file=str(path),
                                item=len(records) + 1, field="json")
        records.append(row)
    return records


def load_blimp(path: Path, options: ReaderOptions = ReaderOptions(), sidecar: Sidecar = NO_SIDECAR) -> StimulusSet:
    """A pair JSONL file (BLiMP's paradigm files among them): one set, an item per line (conditions good and
    bad, one region); the good and bad keys found by name (:mod:`.pairs`) among the keys of all lines."""
    records = _json_records(path)
    if not records:
        raise StimulusError("the file has no pairs", file=str(path), field="items")
    keys = list(dict.fromkeys(key for record in records for key in record))
    columns = find_columns(keys, str(path), sidecar)
    if columns is None:
        raise StimulusError(f"no good and bad keys (keys: {', '.join(keys)}); a pair JSONL needs, among the "
                            f"keys of its objects, {ACCEPTED_PAIR_COLUMNS}", file=str(path), field="header")
    return records_set(path, records, columns, options, "pairs-jsonl")
