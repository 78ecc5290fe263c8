"""yiyun.payments"""
