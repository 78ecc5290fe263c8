"""yiyun.analytics"""
