"""PII analysis and masking throughput, against Presidio's own per-text ``AnalyzerEngine.analyze``.

Prints, in one run, on the generated corpus (bench/pii_corpus.py, fixed seed):
1. English with the spaCy NER model: the service's path (``nlp.pipe`` batches, only the ``ner`` component enabled,
   recognizers that cannot match skipped) versus Presidio's ``AnalyzerEngine.analyze`` per text with the full
   model pipeline and the same recognizers: texts/s, chars/s, p50/p99, the ratio, and precision/recall of both;
2. Chinese texts of about 100 characters: the same two paths;
3. memory per worker: the RSS of a fresh process that builds and warms the engines (spaCy mode, pattern-only);
4. masking throughput per operator over the findings.

Run: ``make bench`` (everything) or ``.venv/bin/python -m bench pii``. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence

import govsvc.pii  # noqa: F401 - before Presidio: the package makes it run offline, with the service's regex timeout

# isort: split
from presidio_analyzer import AnalyzerEngine

from bench.pii_corpus import Sample, build_corpus
from bench.pii_eval import prf, score
from govsvc.config import PROJECT_ROOT
from govsvc.pii.engines import (
    DEFAULT_ENTITIES,
    LANGUAGES,
    GovsvcNlpEngine,
    PiiEngines,
    build_engines,
    build_registry,
    deoverlap,
    fold_width,
)
from govsvc.pii.masking import Masker, PiiKeys, load_rules

BATCH = 64
SECRET = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a bench key, not a secret


def presidio_baseline(use_model: bool) -> AnalyzerEngine:
    """Presidio as documented: the full spaCy pipeline, ``analyze`` per text, the service's recognizers."""
    nlp = GovsvcNlpEngine(use_model, full_pipeline=True)
    nlp.load()
    return AnalyzerEngine(nlp_engine=nlp, registry=build_registry(use_model), supported_languages=list(LANGUAGES))


def _percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _row(label: str, texts: Sequence[str], seconds: float, latencies_ms: Sequence[float], unit: str) -> float:
    rate = len(texts) / seconds
    chars = sum(len(t) for t in texts) / seconds
    p50, p99 = statistics.median(latencies_ms), _percentile(latencies_ms, 0.99)
    print(f"  {label:<52} {rate:>9.0f} {chars:>10.0f} {p50:>8.2f} {p99:>8.2f}  ({unit})")
    return rate


def _header() -> None:
    print(f"  {'path':<52} {'texts/s':>9} {'chars/s':>10} {'p50 ms':>8} {'p99 ms':>8}")


def run_presidio(engine: AnalyzerEngine, texts: Sequence[str], language: str) -> tuple[list, float, list[float]]:
    results, latencies = [], []
    started = time.perf_counter()
    for text in texts:
        begin = time.perf_counter()
        found = engine.analyze(text, language, entities=list(DEFAULT_ENTITIES), score_threshold=0.4)
        latencies.append((time.perf_counter() - begin) * 1000)
        results.append(found)
    return results, time.perf_counter() - started, latencies


def run_service(
    engines: PiiEngines, texts: Sequence[str], language: str, batch: int
) -> tuple[list, float, list[float]]:
    results, latencies = [], []
    started = time.perf_counter()
    for offset in range(0, len(texts), batch):
        chunk = [fold_width(text) for text in texts[offset : offset + batch]]
        begin = time.perf_counter()
        results += engines.analyze_many(chunk, [language] * len(chunk), DEFAULT_ENTITIES, 0.4, batch_size=batch)
        latencies.append((time.perf_counter() - begin) * 1000)
    return results, time.perf_counter() - started, latencies


def accuracy(samples: Sequence[Sample], predictions: Sequence[Sequence[tuple[int, int, str]]]) -> tuple[float, float]:
    counts = score(samples, predictions)
    total = Counter()
    for bucket in counts.values():
        total.update(bucket)
    precision, recall, _ = prf(total)
    return precision, recall


def compare(
    title: str, samples: Sequence[Sample], language: str, engines: PiiEngines, baseline: AnalyzerEngine
) -> None:
    texts = [sample.text for sample in samples]
    print(f"\n== {title}: {len(texts)} texts, {sum(map(len, texts)) / len(texts):.0f} chars on average ==")
    _header()
    base, base_seconds, base_latencies = run_presidio(baseline, texts, language)
    base_rate = _row(
        "Presidio AnalyzerEngine.analyze per text (baseline)", texts, base_seconds, base_latencies, "per text"
    )
    _, single_seconds, single_latencies = run_service(engines, texts, language, 1)
    _row("service, one text per call", texts, single_seconds, single_latencies, "per text")
    batched, seconds, latencies = run_service(engines, texts, language, BATCH)
    rate = _row(f"service, {BATCH} texts per call (nlp.pipe)", texts, seconds, latencies, f"per call of {BATCH}")
    print(
        f"  ratio service batched / Presidio per text: {rate / base_rate:.2f}x;  one per call: "
        f"{(len(texts) / single_seconds) / base_rate:.2f}x"
    )
    base_spans = [[(f.start, f.end, f.entity_type) for f in deoverlap(found)] for found in base]
    service_spans = [[(f.start, f.end, f.entity_type) for f in found] for found in batched]
    bp, br = accuracy(samples, base_spans)
    sp, sr = accuracy(samples, service_spans)
    print(
        f"  accuracy (all entities, micro): Presidio P {bp:.4f} R {br:.4f};  service P {sp:.4f} R {sr:.4f};"
        f"  delta P {sp - bp:+.4f} R {sr - br:+.4f}"
    )


def worker_rss(mode: str) -> str:
    code = (
        f"from govsvc.pii.engines import build_engines; e = build_engines({mode!r});"
        "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1];"
        "print(int(rss) // 1024, round(e.build_seconds, 2))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    rss, seconds = output.stdout.split()
    return f"{rss} MB after building and warming up (build {seconds} s)"


def masking(engines: PiiEngines, samples: Sequence[Sample]) -> None:
    texts = [fold_width(sample.text) for sample in samples]
    findings = []
    for offset in range(0, len(texts), BATCH):
        chunk = texts[offset : offset + BATCH]
        findings += engines.analyze_many(
            chunk,
            ["zh" if s.language == "zh" else "en" for s in samples[offset : offset + BATCH]],
            DEFAULT_ENTITIES,
            0.4,
        )
    masker = Masker(load_rules(PROJECT_ROOT / "policies"), PiiKeys(SECRET))
    entities = sum(len(f) for f in findings)
    print(f"\n== masking {len(texts)} texts, {entities} entities (analysis not included) ==")
    print(f"  {'operator':<14} {'texts/s':>9} {'entities/s':>11} {'p50 µs':>8} {'p99 µs':>8}")
    for operator in ("mask", "mask_all", "replace", "redact", "pseudonymize", "encrypt"):
        latencies = []
        started = time.perf_counter()
        for text, found in zip(texts, findings, strict=True):
            begin = time.perf_counter()
            masker.mask_text(text, found, "partial", operator)
            latencies.append((time.perf_counter() - begin) * 1e6)
        seconds = time.perf_counter() - started
        print(
            f"  {operator:<14} {len(texts) / seconds:>9.0f} {entities / seconds:>11.0f} "
            f"{statistics.median(latencies):>8.1f} {_percentile(latencies, 0.99):>8.1f}"
        )


def chinese_100(samples: Sequence[Sample]) -> list[Sample]:
    """Consecutive Chinese samples joined into notes of at least 90 characters (about 100), spans shifted."""
    joined: list[Sample] = []
    current = Sample("", "zh", [])
    for sample in samples:
        shift = len(current.text)
        current = Sample(
            current.text + sample.text, "zh", current.spans + [(s + shift, e + shift, k) for s, e, k in sample.spans]
        )
        if len(current.text) >= 90:
            joined.append(current)
            current = Sample("", "zh", [])
    return joined


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-language", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"\n#### PII bench (machine: {os.cpu_count()} cores) ####")
    samples = build_corpus(per_language=args.per_language)
    english = [s for s in samples if s.language != "zh"]
    chinese = chinese_100([s for s in samples if s.language == "zh"])
    try:
        engines = build_engines("spacy")
    except RuntimeError as error:
        print(f"English model missing ({error}); benchmarking pattern-only")
        engines = build_engines("pattern")
    use_model = engines.mode == "spacy"
    print(f"engines: {engines.nlp_name}, built and warmed up in {engines.build_seconds:.2f} s")
    baseline = presidio_baseline(use_model)
    baseline.analyze("warm up John Smith 212-555-0100", "en")
    baseline.analyze("客户张伟手机13812345678", "zh")
    compare(
        "English and mixed CRM notes" + (" with the NER model" if use_model else ""), english, "en", engines, baseline
    )
    compare("Chinese CRM notes", chinese, "zh", engines, baseline)
    print("\n== memory per worker (a fresh process) ==")
    for mode in ("spacy", "pattern") if use_model else ("pattern",):
        print(f"  {mode:<8} {worker_rss(mode)}")
    masking(engines, samples)


if __name__ == "__main__":
    main(sys.argv[1:])
