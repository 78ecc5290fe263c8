"""`yiyun knowledge …`: the engines from the command line (no database needed, except import)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer

from yiyun.knowledge import kb as _kb

app = typer.Typer(help="医学知识库：导诊、辅诊、问答、文本结构化、药物相互作用、疫情自查", no_args_is_help=True)

JsonOpt = typer.Option(False, "--json", help="输出一个 JSON 对象")
DataOpt = typer.Option(None, "--data-dir", help="知识数据目录（默认：随包数据）")


def _kb_for(data_dir: Path | None) -> _kb.KnowledgeBase:
    return _kb.get_kb(data_dir)


def _out(obj: dict[str, Any], as_json: bool, human) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    else:
        typer.echo(human(obj))


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.replace("，", ",").replace("、", ",").split(",") if x.strip()]
    return out


def _sex(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    mapping = {"male": "male", "m": "male", "男": "male", "female": "female", "f": "female", "女": "female"}
    if v not in mapping:
        raise typer.BadParameter("性别只能是 male 或 female")
    return mapping[v]


@app.command()
def triage(text: str = typer.Argument(..., help="症状描述"), age: float = typer.Option(None, min=0, max=130),
           sex: str = typer.Option(None, help="male|female"), as_json: bool = JsonOpt,
           data_dir: Path = DataOpt) -> None:
    """智能导诊：推荐科室与紧急程度。"""
    from yiyun.knowledge.triage import triage as run

    result = run(text, age=age, sex=_sex(sex), kb=_kb_for(data_dir))
    _out(result, as_json, lambda r: f"紧急程度：{r['urgency']}\n" + "\n".join(
        f"{i + 1}. {d['name']} ({d['score']:.2f}) {d['reason']}" for i, d in enumerate(r["departments"]))
        + f"\n{r['advice']}")


@app.command()
def diagnose(present: list[str] = typer.Option(None, "--present", help="有的症状，逗号分隔"),
             absent: list[str] = typer.Option(None, "--absent", help="没有的症状，逗号分隔"),
             text: str = typer.Option(None, "--text", help="自由文本描述"),
             age: float = typer.Option(None, min=0, max=130), sex: str = typer.Option(None),
             as_json: bool = JsonOpt, data_dir: Path = DataOpt) -> None:
    """辅助诊断：鉴别诊断列表（供医生参考）。"""
    from yiyun.knowledge.diagnosis import diagnose as run

    result = run(_split(present), _split(absent), text=text, age=age, sex=_sex(sex), kb=_kb_for(data_dir))
    _out(result, as_json, lambda r: "\n".join(
        f"{c['disease']} {c['icd10']} {c['probability']:.2f} 支持：{'、'.join(c['supporting'])}"
        for c in r["candidates"]) + f"\n建议追问：{'、'.join(r['ask_next'])}\n{r['disclaimer']}")


@app.command()
def ask(question: str = typer.Argument(...), as_json: bool = JsonOpt, data_dir: Path = DataOpt) -> None:
    """健康问答。"""
    from yiyun.knowledge.qa import ask as run

    _out(run(question, kb=_kb_for(data_dir)), as_json, lambda r: r["answer"])


@app.command()
def extract(text: str = typer.Argument(...), as_json: bool = JsonOpt, data_dir: Path = DataOpt) -> None:
    """从自由文本中抽取症状、否定、时长、体温、流行病学史，并结构化病历。"""
    from yiyun.knowledge.extractor import get_extractor

    result = get_extractor(_kb_for(data_dir)).extract(text).as_dict()
    _out(result, as_json, lambda r: "\n".join(
        f"{f['symptom']} [{f['start']},{f['end']}) {f['polarity']}"
        + (f" 时长{f['duration']['days']}天" if f.get("duration") else "") for f in r["findings"]))


@app.command()
def interactions(drugs: list[str] = typer.Argument(..., help="两个或更多药品名"), as_json: bool = JsonOpt,
                 data_dir: Path = DataOpt) -> None:
    """药物相互作用与重复用药检查。"""
    from yiyun.knowledge.drugs import check_interactions

    result = check_interactions(_split(drugs), kb=_kb_for(data_dir))
    _out(result, as_json, lambda r: "\n".join(
        f"{p['drugs'][0]} + {p['drugs'][1]}：{p['severity_zh']}，{p['effect']}；{p['advice']}" for p in r["pairs"])
        or r["note"])


@app.command()
def search(query: str = typer.Argument(...), as_json: bool = JsonOpt, data_dir: Path = DataOpt) -> None:
    """按名称、别名、拼音或首字母搜索医典。"""
    from yiyun.knowledge.search import search as run

    results = run(query, kb=_kb_for(data_dir))
    _out({"query": query, "results": results}, as_json,
         lambda r: "\n".join(f"{x['kind_zh']} {x['name']} ({x['matched']})" for x in r["results"]))


@app.command()
def selfcheck(answers: str = typer.Argument(..., help='答案 JSON，例如 {"age": 30, "symptoms": ["fever"]}'),
              version: str = typer.Option(None), as_json: bool = JsonOpt) -> None:
    """疫情自查。"""
    from yiyun.knowledge.selfcheck import evaluate

    try:
        data = json.loads(answers)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"答案不是合法的 JSON：{exc}") from None
    _out(evaluate(data, version), as_json, lambda r: f"{r['outcome_zh']}：{r['advice']}")


@app.command("validate")
def validate_cmd(data_dir: Path = DataOpt, as_json: bool = JsonOpt) -> None:
    """校验知识数据（悬空引用、缺少来源、重名、ICD-10 编码）。"""
    kb = _kb.load(data_dir) if data_dir else _kb.load()
    errors = _kb.validate(kb)
    _out({"ok": not errors, "errors": errors, "counts": kb.counts()}, as_json,
         lambda r: "\n".join(r["errors"]) or f"OK {r['counts']}")
    if errors:
        raise typer.Exit(1)


@app.command("import")
def import_cmd(data_dir: Path = DataOpt, database_url: str = typer.Option(None, help="默认：平台数据库"),
               create_tables: bool = typer.Option(False, help="表不存在时直接创建（仅开发用；正式环境请运行迁移）"),
               as_json: bool = JsonOpt) -> None:
    """校验并把数据文件导入医云自己的表，报告数量。"""
    kb = _kb.load(data_dir) if data_dir else _kb.load()
    errors = _kb.validate(kb)
    if errors:
        _out({"ok": False, "errors": errors}, as_json, lambda r: "校验失败：\n" + "\n".join(r["errors"]))
        raise typer.Exit(1)
    summary = asyncio.run(_import(kb, database_url, create_tables, str(data_dir or _kb.PACKAGE_DATA)))
    _out({"ok": True, **summary}, as_json, lambda r: f"导入完成：{r['counts']}，新增 {r['inserted']}，"
         f"更新 {r['updated']}，保留人工修订 {r['kept_edits']}")


async def _import(kb: _kb.KnowledgeBase, database_url: str | None, create_tables: bool, source: str) -> dict:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from yiyun.core.db import create_engine_for, get_engine, unit_of_work
    from yiyun.knowledge import repository
    from yiyun.knowledge.models import metadata

    engine = create_engine_for(database_url) if database_url else get_engine()
    try:
        if create_tables:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        try:
            async with unit_of_work(engine) as conn:
                return await repository.import_entries(conn, kb, source)
        except (OperationalError, ProgrammingError) as exc:
            typer.echo(f"数据库中没有知识库表，请先运行 `yiyun db upgrade`（{exc.__class__.__name__}）", err=True)
            raise typer.Exit(2) from None
    finally:
        await engine.dispose()
