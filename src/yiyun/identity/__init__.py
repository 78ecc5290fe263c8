"""yiyun.identity"""
