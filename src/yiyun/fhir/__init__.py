"""yiyun.fhir"""
