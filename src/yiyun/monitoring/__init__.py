"""yiyun.monitoring"""
