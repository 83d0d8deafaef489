"""Naturalistic reading corpora as psyling stimulus sets plus a table of human measures per word.

Each story (Natural Stories) or sentence (UCL) is one item with one condition ``"text"`` and one region
``"text"``; words are its whitespace-delimited units, so ``word_index`` here is exactly the ``word_index`` of
psyling's words.parquet and ``psyling.run(model, stimuli=[corpus.stimuli])`` joins 1:1 on (item, word_index).
The texts are rebuilt from the published files at load time; nothing from them is stored in the repository.
"""
from __future__ import annotations

import bisect
import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PsylingError
from .schema import Condition, Item, StimulusSet

CONDITION = "text"
REGION = "text"
WORD_KEYS = ["item", "word_index", "word"]

NATURAL_STORIES_CITATION = (
    "Futrell, R., Gibson, E., Tily, H. J., Blank, I., Vishnevetsky, A., Piantadosi, S. T., & Fedorenko, E. (2021). "
    "The Natural Stories corpus: A reading-time corpus of English texts containing rare syntactic constructions. "
    "Language Resources and Evaluation, 55(1), 63-77.")
UCL_CITATION = (
    "de Varda, A. G., Marelli, M., & Amenta, S. (2023). Cloze probability, predictability ratings, and "
    "computational estimates for 205 English sentences, aligned with existing EEG and reading time data. "
    "Behavior Research Methods. Human data: Frank, S. L., Fernandez Monsalve, I., Thompson, R. L., & Vigliocco, G. "
    "(2013), Behavior Research Methods 45, 1182-1190 (SPR, eye tracking); Frank, S. L., Otten, L. J., Galli, G., & "
    "Vigliocco, G. (2015), Brain and Language 140, 1-11 (ERP).")

NATURAL_STORIES_COLUMNS = {
    "spr_word": "the word form shown in the SPR experiment (differs from `word` once: story 2 zone 749, a typo)",
    "nItem": "number of subjects whose RT entered the mean",
    "meanItemRT": "mean self-paced reading time over subjects (ms)",
    "sdItemRT": "standard deviation of the RT over subjects (ms)",
    "gmeanItemRT": "geometric mean RT over subjects (ms)",
    "gsdItemRT": "geometric standard deviation (a factor, no unit)",
    "gpt3_surprisal": "GPT-3 davinci surprisal (bits) from probs/all_stories_gpt3.csv, token surprisals summed "
                      "per word; NaN for the first word of each story (its first token has no logprob)",
}
UCL_LMS = {"GPT2": "GPT-2 small", "GPT2_medium": "GPT-2 medium", "GPT2_large": "GPT-2 large", "GPT2_xl": "GPT-2 xl",
           "GPTNeo_125M": "GPT-Neo 125M", "GPTNeo": "GPT-Neo 1.3B", "GPTNeo_2.7B": "GPT-Neo 2.7B"}
UCL_TEXT_COLUMNS = ("item", "word", "word2", "sentence", "context_length")
# human measure (the schema's spelling) -> (UCL column, unit): what linking functions and encoding predict
UCL_MEASURES = {"SPR": ("self_paced_reading_time", "ms"), "eye-tracking": ("RTfirstpass", "ms"),
                "ERP-N400": ("N400", "µV")}
UCL_COLUMNS = {
    "sent_id": "sentence number in the UCL corpus (the psyling item id as a number)",
    "item_id": "the resource's word id (1..1726), not the psyling item",
    "list": "cloze / rating questionnaire list",
    "rating_mean": "mean predictability rating (1-5)", "rating_sd": "SD of the ratings",
    "cloze_p_smoothed": "smoothed cloze probability", "cloze_s": "cloze surprisal, -ln(cloze_p_smoothed) (nats)",
    "competition": "cloze competition", "entropy": "cloze entropy",
    "ELAN": "ERP mean amplitude (µV; Frank et al. 2015)", "LAN": "ERP (µV)", "N400": "N400 mean amplitude (µV)",
    "EPNP": "ERP (µV)", "P600": "ERP (µV)", "PNP": "ERP (µV)",
    "RTfirstfix": "first-fixation duration (ms)", "RTfirstpass": "gaze duration (ms)",
    "RTrightbound": "right-bounded reading time (ms)", "RTgopast": "go-past time (ms)",
    "self_paced_reading_time": "mean self-paced reading time (ms)",
    "rnn": "Frank et al. (2015) RNN surprisal", "psg": "phrase-structure grammar surprisal",
    "bigram": "n-gram surprisal", "trigram": "n-gram surprisal", "tetragram": "n-gram surprisal",
    "is_start_end": "1 for the sentence-final word", "Subtlex_log10": "ln of the SUBTLEX count (natural log, "
    "despite the name; NaN for 30 words)", "length": "characters in the word, punctuation included",
    **{f"s_{key}": f"{model} surprisal in NATS (-np.log in get_LM_surprisal.py; the prefix without BOS, then "
                   f"' ' + word, subword tokens summed)" for key, model in UCL_LMS.items()},
    **{f"is_multitoken_{key}": f"1 when {model} splits the word into several tokens" for key, model in UCL_LMS.items()},
    **{f"{name}_pos": f"{name} surprisal over parts of speech" for name in ("rnn", "psg", "bigram", "trigram",
                                                                           "tetragram")},
}


@dataclass
class ReadingCorpus:
    """A reading corpus: its texts as a stimulus set and one row per (item, word_index) of human measures."""
    stimuli: StimulusSet
    words: pd.DataFrame
    columns: dict[str, str] = field(default_factory=dict)  # what the measure columns of ``words`` hold


def _license(folder: Path) -> str:
    """The ``- license:`` line of the dataset's SOURCE.md (empty when absent)."""
    source = folder / "SOURCE.md"
    if source.is_file():
        match = re.search(r"^-\s*license:\s*(.+)$", source.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            return match.group(1).strip()
    return ""


def _need_file(path: Path) -> Path:
    if not path.is_file():
        raise PsylingError(f"{path}: file not found (is the data root right? set PSYLING_DATA)")
    return path


def _stimulus_set(name: str, texts: dict[str, str], source: Path, **fields) -> StimulusSet:
    items = [Item(item, {CONDITION: Condition(CONDITION, (text,))}) for item, text in texts.items()]
    return StimulusSet(name=name, regions=(REGION,), conditions=(CONDITION,), items=items, predictions=[],
                       source=str(source), segmentation="whitespace", phenomenon="naturalistic reading",
                       **fields).validate()


def _read_tsv(path: Path, **kwargs) -> pd.DataFrame:
    return pd.read_csv(_need_file(path), sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False,
                       na_values=[""], **kwargs)


def _natural_stories_words(root: Path) -> pd.DataFrame:
    """(item, word_index, word) from words.tsv: the ``whole`` tokens with the spaces NLTK put inside removed."""
    path = root / "naturalstories" / "words.tsv"
    table = _read_tsv(path, header=None, names=["code", "token"], dtype=str)
    parts = table["code"].str.split(".", expand=True)
    if parts.shape[1] != 3:
        raise PsylingError(f"{path}: token codes must look like STORY.ZONE.PART")
    whole = table[parts[2] == "whole"]
    words = pd.DataFrame({"item": parts.loc[whole.index, 0].to_numpy(),
                          "zone": parts.loc[whole.index, 1].astype(int).to_numpy(),
                          "word": whole["token"].str.replace(" ", "", regex=False).to_numpy()})
    for item, group in words.groupby("item", sort=False):
        if list(group["zone"]) != list(range(1, len(group) + 1)):
            raise PsylingError(f"{path}: story {item} does not number its words 1..{len(group)} in order")
    if (words["word"] == "").any():
        raise PsylingError(f"{path}: empty word in story {words.loc[words['word'] == '', 'item'].iloc[0]}")
    words["word_index"] = words["zone"] - 1
    return words


def naturalstories_gpt3_surprisal(root: Path) -> pd.DataFrame:
    """GPT-3 (davinci) word surprisal in bits: token surprisals of probs/all_stories_gpt3.csv summed per word.

    Tokens are assigned to words through their character offsets into the story text (the words joined by
    single spaces). The first token of each story has no logprob, so the first word is NaN. A token that
    straddles two words, or a text that differs from words.tsv, raises PsylingError naming the story."""
    root = Path(root)
    words = _natural_stories_words(root)
    path = _need_file(root / "naturalstories" / "probs" / "all_stories_gpt3.csv")
    probs = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"token": str})
    out = []
    for item, group in words.groupby("item", sort=False):
        tokens = probs[probs["story"] == int(item) - 1]
        text = " ".join(group["word"])
        if "".join(tokens["token"]) != text:
            raise PsylingError(f"{path}: the tokens of story {int(item) - 1} do not spell story {item} of words.tsv")
        starts = np.cumsum([0] + [len(w) + 1 for w in group["word"]])[:-1].tolist()
        sums = np.zeros(len(group))
        for token, offset, logprob in zip(tokens["token"], tokens["offset"], tokens["logprob"]):
            if not token.strip():
                raise PsylingError(f"{path}: story {int(item) - 1} has a whitespace-only token at offset {offset}")
            first = offset + len(token) - len(token.lstrip())
            last = offset + len(token.rstrip()) - 1
            word = bisect.bisect_right(starts, first) - 1
            if bisect.bisect_right(starts, last) - 1 != word:
                raise PsylingError(f"{path}: story {int(item) - 1} token {token!r} at offset {offset} spans two words")
            sums[word] += -logprob / math.log(2)  # NaN (no logprob) propagates to the word
        out.append(pd.DataFrame({"item": item, "word_index": group["word_index"].to_numpy(), "surprisal": sums}))
    return pd.concat(out, ignore_index=True)


def load_natural_stories(root: Path) -> ReadingCorpus:
    """Natural Stories (Futrell et al. 2021): 10 stories as items; mean SPR times per word and GPT-3 surprisal.

    ``root`` is the data root holding ``naturalstories/``. RT columns keep the names of
    naturalstories_RTS/processed_wordinfo.tsv (keyed there by item = story and zone = word position)."""
    root = Path(root)
    folder = root / "naturalstories"
    words = _natural_stories_words(root)
    info_path = folder / "naturalstories_RTS" / "processed_wordinfo.tsv"
    info = _read_tsv(info_path, dtype={"word": str, "item": str}).rename(columns={"word": "spr_word"})
    merged = words.merge(info, on=["item", "zone"], how="left", validate="one_to_one", indicator=True)
    orphans = len(info) - int((merged["_merge"] == "both").sum())
    if orphans:
        raise PsylingError(f"{info_path}: {orphans} rows name an (item, zone) that words.tsv does not have")
    gpt3 = naturalstories_gpt3_surprisal(root).rename(columns={"surprisal": "gpt3_surprisal"})
    merged = merged.merge(gpt3, on=["item", "word_index"], how="left", validate="one_to_one")
    columns = WORD_KEYS + list(NATURAL_STORIES_COLUMNS)
    texts = {item: " ".join(group["word"]) for item, group in merged.groupby("item", sort=False)}
    stimuli = _stimulus_set("naturalstories", texts, folder / "words.tsv", license=_license(folder),
                            citation=NATURAL_STORIES_CITATION,
                            description="Natural Stories corpus: 10 stories read word by word (self-paced reading)")
    return ReadingCorpus(stimuli, merged[columns].reset_index(drop=True), dict(NATURAL_STORIES_COLUMNS))


def load_ucl(root: Path) -> ReadingCorpus:
    """The UCL corpus with de Varda et al.'s (2023) cloze, ratings and GPT-2/GPT-Neo surprisal: 205 sentences.

    Every whitespace word of every sentence gets a row; the first word of a sentence has no data in the
    resource (NaN measures). The released ``s_*`` surprisals are in nats. A sentence whose rows do not line up
    with its words (word at ``context_length`` differs, a position repeated, or a count other than one row per
    non-initial word) raises PsylingError naming the sentence."""
    root = Path(root)
    folder = root / "devarda2023_ucl_cloze_n400"
    path = _need_file(folder / "all_measures.csv")
    # keep_default_na=False: the word "None" must stay a word
    table = pd.read_csv(path, keep_default_na=False, na_values=[""],
                        dtype={"item": str, "word": str, "word2": str, "sentence": str})
    missing = [c for c in ("sent_id", "sentence", "word", "context_length") if c not in table.columns]
    if missing:
        raise PsylingError(f"{path}: missing column(s) {', '.join(missing)}")
    measures = [c for c in table.columns if c not in UCL_TEXT_COLUMNS and c != "sent_id"]
    texts, frames = {}, []
    for sent_id, group in table.groupby("sent_id", sort=True):
        item = str(sent_id)
        sentences = group["sentence"].unique()
        if len(sentences) != 1:
            raise PsylingError(f"{path}: sentence {item} has {len(sentences)} different texts")
        tokens = sentences[0].split()
        texts[item] = " ".join(tokens)
        positions = group["context_length"].astype(int).tolist()
        if sorted(positions) != list(range(1, len(tokens))):
            raise PsylingError(f"{path}: sentence {item} has {len(tokens)} words but {len(group)} rows at positions "
                               f"{sorted(positions)} (expected one row for each word after the first)")
        for pos, word in zip(positions, group["word"]):
            if tokens[pos] != word:
                raise PsylingError(f"{path}: sentence {item} word {pos} is {tokens[pos]!r} but its row says {word!r}")
        frames.append(pd.DataFrame({"item": item, "word_index": range(len(tokens)), "word": tokens,
                                    "sent_id": int(sent_id)}))
    measured = table[measures].assign(item=table["sent_id"].astype(str),
                                      word_index=table["context_length"].astype(int))
    words = pd.concat(frames, ignore_index=True).merge(measured, on=["item", "word_index"], how="left",
                                                       validate="one_to_one")
    words[measures] = words[measures].apply(pd.to_numeric, errors="raise")
    stimuli = _stimulus_set("ucl_devarda2023", texts, path, license=_license(folder), citation=UCL_CITATION,
                            description="UCL corpus sentences (Frank et al. 2013) with de Varda et al. (2023) "
                                        "predictability estimates and item-level SPR, eye-tracking and ERP measures")
    return ReadingCorpus(stimuli, words, dict(UCL_COLUMNS))
