"""The FHIR R4 store: repository, search, validation, REST router and bulk data.

Domain modules use `FhirRepository` (see `yiyun.fhir.repository`); the HTTP layer is an
adapter over `FhirRouter`.
"""
