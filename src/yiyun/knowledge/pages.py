"""Encyclopedia (医典) and assistant pages under /knowledge (server-rendered, mobile-first).

Public pages: home, search, entry pages, ask, triage, self-check, answer feedback.
Staff pages (`require_staff`): edit an entry, review queue, history.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pypinyin import Style, lazy_pinyin
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import BadRequest, NotFound
from yiyun.knowledge import drugs as drug_service
from yiyun.knowledge import repository, selfcheck, service
from yiyun.knowledge.deps import Staff, get_connection, rate_limited, require_staff
from yiyun.knowledge.diagnosis import WEIGHT_ZH
from yiyun.knowledge.kb import SEVERITIES, get_kb
from yiyun.knowledge.qa import ask as run_ask
from yiyun.knowledge.search import KIND_ZH
from yiyun.knowledge.search import search as run_search
from yiyun.knowledge.triage import triage as run_triage

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_UNIT_GAP = re.compile(r"(?<=\d) (?=(?:mmol|μmol|mg|g/|g |U/|mmHg|ng|pg|mIU|mm|mL|cm|kg|CFU|×|%))")


def _keep_units(text: Any) -> str:
    """A number and its unit stay on one line (5.2 mmol/L), with a no-break space."""
    return _UNIT_GAP.sub("\u00a0", str(text or ""))


TEMPLATES.env.filters["keep_units"] = _keep_units
KIND_PATH = {"disease": "diseases", "symptom": "symptoms", "drug": "drugs", "firstaid": "firstaid",
             "check": "checks", "department": "departments"}
EDIT_KINDS = {"diseases": "疾病", "symptoms": "症状", "drugs": "药品", "firstaid": "急救", "interactions": "相互作用",
              "departments": "科室"}
URGENCY_ZH = {"emergency": "情况危急，请马上呼叫急救", "urgent": "请尽快（今天）就医", "routine": "门诊就诊"}
PREGNANCY_ZH = drug_service.PREGNANCY_ZH

router = APIRouter(prefix="/knowledge", tags=["knowledge-pages"])
public = [Depends(rate_limited)]


def render(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("title", "医典")
    ctx.setdefault("section", "encyclopedia")  # which of 医典 / 问答 / 导诊 / 自查 is highlighted
    return TEMPLATES.TemplateResponse(request, f"knowledge/{template}", ctx, status_code=status_code)


def not_found(request: Request, message: str, query: str = "") -> HTMLResponse:
    """A missing entry is a page in the site (with a search box), not a bare JSON error."""
    return render(request, "message.html", status_code=404, title="没有找到", heading="没有找到这个条目",
                  message=message, query=query, search=True, back="/knowledge/")


WEIGHT_GROUPS = (("very_common", "common"), ("occasional", "rare"))
PREVALENCE_ORDER = {"very_common": 0, "common": 1, "uncommon": 2, "rare": 3}


def _initial(name: str) -> str:
    letters = lazy_pinyin(name[:1], style=Style.FIRST_LETTER, errors=lambda x: list(x))
    letter = (letters[0][:1] if letters and letters[0] else "#").upper()
    return letter if letter.isalpha() and letter.isascii() else "#"


@router.get("/", response_class=HTMLResponse, dependencies=public)
def home(request: Request) -> HTMLResponse:
    kb = get_kb()
    # (the word people use, the entry): 感冒 rather than 急性上呼吸道感染 on a chip
    featured: dict[str, str] = {}
    for word in FEATURED:
        d = kb.disease(word)
        if d and d.name not in featured.values():
            featured[word] = d.name
    for d in kb.diseases.values():  # fill up with very common diseases
        if len(featured) >= 16:
            break
        if d.prevalence == "very_common" and d.name not in featured.values():
            featured[d.name] = d.name
    return render(request, "home.html", title="医典 · 健康百科", counts=kb.counts(), featured=featured,
                  firstaid=list(kb.firstaid.values())[:8])


# Diseases most people have heard of (shown on the home page when the data has them).
FEATURED = ("感冒", "流感", "高血压", "糖尿病", "冠心病", "慢性胃炎", "胃食管反流病", "急性胃肠炎", "哮喘",
            "慢阻肺", "腰椎间盘突出症", "颈椎病", "痛风", "脂肪肝", "失眠", "抑郁症", "过敏性鼻炎", "湿疹",
            "尿路感染", "缺铁性贫血")


@router.get("/search", response_class=HTMLResponse, dependencies=public)
def search_page(request: Request, q: str = "") -> HTMLResponse:
    q = q.strip()[:50]
    results = run_search(q, 40) if q else []
    return render(request, "search.html", title=f"搜索：{q}" if q else "搜索", q=q, results=results, kind_path=KIND_PATH,
                  kind_zh=KIND_ZH)


@router.get("/list/{kind}", response_class=HTMLResponse, dependencies=public)
def list_page(request: Request, kind: str) -> HTMLResponse:
    kb = get_kb()
    names = {
        "diseases": list(kb.diseases), "symptoms": list(kb.symptoms), "drugs": list(kb.drugs),
        "firstaid": list(kb.firstaid), "checks": kb.all_checks(), "departments": list(kb.departments),
    }.get(kind)
    if names is None:
        return not_found(request, "没有这个分类。")
    groups: dict[str, list[str]] = {}
    for n in sorted(names, key=lambda n: "".join(lazy_pinyin(n))):
        groups.setdefault(_initial(n), []).append(n)
    label = {"diseases": "疾病", "symptoms": "症状", "drugs": "药品", "firstaid": "急救", "checks": "检查",
             "departments": "科室"}[kind]
    single = {v: k for k, v in KIND_PATH.items()}[kind]
    return render(request, "list.html", title=f"{label}大全", label=label, groups=sorted(groups.items()),
                  single=single)


@router.get("/disease/{name}", response_class=HTMLResponse, dependencies=public)
def disease_page(request: Request, name: str) -> HTMLResponse:
    kb = get_kb()
    d = kb.disease(name)
    if d is None:
        return not_found(request, f"医典中没有「{name}」。", name)
    related = [n for n in d.complications if kb.disease(n)]
    checks = [{"name": c, "info": kb.check(c)} for c in d.checks]
    return render(request, "disease.html", title=d.name, d=d, r=d.raw, kb=kb, weight_zh=WEIGHT_ZH,
                  related=related, checks=checks)


@router.get("/symptom/{name}", response_class=HTMLResponse, dependencies=public)
def symptom_page(request: Request, name: str) -> HTMLResponse:
    kb = get_kb()
    s = kb.symptom(name)
    if s is None:
        return not_found(request, f"医典中没有症状「{name}」。", name)
    # the diseases that often present with it first, common diseases before rare ones
    listed = sorted(kb.diseases_by_symptom.get(s.name, []),
                    key=lambda t: (PREVALENCE_ORDER.get(kb.diseases[t[0]].prevalence, 9), t[0]))
    often = [(n, w) for n, w in listed if w in WEIGHT_GROUPS[0]]
    sometimes = [(n, w) for n, w in listed if w not in WEIGHT_GROUPS[0]]
    shown = often[:SYMPTOM_DISEASES_SHOWN] or sometimes[:SYMPTOM_DISEASES_SHOWN]
    more = [t for t in often + sometimes if t not in shown]
    return render(request, "symptom.html", title=s.name, s=s, shown=shown, more=more, from_often=bool(often),
                  total=len(listed), weight_zh=WEIGHT_ZH, kb=kb)


SYMPTOM_DISEASES_SHOWN = 12


@router.get("/drug/{name}", response_class=HTMLResponse, dependencies=public)
def drug_page(request: Request, name: str) -> HTMLResponse:
    kb = get_kb()
    g = drug_service.lookup(name, kb)
    if g is None:
        return not_found(request, f"医典中没有药品「{name}」。", name)
    related = [it for it in kb.interactions if g.name in it.drugs or set(it.classes) & {g.drug_class, g.allergy_class}]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    related.sort(key=lambda it: order.get(it.severity, 9))  # the dangerous combinations first
    return render(request, "drug.html", title=g.name, g=g, info=drug_service.drug_info(g), kb=kb,
                  related=related, used_for=kb.diseases_by_drug.get(g.name, []), pregnancy_zh=PREGNANCY_ZH,
                  severity_zh=drug_service.SEVERITY_ZH)


@router.get("/check/{name}", response_class=HTMLResponse, dependencies=public)
def check_page(request: Request, name: str) -> HTMLResponse:
    kb = get_kb()
    canonical = kb.check_name(name)
    if canonical not in kb.diseases_by_check and canonical not in kb.checks:
        return not_found(request, f"医典中没有检查「{name}」。", name)
    info = kb.checks.get(canonical) or {}
    diseases = sorted(kb.diseases_by_check.get(canonical, []),
                      key=lambda n: (PREVALENCE_ORDER.get(kb.diseases[n].prevalence, 9), n))
    return render(request, "check.html", title=canonical, name=canonical, asked=name, info=info,
                  diseases=diseases)


@router.get("/firstaid/{name}", response_class=HTMLResponse, dependencies=public)
def firstaid_page(request: Request, name: str) -> HTMLResponse:
    kb = get_kb()
    f = kb.first_aid(name)
    if f is None:
        return not_found(request, f"医典中没有急救条目「{name}」。", name)
    return render(request, "firstaid.html", title=f.name, f=f)


@router.get("/department/{name}", response_class=HTMLResponse, dependencies=public)
def department_page(request: Request, name: str) -> HTMLResponse:
    kb = get_kb()
    d = kb.department(name)
    if d is None:
        return not_found(request, f"没有科室「{name}」。", name)
    diseases = [x.name for x in kb.diseases.values() if d.name in x.departments]
    symptoms = [x.name for x in kb.symptoms.values() if d.name in x.departments]
    return render(request, "department.html", title=d.name, d=d, diseases=diseases, symptoms=symptoms)


@router.get("/ask", response_class=HTMLResponse, dependencies=public)
def ask_page(request: Request, q: str = "") -> HTMLResponse:
    q = q.strip()[:500]
    result = run_ask(q) if q else None
    return render(request, "ask.html", title="健康问答", q=q, result=result, kind_path=KIND_PATH, section="ask",
                  examples=ASK_EXAMPLES)


ASK_EXAMPLES = ("高血压吃什么好", "布洛芬和阿司匹林能一起吃吗", "感冒了挂什么科", "胃镜前要注意什么",
                "糖尿病要做什么检查", "血脂报告怎么看")


@router.post("/feedback", response_class=HTMLResponse, dependencies=public)
async def feedback_form(request: Request, question: str = Form(..., max_length=500),
                        answer: str = Form("", max_length=5000), intent: str = Form("", max_length=32),
                        entity_kind: str = Form("", max_length=32), entity_name: str = Form("", max_length=200),
                        verdict: str = Form(...), comment: str = Form("", max_length=2000),
                        conn: AsyncConnection = Depends(get_connection)) -> HTMLResponse:
    await repository.add_feedback(conn, question=question, answer=answer or None, intent=intent or None,
                                  entity_kind=entity_kind or None, entity_name=entity_name or None,
                                  verdict=verdict, comment=comment or None)
    return render(request, "message.html", title="感谢反馈", heading="感谢您的反馈", section="ask",
                  message="标记为“有错误”的回答会由医生审核修正。", back="/knowledge/ask")


@router.get("/triage", response_class=HTMLResponse, dependencies=public)
def triage_page(request: Request, text: str = "", age: str = "", sex: str = "") -> HTMLResponse:
    text = text.strip()[:2000]
    result = None
    error = None
    if text:
        try:
            age_value = float(age) if age.strip() else None
        except ValueError:
            age_value, error = None, "年龄请填数字（岁），例如 35；婴儿可填 0.5。"
        if age_value is not None and not 0 <= age_value <= 130:
            age_value, error = None, "年龄应在 0 到 130 岁之间。"
        if error is None:
            result = run_triage(text, age=age_value, sex=sex if sex in ("male", "female") else None)
    return render(request, "triage.html", status_code=422 if error else 200, title="智能导诊", text=text, age=age,
                  sex=sex, result=result, error=error, urgency_zh=URGENCY_ZH, section="triage",
                  examples=TRIAGE_EXAMPLES)


TRIAGE_EXAMPLES = ("发烧两天，咳嗽有黄痰", "拉肚子两天了 肚子有点疼", "孩子3岁 半夜咳嗽喘", "腰疼 尿里有血")


@router.get("/selfcheck", response_class=HTMLResponse, dependencies=public)
def selfcheck_page(request: Request) -> HTMLResponse:
    return render(request, "selfcheck.html", title="疫情自查", plan=selfcheck.questionnaire(), result=None,
                  section="selfcheck")


@router.post("/selfcheck", response_class=HTMLResponse, dependencies=public)
async def selfcheck_submit(request: Request) -> HTMLResponse:
    form = await request.form()
    plan = selfcheck.questionnaire()
    answers: dict[str, Any] = {}
    for q in plan["questions"]:
        if q["type"] == "multi":
            answers[q["id"]] = [str(v) for v in form.getlist(q["id"])]
        else:
            answers[q["id"]] = str(form.get(q["id"]) or "")
    result = selfcheck.evaluate(answers)
    return render(request, "selfcheck.html", title="疫情自查结果", plan=plan, result=result, section="selfcheck",
                  answers=answers)


# --- staff: editor, review, history ---------------------------------------------------------


def _entry_yaml(data: dict) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)


def _current(kind: str, name: str) -> dict | None:
    kb = get_kb()
    if kind == "interactions":
        return next((i.raw for i in kb.interactions if repository.interaction_name(i.raw) == name), None)
    table = {"diseases": kb.diseases, "symptoms": kb.symptoms, "drugs": kb.drugs, "firstaid": kb.firstaid,
             "departments": kb.departments}.get(kind)
    if table is None:
        raise NotFound("没有这个条目类型")
    entry = table.get(name)
    return entry.raw if entry is not None else None


@router.get("/edit/{kind}/{name}", response_class=HTMLResponse)
def edit_page(request: Request, kind: str, name: str, feedback: int | None = None,
              staff: Staff = Depends(require_staff)) -> HTMLResponse:
    data = _current(kind, name)
    text = _entry_yaml(data) if data else _entry_yaml({"name": name, "sources": []})
    return render(request, "edit.html", title=f"编辑：{name}", kind=kind, kind_zh=EDIT_KINDS.get(kind, kind),
                  name=name, text=text, errors=[], staff=staff, feedback=feedback, is_new=data is None)


@router.post("/edit/{kind}/{name}", response_class=HTMLResponse)
async def edit_submit(request: Request, kind: str, name: str, text: str = Form(..., max_length=50000),
                      comment: str = Form("", max_length=2000), feedback: str = Form(""),
                      staff: Staff = Depends(require_staff),
                      conn: AsyncConnection = Depends(get_connection)) -> HTMLResponse:
    if kind not in EDIT_KINDS:
        raise NotFound("没有这个条目类型")
    try:
        data = service.parse_entry_yaml(text)
        errors = service.validate_entry(kind, data, name=name)
    except BadRequest as exc:
        errors = [exc.message]
    if errors:
        return render(request, "edit.html", status_code=422, title=f"编辑：{name}", kind=kind,
                      kind_zh=EDIT_KINDS[kind], name=name, text=text, errors=errors, staff=staff,
                      feedback=feedback or None, is_new=False)
    rid = await repository.propose(conn, kind=kind, name=name, data=data, author=staff.name,
                                   comment=comment or None, feedback_id=int(feedback) if feedback.isdigit() else None)
    return RedirectResponse(f"/knowledge/review#rev-{rid}", status_code=303)


@router.get("/review", response_class=HTMLResponse)
async def review_page(request: Request, staff: Staff = Depends(require_staff),
                      conn: AsyncConnection = Depends(get_connection)) -> HTMLResponse:
    revisions = await repository.pending(conn)
    for r in revisions:
        current = _current(r["kind"], r["name"])
        r["current_yaml"] = _entry_yaml(current) if current else ""
        r["proposed_yaml"] = _entry_yaml(r["data"])
    return render(request, "review.html", title="审核队列", revisions=revisions,
                  feedback=await repository.open_feedback(conn), staff=staff, kinds=EDIT_KINDS, kind_path=KIND_PATH)


@router.post("/review/{revision_id}", response_class=HTMLResponse)
async def review_submit(request: Request, revision_id: int, decision: str = Form(...),
                        comment: str = Form("", max_length=2000), staff: Staff = Depends(require_staff),
                        conn: AsyncConnection = Depends(get_connection)) -> HTMLResponse:
    if decision not in ("approve", "reject"):
        raise BadRequest("decision 只能是 approve 或 reject")
    rev = await repository.review(conn, revision_id, reviewer=staff.name, approve=decision == "approve",
                                  comment=comment or None)
    if rev["status"] == "approved":
        service.apply_entry(rev["kind"], rev["data"])
    return RedirectResponse("/knowledge/review", status_code=303)


@router.post("/feedback/{feedback_id}/dismiss", response_class=HTMLResponse)
async def feedback_dismiss(feedback_id: int, staff: Staff = Depends(require_staff),
                           conn: AsyncConnection = Depends(get_connection)) -> RedirectResponse:
    await repository.dismiss_feedback(conn, feedback_id, staff.name)
    return RedirectResponse("/knowledge/review", status_code=303)


@router.get("/history/{kind}/{name}", response_class=HTMLResponse)
async def history_page(request: Request, kind: str, name: str, staff: Staff = Depends(require_staff),
                       conn: AsyncConnection = Depends(get_connection)) -> HTMLResponse:
    rows = await repository.history(conn, kind, name)
    entry = await repository.get_entry(conn, kind, name)
    return render(request, "history.html", title=f"修改历史：{name}", kind=kind, name=name, rows=rows, entry=entry,
                  kind_zh=EDIT_KINDS.get(kind, kind), staff=staff, to_yaml=_entry_yaml)
