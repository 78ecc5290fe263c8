"""Knowledge engine benchmark: extractor throughput, latency of triage / Q&A / diagnosis,
and accuracy on the development sets against two baselines.

    .venv/bin/python benchmarks/bench_knowledge.py [--notes 10000] [--queries 500]

Targets: triage and Q&A p95 <= 50 ms, diagnosis p95 <= 100 ms over the full knowledge base.
Saves `benchmarks/results/knowledge.json` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEVSETS = REPO / "tests" / "knowledge" / "devsets"

TEMPLATES = [
    "主诉：{s1}{d1}。现病史：患者{d1}前无明显诱因出现{s1}，伴{s2}，{neg}{s3}，体温{t}℃。既往史：{past}。流行病学史：{epi}。",
    "{s1}{d1}了，{s2}，没有{s3}，{epi}",
    "患者诉{s1}、{s2}{d2}，偶有{s3}，否认{s4}。{past}",
    "我{s1}好几天了 还{s2} 不{s3} 烧到{tc}度",
]
DURATIONS = ["三天", "2周", "半个月", "十来天", "一个多月", "两天", "5天", "1年"]
PAST = ["高血压病史5年", "否认糖尿病史", "有胃溃疡病史", "既往体健", "以前做过阑尾手术"]
EPI = ["否认疫区旅居史", "上周去过武汉出差", "接触过确诊病例", "否认与确诊病例接触", "无外出史"]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def corpus(kb, n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    words = [w for s in kb.symptoms.values() for w in [s.name, *s.synonyms[:3]]] or ["发热", "咳嗽", "头痛", "腹痛"]
    out = []
    for _ in range(n):
        tpl = rnd.choice(TEMPLATES)
        out.append(tpl.format(
            s1=rnd.choice(words), s2=rnd.choice(words), s3=rnd.choice(words), s4=rnd.choice(words),
            d1=rnd.choice(DURATIONS), d2=rnd.choice(DURATIONS), neg=rnd.choice(["无", "否认", "没有"]),
            t=rnd.choice(["36.8", "37.5", "38.5", "39.2"]), tc=rnd.choice(["三十八", "三十九", "四十"]),
            past=rnd.choice(PAST), epi=rnd.choice(EPI)))
    return out


def timed(fn, inputs) -> dict:
    times = []
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1000)
    return {"n": len(times), "p50_ms": round(statistics.median(times), 3), "p95_ms": round(pct(times, 95), 3),
            "max_ms": round(max(times), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()

    from yiyun.knowledge import evaluation
    from yiyun.knowledge.diagnosis import diagnose
    from yiyun.knowledge.extractor import get_extractor
    from yiyun.knowledge.kb import get_kb
    from yiyun.knowledge.qa import ask
    from yiyun.knowledge.triage import triage

    t0 = time.perf_counter()
    kb = get_kb()
    ex = get_extractor(kb)
    ex.extract("预热：发烧咳嗽，吃了就吐")
    ask("预热")
    load_s = time.perf_counter() - t0

    notes = corpus(kb, args.notes)
    chars = sum(len(n) for n in notes)
    t0 = time.perf_counter()
    found = 0
    for n in notes:
        found += len(ex.extract(n).findings)
    dt = time.perf_counter() - t0
    extractor = {"notes": len(notes), "characters": chars, "seconds": round(dt, 3),
                 "chars_per_s": round(chars / dt), "notes_per_s": round(len(notes) / dt), "findings": found}

    triage_cases = evaluation.load_cases(DEVSETS / "triage.yaml")
    dx_cases = evaluation.load_cases(DEVSETS / "diagnosis.yaml")
    rnd = random.Random(11)
    t_inputs = [rnd.choice(triage_cases)["t"] for _ in range(args.queries)]
    questions = ["高血压吃什么好", "感冒了挂什么科", "布洛芬和阿司匹林能一起吃吗", "肺炎有哪些症状", "今天天气怎么样",
                 "糖尿病要做什么检查", "头痛是什么原因", "心肺复苏怎么做", "胃溃疡怎么治疗", "gaoxueya怎么预防"]
    q_inputs = [rnd.choice(questions) for _ in range(args.queries)]
    symptoms = list(kb.symptoms)
    d_inputs = [rnd.sample(symptoms, min(len(symptoms), rnd.randint(2, 6))) for _ in range(args.queries)]
    latency = {
        "triage": timed(lambda t: triage(t, kb=kb), t_inputs),
        "ask": timed(lambda q: ask(q, kb=kb), q_inputs),
        "diagnose": timed(lambda p: diagnose(p, kb=kb), d_inputs),
    }
    tri = evaluation.evaluate_triage(triage_cases, kb)
    tri_common = evaluation.baseline_most_common(triage_cases)
    tri_kw = evaluation.baseline_keywords(triage_cases, kb)
    dx = evaluation.evaluate_diagnosis(dx_cases, kb)
    dx_prior = evaluation.diagnosis_baseline_prior(dx_cases, kb)
    strip = lambda r: {k: v for k, v in r.items() if k != "misses"}  # noqa: E731
    results = {
        "machine": machine_info(),
        "knowledge_base": kb.counts(),
        "load_seconds": round(load_s, 3),
        "extractor": extractor,
        "latency": latency,
        "targets": {"triage_p95_ms": 50, "ask_p95_ms": 50, "diagnose_p95_ms": 100},
        "triage_accuracy": {"engine": strip(tri), "baseline_most_common": strip(tri_common),
                            "baseline_keywords": strip(tri_kw)},
        "diagnosis_accuracy": {"engine": strip(dx), "baseline_most_prevalent": dx_prior},
    }
    path = save_results("knowledge", results)
    print(f"knowledge base: {kb.counts()}")
    print(f"extractor: {extractor['chars_per_s']:,} chars/s over {extractor['notes']:,} notes")
    for k, v in latency.items():
        print(f"{k:9s} p50 {v['p50_ms']:.2f} ms  p95 {v['p95_ms']:.2f} ms")
    print("triage   top1 / top3 / urgency / emergency recall")
    for name, r in (("engine", tri), ("most common", tri_common), ("keywords", tri_kw)):
        print(f"  {name:12s} {r['top1']:.3f} / {r['top3']:.3f} / {r['urgency_accuracy']:.3f} / "
              f"{r['emergency_recall']}")
    print(f"diagnosis top1 {dx['top1']:.3f} top3 {dx['top3']:.3f} (baseline most prevalent top1 {dx_prior['top1']:.3f})")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
