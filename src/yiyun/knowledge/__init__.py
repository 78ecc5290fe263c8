"""yiyun.knowledge"""
