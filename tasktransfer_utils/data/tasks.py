"""The task registry: the paper's 33 tasks (Vu et al. 2020, Table 1 / Appendix A) and extra real tasks
available in the offline data bundle, each with its class, metrics, labels, hub location and local reader.

A task is a :class:`TaskSpec`. ``get_task("SST-2")`` finds one (case and punctuation are ignored, so
``"sst2"`` works too); ``list_tasks`` filters; ``SUITES`` names fixed task lists (``"offline"`` loads
entirely from the local data directory). Loading is done by :mod:`tasktransfer_utils.data.loaders`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import UserInputError


class TaskClass(str, Enum):
    """The paper's three task classes (§2): classification/regression, extractive QA, sequence labeling."""

    CR = "CR"
    QA = "QA"
    SL = "SL"


@dataclass(frozen=True)
class HubSource:
    """Where a user with internet loads the task: ``datasets.load_dataset(dataset_id, config)``.

    ``splits`` pairs each split of the project schema with the hub split it comes from;
    ``mapper`` names the column mapping in :mod:`tasktransfer_utils.data.hub_loaders`;
    ``options`` are that mapper's settings (column names, subset filter, ...)."""

    dataset_id: str
    config: str | None
    mapper: str
    splits: tuple[tuple[str, str], ...] = (("train", "train"), ("validation", "validation"))
    options: tuple[tuple[str, Any], ...] = ()
    revision: str | None = None

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class LocalSource:
    """How the task is read from raw files under the data directory.

    ``reader`` names a reader in :mod:`tasktransfer_utils.data.loaders`; ``files`` pairs each split with a path
    relative to the data directory (``archive.zip:member/prefix`` addresses members inside a zip).
    ``derive_validation`` > 0 means the files give only one labelled split, from which a seeded
    validation split of that fraction is held out, grouped by ``group_by`` (so that e.g. no QA context
    is in both splits); a tuple of fields keeps together every example linked through any of them
    (connected components: QNLI's questions and sentences)."""

    reader: str
    files: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, Any], ...] = ()
    derive_validation: float = 0.0
    group_by: str | tuple[str, ...] | None = None
    note: str = ""

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``labels``: CR class names (index = int label), SL tag set, or None (regression, QA,
    or an SL tag set derived from the data at load time). ``metrics`` are the paper's (§2.1)."""

    name: str
    task_class: TaskClass
    metrics: tuple[str, ...]
    labels: tuple[str, ...] | None
    is_regression: bool = False
    is_pair: bool = False
    paper_task: bool = True
    description: str = ""
    hub: HubSource | None = None
    local: LocalSource | None = None
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())
    #: QA: the task has unanswerable questions by definition (SQuAD v2.0 rules: a model may answer "" and
    #: is scored by the v2.0 script); False: every question has an answer (SQuAD v1.1 rules). A property of
    #: the task, never inferred from the questions of one evaluation sample.
    version_2_with_negative: bool = False

    @property
    def has_local(self) -> bool:
        return self.local is not None

    @property
    def has_hub(self) -> bool:
        return self.hub is not None

    @property
    def num_labels(self) -> int | None:
        """Output size of a CR head: 1 for regression, len(labels) for classification; None otherwise."""
        if self.task_class is not TaskClass.CR:
            return None
        return 1 if self.is_regression else len(self.labels or ())


CR, QA, SL = TaskClass.CR, TaskClass.QA, TaskClass.SL

ACC = ("accuracy",)
ACC_F1 = ("accuracy", "f1")
QA_METRICS = ("exact_match", "f1")
SPAN_F1 = ("seqeval_f1",)
TOKEN_ACC = ("token_accuracy",)

NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")

CONLL2003_NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CONLL2000_CHUNK_TAGS = (
    "O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ", "I-INTJ",
    "B-LST", "I-LST", "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT", "B-SBAR", "I-SBAR",
    "B-UCP", "I-UCP", "B-VP", "I-VP",
)
CONLL2002_NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
TREC_COARSE = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")

GLUE = "nyu-mll/glue"
MRQA = "mrqa-workshop/mrqa"
GLUE_SPLITS = (("train", "train"), ("validation", "validation"))

# Liu et al. (2019) constituency-ancestor tasks: ancestor depth above the word's POS node.
ANCESTOR_DEPTH = {"Parent": 1, "GParent": 2, "GGParent": 3}


def _glue_hub(config: str, text_a: str, text_b: str | None, label: str = "label", splits=GLUE_SPLITS) -> HubSource:
    return HubSource(GLUE, config, "columns", splits=splits,
                     options=(("text_a", text_a), ("text_b", text_b), ("label", label)))


def _glue_local(folder: str, text_a: str, text_b: str | None, label: str, label_kind: str,
                header: bool = True, names: tuple[str, ...] | None = None, **extra) -> LocalSource:
    opts = [("text_a", text_a), ("text_b", text_b), ("label", label), ("label_kind", label_kind),
            ("header", header)]
    if names is not None:
        opts.append(("column_names", names))
    opts.extend(extra.items())
    return LocalSource("glue_tsv", (("train", f"glue/{folder}/train.tsv"), ("validation", f"glue/{folder}/dev.tsv")),
                       options=tuple(opts))


def _ptb_local(mode: str) -> LocalSource:
    return LocalSource(
        "ptb_trees", (("train", "nltk/treebank.zip:treebank/combined/"),),
        options=(("mode", mode),), derive_validation=0.2, group_by="file",
        note="NLTK's 10% Penn Treebank sample (WSJ 0001-0199, 3,914 trees); a seeded validation split of "
             "20% of the files is held out. -NONE- traces are dropped, function tags and indices stripped "
             "(NP-SBJ-1 -> NP), and -LRB-/-RRB-/... tokens written as brackets (Liu et al. 2019).")


_TASKS: list[TaskSpec] = [
    # ---------------------------------------------------------------- CR (paper)
    TaskSpec("SNLI", CR, ACC, NLI3, is_pair=True,
             description="Stanford Natural Language Inference (Bowman et al. 2015), 3-way entailment.",
             hub=HubSource("stanfordnlp/snli", None, "columns",
                           options=(("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"),
                                    ("drop_label", -1))),
             notes="Hub rows with label -1 (no annotator consensus) are dropped. No local copy (files >= 4 MiB)."),
    TaskSpec("MNLI", CR, ACC, NLI3, is_pair=True,
             description="Multi-Genre NLI (Williams et al. 2018); validation = matched dev set.",
             hub=_glue_hub("mnli", "premise", "hypothesis",
                           splits=(("train", "train"), ("validation", "validation_matched"))),
             notes="No local copy (files >= 4 MiB)."),
    TaskSpec("QQP", CR, ACC_F1, ("not_duplicate", "duplicate"), is_pair=True,
             description="Quora Question Pairs, duplicate detection.",
             hub=_glue_hub("qqp", "question1", "question2"), notes="No local copy (files >= 4 MiB)."),
    TaskSpec("QNLI", CR, ACC, NLI2, is_pair=True,
             description="Question-answering NLI from SQuAD (GLUE): does the sentence answer the question?",
             hub=_glue_hub("qnli", "question", "sentence"),
             local=LocalSource("glue_tsv", (("train", "glue/QNLI/dev.tsv"),),
                               options=(("text_a", "question"), ("text_b", "sentence"), ("label", "label"),
                                        ("label_kind", "name"), ("header", True)),
                               derive_validation=0.2, group_by=("text_a", "text_b"),
                               note="Only the GLUE dev set (5,463 pairs) is local: 80/20 seeded split of the "
                                    "connected components of the question-sentence graph (a sentence serves "
                                    "several questions), so no question and no sentence is in both splits. "
                                    "Smaller than the paper's 105k-pair training set.")),
    TaskSpec("SST-2", CR, ACC, ("negative", "positive"),
             description="Stanford Sentiment Treebank, binary sentence sentiment (GLUE).",
             hub=_glue_hub("sst2", "sentence", None),
             local=_glue_local("SST-2", "sentence", None, "label", "index")),
    TaskSpec("SciTail", CR, ACC, ("entails", "neutral"), is_pair=True,
             description="SciTail science-exam entailment (Khot et al. 2018).",
             hub=HubSource("allenai/scitail", "tsv_format", "columns",
                           options=(("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
             notes="No local copy found."),
    TaskSpec("CoLA", CR, ("matthews_corrcoef",), ("unacceptable", "acceptable"),
             description="Corpus of Linguistic Acceptability (GLUE).",
             hub=_glue_hub("cola", "sentence", None),
             local=_glue_local("CoLA", "sentence", None, "label", "index", header=False,
                               names=("source", "label", "original_label", "sentence"))),
    TaskSpec("STS-B", CR, ("pearson", "spearman"), None, is_regression=True, is_pair=True,
             description="Semantic Textual Similarity Benchmark, similarity score in [0, 5] (GLUE).",
             hub=_glue_hub("stsb", "sentence1", "sentence2"),
             local=_glue_local("STS-B", "sentence1", "sentence2", "score", "float", value_range=(0.0, 5.0))),
    TaskSpec("MRPC", CR, ACC_F1, ("not_equivalent", "equivalent"), is_pair=True,
             description="Microsoft Research Paraphrase Corpus (GLUE).",
             hub=_glue_hub("mrpc", "sentence1", "sentence2"),
             local=LocalSource(
                 "mrpc", (("train", "glue/MRPC/msr_paraphrase_train.txt"), ("validation", "glue/MRPC/dev.tsv")),
                 options=(("dev_ids", "glue/MRPC/dev_ids.tsv"),),
                 note="Train = msr_paraphrase_train.txt minus the 408 dev pairs of dev_ids.tsv (3,668 pairs, "
                      "exactly GLUE's split, as GLUE's download script builds it); the bundled train.tsv lacks "
                      "one pair.")),
    TaskSpec("RTE", CR, ACC, NLI2, is_pair=True,
             description="Recognizing Textual Entailment (GLUE: RTE-1,2,3,5).",
             hub=_glue_hub("rte", "sentence1", "sentence2"),
             local=_glue_local("RTE", "sentence1", "sentence2", "label", "name")),
    TaskSpec("WNLI", CR, ACC, ("not_entailment", "entailment"), is_pair=True,
             description="Winograd NLI (GLUE).",
             hub=_glue_hub("wnli", "sentence1", "sentence2"),
             local=_glue_local("WNLI", "sentence1", "sentence2", "label", "index")),
    # ---------------------------------------------------------------- QA (paper)
    TaskSpec("SQuAD-1", QA, QA_METRICS, None,
             description="SQuAD v1.1 extractive QA (Rajpurkar et al. 2016).",
             hub=HubSource("rajpurkar/squad", None, "squad"),
             local=LocalSource("mrqa_jsonl", (("train", "squad/v1.1_mrqa_dev/SQuAD.jsonl.gz"),),
                               derive_validation=0.2, group_by="context",
                               note="Only the SQuAD v1.1 dev set (MRQA 2019 layout, 10,507 questions) is local: "
                                    "seeded 80/20 split by context, so no paragraph is in both splits."),
             aliases=("SQuAD", "SQuAD-1.1")),
    TaskSpec("SQuAD-2", QA, QA_METRICS, None,
             description="SQuAD v2.0 with unanswerable questions (Rajpurkar et al. 2018).",
             hub=HubSource("rajpurkar/squad_v2", None, "squad"),
             local=LocalSource("squad_json", (("train", "squad/v2.0_cs224n_dev/dev-v2.0.json"),),
                               derive_validation=0.2, group_by="context",
                               note="Only half of the official SQuAD 2.0 dev set (CS224N split, 6,078 questions) "
                                    "is local: seeded 80/20 split by paragraph."),
             aliases=("SQuAD-2.0",), version_2_with_negative=True),
    TaskSpec("NewsQA", QA, QA_METRICS, None,
             description="NewsQA (Trischler et al. 2017), MRQA 2019 version.",
             hub=HubSource(MRQA, None, "mrqa", options=(("subset", "NewsQA"),)),
             notes="No local copy."),
    TaskSpec("HotpotQA", QA, QA_METRICS, None,
             description="HotpotQA (Yang et al. 2018), MRQA 2019 version (distractor paragraphs concatenated).",
             hub=HubSource(MRQA, None, "mrqa", options=(("subset", "HotpotQA"),)),
             notes="No local copy."),
    TaskSpec("BoolQ", QA, QA_METRICS, None,
             description="BoolQ yes/no questions (Clark et al. 2019), cast as extractive QA.",
             hub=HubSource("google/boolq", None, "boolq"),
             local=LocalSource("boolq_jsonl", (("train", "boolq/dev.jsonl"),),
                               derive_validation=0.2, group_by="context",
                               note="Only the BoolQ dev set (3,270 questions) is local: seeded 80/20 split by "
                                    "passage."),
             notes="Extractive framing: the context is 'yes. no. ' followed by the passage, and the answer is "
                   "the span 'yes' (offset 0) or 'no' (offset 5), so a span-extraction head can answer it."),
    TaskSpec("DROP", QA, QA_METRICS, None,
             description="DROP discrete reasoning over paragraphs (Dua et al. 2019), span-answer questions.",
             hub=HubSource("ucinlp/drop", None, "drop"),
             notes="Extractive framing: each gold span is located in the passage (first occurrence); questions "
                   "whose answers are not passage spans (numbers, dates) are dropped. No local copy."),
    TaskSpec("WikiHop", QA, QA_METRICS, None,
             description="WikiHop multi-hop QA (Welbl et al. 2018).",
             hub=HubSource("qangaroo", "wikihop", "wikihop"),
             notes="Extractive framing: context = support documents joined by blank lines, question = query with "
                   "'_' as spaces, answer = first case-insensitive occurrence of the answer; unanswerable-by-span "
                   "questions dropped. No local copy."),
    TaskSpec("DuoRC-p", QA, QA_METRICS, None,
             description="DuoRC ParaphraseRC (Saha et al. 2018): questions on a different plot version.",
             hub=HubSource("ibm/duorc", "ParaphraseRC", "duorc"),
             notes="Extractive framing: answers located in the plot; no_answer questions are unanswerable; "
                   "answerable questions with no answer span in the plot are dropped. No local copy.",
             version_2_with_negative=True),
    TaskSpec("DuoRC-s", QA, QA_METRICS, None,
             description="DuoRC SelfRC (Saha et al. 2018): questions on the same plot.",
             hub=HubSource("ibm/duorc", "SelfRC", "duorc"),
             notes="As DuoRC-p. No local copy.", version_2_with_negative=True),
    TaskSpec("CQ", QA, QA_METRICS, None,
             description="ComplexQuestions (Bao et al. 2016) with retrieved web snippets as contexts "
                         "(Talmor & Berant 2019).",
             notes="No Hugging Face hub dataset and no local copy: cannot be loaded."),
    TaskSpec("ComQA", QA, QA_METRICS, None,
             description="ComQA (Abujabal et al. 2019) with retrieved web snippets as contexts "
                         "(Talmor & Berant 2019).",
             notes="No Hugging Face hub dataset and no local copy: cannot be loaded."),
    # ---------------------------------------------------------------- SL (paper)
    TaskSpec("CCG", SL, TOKEN_ACC, None,
             description="CCG supertagging on CCGbank (Hockenmaier & Steedman 2007).",
             notes="CCGbank is LDC-licensed: no hub dataset and no local copy."),
    TaskSpec("POS-PTB", SL, TOKEN_ACC, None,
             description="Part-of-speech tagging, Penn Treebank WSJ tags.",
             local=_ptb_local("pos"),
             notes="The full WSJ treebank is LDC-licensed (no hub dataset); locally the NLTK 10% sample."),
    TaskSpec("POS-EWT", SL, TOKEN_ACC, None,
             description="Part-of-speech tagging, UD English Web Treebank, XPOS (PTB tags).",
             hub=HubSource("universal_dependencies", "en_ewt", "tagging",
                           splits=(("train", "train"), ("validation", "validation"), ("test", "test")),
                           options=(("tokens", "tokens"), ("tags", "xpos"))),
             local=LocalSource("conllu", (("train", "ud_english_ewt/en_ewt-ud-train.conllu"),
                                          ("validation", "ud_english_ewt/en_ewt-ud-dev.conllu"),
                                          ("test", "ud_english_ewt/en_ewt-ud-test.conllu")),
                               options=(("column", "xpos"),),
                               note="Multiword-token lines (1-2) and empty nodes (8.1) are skipped; tags = XPOS.")),
    TaskSpec("Parent", SL, TOKEN_ACC, None,
             description="Constituent label of each word's parent in the PTB parse (Liu et al. 2019).",
             local=_ptb_local("parent"), notes="PTB is LDC-licensed (no hub dataset)."),
    TaskSpec("GParent", SL, TOKEN_ACC, None,
             description="Constituent label of each word's grandparent in the PTB parse (Liu et al. 2019).",
             local=_ptb_local("gparent"), notes="PTB is LDC-licensed (no hub dataset)."),
    TaskSpec("GGParent", SL, TOKEN_ACC, None,
             description="Constituent label of each word's great-grandparent in the PTB parse (Liu et al. 2019).",
             local=_ptb_local("ggparent"), notes="PTB is LDC-licensed (no hub dataset)."),
    TaskSpec("ST", SL, TOKEN_ACC, None,
             description="Semantic tagging on the Parallel Meaning Bank (Bjerva et al. 2016).",
             notes="No hub dataset and no local copy."),
    TaskSpec("Chunk", SL, SPAN_F1, CONLL2000_CHUNK_TAGS,
             description="Syntactic chunking, CoNLL-2000 (WSJ 15-18 train, 20 test).",
             hub=HubSource("eriktks/conll2000", None, "tagging", splits=(("train", "train"), ("validation", "test")),
                           options=(("tokens", "tokens"), ("tags", "chunk_tags"))),
             local=LocalSource("conll_columns", (("train", "nltk/conll2000.zip:conll2000/train.txt"),
                                                 ("validation", "nltk/conll2000.zip:conll2000/test.txt")),
                               options=(("token_column", 0), ("tag_column", 2), ("num_columns", 3)),
                               note="CoNLL-2000 has no dev set: its test set serves as validation (as on the hub)."),
             aliases=("Chunking", "CoNLL-2000")),
    TaskSpec("NER", SL, SPAN_F1, CONLL2003_NER_TAGS,
             description="Named entity recognition, CoNLL-2003 English (IOB2: PER, LOC, ORG, MISC).",
             hub=HubSource("eriktks/conll2003", None, "tagging",
                           splits=(("train", "train"), ("validation", "validation"), ("test", "test")),
                           options=(("tokens", "tokens"), ("tags", "ner_tags"))),
             local=LocalSource("conll_columns", (("train", "conll2003/eng.train"),
                                                 ("validation", "conll2003/eng.testa"),
                                                 ("test", "conll2003/eng.testb")),
                               options=(("token_column", 0), ("tag_column", 3), ("num_columns", 4))),
             aliases=("CoNLL-2003",)),
    TaskSpec("GED", SL, TOKEN_ACC, None,
             description="Grammatical error detection, First Certificate in English corpus "
                         "(Yannakoudakis et al. 2011).",
             notes="No hub dataset and no local copy."),
    TaskSpec("Conj", SL, TOKEN_ACC, None,
             description="Conjunct identification on PTB coordination annotation (Ficler & Goldberg 2016).",
             notes="Built on the LDC PTB: no hub dataset and no local copy."),
    # ---------------------------------------------------------------- extras (not paper tasks)
    TaskSpec("MR", CR, ACC, ("negative", "positive"), paper_task=False,
             description="Movie-review sentence polarity (Pang & Lee 2005; NLTK sentence_polarity).",
             hub=HubSource("cornell-movie-review-data/rotten_tomatoes", None, "columns",
                           options=(("text_a", "text"), ("text_b", None), ("label", "label"),
                                    ("label_map", (("neg", "negative"), ("pos", "positive"))))),
             local=LocalSource("lines_per_label", (("train", "nltk/sentence_polarity.zip"),),
                               options=(("label_files", (("negative", "sentence_polarity/rt-polarity.neg"),
                                                         ("positive", "sentence_polarity/rt-polarity.pos"))),
                                        ("encoding", "latin-1")),
                               derive_validation=0.2,
                               note="5,331 positive + 5,331 negative snippets; seeded 80/20 split."),
             aliases=("SentencePolarity", "rotten_tomatoes")),
    TaskSpec("SUBJ", CR, ACC, ("objective", "subjective"), paper_task=False,
             description="Subjectivity of movie sentences (Pang & Lee 2004; NLTK subjectivity).",
             local=LocalSource("lines_per_label", (("train", "nltk/subjectivity.zip"),),
                               options=(("label_files", (("objective", "subjectivity/plot.tok.gt9.5000"),
                                                         ("subjective", "subjectivity/quote.tok.gt9.5000"))),
                                        ("encoding", "latin-1")),
                               derive_validation=0.2, note="5,000 + 5,000 sentences; seeded 80/20 split."),
             aliases=("Subjectivity",)),
    TaskSpec("TREC", CR, ACC, TREC_COARSE, paper_task=False,
             description="TREC/UIUC question classification, 6 coarse classes (Li & Roth 2002; NLTK qc).",
             hub=HubSource("CogComp/trec", None, "columns", splits=(("train", "train"), ("validation", "test")),
                           options=(("text_a", "text"), ("text_b", None), ("label", "coarse_label"))),
             local=LocalSource("qc", (("train", "nltk/qc.zip:qc/train.txt"), ("validation", "nltk/qc.zip:qc/test.txt")),
                               note="No dev set: the 500-question test set serves as validation."),
             aliases=("QC", "QuestionClassification")),
    TaskSpec("PPAttach", CR, ACC, ("N", "V"), paper_task=False,
             description="Prepositional-phrase attachment, noun vs verb (Ratnaparkhi et al. 1994; NLTK ppattach). "
                         "Input text: 'verb noun1 preposition noun2'.",
             local=LocalSource("ppattach", (("train", "nltk/ppattach.zip:ppattach/training"),
                                            ("validation", "nltk/ppattach.zip:ppattach/devset"),
                                            ("test", "nltk/ppattach.zip:ppattach/test")))),
    TaskSpec("RTE-PASCAL", CR, ACC, NLI2, is_pair=True, paper_task=False,
             description="PASCAL RTE-1/2/3 challenge data (NLTK rte). Overlaps GLUE RTE: never evaluate both together.",
             local=LocalSource("rte_xml", (("train", "nltk/rte.zip:rte/rte1_dev.xml"),
                                           ("train", "nltk/rte.zip:rte/rte2_dev.xml"),
                                           ("train", "nltk/rte.zip:rte/rte3_dev.xml"),
                                           ("validation", "nltk/rte.zip:rte/rte1_test.xml"),
                                           ("validation", "nltk/rte.zip:rte/rte2_test.xml"),
                                           ("validation", "nltk/rte.zip:rte/rte3_test.xml")),
                               note="Train = the RTE-1/2/3 dev files, validation = their test files.")),
    TaskSpec("NPS-Chat-DA", CR, ACC, (
        "Accept", "Bye", "Clarify", "Continuer", "Emotion", "Emphasis", "Greet", "Other", "Reject",
        "Statement", "System", "nAnswer", "whQuestion", "yAnswer", "ynQuestion"), paper_task=False,
             description="Dialogue-act classification of chat posts (Forsyth & Martell 2007; NLTK nps_chat).",
             local=LocalSource("nps_chat", (("train", "nltk/nps_chat.zip:nps_chat/"),), derive_validation=0.2,
                               note="10,567 posts from 15 chat sessions; seeded 80/20 split by post.")),
    TaskSpec("FAQ-TR", QA, QA_METRICS, None, paper_task=False,
             description="Turkish e-commerce / customer-service FAQ in SQuAD v1.1 layout (PnrSvc/dataqa). "
                         "Not SQuAD: Turkish text, and the answer is usually the whole paragraph.",
             local=LocalSource("squad_json", (("train", "pnrsvc_dataqa/dev-v1.1.json"),),
                               options=(("drop_unlocatable_answers", True),),
                               derive_validation=0.2, group_by="context",
                               note="557 questions on 33 paragraphs; 34 questions whose answer text does not "
                                    "occur in their paragraph (a labelling error of the file) are dropped and "
                                    "listed under 'dropped'; seeded 80/20 split by paragraph."),
             notes="The only non-paper extractive QA data in the bundle; small, non-English, and near-trivial "
                   "span targets, so it widens the offline QA class only weakly."),
    TaskSpec("POS-MASC", SL, TOKEN_ACC, None, paper_task=False,
             description="POS tagging (PTB tagset) on the MASC multi-genre corpus (NLTK masc_tagged).",
             local=LocalSource("word_tag_lines", (("train", "nltk/masc_tagged.zip:masc_tagged/"),),
                               options=(("separator", "_"),
                                        ("member_pattern", r"masc_tagged/(written|spoken)/.+\.txt$")),
                               derive_validation=0.2, group_by="file",
                               note="392 written and spoken files; seeded 80/20 split by file.")),
    TaskSpec("POS-Brown", SL, TOKEN_ACC, None, paper_task=False,
             description="POS tagging with the Brown tagset on the Brown corpus (NLTK brown).",
             local=LocalSource("word_tag_lines", (("train", "nltk/brown.zip:brown/"),),
                               options=(("separator", "/"), ("member_pattern", r"brown/c[a-r]\d\d$")),
                               derive_validation=0.2, group_by="file",
                               note="500 files; seeded 80/20 split by file. Tags kept as in the corpus "
                                    "(compound tags such as 'np-tl' included).")),
    TaskSpec("NER-ES", SL, SPAN_F1, CONLL2002_NER_TAGS, paper_task=False,
             description="Spanish NER, CoNLL-2002 (IOB2).",
             hub=HubSource("eriktks/conll2002", "es", "tagging",
                           splits=(("train", "train"), ("validation", "validation"), ("test", "test")),
                           options=(("tokens", "tokens"), ("tags", "ner_tags"))),
             local=LocalSource("conll_columns", (("train", "nltk/conll2002.zip:conll2002/esp.train"),
                                                 ("validation", "nltk/conll2002.zip:conll2002/esp.testa"),
                                                 ("test", "nltk/conll2002.zip:conll2002/esp.testb")),
                               options=(("token_column", 0), ("tag_column", 2), ("num_columns", 3)))),
    TaskSpec("NER-NL", SL, SPAN_F1, CONLL2002_NER_TAGS, paper_task=False,
             description="Dutch NER, CoNLL-2002 (IOB2).",
             hub=HubSource("eriktks/conll2002", "nl", "tagging",
                           splits=(("train", "train"), ("validation", "validation"), ("test", "test")),
                           options=(("tokens", "tokens"), ("tags", "ner_tags"))),
             local=LocalSource("conll_columns", (("train", "nltk/conll2002.zip:conll2002/ned.train"),
                                                 ("validation", "nltk/conll2002.zip:conll2002/ned.testa"),
                                                 ("test", "nltk/conll2002.zip:conll2002/ned.testb")),
                               options=(("token_column", 0), ("tag_column", 2), ("num_columns", 3)))),
]

PAPER_TASK_ORDER: tuple[str, ...] = tuple(t.name for t in _TASKS if t.paper_task)

SUITES: dict[str, tuple[str, ...]] = {
    # every task of the paper (Table 1 order by class)
    "paper": PAPER_TASK_ORDER,
    # loads entirely from the local data directory: the 17 paper tasks with real local data, plus the
    # one extra extractive-QA set so that QA has 4 tasks
    "offline": ("SST-2", "CoLA", "MRPC", "STS-B", "RTE", "QNLI", "WNLI",
                "SQuAD-1", "SQuAD-2", "BoolQ", "FAQ-TR",
                "POS-PTB", "POS-EWT", "Parent", "GParent", "GGParent", "Chunk", "NER"),
    # 4 tasks per class, for quick runs
    "offline-small": ("SST-2", "MRPC", "STS-B", "RTE",
                      "SQuAD-1", "SQuAD-2", "BoolQ", "FAQ-TR",
                      "POS-PTB", "Parent", "Chunk", "NER"),
    # real local tasks that are not the paper's
    "offline-extra": tuple(t.name for t in _TASKS if not t.paper_task and t.local is not None),
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY: dict[str, TaskSpec] = {}
for _t in _TASKS:
    for _n in (_t.name, *_t.aliases):
        if _BY_KEY.get(_key(_n), _t) is not _t:
            raise RuntimeError(f"task name {_n!r} registered twice")
        _BY_KEY[_key(_n)] = _t


class UnknownTaskError(UserInputError, KeyError, ValueError):
    """Raised for a task name that is not registered; the message lists close matches."""


class UnknownSuiteError(UserInputError, KeyError, ValueError):
    """Raised for a suite name that is not in ``SUITES``."""


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Return the registered task called ``name`` (case, spaces, '-' and '_' ignored)."""
    if isinstance(name, TaskSpec):
        return name
    spec = _BY_KEY.get(_key(str(name)))
    if spec is not None:
        return spec
    names = [t.name for t in _TASKS] + [a for t in _TASKS for a in t.aliases]
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
    close += [n for n in names if _key(str(name)) and _key(str(name)) in _key(n) and n not in close]
    hint = f" Close matches: {', '.join(close[:6])}." if close else ""
    raise UnknownTaskError(f"Unknown task {name!r}.{hint} Known tasks: {', '.join(t.name for t in _TASKS)}.")


#: Rows of each hub split, per task and project split (``HubSource.splits`` maps them to the hub's own split
#: names: MNLI's validation is ``validation_matched``, Chunk's is CoNLL-2000's ``test``), as the datasets'
#: cards on the hub give them, before any filter a loader applies (SNLI keeps its examples without a gold
#: label there; MRQA's rows are those of the named subset). For plans and cost estimates that must not
#: download anything (``study.cost``); loading the task gives the exact numbers.
HUB_SPLIT_ROWS: dict[str, dict[str, int]] = {
    "SNLI": {"train": 550152, "validation": 10000},
    "MNLI": {"train": 392702, "validation": 9815},
    "QQP": {"train": 363846, "validation": 40430},
    "QNLI": {"train": 104743, "validation": 5463},
    "SST-2": {"train": 67349, "validation": 872},
    "SciTail": {"train": 23097, "validation": 1304},
    "CoLA": {"train": 8551, "validation": 1043},
    "STS-B": {"train": 5749, "validation": 1500},
    "MRPC": {"train": 3668, "validation": 408},
    "RTE": {"train": 2490, "validation": 277},
    "WNLI": {"train": 635, "validation": 71},
    "SQuAD-1": {"train": 87599, "validation": 10570},
    "SQuAD-2": {"train": 130319, "validation": 11873},
    "NewsQA": {"train": 74160, "validation": 4212},
    "HotpotQA": {"train": 72928, "validation": 5904},
    "BoolQ": {"train": 9427, "validation": 3270},
    "DROP": {"train": 77400, "validation": 9535},
    "WikiHop": {"train": 43738, "validation": 5129},
    "DuoRC-p": {"train": 69524, "validation": 15591},
    "DuoRC-s": {"train": 60721, "validation": 12961},
    "POS-EWT": {"train": 12543, "validation": 2002, "test": 2077},
    "Chunk": {"train": 8937, "validation": 2013},
    "NER": {"train": 14041, "validation": 3250, "test": 3453},
}


def hub_split_rows(name: str | TaskSpec, split: str = "train") -> int:
    """Rows of a task's hub split (:data:`HUB_SPLIT_ROWS`), without loading anything. KeyError naming the
    task when it has no hub copy or no registered size."""
    spec = name if isinstance(name, TaskSpec) else get_task(name)
    if spec.hub is None:
        raise KeyError(f"task {spec.name!r} has no hub copy (local data only or none public)")
    sizes = HUB_SPLIT_ROWS.get(spec.name)
    if sizes is None or split not in sizes:
        raise KeyError(f"no registered size of {spec.name!r}'s hub split {split!r}; known: "
                       f"{sorted(sizes) if sizes else 'none'} (tasks.HUB_SPLIT_ROWS)")
    return sizes[split]


def list_tasks(task_class: TaskClass | str | None = None, paper_only: bool = False,
               local_only: bool = False) -> list[TaskSpec]:
    """Registered tasks in registry order, optionally of one class, only the paper's, only those with local data."""
    cls = TaskClass(task_class) if task_class is not None else None
    return [t for t in _TASKS
            if (cls is None or t.task_class is cls)
            and (not paper_only or t.paper_task)
            and (not local_only or t.local is not None)]


def get_suite(name: str) -> list[TaskSpec]:
    """The tasks of a named suite (see ``SUITES``)."""
    if name not in SUITES:
        close = difflib.get_close_matches(name, list(SUITES), n=3)
        raise UnknownSuiteError(f"Unknown suite {name!r}; known suites: {', '.join(SUITES)}"
                       + (f" (close: {', '.join(close)})" if close else ""))
    return [get_task(n) for n in SUITES[name]]


