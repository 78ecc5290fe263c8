"""yiyun.integration"""
