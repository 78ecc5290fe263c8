"""yiyun.web"""
