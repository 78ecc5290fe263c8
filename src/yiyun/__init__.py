"""yiyun (医云): an open Internet + Healthcare cloud on HL7 FHIR R4."""
__version__ = "0.1.0"
