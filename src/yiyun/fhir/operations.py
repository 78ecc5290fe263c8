"""Built-in FHIR operations: $validate (https://hl7.org/fhir/R4/resource-operation-validate.html)
and the Bulk Data $export family (registered by `yiyun.fhir.bulk`)."""

from __future__ import annotations

from yiyun.core.errors import BadRequest, Issue, operation_outcome
from yiyun.fhir import bulk as _bulk  # noqa: F401  (registers $export)
from yiyun.fhir.repository import check_resource_body
from yiyun.fhir.router import FhirResponse, Operation, operations
from yiyun.fhir.validation import validate_resource


def _resource_from_parameters(body) -> object:
    """$validate takes the resource directly or in Parameters.parameter[name=resource]."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "resource":
                return p.get("resource")
        raise BadRequest("Parameters 中缺少 resource 参数 (no 'resource' parameter)")
    return body


async def validate_operation(router, req, repo, res_type, res_id) -> FhirResponse:
    if req.method.upper() == "GET":
        if res_id is None:
            raise BadRequest("GET $validate 需要资源 id (GET $validate needs an instance)")
        resource = (await repo.read(res_type, res_id)).resource
    else:
        resource = _resource_from_parameters(req.body)
    resource = check_resource_body(resource, res_type)
    issues = validate_resource(resource)
    if not issues:
        issues = [Issue("information", "informational", "校验通过 (validation passed)")]
    return FhirResponse(200, operation_outcome(issues))


operations.register(
    Operation(
        "validate",
        validate_operation,
        levels=("type", "instance"),
        methods=("POST", "GET"),
        definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
        affects_state=False,
    )
)


async def reindex_operation(router, req, repo, res_type, res_id) -> FhirResponse:
    """Recompute the search indexes of this tenant, e.g. after a custom SearchParameter
    is added or changed (custom parameters take effect for existing data only after it)."""
    from yiyun.fhir.search import reindex

    await repo.policy.check(repo.ctx, "reindex", None, None, None)
    count = await reindex(repo.conn, repo.ctx.tenant)
    await repo.policy.record(repo.ctx, "reindex", None, None, "ok", detail={"count": count})
    return FhirResponse(
        200,
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "count", "valueInteger": count}],
        },
    )


operations.register(Operation("reindex", reindex_operation, levels=("system",), methods=("POST",)))
