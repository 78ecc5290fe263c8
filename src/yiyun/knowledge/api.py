"""JSON routes under /api/knowledge. Public (used before signing in) and rate-limited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncConnection

from yiyun.core.errors import NotFound
from yiyun.knowledge import drugs as drug_service
from yiyun.knowledge import repository, selfcheck
from yiyun.knowledge.deps import get_connection, rate_limited
from yiyun.knowledge.diagnosis import diagnose as run_diagnose
from yiyun.knowledge.extractor import get_extractor
from yiyun.knowledge.kb import get_kb
from yiyun.knowledge.qa import ask as run_ask
from yiyun.knowledge.schemas import (
    AskRequest,
    DiagnoseRequest,
    DrugReviewRequest,
    ExtractRequest,
    FeedbackRequest,
    InteractionsRequest,
    SelfcheckRequest,
    TriageRequest,
)
from yiyun.knowledge.search import search as run_search
from yiyun.knowledge.triage import triage as run_triage

# Public routes: listed for the platform's public-route registry.
PUBLIC_PATHS = (
    "/api/knowledge/triage", "/api/knowledge/diagnose", "/api/knowledge/ask", "/api/knowledge/extract",
    "/api/knowledge/interactions", "/api/knowledge/drugs/review", "/api/knowledge/drugs/{name}",
    "/api/knowledge/search", "/api/knowledge/selfcheck", "/api/knowledge/feedback",
)

router = APIRouter(prefix="/api/knowledge", tags=["knowledge"], dependencies=[Depends(rate_limited)])


@router.post("/triage")
def triage(body: TriageRequest) -> dict[str, Any]:
    return run_triage(body.text, age=body.age, sex=body.sex)


@router.post("/diagnose")
def diagnose(body: DiagnoseRequest) -> dict[str, Any]:
    return run_diagnose(body.present, body.absent, text=body.text, age=body.age, sex=body.sex)


@router.post("/ask")
def ask(body: AskRequest) -> dict[str, Any]:
    return run_ask(body.question)


@router.post("/extract")
def extract(body: ExtractRequest) -> dict[str, Any]:
    return get_extractor().extract(body.text).as_dict()


@router.post("/interactions")
def interactions(body: InteractionsRequest) -> dict[str, Any]:
    return drug_service.check_interactions(body.drugs)


@router.post("/drugs/review")
def drug_review(body: DrugReviewRequest) -> dict[str, Any]:
    payload = body.model_dump()
    payload["drugs"] = [d if isinstance(d, str) else d for d in payload["drugs"]]
    return drug_service.review(payload)


@router.get("/drugs/{name}")
def drug(name: str) -> dict[str, Any]:
    d = drug_service.lookup(name)
    if d is None:
        raise NotFound(f"知识库中没有药品「{name}」")
    return drug_service.drug_info(d)


@router.get("/search")
def search(q: str = Query(min_length=1, max_length=50), limit: int = Query(20, ge=1, le=50)) -> dict[str, Any]:
    return {"query": q, "results": run_search(q, limit)}


@router.get("/selfcheck")
def selfcheck_questionnaire(version: str | None = Query(None, max_length=50)) -> dict[str, Any]:
    return selfcheck.questionnaire(version)


@router.post("/selfcheck")
def selfcheck_evaluate(body: SelfcheckRequest) -> dict[str, Any]:
    return selfcheck.evaluate(body.answers, body.version)


@router.post("/feedback", status_code=201)
async def feedback(body: FeedbackRequest, conn: AsyncConnection = Depends(get_connection)) -> dict[str, Any]:
    fid = await repository.add_feedback(conn, **body.model_dump())
    return {"id": fid, "status": "open" if body.verdict == "wrong" else "noted"}


@router.get("/stats")
def stats() -> dict[str, Any]:
    return {"counts": get_kb().counts()}
