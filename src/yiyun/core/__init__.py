"""yiyun.core"""
